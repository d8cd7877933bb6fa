//! The committed corpora of the fuzz targets that need llama-server
//! (`llama-core/fuzz/corpus/<target>/`: server_request, hub_inputs,
//! server_flags, tool_calls, tool_grammar) and the inputs of their fixed
//! findings (`llama-core/fuzz/regressions/<target>/`), replayed through the
//! same functions cargo-fuzz runs (compiled into this test by `#[path]`):
//! every body to every endpoint of the router, with the real model; the
//! hub's inputs; server argv vectors; model output read for tool calls;
//! tools turned into grammars. Seconds in a debug build; no nightly, no
//! libFuzzer. The other targets are replayed in
//! `llama-core/tests/fuzz_corpus_replay.rs`.

use std::path::Path;

#[path = "../../llama-core/fuzz/src/replay.rs"]
mod replay;

#[path = "../../llama-core/fuzz/model/src/targets/hub_inputs.rs"]
mod hub_inputs;
#[path = "../../llama-core/fuzz/model/src/targets/server_flags.rs"]
mod server_flags;
#[path = "../../llama-core/fuzz/model/src/targets/server_request.rs"]
mod server_request;
#[path = "../../llama-core/fuzz/model/src/targets/tool_calls.rs"]
mod tool_calls;
#[path = "../../llama-core/fuzz/model/src/targets/tool_grammar.rs"]
mod tool_grammar;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let n = replay::replay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama-core/fuzz"), target, run);
    eprintln!("{target}: {n} inputs");
    n
}

#[test]
fn server_request_corpus() {
    assert!(replay("server_request", server_request::server_request) > 0);
}

#[test]
fn hub_inputs_corpus() {
    assert!(replay("hub_inputs", hub_inputs::hub_inputs) > 0);
}

#[test]
fn server_flags_corpus() {
    assert!(replay("server_flags", server_flags::server_flags) > 0);
}

#[test]
fn tool_calls_corpus() {
    assert!(replay("tool_calls", tool_calls::tool_calls) > 0);
}

#[test]
fn tool_grammar_corpus() {
    assert!(replay("tool_grammar", tool_grammar::tool_grammar) > 0);
}
