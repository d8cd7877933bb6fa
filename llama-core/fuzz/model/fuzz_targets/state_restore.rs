//! The body is `llama_core_fuzz_model::state_restore` (`src/targets/state_restore.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz_model::state_restore(data));
