//! The body is `llama_core_fuzz_model::tokenize_special` (`src/targets/tokenize_special.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz_model::tokenize_special(data));
