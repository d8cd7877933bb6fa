//! A loaded model: weights, vocabulary and metadata.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use llama_sys as sys;

use crate::ffi::{fill_string, path_to_cstring};
use crate::{Backend, Error, Result, Vocab};

/// How to load a model.
///
/// # Construction and stability
///
/// Build it from [`Default`] and set what you need, with struct-update
/// syntax (`{ field: value, ..Default::default() }`) or by assigning
/// fields. New fields may be added in minor releases, always with a default
/// that keeps the old behaviour, so code written this way keeps compiling;
/// an exhaustive struct literal does not. The struct is not
/// `#[non_exhaustive]` on purpose: that would forbid the update syntax
/// outside this crate, and these are plain bags of settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelParams {
    /// Layers to offload to the GPU (0 = CPU only, negative = all).
    pub n_gpu_layers: i32,
    /// Map the file instead of reading it (faster start, shared pages).
    pub use_mmap: bool,
    /// Lock the weights in RAM so they are never swapped out.
    pub use_mlock: bool,
    /// Load only the vocabulary (for tokenization), no weights.
    pub vocab_only: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams { n_gpu_layers: 0, use_mmap: true, use_mlock: false, vocab_only: false }
    }
}

/// A model loaded by llama.cpp. Immutable once loaded; share it across
/// threads and contexts with `Arc<Model>`.
///
/// ```no_run
/// use std::sync::Arc;
/// use llama_core::{Model, ModelParams};
/// let model = Arc::new(Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", &ModelParams::default())?);
/// println!("{} ({} parameters)", model.description(), model.n_params());
/// # Ok::<(), llama_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: Vocab,
    path: PathBuf,
    /// Each tensor's dimensions as the validated file declares them
    /// (ggml's `ne` order), for checking LoRA adapters against the model.
    tensor_dims: HashMap<String, Vec<u64>>,
    /// Guards llama.cpp's registry of the model's LoRA adapters
    /// (`llama_model::loras`, a `std::set`): loading and freeing an adapter
    /// write it (exclusive), creating a context and decoding read it
    /// (shared; llama.cpp sizes its compute graphs by every registered
    /// adapter). See the `Sync` argument below.
    adapters_lock: RwLock<()>,
}

// SAFETY: a `llama_model` is not written after `llama_model_load_from_file`
// returns, by any call this crate makes but one, which is locked:
// llama.cpp's own server and examples share one model between several
// contexts on several threads, and every `llama_model_*` /
// `llama_vocab_*` query we expose takes a `const` pointer and only reads.
// Load and free own the pointer exclusively.
//
// The locked write: `llama_adapter_lora_init` inserts the new adapter into
// the model's `loras` set and `llama_adapter_lora_free` erases it, while
// `llama_init_from_model` and `llama_decode`/`llama_encode` (when a
// context reserves its graphs) iterate that set. `LoraAdapter::load` and
// its `Drop` hold `adapters_lock` exclusively for those calls;
// `Context::new`, `decode` and `encode` hold it shared. Nothing else
// touches the set (the model's destructor frees adapters left in it, and
// none can be: each holds an `Arc<Model>`).
//
// One exception is load-bearing and must be kept in mind: the non-const
// `llama_init_from_model` (called by `Context::new`, possibly from several
// threads at once on one shared model) WRITES `model->hparams.n_ctx_train`
// when the context uses YaRN rope scaling with a `rope_freq_scale` that
// differs from the model's trained one. `ContextParams` exposes no rope
// settings, so llama.cpp resolves them from the model itself and the
// condition never holds (and the opt/training entry points that also write
// hparams are not bound). A future `ContextParams` field for
// `rope_scaling_type`, `rope_freq_scale` or `yarn_*` would break this
// argument: such a context would have to be created with exclusive access
// to the model (e.g. a lock around `llama_init_from_model`, and no
// concurrent readers of `n_ctx_train`), or refuse custom YaRN scaling.
unsafe impl Send for Model {}
// SAFETY: see `Send` above: all shared access is read-only.
unsafe impl Sync for Model {}

struct Progress<'a> {
    callback: &'a mut (dyn FnMut(f32) -> bool + Send),
    cancelled: bool,
}

/// `"C-unwind"` because the bindings declare llama.cpp's callback types
/// so; it never unwinds (panics are caught below).
extern "C-unwind" fn progress_trampoline(progress: f32, user: *mut c_void) -> bool {
    // SAFETY: `user` is the `&mut Progress` passed to llama.cpp in
    // `load_inner`, alive for the whole (synchronous) load call.
    let state = unsafe { &mut *user.cast::<Progress<'_>>() };
    // A panicking callback cancels the load instead of unwinding into C++.
    let keep_going =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (state.callback)(progress))).unwrap_or(false);
    if !keep_going {
        state.cancelled = true;
    }
    keep_going
}

