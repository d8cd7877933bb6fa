//! The narrow waist between the scheduler and a model: everything the engine
//! needs from llama.cpp, and nothing more. [`LlamaInference`](crate::LlamaInference)
//! implements it over llama-core; a deterministic fake (feature `fake`)
//! implements it for property tests.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use llama_core::{Pos, SamplingParams, SeqId, Token};

/// One sequence's share of a decode step: `tokens` at positions
/// `pos, pos + 1, ...` of sequence `seq`.
#[derive(Clone, Copy, Debug)]
pub struct BatchEntry<'a> {
    /// The sequence (slot) id.
    pub seq: SeqId,
    /// Position of `tokens[0]`; it continues what the sequence's KV holds.
    pub pos: Pos,
    /// The tokens (never empty).
    pub tokens: &'a [Token],
    /// Compute logits for the last token (so that it can be sampled).
    pub logits: bool,
}

/// Why a decode step failed. After any failure the KV cells the step wrote
/// are unspecified: the scheduler removes them before going on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The abort flag stopped the step part-way.
    Aborted,
    /// No room in the KV cache for the batch.
    NoKvSlot,
    /// Any other failure.
    Failed(String),
}

/// A sampled token, with log-probabilities when they were asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: Token,
    /// Its log-probability (when `n_probs > 0`).
    pub logprob: Option<f32>,
    /// The most likely tokens and their log-probabilities, best first.
    pub top: Vec<(Token, f32)>,
}

/// Why [`Inference::sample`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// The request's grammar (or JSON schema) allows no token of the model
    /// at this point of the output: the request can never be completed. The
    /// request's fault, not the engine's.
    #[error("{0}")]
    Constraint(String),
    /// Anything else: a bug or a llama.cpp failure.
    #[error("{0}")]
    Internal(String),
}

impl From<String> for SampleError {
    fn from(message: String) -> Self {
        SampleError::Internal(message)
    }
}

impl From<&str> for SampleError {
    fn from(message: &str) -> Self {
        SampleError::Internal(message.to_owned())
    }
}

/// What the caller's thread needs in [`Engine::submit`](crate::Engine::submit):
/// tokenization and request checks. Shared by reference across threads.
pub trait Tokenizer: Send + Sync + 'static {
    /// Tokenize prompt text (with BOS where the model wants it, special
    /// tokens parsed).
    fn tokenize(&self, text: &str) -> Result<Vec<Token>, String>;
    /// Vocabulary size: valid tokens are `0..n_vocab`.
    fn n_vocab(&self) -> i32;
    /// Check sampling parameters (including a grammar) before queuing, so
    /// that bad ones are refused at submit time.
    fn check_sampling(&self, params: &SamplingParams) -> Result<(), String>;
}

/// What the engine thread needs from a model context. Exactly one thread
/// uses an `Inference` at a time.
pub trait Inference: Send + 'static {
    /// The caller-side half.
    type Tokenizer: Tokenizer;

    /// KV cells one sequence may use.
    fn n_ctx_seq(&self) -> u32;

    /// The flag that stops a running [`decode`](Self::decode) with
    /// [`DecodeError::Aborted`]; set from any thread, cleared by the engine.
    fn abort_flag(&self) -> Arc<AtomicBool>;

    /// Decode every entry in one step. Entries with `logits` produce one
    /// output each, addressed by the entry's index in `batch`.
    fn decode(&mut self, batch: &[BatchEntry<'_>]) -> Result<(), DecodeError>;

    /// Install a fresh sampler for `seq` (a new request in that slot). The
    /// prompt's tokens are its history: repetition, frequency and presence
    /// penalties and DRY count them, as llama.cpp's server does.
    fn start_sequence(&mut self, seq: SeqId, params: &SamplingParams, prompt: &[Token]) -> Result<(), String>;

    /// Sample (and accept) the next token of `seq` from the output of entry
    /// `entry` of the last successful decode, with the `n_probs` most likely
    /// alternatives when `n_probs > 0`.
    fn sample(&mut self, seq: SeqId, entry: usize, n_probs: u32) -> Result<Sampled, SampleError>;

    /// The raw bytes of a token's text (may be part of a UTF-8 character).
    fn token_bytes(&self, token: Token) -> Vec<u8>;

    /// Whether `token` ends generation.
    fn is_eog(&self, token: Token) -> bool;

    /// Remove positions `from..` of `seq` from the KV cache. `false` if the
    /// cache cannot remove a partial range (then the caller clears the whole
    /// sequence with `from = 0`, which always succeeds).
    fn kv_seq_rm(&mut self, seq: SeqId, from: Pos) -> bool;

    /// KV cells in use, all sequences together.
    fn kv_cells_used(&self) -> u64;

    /// The pooled, unnormalized embedding of `tokens` (at most `n_ubatch`
    /// tokens). Must leave the KV of the generation slots untouched.
    fn embed(&mut self, tokens: &[Token]) -> Result<Vec<f32>, String>;
}
