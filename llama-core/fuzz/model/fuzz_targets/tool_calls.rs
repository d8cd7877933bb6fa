//! The body is `llama_core_fuzz_model::tool_calls` (`src/targets/tool_calls.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz_model::tool_calls(data));