impl Model {
    /// Validate the GGUF file in safe Rust, then load it with llama.cpp.
    ///
    /// # Errors
    /// [`Error::ModelNotFound`], [`Error::Io`], [`Error::InvalidModel`] for a
    /// file the GGUF validator refuses, [`Error::ModelLoad`] when llama.cpp
    /// cannot load a file that passed it.
    pub fn load(path: impl AsRef<Path>, params: &ModelParams) -> Result<Model> {
        Self::load_inner(path.as_ref(), params, None)
    }

    /// Like [`Model::load`], calling `progress(fraction)` as the weights load;
    /// returning `false` cancels the load with [`Error::LoadCancelled`].
    ///
    /// # Errors
    /// As [`load`](Self::load), and [`Error::LoadCancelled`] when the callback
    /// returned `false`.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        params: &ModelParams,
        mut progress: impl FnMut(f32) -> bool + Send,
    ) -> Result<Model> {
        Self::load_inner(path.as_ref(), params, Some(&mut progress))
    }

    fn load_inner(
        path: &Path,
        params: &ModelParams,
        progress: Option<&mut (dyn FnMut(f32) -> bool + Send)>,
    ) -> Result<Model> {
        Backend::init();
        if !path.exists() {
            return Err(Error::ModelNotFound { path: path.to_path_buf() });
        }
        // Nothing reaches llama.cpp's loader unchecked.
        let info = crate::gguf::validate(path)?;
        let tensor_dims = info.tensors.into_iter().map(|t| (t.name, t.dims)).collect();
        let c_path = path_to_cstring(path)?;

        // SAFETY: returns a plain struct by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = params.n_gpu_layers;
        mp.load_mode = match (params.use_mmap, params.use_mlock) {
            (true, true) => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            (true, false) => sys::LLAMA_LOAD_MODE_MMAP,
            (false, true) => sys::LLAMA_LOAD_MODE_MLOCK,
            (false, false) => sys::LLAMA_LOAD_MODE_NONE,
        };
        mp.vocab_only = params.vocab_only;

        let mut state = progress.map(|callback| Progress { callback, cancelled: false });
        if let Some(state) = state.as_mut() {
            mp.progress_callback = Some(progress_trampoline);
            mp.progress_callback_user_data = (state as *mut Progress<'_>).cast();
        }
        // SAFETY: `c_path` is a valid C string; `mp` is fully initialised;
        // the progress user data (if any) outlives this synchronous call.
        let raw = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
        let cancelled = state.as_ref().is_some_and(|s| s.cancelled);
        let ptr = match NonNull::new(raw) {
            Some(p) => p,
            None if cancelled => return Err(Error::LoadCancelled),
            None => return Err(Error::ModelLoad { path: path.to_path_buf() }),
        };
        // SAFETY: `ptr` is a live model; the vocab it returns is owned by
        // the model and lives exactly as long as it.
        let vocab_ptr = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let Some(vocab_ptr) = NonNull::new(vocab_ptr.cast_mut()) else {
            // SAFETY: `ptr` came from llama_model_load_from_file and is freed once.
            unsafe { sys::llama_model_free(ptr.as_ptr()) };
            return Err(Error::ModelLoad { path: path.to_path_buf() });
        };
        // SAFETY: the vocab pointer is valid while the model lives, and the
        // Vocab is stored inside the Model, so it cannot outlive it.
        let vocab = unsafe { Vocab::from_raw(vocab_ptr) };
        Ok(Model { ptr, vocab, path: path.to_path_buf(), tensor_dims, adapters_lock: RwLock::new(()) })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    /// Shared access to llama.cpp's adapter registry, for the calls that
    /// read it (context creation, decode, encode); see `adapters_lock`.
    pub(crate) fn adapters_read(&self) -> RwLockReadGuard<'_, ()> {
        self.adapters_lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most positions a sequence may use, when the model has learned
    /// absolute position embeddings (`position_embd.weight`: BERT, GPT-2,
    /// StarCoder): one row per position, and llama.cpp's row lookup
    /// asserts (aborting the process) on a position past the last row.
    /// `None` for models without (rotary, ALiBi).
    pub fn max_positions(&self) -> Option<u32> {
        let rows = *self.tensor_dims.get("position_embd.weight")?.get(1)?;
        Some(u32::try_from(rows).unwrap_or(u32::MAX))
    }

    /// The file this model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokenizer.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_n_ctx_train(self.as_ptr()) }.max(0) as u32
    }

    /// Embedding width.
    pub fn n_embd(&self) -> u32 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_n_embd(self.as_ptr()) }.max(0) as u32
    }

    /// Number of layers.
    pub fn n_layer(&self) -> u32 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_n_layer(self.as_ptr()) }.max(0) as u32
    }

    /// Number of attention heads.
    pub fn n_head(&self) -> u32 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_n_head(self.as_ptr()) }.max(0) as u32
    }

    /// Number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_n_params(self.as_ptr()) }
    }

    /// Total size of the weights in bytes.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_size(self.as_ptr()) }
    }

    /// Whether the model has an encoder (T5-style); decoder-only models don't.
    pub fn has_encoder(&self) -> bool {
        // SAFETY: read-only query on a live model.
        unsafe { sys::llama_model_has_encoder(self.as_ptr()) }
    }

    /// llama.cpp's one-line description (architecture, size, quantization).
    pub fn description(&self) -> String {
        // SAFETY: llama.cpp writes at most `len` bytes into `buf` and returns
        // the length it needed; `fill_string` sizes the buffer from that.
        fill_string(|buf, len| unsafe { sys::llama_model_desc(self.as_ptr(), buf, len) }).unwrap_or_default()
    }

    /// The value of one GGUF metadata key, as text.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: `key` is a valid C string; buffer protocol as in `description`.
        fill_string(|buf, len| unsafe { sys::llama_model_meta_val_str(self.as_ptr(), key.as_ptr(), buf, len) })
    }

    /// Every GGUF metadata key/value pair, values rendered as text (arrays
    /// are summarised by llama.cpp).
    pub fn metadata(&self) -> Vec<(String, String)> {
        // SAFETY: read-only query on a live model.
        let n = unsafe { sys::llama_model_meta_count(self.as_ptr()) }.max(0);
        (0..n)
            .filter_map(|i| {
                // SAFETY: `i` is in 0..count; buffer protocol as in `description`.
                let k = fill_string(|b, l| unsafe { sys::llama_model_meta_key_by_index(self.as_ptr(), i, b, l) })?;
                // SAFETY: as above.
                let v = fill_string(|b, l| unsafe { sys::llama_model_meta_val_str_by_index(self.as_ptr(), i, b, l) })?;
                Some((k, v))
            })
            .collect()
    }

    /// `general.architecture` (e.g. `llama`).
    pub fn architecture(&self) -> Option<String> {
        self.meta("general.architecture")
    }

    /// The model's own Jinja chat template (`tokenizer.chat_template`).
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: a null name asks for the default template; the returned
        // pointer is owned by the model and valid while it lives; we copy it.
        let p = unsafe { sys::llama_model_chat_template(self.as_ptr(), std::ptr::null()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null NUL-terminated string owned by the live model.
        Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_model_load_from_file, is freed only
        // here, and no Context can outlive the Model (they hold an Arc).
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) };
    }
}

