//! An inference context: KV cache, decode, logits, embeddings, state.

use std::ffi::c_void;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_sys as sys;

use crate::state::Kind;
use crate::{
    Backend, Batch, ContextParams, Error, FlashAttn, KvCacheType, LoraAdapter, MAX_THREADS, Model, Pooling, Pos,
    Result, SeqId, StateKey, Token,
};

/// An inference context over a shared [`Model`]: owns the KV cache and the
/// compute buffers. `Send` (move it to the thread that uses it) but not
/// `Sync`: llama.cpp contexts are not safe to use from two threads at once.
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<llama_core::Context>(); // a Context cannot be shared between threads
/// ```
///
/// ```
/// fn assert_send<T: Send>() {}
/// assert_send::<llama_core::Context>(); // but it can be moved to another thread
/// ```
#[derive(Debug)]
pub struct Context {
    ptr: NonNull<sys::llama_context>,
    model: Arc<Model>,
    /// The flag llama.cpp's abort callback reads. The callback gets
    /// `Arc::as_ptr` of it: a pointer to the `AtomicBool` in the Arc's heap
    /// allocation, derived from the Arc itself (not from a reference into
    /// this struct), so it stays valid while the Context moves and while
    /// other clones are handed out by [`abort_flag`](Self::abort_flag).
    abort: Arc<AtomicBool>,
    /// Which indices of the last decoded batch produced outputs.
    outputs: Vec<bool>,
    n_ctx_seq: u32,
    n_seq_max: u32,
    n_batch: u32,
    embeddings: bool,
    /// Key that signs and verifies saved states (`None`: the per-process key).
    state_key: Option<StateKey>,
    /// The LoRA adapters llama.cpp's context may point to, with their
    /// scales: held so that none is freed while it can be applied.
    lora: Vec<(Arc<LoraAdapter>, f32)>,
}

// SAFETY: a llama_context may be used from any thread as long as only one
// thread uses it at a time (llama.cpp's server moves contexts between its
// threads). `Context` is not `Sync` and every mutating call takes
// `&mut self`, so at most one thread touches it. The model it points to is
// kept alive by the `Arc` and is itself thread-safe.
unsafe impl Send for Context {}

extern "C" fn abort_trampoline(data: *mut c_void) -> bool {
    // SAFETY: `data` is `Arc::as_ptr` of the Context's `abort` Arc, whose
    // allocation the Context keeps alive until after the llama_context is
    // freed (in Drop); only shared (atomic) access is ever made through it.
    let flag = unsafe { &*data.cast::<AtomicBool>().cast_const() };
    flag.load(Ordering::Relaxed)
}

