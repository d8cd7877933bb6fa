//! Any byte string: `validate_adapter_bytes` returns (Ok or a typed error),
//! never panics; what passes is an adapter llama.cpp's loader can read.
//! The body is `llama_core_fuzz::gguf_adapter` (`src/targets/gguf_adapter.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz::gguf_adapter(data));
