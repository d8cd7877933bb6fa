//! Fuzz target `gguf_validate`: any byte string given to the GGUF validator
//! gives `Ok` or a typed error, never a panic; what passes is self-consistent.
//!
//! Compiled into the fuzz crate and into llama-core's corpus-replay test; the
//! includer provides `crate::gguf` (llama-core's `gguf` module).

/// Run one input.
pub fn gguf_validate(data: &[u8]) {
    if let Ok(info) = crate::gguf::validate_bytes(data) {
        assert!(info.version == 2 || info.version == 3);
        assert!(info.alignment.is_power_of_two());
        assert!(info.data_offset <= info.file_size || info.tensors.is_empty());
        for t in &info.tensors {
            assert!(t.offset % info.alignment == 0);
            assert!(info.data_offset + t.offset + t.n_bytes <= info.file_size);
            assert!(!t.dims.is_empty() && t.dims.len() <= 4 && t.dims.iter().all(|&d| d > 0));
        }
        let _ = info.metadata.iter().map(|(k, v)| format!("{k} = {v}")).count();
    }
}
