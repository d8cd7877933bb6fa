//! The body is `llama_core_fuzz_model::server_request` (`src/targets/server_request.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz_model::server_request(data));
