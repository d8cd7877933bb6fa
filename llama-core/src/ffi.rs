//! Small helpers shared by the safe wrappers: C strings and buffers that
//! llama.cpp fills with a "size needed" protocol.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;

use llama_sys as sys;

use crate::{Error, Result};

/// Turn the status of an `llrs_*` shim call into a `Result`: the shim
/// catches every C++ exception llama.cpp throws and reports it as
/// `LLRS_EXCEPTION`, with the message kept per thread.
pub(crate) fn guard(status: c_int, call: &'static str) -> Result<()> {
    if status == sys::LLRS_OK as c_int {
        return Ok(());
    }
    // SAFETY: returns a pointer to a thread-local, NUL-terminated string
    // that stays valid until the next llrs_* call on this thread; we copy
    // it before making one.
    let p = unsafe { sys::llrs_last_error() };
    let message = if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    Err(Error::Exception { call, message })
}

/// A path as a C string (bytes on Unix, so non-UTF-8 paths work).
pub(crate) fn path_to_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    CString::new(bytes).map_err(|_| Error::InvalidParam { name: "path", reason: "contains a NUL byte".into() })
}

/// Call `fill(buf, len)` which returns the length it needs (possibly more
/// than `len`, or negative on error) and retry once with a big enough buffer.
pub(crate) fn fill_string(mut fill: impl FnMut(*mut c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let mut n = fill(buf.as_mut_ptr().cast(), buf.len());
    if n < 0 {
        return None;
    }
    if n as usize >= buf.len() {
        buf = vec![0u8; n as usize + 1];
        n = fill(buf.as_mut_ptr().cast(), buf.len());
        if n < 0 || n as usize >= buf.len() {
            return None;
        }
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Model, ModelParams};

    #[test]
    fn a_thrown_exception_becomes_a_typed_error() {
        // SAFETY: takes no arguments; the shim catches what it throws.
        let r = guard(unsafe { sys::llrs_test_throw() }, "llrs_test_throw");
        assert!(matches!(&r, Err(Error::Exception { message, .. }) if message == "llrs test exception"), "{r:?}");
        // SAFETY: as above; a successful call clears the message.
        assert!(guard(unsafe { sys::llrs_test_throw() }, "x").is_err());
    }

    /// llama.cpp's grammar sampler throws `std::runtime_error` when it is
    /// made to accept a token its grammar rejects (`Sampler` never does
    /// that; here the raw sampler is driven directly). Through the shim the
    /// exception is a typed error and the process lives on.
    #[test]
    fn grammar_accept_of_a_rejected_token_throws_and_is_caught() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let model = Arc::new(Model::load(&path, &ModelParams::default()).expect("the default model (make setup)"));
        let b = model.vocab().tokenize("b", false, false).expect("tokenizes");
        // SAFETY: the model is live for the whole test.
        let vocab = unsafe { sys::llama_model_get_vocab(model.as_ptr()) };
        let mut smpl: *mut sys::llama_sampler = std::ptr::null_mut();
        // SAFETY: live vocab, valid C strings, `smpl` is written on success.
        let r = guard(
            unsafe { sys::llrs_sampler_init_grammar(vocab, c"root ::= \"a\"".as_ptr(), c"root".as_ptr(), &mut smpl) },
            "init",
        );
        assert!(r.is_ok() && !smpl.is_null(), "{r:?}");
        // SAFETY: live sampler; `b[0]` is in the vocabulary. The grammar
        // rejects it, so llama.cpp throws, and the shim catches it.
        let r = guard(unsafe { sys::llrs_sampler_accept(smpl, b[0]) }, "llama_sampler_accept");
        // SAFETY: the sampler came from llama_sampler_init_grammar; freed once.
        unsafe { sys::llama_sampler_free(smpl) };
        match r {
            Err(Error::Exception { call: "llama_sampler_accept", message }) => {
                assert!(message.contains("grammar"), "{message}")
            }
            other => panic!("expected a caught exception, got {other:?}"),
        }
    }
}
