//! Any byte string: `validate_bytes` returns (Ok or a typed error), never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama_core_fuzz::gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = gguf::validate_bytes(data) {
        // What passed must be self-consistent.
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
});
