//! Fuzz targets that need llama.cpp and the real model (cargo-fuzz /
//! libFuzzer): tokenization with special tokens, state restore, and whole
//! server requests; and llama-server's parsers that need no model but link
//! llama.cpp through it (the hub's inputs, the server's flags, tool calls in
//! model output, the tools' grammar). The pure parsers are in the crate one directory up.
//!
//! The body of every target is a plain function in [`targets`], so that it
//! can be replayed without libFuzzer: llama-core's and llama-server's
//! `tests/fuzz_corpus_replay.rs` include the same files by `#[path]` and run
//! them over the committed corpora.
#![forbid(unsafe_code)]

/// The fuzz targets' bodies, one function per target.
pub mod targets {
    pub mod hub_inputs;
    pub mod server_flags;
    pub mod server_request;
    pub mod state_restore;
    pub mod tokenize_special;
    pub mod tool_calls;
    pub mod tool_grammar;
}

pub use targets::hub_inputs::hub_inputs;
pub use targets::server_flags::server_flags;
pub use targets::server_request::server_request;
pub use targets::state_restore::state_restore;
pub use targets::tokenize_special::tokenize_special;
pub use targets::tool_calls::tool_calls;
pub use targets::tool_grammar::tool_grammar;