impl Context {
    /// Create a context for `model`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for parameters [`ContextParams::validate`]
    /// refuses; [`Error::ContextCreate`] when llama.cpp cannot create the
    /// context (out of memory, a cache type the model does not allow);
    /// [`Error::Exception`] if llama.cpp throws.
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Context> {
        Backend::init();
        params.validate()?;
        // SAFETY: returns a plain struct by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = params.n_batch;
        cp.n_ubatch = params.n_ubatch;
        cp.n_seq_max = params.n_seq_max;
        cp.n_threads = params.n_threads;
        cp.n_threads_batch = params.n_threads_batch;
        cp.embeddings = params.embeddings;
        cp.kv_unified = params.kv_unified;
        cp.type_k = ggml_type(params.type_k);
        cp.type_v = ggml_type(params.type_v);
        cp.no_perf = true;
        cp.pooling_type = match params.pooling {
            Pooling::Unspecified => sys::LLAMA_POOLING_TYPE_UNSPECIFIED,
            Pooling::None => sys::LLAMA_POOLING_TYPE_NONE,
            Pooling::Mean => sys::LLAMA_POOLING_TYPE_MEAN,
            Pooling::Cls => sys::LLAMA_POOLING_TYPE_CLS,
            Pooling::Last => sys::LLAMA_POOLING_TYPE_LAST,
            Pooling::Rank => sys::LLAMA_POOLING_TYPE_RANK,
        };
        cp.flash_attn_type = match params.flash_attn {
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        let abort = Arc::new(AtomicBool::new(false));
        cp.abort_callback = Some(abort_trampoline);
        cp.abort_callback_data = Arc::as_ptr(&abort).cast_mut().cast();
        let mut raw = std::ptr::null_mut();
        {
            let _registry = model.adapters_read();
            // SAFETY: the model is alive (we hold an Arc for the context's
            // whole life); the abort data pointer points into the Arc's
            // allocation, which the Context keeps until after the context is
            // freed; the model's adapter registry, which llama.cpp reads to
            // size the graphs, is locked against writers.
            let status = unsafe { sys::llrs_init_from_model(model.as_ptr(), cp, &mut raw) };
            crate::ffi::guard(status, "llama_init_from_model")?;
        }
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::ContextCreate(format!(
                "llama.cpp could not create a context with n_ctx={} n_batch={} n_seq_max={} cache types {}/{} \
                 (out of memory, or a cache type this model's head size does not allow?)",
                params.n_ctx, params.n_batch, params.n_seq_max, params.type_k, params.type_v
            ))
        })?;
        // SAFETY: read-only queries on the live context.
        let (n_ctx_seq, n_seq_max, n_batch) = unsafe {
            (sys::llama_n_ctx_seq(ptr.as_ptr()), sys::llama_n_seq_max(ptr.as_ptr()), sys::llama_n_batch(ptr.as_ptr()))
        };
        // Positions past a learned position embedding abort llama.cpp.
        let n_ctx_seq = model.max_positions().map_or(n_ctx_seq, |max| n_ctx_seq.min(max));
        Ok(Context {
            ptr,
            model,
            abort,
            outputs: Vec::new(),
            n_ctx_seq,
            n_seq_max,
            n_batch,
            embeddings: params.embeddings,
            state_key: None,
            lora: Vec::new(),
        })
    }

    fn raw(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }

    fn memory(&self) -> sys::llama_memory_t {
        // SAFETY: the memory handle is owned by the live context.
        unsafe { sys::llama_get_memory(self.raw()) }
    }

    /// The model this context runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Total KV cells.
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: read-only query on the live context.
        unsafe { sys::llama_n_ctx(self.raw()) }
    }

    /// Positions available to one sequence: its KV cells, and no more
    /// than the model's learned position embedding has rows
    /// ([`Model::max_positions`]); [`decode`](Self::decode) refuses
    /// positions past it.
    pub fn n_ctx_seq(&self) -> u32 {
        self.n_ctx_seq
    }

    /// Most tokens per decode call.
    pub fn n_batch(&self) -> u32 {
        self.n_batch
    }

    /// Micro-batch size.
    pub fn n_ubatch(&self) -> u32 {
        // SAFETY: read-only query on the live context.
        unsafe { sys::llama_n_ubatch(self.raw()) }
    }

    /// Whether attention is causal (generative models) rather than
    /// bidirectional (embedding models, encoders).
    pub fn causal_attn(&self) -> bool {
        // SAFETY: read-only query on the live context.
        unsafe { sys::llama_get_causal_attn(self.raw()) }
    }

    /// Switch causal attention on or off (for example, bidirectional
    /// attention over an image's tokens). Without causal attention a batch
    /// must fit in one micro-batch; [`decode`](Self::decode) checks that.
    pub fn set_causal_attn(&mut self, causal: bool) {
        // SAFETY: exclusive access; llama.cpp only records the flag (graph
        // shapes do not depend on it; the next decode rebuilds the graph).
        unsafe { sys::llama_set_causal_attn(self.raw(), causal) };
    }

    /// Number of sequences.
    pub fn n_seq_max(&self) -> u32 {
        self.n_seq_max
    }

    /// A batch sized for this context.
    pub fn new_batch(&self) -> Batch {
        let (cap, seqs, n_vocab) = (self.n_batch as usize, self.n_seq_max, self.model.vocab().n_tokens());
        // A context's n_batch and n_seq_max passed `ContextParams::validate`
        // (n_batch <= MAX_BATCH, n_seq_max <= llama_max_parallel_sequences)
        // and llama.cpp only lowers them, so `Batch::new` cannot refuse them.
        #[allow(clippy::expect_used)]
        Batch::new(cap, seqs, n_vocab).expect("context sizes are valid batch sizes")
    }

    /// The flag that aborts a running [`decode`](Self::decode): set it from
    /// any thread and the decode stops after the current micro-batch with
    /// [`Error::Aborted`]. It stays set until you clear it.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.abort)
    }

    /// Change the thread counts.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a count outside `1..=MAX_THREADS`.
    pub fn set_threads(&mut self, n_threads: i32, n_threads_batch: i32) -> Result<()> {
        for (name, t) in [("n_threads", n_threads), ("n_threads_batch", n_threads_batch)] {
            if !(1..=MAX_THREADS).contains(&t) {
                return Err(Error::InvalidParam { name, reason: format!("must be in 1..={MAX_THREADS}, got {t}") });
            }
        }
        // SAFETY: exclusive access (&mut self); values range-checked.
        unsafe { sys::llama_set_n_threads(self.raw(), n_threads, n_threads_batch) };
        Ok(())
    }

    /// Turn embedding output on or off.
    pub fn set_embeddings(&mut self, on: bool) {
        // SAFETY: exclusive access (&mut self).
        unsafe { sys::llama_set_embeddings(self.raw(), on) };
        self.embeddings = on;
    }

    /// Apply exactly these LoRA adapters, each with its scale, from the
    /// next decode on (replacing whatever was applied before; an empty
    /// list applies none). A scale of 0 leaves an adapter out; negative
    /// scales subtract it. llama.cpp rebuilds its compute graphs when the
    /// set changes, so switching costs a graph reservation at the next
    /// decode; setting the set already applied costs nothing.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for an adapter loaded for another model, an
    /// adapter listed twice or a scale that is not finite (nothing changes
    /// then); [`Error::Exception`] if llama.cpp throws.
    pub fn set_lora_adapters(&mut self, adapters: &[(Arc<LoraAdapter>, f32)]) -> Result<()> {
        for (i, (adapter, scale)) in adapters.iter().enumerate() {
            if !Arc::ptr_eq(adapter.model(), &self.model) {
                return Err(Error::InvalidParam {
                    name: "adapters",
                    reason: format!("{} was loaded for another model", adapter.path().display()),
                });
            }
            if !scale.is_finite() {
                return Err(Error::InvalidParam {
                    name: "scale",
                    reason: format!("the scale of {} must be finite, got {scale}", adapter.path().display()),
                });
            }
            if adapters[..i].iter().any(|(other, _)| Arc::ptr_eq(other, adapter)) {
                return Err(Error::InvalidParam {
                    name: "adapters",
                    reason: format!("{} is listed twice", adapter.path().display()),
                });
            }
        }
        let mut ptrs: Vec<*mut sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|&(_, s)| s).collect();
        let mut out = 0;
        // SAFETY: exclusive access (&mut self); `ptrs` and `scales` hold
        // `adapters.len()` elements each (non-null arrays even when empty),
        // every adapter is alive and loaded for this context's model. On
        // success llama.cpp keeps the pointers of the adapters with a
        // non-zero scale, which `self.lora` then holds. Through the shim.
        let status = unsafe {
            sys::llrs_set_adapters_lora(self.raw(), ptrs.as_mut_ptr(), ptrs.len(), scales.as_mut_ptr(), &mut out)
        };
        if let Err(e) = crate::ffi::guard(status, "llama_set_adapters_lora") {
            // llama.cpp may have kept any of the old or the new adapters:
            // hold them all.
            self.lora.extend(adapters.iter().cloned());
            return Err(e);
        }
        self.lora = adapters.iter().filter(|(_, s)| *s != 0.0).cloned().collect();
        Ok(())
    }

    /// The LoRA adapters applied, with their non-zero scales, as the last
    /// successful [`set_lora_adapters`](Self::set_lora_adapters) set them
    /// (after a failed call, also those it tried to apply: llama.cpp may
    /// point to any of them).
    pub fn lora_adapters(&self) -> &[(Arc<LoraAdapter>, f32)] {
        &self.lora
    }

    fn check_batch(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if batch.len() > self.n_batch as usize {
            return Err(Error::BatchFull { capacity: self.n_batch as usize });
        }
        // Without causal attention (embedding models, encoders) llama.cpp
        // cannot split a batch into micro-batches and GGML_ASSERTs when the
        // batch is longer than one.
        if !self.causal_attn() && batch.len() > self.n_ubatch() as usize {
            return Err(Error::InvalidParam {
                name: "batch",
                reason: format!(
                    "{} tokens in one batch, but this model's attention is not causal, so a batch must fit in one \
                     micro-batch (n_ubatch = {})",
                    batch.len(),
                    self.n_ubatch()
                ),
            });
        }
        if batch.n_seq_max() > self.n_seq_max {
            return Err(Error::SeqIdOutOfRange { seq_id: batch.n_seq_max() as SeqId - 1, n_seq_max: self.n_seq_max });
        }
        let n_vocab = self.model.vocab().n_tokens();
        if batch.n_vocab() > n_vocab {
            return Err(Error::TokenOutOfVocab { token: batch.n_vocab() - 1, n_vocab });
        }
        for (seq, first, last) in batch.seq_ranges() {
            let expected = self.kv_seq_pos_max(seq).map_or(0, |p| p + 1);
            if first != expected {
                return Err(Error::PositionOutOfOrder { seq_id: seq, pos: first, expected });
            }
            if last as u32 >= self.n_ctx_seq {
                return Err(Error::ContextOverflow { pos: last, n_ctx: self.n_ctx_seq });
            }
        }
        Ok(())
    }

    /// Run the model over `batch`. Positions must continue each sequence's
    /// KV contents exactly; violations are typed errors, never asserts.
    /// On [`Error::Aborted`] or a failed decode the KV cells of this batch
    /// may be partly written: remove them (`kv_seq_rm`) before retrying.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`], [`Error::BatchFull`], [`Error::SeqIdOutOfRange`],
    /// [`Error::TokenOutOfVocab`], [`Error::PositionOutOfOrder`],
    /// [`Error::ContextOverflow`] and [`Error::InvalidParam`] for batches
    /// llama.cpp would assert on; [`Error::Aborted`] when the abort flag
    /// stopped it; [`Error::Decode`] for llama.cpp's failure codes;
    /// [`Error::Exception`] if llama.cpp throws.
    pub fn decode(&mut self, batch: &Batch) -> Result<()> {
        self.check_batch(batch)?;
        self.outputs.clear();
        let mut code = 0;
        let registry = self.model.adapters_read();
        // SAFETY: the batch was validated against this context (size, seq ids,
        // token ids, positions); its arrays stay alive for the call; the
        // adapters the context applies are alive (held in `self.lora`) and
        // the model's adapter registry is locked against writers.
        let status = unsafe { sys::llrs_decode(self.raw(), batch.raw(), &mut code) };
        drop(registry);
        crate::ffi::guard(status, "llama_decode")?;
        self.finish(code, batch)
    }

    /// Run the encoder (encoder-decoder models) over `batch`.
    ///
    /// # Errors
    /// As [`decode`](Self::decode); also [`Error::InvalidParam`] when the
    /// batch is longer than one micro-batch (`n_ubatch`): the encoder
    /// cannot split it.
    pub fn encode(&mut self, batch: &Batch) -> Result<()> {
        self.check_batch(batch)?;
        if batch.len() > self.n_ubatch() as usize {
            return Err(Error::InvalidParam {
                name: "batch",
                reason: format!(
                    "{} tokens in one encoder batch; the encoder needs the whole batch in one micro-batch \
                     (n_ubatch = {})",
                    batch.len(),
                    self.n_ubatch()
                ),
            });
        }
        self.outputs.clear();
        let mut code = 0;
        let registry = self.model.adapters_read();
        // SAFETY: as in `decode`.
        let status = unsafe { sys::llrs_encode(self.raw(), batch.raw(), &mut code) };
        drop(registry);
        crate::ffi::guard(status, "llama_encode")?;
        self.finish(code, batch)
    }

    fn finish(&mut self, code: i32, batch: &Batch) -> Result<()> {
        match code {
            0 => {
                // SAFETY: exclusive access; waits for any asynchronous backend
                // work so that later reads through &self never compute.
                unsafe { sys::llama_synchronize(self.raw()) };
                self.outputs = batch.outputs().to_vec();
                Ok(())
            }
            2 => Err(Error::Aborted),
            1 => Err(Error::Decode { code, reason: "no KV cache slot for the batch (context full)" }),
            -1 => Err(Error::Decode { code, reason: "invalid batch" }),
            _ => Err(Error::Decode { code, reason: "compute error" }),
        }
    }

    fn check_output(&self, i: usize) -> Result<()> {
        if self.outputs.get(i).copied().unwrap_or(false) { Ok(()) } else { Err(Error::NoOutput(i)) }
    }

    /// Logits (one per vocabulary entry) for batch index `i` of the last
    /// decode; `i` must have been added with `logits = true`.
    ///
    /// # Errors
    /// [`Error::NoOutput`] when index `i` of the last decode has no logits.
    pub fn logits(&self, i: usize) -> Result<&[f32]> {
        self.check_output(i)?;
        let n_vocab = self.model.vocab().n_tokens() as usize;
        // SAFETY: `i` is an output index of the last successful decode, so
        // llama.cpp returns a pointer to n_vocab floats that stay valid until
        // the next decode, which needs `&mut self` and so cannot overlap
        // this borrow.
        let p = unsafe { sys::llama_get_logits_ith(self.raw(), i as i32) };
        if p.is_null() {
            return Err(Error::NoOutput(i));
        }
        // SAFETY: see above: `p` points at n_vocab initialised floats.
        Ok(unsafe { std::slice::from_raw_parts(p, n_vocab) })
    }

    /// The embedding of batch index `i` (contexts with embeddings on, no pooling).
    ///
    /// # Errors
    /// [`Error::NoOutput`] when index `i` has no output, or embeddings are off.
    pub fn embeddings_ith(&self, i: usize) -> Result<&[f32]> {
        self.check_output(i)?;
        let n = self.n_embd_out();
        self.embeddings_ptr(n, |ctx| {
            // SAFETY: valid output index of the last decode.
            unsafe { sys::llama_get_embeddings_ith(ctx, i as i32) }
        })
        .ok_or(Error::NoOutput(i))
    }

    /// The pooled embedding of sequence `seq` (contexts with embeddings on
    /// and a pooling type other than `None`). With rank pooling (rerankers)
    /// this is the sequence's `n_cls_out` scores, not an embedding.
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`]; [`Error::NoOutput`] when the sequence has
    /// no pooled output (embeddings off, pooling `None`, or not decoded).
    pub fn embeddings_seq(&self, seq: SeqId) -> Result<&[f32]> {
        self.check_seq(seq)?;
        // llama.cpp sizes each sequence's output by the pooling the context
        // actually uses (the model's own when `Unspecified`): `n_cls_out`
        // floats for rank pooling, `n_embd_out` otherwise.
        let n = if self.pooling() == Pooling::Rank { self.n_cls_out() } else { self.n_embd_out() };
        self.embeddings_ptr(n, |ctx| {
            // SAFETY: `seq` is in range; llama.cpp returns null when absent.
            unsafe { sys::llama_get_embeddings_seq(ctx, seq) }
        })
        .ok_or(Error::NoOutput(seq as usize))
    }

    /// The pooling the context uses (the model's own when it was created
    /// with [`Pooling::Unspecified`]).
    pub fn pooling(&self) -> Pooling {
        // SAFETY: read-only query on the live context.
        match unsafe { sys::llama_pooling_type(self.raw()) } {
            sys::LLAMA_POOLING_TYPE_NONE => Pooling::None,
            sys::LLAMA_POOLING_TYPE_MEAN => Pooling::Mean,
            sys::LLAMA_POOLING_TYPE_CLS => Pooling::Cls,
            sys::LLAMA_POOLING_TYPE_LAST => Pooling::Last,
            sys::LLAMA_POOLING_TYPE_RANK => Pooling::Rank,
            _ => Pooling::Unspecified,
        }
    }

    fn n_embd_out(&self) -> usize {
        // SAFETY: read-only query on the live model.
        unsafe { sys::llama_model_n_embd_out(self.model.as_ptr()) }.max(0) as usize
    }

    fn n_cls_out(&self) -> usize {
        // SAFETY: read-only query on the live model.
        (unsafe { sys::llama_model_n_cls_out(self.model.as_ptr()) }) as usize
    }

    /// The `n` floats at the pointer `get` returns, if embeddings are on
    /// and it is not null. Callers pass the length llama.cpp sized that
    /// output with.
    fn embeddings_ptr(&self, n: usize, get: impl FnOnce(*mut sys::llama_context) -> *mut f32) -> Option<&[f32]> {
        if !self.embeddings {
            return None;
        }
        let p = get(self.raw());
        if p.is_null() {
            return None;
        }
        // SAFETY: llama.cpp returns a buffer of `n` floats (the caller
        // passes the size llama.cpp allocated for this kind of output:
        // `n_embd_out` per token or pooled sequence, `n_cls_out` per
        // rank-pooled sequence), valid until the next decode, which needs
        // `&mut self` and so cannot overlap the returned borrow.
        Some(unsafe { std::slice::from_raw_parts(p, n) })
    }

    fn check_seq(&self, seq: SeqId) -> Result<()> {
        if seq >= 0 && (seq as u32) < self.n_seq_max {
            Ok(())
        } else {
            Err(Error::SeqIdOutOfRange { seq_id: seq, n_seq_max: self.n_seq_max })
        }
    }

    /// Empty the whole KV cache.
    pub fn kv_clear(&mut self) {
        // SAFETY: exclusive access; clears metadata and data.
        unsafe { sys::llama_memory_clear(self.memory(), true) };
    }

    /// Remove positions `[p0, p1)` of `seq` (`None` = open end). Returns
    /// false if the memory cannot remove a partial range (recurrent models).
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`].
    pub fn kv_seq_rm(&mut self, seq: SeqId, p0: Option<Pos>, p1: Option<Pos>) -> Result<bool> {
        self.check_seq(seq)?;
        // SAFETY: exclusive access; seq in range; -1 means "open end".
        Ok(unsafe { sys::llama_memory_seq_rm(self.memory(), seq, p0.unwrap_or(-1), p1.unwrap_or(-1)) })
    }

    /// Make `dst` share `src`'s cells for positions `[p0, p1)`.
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`] for either sequence.
    pub fn kv_seq_cp(&mut self, src: SeqId, dst: SeqId, p0: Option<Pos>, p1: Option<Pos>) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        // SAFETY: exclusive access; both sequence ids in range.
        unsafe { sys::llama_memory_seq_cp(self.memory(), src, dst, p0.unwrap_or(-1), p1.unwrap_or(-1)) };
        Ok(())
    }

    /// Remove every sequence but `seq`.
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`].
    pub fn kv_seq_keep(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        // SAFETY: exclusive access; seq in range.
        unsafe { sys::llama_memory_seq_keep(self.memory(), seq) };
        Ok(())
    }

    /// Whether this context's memory can move positions
    /// ([`kv_seq_add`](Self::kv_seq_add)); recurrent models' cannot.
    pub fn can_shift(&self) -> bool {
        // SAFETY: a pure query on the live memory (`&self`: no decode runs).
        unsafe { sys::llama_memory_can_shift(self.memory()) }
    }

    /// Shift positions `[p0, p1)` of `seq` by `delta` (context shifting).
    /// Cells shifted below position 0 are removed, as in llama.cpp.
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`]; [`Error::InvalidParam`] when the model's
    /// memory cannot shift, or when a shifted position would leave the
    /// range of positions (`0..n_ctx_seq` upwards; llama.cpp adds `delta`
    /// to its `int32_t` positions unchecked, so an overflow there is
    /// undefined behaviour in C++).
    pub fn kv_seq_add(&mut self, seq: SeqId, p0: Option<Pos>, p1: Option<Pos>, delta: Pos) -> Result<()> {
        self.check_seq(seq)?;
        if !self.can_shift() {
            return Err(Error::InvalidParam { name: "delta", reason: "this model's memory cannot shift".into() });
        }
        if let (Some(lo), Some(hi)) = (self.kv_seq_pos_min(seq), self.kv_seq_pos_max(seq)) {
            // Every position llama.cpp may shift lies in [lo, hi]; after the
            // shift it must still be a position a sequence may hold (or
            // negative, which removes the cell). Checked in i64: no overflow.
            let (lo, hi, d) = (i64::from(lo), i64::from(hi), i64::from(delta));
            if hi + d >= i64::from(self.n_ctx_seq) || lo + d < -i64::from(self.n_ctx_seq) {
                return Err(Error::InvalidParam {
                    name: "delta",
                    reason: format!(
                        "shifting positions {lo}..={hi} by {delta} leaves the sequence's range 0..{}",
                        self.n_ctx_seq
                    ),
                });
            }
        }
        // SAFETY: exclusive access; seq in range; shifting is supported; every
        // position of `seq` plus `delta` stays within ±n_ctx_seq (checked
        // above), far from the `int32_t` limits.
        unsafe { sys::llama_memory_seq_add(self.memory(), seq, p0.unwrap_or(-1), p1.unwrap_or(-1), delta) };
        Ok(())
    }

    /// Highest position `seq` holds, or `None` when it is empty.
    pub fn kv_seq_pos_max(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: read-only query; seq in range.
        let p = unsafe { sys::llama_memory_seq_pos_max(self.memory(), seq) };
        (p >= 0).then_some(p)
    }

    /// Lowest position `seq` holds, or `None` when it is empty.
    pub fn kv_seq_pos_min(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: read-only query; seq in range.
        let p = unsafe { sys::llama_memory_seq_pos_min(self.memory(), seq) };
        (p >= 0).then_some(p)
    }

    /// Cells in use, counted as the positions each sequence spans.
    pub fn kv_cells_used(&self) -> u64 {
        (0..self.n_seq_max as SeqId)
            .filter_map(|s| Some((self.kv_seq_pos_max(s)? - self.kv_seq_pos_min(s)? + 1) as u64))
            .sum()
    }

    /// Sign and verify saved states with `key` from now on, instead of the
    /// random per-process key. Use it to restore states in a later run (or
    /// in another process) that holds the same key.
    pub fn set_state_key(&mut self, key: StateKey) {
        self.state_key = Some(key);
    }

    fn key(&self) -> Result<&StateKey> {
        match &self.state_key {
            Some(k) => Ok(k),
            None => StateKey::process(),
        }
    }

    /// The whole context state (KV cache, RNG, outputs) as bytes, signed
    /// with this context's [`StateKey`].
    ///
    /// # Errors
    /// [`Error::State`] if no key is set and the OS gives no randomness
    /// for the per-process key.
    pub fn state_bytes(&mut self) -> Result<Vec<u8>> {
        let key = self.key()?.clone();
        // SAFETY: exclusive access.
        let size = unsafe { sys::llama_state_get_size(self.raw()) };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has exactly the size llama.cpp asked for.
        let n = unsafe { sys::llama_state_get_data(self.raw(), buf.as_mut_ptr(), buf.len()) };
        buf.truncate(n);
        Ok(crate::state::seal(&key, self.model_fingerprint(), Kind::Context, &buf))
    }

    /// Restore a state from [`state_bytes`](Self::state_bytes) (decode the
    /// next token to get fresh logits afterwards). llama.cpp's restore
    /// trusts its input (a malformed state overflows its buffers), so only
    /// states whose HMAC verifies under this context's key, for the same
    /// model, are handed to it: by default, states written by this process.
    ///
    /// # Errors
    /// [`Error::State`] for anything that is not such a state, or that
    /// llama.cpp rejects; [`Error::Exception`] if llama.cpp throws.
    pub fn set_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let key = self.key()?.clone();
        let data = crate::state::open(&key, bytes, self.model_fingerprint(), Kind::Context)?;
        // Outputs of the saved decode are not tracked: decode again to get logits.
        self.outputs.clear();
        let mut n = 0;
        // SAFETY: exclusive access; `data` carries a valid tag under a key
        // only trusted writers hold, so it is a state this library produced
        // for this model (verified by `state::open`).
        let status = unsafe { sys::llrs_state_set_data(self.raw(), data.as_ptr(), data.len(), &mut n) };
        crate::ffi::guard(status, "llama_state_set_data")?;
        if n == 0 { Err(Error::State("llama.cpp rejected the state".into())) } else { Ok(()) }
    }

    /// The KV state of one sequence as bytes, signed like
    /// [`state_bytes`](Self::state_bytes).
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`]; [`Error::State`] as for `state_bytes`,
    /// or when llama.cpp cannot write the state; [`Error::Exception`] if
    /// llama.cpp throws.
    pub fn seq_state_bytes(&mut self, seq: SeqId) -> Result<Vec<u8>> {
        self.check_seq(seq)?;
        let key = self.key()?.clone();
        let mut buf = Vec::new();
        self.append_seq_data(seq, &mut buf)?;
        Ok(crate::state::seal(&key, self.model_fingerprint(), Kind::Seq, &buf))
    }

    /// Restore one sequence's state (from [`seq_state_bytes`](Self::seq_state_bytes),
    /// possibly of another sequence id) into `seq`, replacing what `seq`
    /// held; verified as in [`set_state_bytes`](Self::set_state_bytes).
    /// A state that does not verify leaves `seq` as it was; one that
    /// llama.cpp refuses (a context of another shape: cache types, number
    /// of sequences, too few cells) leaves `seq` empty.
    ///
    /// # Errors
    /// As [`set_state_bytes`](Self::set_state_bytes), and
    /// [`Error::SeqIdOutOfRange`].
    pub fn set_seq_state_bytes(&mut self, bytes: &[u8], seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        let key = self.key()?.clone();
        let data = crate::state::open(&key, bytes, self.model_fingerprint(), Kind::Seq)?;
        self.restore_seq_data(seq, data, None)
    }

    /// One sequence's KV state together with `tokens`, the tokens at its
    /// positions `0..tokens.len()`, signed like
    /// [`state_bytes`](Self::state_bytes): what a server needs to restore
    /// the sequence later and reuse it as a cached prefix. The tokens are
    /// covered by the tag, so they cannot be changed without the key.
    ///
    /// # Errors
    /// [`Error::SeqIdOutOfRange`]; [`Error::TokenOutOfVocab`];
    /// [`Error::InvalidParam`] (`tokens`) when `seq` does not hold exactly
    /// positions `0..tokens.len()`; otherwise as
    /// [`seq_state_bytes`](Self::seq_state_bytes).
    pub fn seq_state_with_tokens(&mut self, seq: SeqId, tokens: &[Token]) -> Result<Vec<u8>> {
        self.check_seq(seq)?;
        let n_vocab = self.model.vocab().n_tokens();
        if let Some(&token) = tokens.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
            return Err(Error::TokenOutOfVocab { token, n_vocab });
        }
        let span = self.kv_seq_pos_min(seq).zip(self.kv_seq_pos_max(seq));
        let holds = match span {
            None => tokens.is_empty(),
            Some((lo, hi)) => lo == 0 && usize::try_from(hi).is_ok_and(|hi| hi + 1 == tokens.len()),
        };
        if !holds {
            return Err(Error::InvalidParam {
                name: "tokens",
                reason: format!(
                    "{} tokens given, but sequence {seq} holds positions {}",
                    tokens.len(),
                    span.map_or("none".to_string(), |(lo, hi)| format!("{lo}..={hi}"))
                ),
            });
        }
        let key = self.key()?.clone();
        let mut buf = Vec::with_capacity(crate::state::tokens_prefix_len(tokens.len()));
        crate::state::pack_tokens(tokens, &mut buf);
        self.append_seq_data(seq, &mut buf)?;
        Ok(crate::state::seal(&key, self.model_fingerprint(), Kind::SeqTokens, &buf))
    }

    /// Restore a state from [`seq_state_with_tokens`](Self::seq_state_with_tokens)
    /// into `seq` (of any sequence id), replacing what `seq` held, and
    /// return its tokens: after it, `seq` holds exactly positions
    /// `0..tokens.len()`. Verified as in
    /// [`set_state_bytes`](Self::set_state_bytes); the token count is
    /// checked against this context's per-sequence size and the tokens
    /// against the vocabulary before llama.cpp sees anything. On an error
    /// `seq` is as it was (the state did not verify) or empty (llama.cpp
    /// refused it).
    ///
    /// # Errors
    /// As [`set_seq_state_bytes`](Self::set_seq_state_bytes).
    pub fn set_seq_state_with_tokens(&mut self, bytes: &[u8], seq: SeqId) -> Result<Vec<Token>> {
        self.check_seq(seq)?;
        let key = self.key()?.clone();
        let payload = crate::state::open(&key, bytes, self.model_fingerprint(), Kind::SeqTokens)?;
        let (tokens, data) = crate::state::unpack_tokens(payload, self.n_ctx_seq as usize)?;
        let n_vocab = self.model.vocab().n_tokens();
        if tokens.iter().any(|t| !(0..n_vocab).contains(t)) {
            return Err(Error::State("sequence state holds a token outside this model's vocabulary".into()));
        }
        self.restore_seq_data(seq, data, Some(tokens.len()))?;
        Ok(tokens)
    }

    /// Append llama.cpp's state of `seq` (in range) to `buf`.
    fn append_seq_data(&mut self, seq: SeqId, buf: &mut Vec<u8>) -> Result<()> {
        let mut size = 0;
        // SAFETY: exclusive access; seq in range (checked by the callers).
        let status = unsafe { sys::llrs_state_seq_get_size(self.raw(), seq, &mut size) };
        crate::ffi::guard(status, "llama_state_seq_get_size")?;
        let start = buf.len();
        buf.resize(start + size, 0);
        let mut n = 0;
        // SAFETY: `buf[start..]` is `size` writable bytes, the size llama.cpp
        // asked for; llama.cpp writes at most `size` bytes (it throws, caught
        // inside, rather than overflow); seq in range.
        let status = unsafe { sys::llrs_state_seq_get_data(self.raw(), buf[start..].as_mut_ptr(), size, seq, &mut n) };
        crate::ffi::guard(status, "llama_state_seq_get_data")?;
        // A sequence state always holds at least llama.cpp's magic and the
        // sequence id: 0 means llama.cpp failed (and logged why).
        if n == 0 || n > size {
            return Err(Error::State(format!("llama.cpp could not save sequence {seq}")));
        }
        buf.truncate(start + n);
        Ok(())
    }

    /// Hand authenticated sequence data to llama.cpp and check what it did:
    /// `seq` must end up within the per-sequence window, holding exactly
    /// positions `0..n` when `expect` is `Some(n)`.
    fn restore_seq_data(&mut self, seq: SeqId, data: &[u8], expect: Option<usize>) -> Result<()> {
        // llama.cpp's magic, the source sequence id and the stream count.
        if data.len() < 12 {
            return Err(Error::State("sequence state is too short".into()));
        }
        // llama.cpp leaves the destination as it is when the state has no
        // cells: empty it first, so that a restore always replaces.
        self.kv_seq_rm(seq, None, None)?;
        let mut n = 0;
        // SAFETY: exclusive access; seq in range; `data` carries a valid tag
        // under a key only trusted writers hold, so it is a state this
        // library produced for this model (verified by `state::open`);
        // llama.cpp checks it against this context's shape and reports a
        // mismatch as 0.
        let status = unsafe { sys::llrs_state_seq_set_data(self.raw(), data.as_ptr(), data.len(), seq, &mut n) };
        let result = crate::ffi::guard(status, "llama_state_seq_set_data").and_then(|()| {
            if n == 0 {
                return Err(Error::State(
                    "llama.cpp rejected the sequence state (saved from a context of another shape, or it does not \
                     fit)"
                        .into(),
                ));
            }
            let span = self.kv_seq_pos_min(seq).zip(self.kv_seq_pos_max(seq));
            let fits = span.is_none_or(|(_, hi)| (hi as u32) < self.n_ctx_seq);
            let exact = expect.is_none_or(|len| match span {
                None => len == 0,
                Some((lo, hi)) => lo == 0 && usize::try_from(hi).is_ok_and(|hi| hi + 1 == len),
            });
            if !fits {
                Err(Error::State(format!("sequence state has positions past this context's {} cells", self.n_ctx_seq)))
            } else if !exact {
                Err(Error::State("sequence state does not hold the positions of its tokens".into()))
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            // Whatever llama.cpp wrote is not a state we vouch for.
            self.kv_seq_rm(seq, None, None)?;
        }
        result
    }

    /// Save the whole state to a file (signed with this context's key).
    ///
    /// # Errors
    /// As [`state_bytes`](Self::state_bytes), and [`Error::Io`].
    pub fn save_state_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.state_bytes()?;
        std::fs::write(path, bytes)?;
        Ok(())
    }

    /// Restore the whole state from a file written by
    /// [`save_state_file`](Self::save_state_file) under the same key (by
    /// default: in this process).
    ///
    /// # Errors
    /// As [`set_state_bytes`](Self::set_state_bytes), and [`Error::Io`].
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = std::fs::read(path)?;
        self.set_state_bytes(&bytes)
    }

    fn model_fingerprint(&self) -> u64 {
        let m = &self.model;
        (m.n_params() ^ (u64::from(m.n_embd()) << 32) ^ u64::from(m.n_layer())).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_init_from_model and is freed only
        // here, before `abort` (a field dropped after this body) and before
        // the model Arc is released.
        unsafe { sys::llama_free(self.ptr.as_ptr()) };
    }
}

/// Most sequences one context can hold (llama.cpp's `LLAMA_MAX_SEQ`).
pub(crate) fn max_parallel_sequences() -> u32 {
    // SAFETY: a pure query with no arguments.
    (unsafe { sys::llama_max_parallel_sequences() }) as u32
}

/// The ggml element type of a KV cache type.
fn ggml_type(t: KvCacheType) -> sys::ggml_type {
    match t {
        KvCacheType::F32 => sys::GGML_TYPE_F32,
        KvCacheType::F16 => sys::GGML_TYPE_F16,
        KvCacheType::Bf16 => sys::GGML_TYPE_BF16,
        KvCacheType::Q8_0 => sys::GGML_TYPE_Q8_0,
        KvCacheType::Q4_0 => sys::GGML_TYPE_Q4_0,
        KvCacheType::Q4_1 => sys::GGML_TYPE_Q4_1,
        KvCacheType::Iq4Nl => sys::GGML_TYPE_IQ4_NL,
        KvCacheType::Q5_0 => sys::GGML_TYPE_Q5_0,
        KvCacheType::Q5_1 => sys::GGML_TYPE_Q5_1,
    }
}
