//! The committed corpus of the `server_request` fuzz target
//! (`llama-core/fuzz/corpus/server_request/`) and the inputs of its fixed
//! findings (`llama-core/fuzz/regressions/server_request/`), replayed
//! through the same function cargo-fuzz runs (compiled into this test by
//! `#[path]`): every body to every endpoint of the router, with the real
//! model. Seconds in a debug build; no nightly, no libFuzzer. The other
//! targets are replayed in `llama-core/tests/fuzz_corpus_replay.rs`.

use std::path::Path;

#[path = "../../llama-core/fuzz/src/replay.rs"]
mod replay;

#[path = "../../llama-core/fuzz/model/src/targets/server_request.rs"]
mod server_request;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let n = replay::replay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama-core/fuzz"), target, run);
    eprintln!("{target}: {n} inputs");
    n
}

#[test]
fn server_request_corpus() {
    assert!(replay("server_request", server_request::server_request) > 0);
}
