//! The narrow waist between the scheduler and a model: everything the engine
//! needs from llama.cpp, and nothing more. [`LlamaInference`](crate::LlamaInference)
//! implements it over llama-core; a deterministic fake (feature `fake`)
//! implements it for property tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use llama_core::{ChatTemplate, FimTokens, Pos, SamplingParams, SeqId, TemplateSpec, Token};

use crate::lora::LoraAdapterInfo;
use crate::request::CoreError;
use crate::rerank::RerankFormat;

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
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The abort flag stopped the step part-way.
    Aborted,
    /// No room in the KV cache for the batch.
    NoKvSlot,
    /// Any other failure.
    Failed(CoreError),
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
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// The request's grammar (or JSON schema) allows no token of the model
    /// at this point of the output: the request can never be completed. The
    /// request's fault, not the engine's.
    #[error("{0}")]
    Constraint(String),
    /// llama.cpp failed (or a sampler refused a token).
    #[error(transparent)]
    Core(CoreError),
    /// The scheduler asked for something the backend does not have (a bug).
    #[error("{0}")]
    Internal(String),
}

impl From<llama_core::Error> for SampleError {
    fn from(e: llama_core::Error) -> Self {
        match e {
            // The grammar allows no token here: the request's constraint, not a fault of ours.
            llama_core::Error::Grammar(reason) => SampleError::Constraint(reason),
            other => SampleError::Core(other.into()),
        }
    }
}

/// What a model offers besides inference, shared by reference across
/// threads: tokenization, token text, the chat template and facts about
/// the model. [`LlamaModel`](crate::LlamaModel) implements it over
/// llama-core (usable alone, without an engine);
/// [`Engine::model`](crate::Engine::model) gives the one an engine runs.
/// Object safe, so that servers can hold `&dyn ModelFacade`.
///
/// Errors are llama-core's, wrapped in [`CoreError`].
pub trait ModelFacade: Send + Sync + 'static {
    /// Facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Tokenize `text`. `add_special`: BOS (and EOS) where the model wants
    /// them; `parse_special`: control-token text becomes those tokens.
    ///
    /// # Errors
    /// [`llama_core::Error::Tokenize`] when the text is too long or
    /// llama.cpp refuses it.
    fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>, CoreError>;

    /// The text of `tokens`. `remove_special`: drop BOS/EOS;
    /// `unparse_special`: render control tokens as their text.
    ///
    /// # Errors
    /// [`llama_core::Error::TokenOutOfVocab`] for a token outside the vocabulary.
    fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String, CoreError>;

    /// How a token is shown on its own (`/tokenize` pieces, log-probability
    /// listings): its bytes with control tokens rendered as their text. The
    /// one rule for every listing; generated text uses
    /// [`Inference::token_bytes`], where control tokens render as nothing.
    fn token_piece(&self, token: Token) -> Vec<u8>;

    /// The chat template `spec` asks for (see [`ChatTemplate::select`]):
    /// by default the model's own, else ChatML.
    ///
    /// # Errors
    /// [`llama_core::Error::Template`] when the template does not compile
    /// or names no built-in format.
    fn chat_template(&self, spec: TemplateSpec<'_>) -> Result<ChatTemplate, CoreError>;
}

/// The caller-side half of an [`Inference`] backend: the [`ModelFacade`]
/// plus building each request's sampler on the submitting thread.
pub trait ModelBackend: ModelFacade {
    /// A sampler built (and validated) for one request; the engine thread
    /// installs it with [`Inference::start_sequence`].
    type Sampler: Send + std::fmt::Debug + 'static;

    /// Validate `params` and build the request's sampler (a grammar is
    /// parsed here, once). Look-backs of `-1` mean the engine's
    /// per-sequence context.
    ///
    /// # Errors
    /// [`llama_core::Error::InvalidParam`] naming a field out of range,
    /// [`llama_core::Error::Grammar`] for a grammar that does not parse.
    fn prepare_sampling(&self, params: &SamplingParams) -> Result<Self::Sampler, CoreError>;
}

/// The sampler type of a backend.
pub(crate) type SamplerOf<I> = <<I as Inference>::Model as ModelBackend>::Sampler;

/// Facts about a model, for listings (`/v1/models`, `/props`, `llama info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// llama.cpp's one-line description (type, size, quantization).
    pub description: String,
    /// Vocabulary size: valid tokens are `0..n_vocab`.
    pub n_vocab: i32,
    /// Context length it was trained with.
    pub n_ctx_train: u32,
    /// Embedding width.
    pub n_embd: u32,
    /// Parameter count.
    pub n_params: u64,
    /// Size of its tensors in bytes.
    pub size_bytes: u64,
    /// Its fill-in-the-middle tokens (code models).
    pub fim: FimTokens,
    /// How it lays out a query and a document for [`Engine::rerank`](crate::Engine::rerank).
    pub rerank: RerankFormat,
    /// Its attention is not causal (`{arch}.attention.causal = false`:
    /// BERT-style embedding and reranking models): it cannot generate
    /// text, and the engine refuses requests for it
    /// ([`Rejected::CannotGenerate`](crate::Rejected::CannotGenerate)).
    pub encoder_only: bool,
}

