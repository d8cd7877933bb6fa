//! The body is `llama_core_fuzz_model::hub_inputs` (`src/targets/hub_inputs.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz_model::hub_inputs(data));