/// A LoRA adapter loaded for one [`Model`]: low-rank deltas to some of its
/// weights, applied by the contexts that activate it
/// ([`Context::set_lora_adapters`](crate::Context::set_lora_adapters)) with
/// a scale of their choosing. Immutable once loaded; share it with
/// `Arc<LoraAdapter>`. It holds an `Arc` of its model, and contexts hold
/// an `Arc` of the adapters they apply, so neither is freed while in use.
///
/// ```no_run
/// use std::sync::Arc;
/// use llama_core::{Context, ContextParams, LoraAdapter, Model, ModelParams};
/// let model = Arc::new(Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", &ModelParams::default())?);
/// let adapter = Arc::new(LoraAdapter::load(&model, "my-adapter.gguf")?);
/// let mut ctx = Context::new(model, &ContextParams::default())?;
/// ctx.set_lora_adapters(&[(adapter, 0.5)])?;
/// # Ok::<(), llama_core::Error>(())
/// ```
#[derive(Debug)]
pub struct LoraAdapter {
    ptr: NonNull<sys::llama_adapter_lora>,
    model: Arc<Model>,
    path: PathBuf,
}

// SAFETY: after `llama_adapter_lora_init` returns, llama.cpp only reads an
// adapter (its tensors and pair map, from the graph of any context that
// applies it, and its metadata map): every `llama_adapter_*` query takes a
// `const` pointer. The one write, `llama_adapter_lora_free`, happens in
// `Drop`, when no `Arc` (hence no context) is left. Its registration in
// the model is guarded by the model's adapter lock (see `Model`'s `Sync`).
unsafe impl Send for LoraAdapter {}
// SAFETY: see `Send` above: all shared access is read-only.
unsafe impl Sync for LoraAdapter {}

