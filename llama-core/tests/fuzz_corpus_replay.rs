//! The committed fuzz corpora (`fuzz/corpus/<target>/`) and the inputs of
//! fixed fuzz findings (`fuzz/regressions/<target>/`), replayed through the
//! same target functions cargo-fuzz runs: the files under `fuzz/src/targets/`
//! and `fuzz/model/src/targets/` are compiled into this test by `#[path]`.
//! Seconds in a debug build; no nightly, no libFuzzer.

use std::path::Path;

#[path = "../fuzz/src/replay.rs"]
mod replay;

/// What the pure targets call `crate::gguf` (the fuzz crate compiles the source).
mod gguf {
    pub use llama_core::gguf::*;
}

/// What the pure targets call `crate::chat`.
mod chat {
    pub use llama_core::{ChatMessage, ChatTemplate};
}

/// What the pure targets call `crate::gbnf` and `crate::json_schema`.
use llama_core::{gbnf, json_schema};

#[path = "../fuzz/src/targets/chat_template.rs"]
mod chat_template;
#[path = "../fuzz/src/targets/gbnf_parse.rs"]
mod gbnf_parse;
#[path = "../fuzz/src/targets/gguf_adapter.rs"]
mod gguf_adapter;
#[path = "../fuzz/src/targets/gguf_validate.rs"]
mod gguf_validate;
#[path = "../fuzz/src/targets/json_schema.rs"]
mod json_schema_target;
#[path = "../fuzz/model/src/targets/state_restore.rs"]
mod state_restore;
#[path = "../fuzz/model/src/targets/tokenize_special.rs"]
mod tokenize_special;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let n = replay::replay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"), target, run);
    eprintln!("{target}: {n} inputs");
    n
}

#[test]
fn gguf_validate_corpus() {
    assert!(replay("gguf_validate", gguf_validate::gguf_validate) > 0);
}

#[test]
fn gguf_adapter_corpus() {
    assert!(replay("gguf_adapter", gguf_adapter::gguf_adapter) > 0);
}

#[test]
fn json_schema_corpus() {
    assert!(replay("json_schema", json_schema_target::json_schema) > 0);
}

#[test]
fn gbnf_parse_corpus() {
    assert!(replay("gbnf_parse", gbnf_parse::gbnf_parse) > 0);
}

#[test]
fn chat_template_corpus() {
    assert!(replay("chat_template", chat_template::chat_template) > 0);
}

#[test]
fn tokenize_special_corpus() {
    assert!(replay("tokenize_special", tokenize_special::tokenize_special) > 0);
}

#[test]
fn state_restore_corpus() {
    assert!(replay("state_restore", state_restore::state_restore) > 0);
}
