//! Process-wide llama.cpp initialisation and log routing.

use std::ffi::{CStr, c_char, c_void};
use std::sync::OnceLock;

use llama_sys as sys;

/// Process-wide llama.cpp backend.
///
/// [`Backend::init`] is idempotent and thread-safe: the first call
/// initialises ggml/llama.cpp and routes their logs to `tracing`; later calls
/// return the same handle. Every constructor in this crate calls it, so
/// users only need it to force initialisation early. The backend lives for
/// the rest of the process: `llama_backend_free` is a no-op for the CPU
/// backend and freeing it while a model is alive would be unsound.
#[derive(Debug)]
pub struct Backend {
    _private: (),
}

static BACKEND: OnceLock<Backend> = OnceLock::new();

impl Backend {
    /// Initialise llama.cpp once for the whole process and return the handle.
    pub fn init() -> &'static Backend {
        BACKEND.get_or_init(|| {
            // SAFETY: `log_callback` is a plain `extern "C"` function that
            // never unwinds (it catches panics) and needs no user data.
            unsafe { sys::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
            // SAFETY: called exactly once (inside OnceLock) before any other
            // llama.cpp use in this crate.
            unsafe { sys::llama_backend_init() };
            Backend { _private: () }
        })
    }

    /// The llama.cpp system info string (SIMD features the build uses).
    ///
    /// Computed once per process: `llama_print_system_info` rebuilds a
    /// function-local `static std::string` on every call, so two threads
    /// calling it at once would race on that string (and a pointer from one
    /// call dangles after the next). The `OnceLock` makes this the only call.
    pub fn system_info(&self) -> String {
        static INFO: OnceLock<String> = OnceLock::new();
        INFO.get_or_init(|| {
            // SAFETY: called at most once in the process (inside the
            // OnceLock, which runs its initialiser on one thread while
            // others wait), and nothing else in llama.rs calls it, so no
            // other call can rebuild the static string while we copy it.
            let p = unsafe { sys::llama_print_system_info() };
            if p.is_null() {
                return String::new();
            }
            // SAFETY: non-null, NUL-terminated, and not rebuilt until a
            // later call, which never happens (see above).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        })
        .clone()
    }

    /// Whether this build can offload layers to a GPU.
    pub fn supports_gpu_offload(&self) -> bool {
        // SAFETY: a pure query with no arguments.
        unsafe { sys::llama_supports_gpu_offload() }
    }

    /// The pinned llama.cpp version this crate was built from.
    pub fn llama_cpp_version(&self) -> &'static str {
        sys::LLAMA_CPP_VERSION
    }
}

/// Forwards llama.cpp/ggml log lines to `tracing` under the target
/// `llama_cpp`: errors and warnings as such, everything else at debug, so the
/// noise is hidden unless `RUST_LOG=llama_cpp=debug` (or the CLI's `-v`).
extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // A panic must never unwind into C (a tracing subscriber could panic).
    let _ = std::panic::catch_unwind(|| forward(level, text));
}

fn forward(level: sys::ggml_log_level, text: *const c_char) {
    // SAFETY: llama.cpp passes a valid NUL-terminated string for the
    // duration of the call; `text` was checked for null by the caller.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() || text == "." {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "llama_cpp", "{text}"),
        sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama_cpp", "{text}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama_cpp", "{text}"),
        _ => tracing::trace!(target: "llama_cpp", "{text}"),
    }
}