impl LoraAdapter {
    /// Validate the adapter file in safe Rust — its GGUF structure and
    /// metadata ([`gguf::validate_adapter`](crate::gguf::validate_adapter)),
    /// then its fit to `model`: the same architecture, every base tensor
    /// present in the model with the dimensions llama.cpp expects — and
    /// load it with llama.cpp.
    ///
    /// # Errors
    /// [`Error::InvalidAdapter`] for a file the validator refuses (missing,
    /// not GGUF, truncated, not a LoRA adapter, unusable tensors);
    /// [`Error::AdapterMismatch`] for an adapter made for another model;
    /// [`Error::AdapterLoad`] when llama.cpp cannot load a file that passed
    /// both; [`Error::Exception`] if llama.cpp throws.
    pub fn load(model: &Arc<Model>, path: impl AsRef<Path>) -> Result<LoraAdapter> {
        let path = path.as_ref();
        let info = crate::gguf::validate_adapter(path).map_err(Error::InvalidAdapter)?;
        let mismatch = |reason: String| Error::AdapterMismatch { path: path.to_path_buf(), reason };
        let arch = info.architecture().unwrap_or_default();
        let model_arch = model.architecture().unwrap_or_default();
        if arch != model_arch {
            return Err(mismatch(format!("the adapter is for `{arch}` models, the model is `{model_arch}`")));
        }
        check_fit(&info, &model.tensor_dims).map_err(mismatch)?;
        let c_path = path_to_cstring(path)?;
        let mut raw = std::ptr::null_mut();
        {
            let _registry = model.adapters_lock.write().unwrap_or_else(PoisonError::into_inner);
            // SAFETY: the model is alive (we hold an Arc, and keep it in the
            // adapter); `c_path` is a valid C string; the registry the call
            // writes is locked exclusively. Through the shim: a C++
            // exception becomes a typed error.
            let status = unsafe { sys::llrs_adapter_lora_init(model.as_ptr(), c_path.as_ptr(), &mut raw) };
            crate::ffi::guard(status, "llama_adapter_lora_init")?;
        }
        let ptr = NonNull::new(raw).ok_or_else(|| Error::AdapterLoad { path: path.to_path_buf() })?;
        Ok(LoraAdapter { ptr, model: Arc::clone(model), path: path.to_path_buf() })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_adapter_lora {
        self.ptr.as_ptr()
    }

    /// The model this adapter was loaded for.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of one of the adapter's GGUF metadata keys, as text
    /// (`adapter.lora.alpha`, `adapter.lora.task_name`,
    /// `adapter.lora.prompt_prefix`, ...). Arrays are not kept by llama.cpp.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: read-only query on a live adapter; `key` is a valid C
        // string; llama.cpp writes at most `len` bytes into `buf` and
        // returns the length it needed, `fill_string` sizes the buffer.
        fill_string(|buf, len| unsafe { sys::llama_adapter_meta_val_str(self.as_ptr(), key.as_ptr(), buf, len) })
    }

    /// Every scalar GGUF metadata key/value pair, values as text.
    pub fn metadata(&self) -> Vec<(String, String)> {
        // SAFETY: read-only query on a live adapter.
        let n = unsafe { sys::llama_adapter_meta_count(self.as_ptr()) }.max(0);
        (0..n)
            .filter_map(|i| {
                // SAFETY: `i` is in 0..count; buffer protocol as in `meta`.
                let k = fill_string(|b, l| unsafe { sys::llama_adapter_meta_key_by_index(self.as_ptr(), i, b, l) })?;
                // SAFETY: as above.
                let v =
                    fill_string(|b, l| unsafe { sys::llama_adapter_meta_val_str_by_index(self.as_ptr(), i, b, l) })?;
                Some((k, v))
            })
            .collect()
    }
}

impl Drop for LoraAdapter {
    fn drop(&mut self) {
        let _registry = self.model.adapters_lock.write().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `ptr` came from llama_adapter_lora_init and is freed only
        // here; no context applies it any more (each holds an Arc of the
        // adapters it applies); the model is alive (our Arc) and its
        // adapter registry, which the call writes, is locked exclusively.
        unsafe { sys::llama_adapter_lora_free(self.ptr.as_ptr()) };
    }
}

