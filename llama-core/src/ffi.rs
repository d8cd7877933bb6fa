//! Small helpers shared by the safe wrappers: C strings and buffers that
//! llama.cpp fills with a "size needed" protocol.

use std::ffi::{CString, c_char};
use std::path::Path;

use crate::{Error, Result};

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
