//! Any byte string: `validate_bytes` returns (Ok or a typed error), never panics.
//! The body is `llama_core_fuzz::gguf_validate` (`src/targets/gguf_validate.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz::gguf_validate(data));