/// Whether every `lora_a`/`lora_b` pair of a validated adapter fits a
/// tensor of the model, with the dimensions llama.cpp's loader compares
/// (`llama-adapter.cpp`); the reason when not.
fn check_fit(info: &crate::gguf::GgufInfo, model: &HashMap<String, Vec<u64>>) -> std::result::Result<(), String> {
    let dim = |d: &[u64], i: usize| d.get(i).copied().unwrap_or(1);
    for a in info.tensors.iter().filter(|t| t.name.ends_with(".lora_a")) {
        let base = a.name.trim_end_matches(".lora_a");
        let b = info.tensor(&format!("{base}.lora_b")).map(|t| t.dims.as_slice()).unwrap_or_default();
        let Some(w) = model.get(base) else {
            return Err(format!("the model has no tensor `{base}`"));
        };
        if w.iter().skip(2).any(|&d| d != 1) {
            return Err(format!("`{base}` has {} dimensions; adapters for such tensors are not supported", w.len()));
        }
        let fits = if base.ends_with("token_embd.weight") {
            dim(w, 0) == dim(b, 1) && dim(w, 1) == dim(&a.dims, 1)
        } else {
            dim(w, 0) == dim(&a.dims, 0) && dim(w, 1) == dim(b, 1)
        };
        if !fits {
            return Err(format!(
                "`{base}` is {w:?} in the model, which lora_a {:?} and lora_b {b:?} do not fit",
                a.dims
            ));
        }
    }
    Ok(())
}

/// The names of llama.cpp's built-in chat formats (`llama3`, `chatml`,
/// `mistral-v7`, `gemma`, `phi3`, ...): what `llama_chat_apply_template`
/// formats without a Jinja engine, and what llama.cpp's `--chat-template`
/// takes as a name.
pub fn builtin_chat_templates() -> Vec<String> {
    // SAFETY: with a null output array llama.cpp only counts the names.
    let n = unsafe { sys::llama_chat_builtin_templates(std::ptr::null_mut(), 0) };
    let mut names: Vec<*const std::ffi::c_char> = vec![std::ptr::null(); usize::try_from(n).unwrap_or(0)];
    // SAFETY: `names` has room for `len` pointers; llama.cpp writes at most
    // that many pointers to its static, NUL-terminated names.
    let written = unsafe { sys::llama_chat_builtin_templates(names.as_mut_ptr(), names.len()) };
    names.truncate(usize::try_from(written).unwrap_or(0).min(names.len()));
    names
        .into_iter()
        .filter(|p| !p.is_null())
        // SAFETY: non-null pointers to static NUL-terminated strings (above).
        .map(|p| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .collect()
}

/// Format `messages` with llama.cpp's built-in formatter for `template`
/// (a built-in name, or a Jinja source it recognizes by its markers).
/// `None` when llama.cpp does not know the template.
pub(crate) fn apply_builtin_chat_template(
    template: &str,
    messages: &[(&str, &str)],
    add_generation_prompt: bool,
) -> Result<Option<String>> {
    let c = |s: &str| CString::new(s).map_err(|_| Error::Template("a NUL byte in a chat message or template".into()));
    let template = c(template)?;
    let owned: Vec<(CString, CString)> =
        messages.iter().map(|(role, content)| Ok((c(role)?, c(content)?))).collect::<Result<_>>()?;
    let chat: Vec<sys::llama_chat_message> = owned
        .iter()
        .map(|(role, content)| sys::llama_chat_message { role: role.as_ptr(), content: content.as_ptr() })
        .collect();
    let input: usize = messages.iter().map(|(r, t)| r.len() + t.len()).sum();
    // The formats add a few dozen bytes per message; llama.cpp reports the
    // length it needs when the buffer is short, and it is tried once more.
    let mut len = input.saturating_mul(2).saturating_add(256 + 64 * messages.len());
    for _ in 0..2 {
        let cap = i32::try_from(len).map_err(|_| Error::Template("the conversation is too long to format".into()))?;
        let mut buf = vec![0u8; len];
        let mut n = 0i32;
        // SAFETY: `template` and every role/content pointer are live C
        // strings owned by `owned`/`template` for the call; `chat` holds
        // `chat.len()` messages; `buf` has `cap` writable bytes. Through the
        // shim: a C++ exception becomes a typed error.
        let status = unsafe {
            sys::llrs_chat_apply_template(
                template.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_generation_prompt,
                buf.as_mut_ptr().cast(),
                cap,
                &mut n,
            )
        };
        crate::ffi::guard(status, "llama_chat_apply_template")?;
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n <= len {
            buf.truncate(n);
            return String::from_utf8(buf)
                .map(Some)
                .map_err(|_| Error::Template("llama.cpp's formatter wrote invalid UTF-8".into()));
        }
        len = n;
    }
    Err(Error::Template("llama.cpp's formatter kept asking for more room".into()))
}
