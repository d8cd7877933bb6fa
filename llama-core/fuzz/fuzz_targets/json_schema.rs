//! The body is `llama_core_fuzz::json_schema` (`src/targets/json_schema.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz::json_schema(data));
