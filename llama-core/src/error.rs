//! The one error type of llama-core.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::{Pos, SeqId, Token};

/// Everything that can go wrong in llama-core. Bad input is always one of
/// these, never an abort of the process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model path does not exist.
    #[error("model file not found: {}", path.display())]
    ModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The file is not a GGUF model we are willing to hand to llama.cpp.
    #[error("invalid model file: {0}")]
    InvalidModel(#[from] GgufError),
    /// llama.cpp refused to load a file that passed our validation.
    #[error("llama.cpp failed to load the model {}", path.display())]
    ModelLoad {
        /// The path that was given.
        path: PathBuf,
    },
    /// The file is not a LoRA adapter we are willing to hand to llama.cpp
    /// (missing, not GGUF, truncated, not an adapter, unusable tensors).
    #[error("invalid LoRA adapter: {0}")]
    InvalidAdapter(GgufError),
    /// A valid LoRA adapter made for another model: another architecture,
    /// a tensor the model does not have, or other dimensions.
    #[error("LoRA adapter {} does not fit the model: {reason}", path.display())]
    AdapterMismatch {
        /// The adapter's path.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// llama.cpp refused to load an adapter that passed our checks.
    #[error("llama.cpp failed to load the LoRA adapter {}", path.display())]
    AdapterLoad {
        /// The adapter's path.
        path: PathBuf,
    },
    /// The progress callback asked to stop loading.
    #[error("model loading was cancelled")]
    LoadCancelled,
    /// A context could not be created (out of memory, bad parameters).
    #[error("failed to create a context: {0}")]
    ContextCreate(String),
    /// `llama_decode`/`llama_encode` returned a failure code.
    #[error("decode failed (llama.cpp code {code}): {reason}")]
    Decode {
        /// The code llama.cpp returned.
        code: i32,
        /// What that code means.
        reason: &'static str,
    },
    /// The abort flag stopped a decode part-way; the KV state of the
    /// sequences in that batch is unspecified and should be cleared.
    #[error("decode aborted")]
    Aborted,
    /// More tokens than the batch was created for.
    #[error("batch is full ({capacity} tokens)")]
    BatchFull {
        /// The batch capacity.
        capacity: usize,
    },
    /// An empty batch was decoded.
    #[error("batch is empty")]
    EmptyBatch,
    /// A token id that the vocabulary does not have.
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfVocab {
        /// The offending id.
        token: Token,
        /// The vocabulary size.
        n_vocab: i32,
    },
    /// A sequence id outside `0..n_seq_max`.
    #[error("sequence id {seq_id} is outside 0..{n_seq_max}")]
    SeqIdOutOfRange {
        /// The offending id.
        seq_id: SeqId,
        /// The context's `n_seq_max`.
        n_seq_max: u32,
    },
    /// Positions of one sequence must follow on from what it already holds.
    #[error("sequence {seq_id}: position {pos} does not follow {expected}")]
    PositionOutOfOrder {
        /// The sequence.
        seq_id: SeqId,
        /// The position given.
        pos: Pos,
        /// The position that was expected.
        expected: Pos,
    },
    /// The tokens would not fit in the sequence's context window.
    #[error("context overflow: position {pos} is past the context size {n_ctx}")]
    ContextOverflow {
        /// The first position that does not fit.
        pos: Pos,
        /// The per-sequence context size.
        n_ctx: u32,
    },
    /// Logits or embeddings were asked for an index that has none.
    #[error("no output at batch index {0} (was it added with logits = true?)")]
    NoOutput(usize),
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Tokenization failed (for example, text too long).
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// The model has no chat template and none was given (for callers that
    /// insist on one: [`ChatTemplate::for_model`](crate::ChatTemplate::for_model)
    /// falls back to ChatML instead).
    #[error("the model has no chat template; pass one explicitly")]
    NoChatTemplate,
    /// A chat template failed to compile or render.
    #[error("chat template error: {0}")]
    Template(String),
    /// A GBNF grammar did not parse.
    #[error("invalid grammar: {0}")]
    Grammar(String),
    /// llama.cpp threw a C++ exception (out of memory, a malformed
    /// tokenizer table, an internal check). It was caught at the FFI
    /// boundary (llama-sys's `llrs_*` shim) before it could reach Rust;
    /// the object the call was made on may be in a partial state.
    #[error("llama.cpp failed in {call}: {message}")]
    Exception {
        /// The llama.cpp function that threw.
        call: &'static str,
        /// The exception's message.
        message: String,
    },
    /// State save/restore failed.
    #[error("state error: {0}")]
    State(String),
    /// An I/O error while reading or writing a file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with llama-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
