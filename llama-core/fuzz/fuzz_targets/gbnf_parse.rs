//! The body is `llama_core_fuzz::gbnf_parse` (`src/targets/gbnf_parse.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| llama_core_fuzz::gbnf_parse(data));