/// What the engine thread needs from a model context. Exactly one thread
/// uses an `Inference` at a time.
pub trait Inference: Send + 'static {
    /// The caller-side half: tokenization, samplers, model facts.
    type Model: ModelBackend;

    /// KV cells one sequence may use.
    fn n_ctx_seq(&self) -> u32;

    /// The flag that stops a running [`decode`](Self::decode) with
    /// [`DecodeError::Aborted`]; set from any thread, cleared by the engine.
    fn abort_flag(&self) -> Arc<AtomicBool>;

    /// Decode every entry in one step. Entries with `logits` produce one
    /// output each, addressed by the entry's index in `batch`.
    ///
    /// # Errors
    /// [`DecodeError`]; the KV cells the step wrote are then unspecified.
    fn decode(&mut self, batch: &[BatchEntry<'_>]) -> Result<(), DecodeError>;

    /// Install the sampler of a new request in slot `seq`. The prompt's
    /// tokens are its history: repetition, frequency and presence
    /// penalties and DRY count them, as llama.cpp's server does.
    ///
    /// # Errors
    /// A [`CoreError`] when `seq` is no slot or the sampler refuses a
    /// prompt token.
    fn start_sequence(
        &mut self,
        seq: SeqId,
        sampler: <Self::Model as ModelBackend>::Sampler,
        prompt: &[Token],
    ) -> Result<(), CoreError>;

    /// Sample (and accept) the next token of `seq` from the output of entry
    /// `entry` of the last successful decode, with the `n_probs` most likely
    /// alternatives when `n_probs > 0`.
    ///
    /// # Errors
    /// [`SampleError::Constraint`] when the request's grammar allows no
    /// token; other variants for failures of the backend.
    fn sample(&mut self, seq: SeqId, entry: usize, n_probs: u32) -> Result<Sampled, SampleError>;

    /// The bytes a generated token adds to the output text (may be part of
    /// a UTF-8 character; control tokens add nothing).
    fn token_bytes(&self, token: Token) -> Vec<u8>;

    /// How a token is listed among log-probabilities: the same rule as
    /// [`ModelFacade::token_piece`].
    fn token_piece(&self, token: Token) -> Vec<u8>;

    /// Whether `token` ends generation.
    fn is_eog(&self, token: Token) -> bool;

    /// Remove positions `from..` of `seq` from the KV cache. `false` if the
    /// cache cannot remove a partial range (then the caller clears the whole
    /// sequence with `from = 0`, which always succeeds).
    fn kv_seq_rm(&mut self, seq: SeqId, from: Pos) -> bool;

    /// Context shift: drop positions `keep..keep + discard` of `seq` and
    /// move positions `keep + discard..end` down by `discard`. `false` if
    /// the model's memory cannot shift (the sequence is then unchanged).
    fn kv_shift(&mut self, seq: SeqId, keep: Pos, discard: Pos, end: Pos) -> bool;

    /// KV cells in use, all sequences together.
    fn kv_cells_used(&self) -> u64;

    /// The state of `seq`, which holds exactly `tokens` at positions
    /// `0..tokens.len()`: the tokens and the KV cells in one byte string,
    /// signed with the backend's state key so that
    /// [`set_seq_state`](Self::set_seq_state) can tell it from a forgery.
    ///
    /// # Errors
    /// A [`CoreError`] when `seq` is no sequence, does not hold exactly
    /// `tokens`, or the backend cannot write its state.
    fn seq_state(&mut self, seq: SeqId, tokens: &[Token]) -> Result<Vec<u8>, CoreError>;

    /// Replace what `seq` holds with a state from
    /// [`seq_state`](Self::seq_state) (of any sequence) and return its
    /// tokens; `seq` then holds exactly them, at positions `0..len`.
    ///
    /// # Errors
    /// [`llama_core::Error::State`] (in a [`CoreError`]) for a state that
    /// does not verify under the backend's key, belongs to another model,
    /// or does not fit; another [`CoreError`] when the backend fails. After
    /// an error `seq` holds what it held before or nothing; the caller
    /// clears it to be sure.
    fn set_seq_state(&mut self, seq: SeqId, bytes: &[u8]) -> Result<Vec<Token>, CoreError>;

    /// The LoRA adapters this backend loaded, in id order, each with its
    /// initial global scale. None by default.
    fn lora_adapters(&self) -> Vec<LoraAdapterInfo> {
        Vec::new()
    }

    /// Apply the LoRA adapters with `scales` (one per adapter of
    /// [`lora_adapters`](Self::lora_adapters), in order; 0 leaves one out)
    /// from the next [`decode`](Self::decode) on, replacing the set
    /// applied before. The default, for backends without adapters,
    /// accepts only all-zero scales.
    ///
    /// # Errors
    /// A [`CoreError`] when the scales do not fit the adapters or the
    /// backend fails; the applied set is then unknown, and the caller sets
    /// one again before the next decode.
    fn set_lora(&mut self, scales: &[f32]) -> Result<(), CoreError> {
        if scales.iter().all(|&s| s == 0.0) {
            Ok(())
        } else {
            Err(llama_core::Error::InvalidParam { name: "lora", reason: "this backend has no LoRA adapters".into() }
                .into())
        }
    }

    /// The pooled, unnormalized embedding of `tokens` (at most `n_ubatch`
    /// tokens). Must leave the KV of the generation slots untouched.
    ///
    /// # Errors
    /// A [`CoreError`] when embeddings are off or llama.cpp fails.
    fn embed(&mut self, tokens: &[Token]) -> Result<Vec<f32>, CoreError>;
}
