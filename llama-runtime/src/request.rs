//! The public request, event and error types.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use llama_core::{SamplingParams, Token};

/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most alternatives per token when log-probabilities are requested.
pub const MAX_N_PROBS: u32 = 100;

/// What to generate from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Text, tokenized with `add_special = true` (BOS where the model wants
    /// it) and `parse_special = true` (control tokens written as text, such
    /// as a rendered chat template, become those tokens).
    Text(String),
    /// Tokens used as they are (each checked against the vocabulary).
    Tokens(Vec<Token>),
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_owned())
    }
}

impl From<Vec<Token>> for Prompt {
    fn from(t: Vec<Token>) -> Self {
        Prompt::Tokens(t)
    }
}

/// One generation request. Build it with [`Request::new`] and set fields.
///
/// ```
/// use llama_runtime::{Request, SamplingParams};
/// let mut req = Request::new("Once upon a time");
/// req.sampling = SamplingParams::greedy();
/// req.max_tokens = Some(32);
/// req.stop = vec!["\n\n".into()];
/// ```
#[derive(Clone, Debug)]
pub struct Request {
    /// The prompt.
    pub prompt: Prompt,
    /// How tokens are picked.
    pub sampling: SamplingParams,
    /// Stop after this many generated tokens (`None`: until end of
    /// generation or the context is full).
    pub max_tokens: Option<u32>,
    /// Strings that end generation; they are matched across token
    /// boundaries and never appear in the output text.
    pub stop: Vec<String>,
    /// End the request with [`EngineError::DeadlineExceeded`] at this instant,
    /// whether it is still queued or already generating.
    pub deadline: Option<Instant>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// 0: no log-probabilities; otherwise the log-probability of each
    /// sampled token and the `n_probs` most likely alternatives.
    pub n_probs: u32,
    /// Reuse the KV cache of an earlier request sharing a prompt prefix, and
    /// keep this request's cache for later ones.
    pub cache_prompt: bool,
    /// Decode this request alone, in a fixed batch shape, so that its output
    /// equals a solo run (see the crate docs for the exact guarantee).
    pub deterministic: bool,
    /// What to do when generation fills the sequence's context window:
    /// `None` ends the request ([`FinishReason::ContextFull`]); `Some`
    /// shifts the context and goes on, as llama.cpp's `--context-shift`.
    pub context_shift: Option<ContextShift>,
    /// Run in this slot (`0..n_seq_max`, llama.cpp's `id_slot`), waiting
    /// for it if it is busy; other requests may go ahead meanwhile. `None`:
    /// whichever free slot caches the longest prefix.
    pub slot: Option<u32>,
    /// LoRA adapter scales for this request, `(adapter id, scale)` as
    /// llama.cpp's per-request `lora` field: listed adapters get their
    /// scale, every other one 0. `None`: the engine's global scales at
    /// submit time ([`Engine::set_lora_scales`](crate::Engine::set_lora_scales)).
    /// Requests with different sets never share a decode step.
    pub lora: Option<Vec<(usize, f32)>>,
}

/// Context shift (llama.cpp's `--context-shift`): when a generating
/// sequence fills its window, the first `n_keep` tokens stay, half of the
/// rest is dropped, and what follows moves down; generation continues.
/// Models whose memory cannot shift (recurrent ones) end with
/// [`FinishReason::ContextFull`] instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextShift {
    /// Prompt tokens always kept, counted from the first (BOS included);
    /// `-1` keeps the whole prompt. At most the window minus 2 is kept, so
    /// that every shift frees room.
    pub n_keep: i32,
    /// Cells dropped per shift (llama.cpp's `n_discard`); 0 drops half of
    /// what follows the kept ones. At most what follows them.
    pub n_discard: u32,
}

impl Request {
    /// A request with default settings: default sampling, no token limit, no
    /// stop strings, no deadline, no log-probabilities, prompt caching on.
    pub fn new(prompt: impl Into<Prompt>) -> Self {
        Request {
            prompt: prompt.into(),
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            deadline: None,
            ignore_eos: false,
            n_probs: 0,
            cache_prompt: true,
            deterministic: false,
            context_shift: None,
            slot: None,
            lora: None,
        }
    }
}

/// What a [`Handle`](crate::Handle) yields. Every request ends with exactly
/// one terminal event, [`Event::Done`] or [`Event::Error`], after which the
/// stream ends.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// One generated token.
    Token(TokenEvent),
    /// Generation finished normally (terminal).
    Done(Done),
    /// Generation ended with an error (terminal).
    Error(EngineError),
}

impl Event {
    /// Whether this is the last event of its request.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Event::Token(_))
    }
}

/// One generated token. Each sampled token gets exactly one event, the
/// end-of-generation token included (its own text is never rendered).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// Text released with this token: complete UTF-8 only, with anything that
    /// may be the start of a stop string held back until it is known not to
    /// be, and stop strings removed. May be empty.
    pub text: String,
    /// The token id.
    pub token: Token,
    /// The token's log-probability under the model (when `n_probs > 0`).
    pub logprob: Option<f32>,
    /// The `n_probs` most likely tokens at this step, best first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// One alternative token and its log-probability.
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprob {
    /// The token id.
    pub token: Token,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// Its bytes (may be part of a UTF-8 character).
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
}

/// The successful end of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// The slot that ran the request.
    pub slot: u32,
    /// Token counts.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
}

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string matched.
    Stop {
        /// The stop string that matched.
        word: String,
    },
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The sequence reached its context window (`n_ctx / n_seq_max`).
    ContextFull,
}

impl FinishReason {
    /// The OpenAI API's name for it: `"stop"` or `"length"`.
    pub fn openai_str(&self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stop { .. } => "stop",
            FinishReason::MaxTokens | FinishReason::ContextFull => "length",
        }
    }
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV was reused from an earlier request.
    pub cached_tokens: u32,
    /// Generated tokens (one per [`TokenEvent`]).
    pub completion_tokens: u32,
}

/// Where one request's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// From submit to getting a slot.
    pub queued: Duration,
    /// From getting a slot to the first token.
    pub prefill: Duration,
    /// From the first token to the end.
    pub decode: Duration,
    /// From submit to the first token.
    pub first_token: Option<Duration>,
}

/// The whole result of a request, from [`Handle::collect`](crate::Handle::collect)
/// (or [`Output::collect`] over any stream of a request's events).
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The generated text (stop strings removed).
    pub text: String,
    /// Every token event, in order (ids, text pieces, log-probabilities).
    pub events: Vec<TokenEvent>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// The slot that ran the request.
    pub slot: u32,
    /// Token counts.
    pub usage: Usage,
    /// Timings.
    pub timings: Timings,
}

impl Output {
    /// How the request ended, as its [`Event::Done`] said.
    pub fn done(&self) -> Done {
        Done { finish_reason: self.finish_reason.clone(), slot: self.slot, usage: self.usage, timings: self.timings }
    }

    /// The generated token ids.
    pub fn tokens(&self) -> Vec<Token> {
        self.events.iter().map(|e| e.token).collect()
    }

    /// Drain a request's events (a [`Handle`](crate::Handle), or a stream
    /// wrapping one) into its whole output.
    ///
    /// # Errors
    /// The request's terminal [`EngineError`]; [`EngineError::Internal`] if
    /// the stream ends without a terminal event.
    pub async fn collect<S: Stream<Item = Event> + Unpin>(mut events: S) -> Result<Output, EngineError> {
        let mut collector = Collector::default();
        while let Some(ev) = events.next().await {
            if let Some(result) = collector.push(ev) {
                return result;
            }
        }
        Err(EngineError::Internal("the event stream ended without a terminal event".into()))
    }
}

/// Folds a request's events into its [`Output`], for loops that must see
/// each event as it comes (printing, cancelling) and still want the whole
/// result at the end.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    text: String,
    events: Vec<TokenEvent>,
}

impl Collector {
    /// Add one token event.
    pub fn push_token(&mut self, event: TokenEvent) {
        self.text.push_str(&event.text);
        self.events.push(event);
    }

    /// The output, once the request is done.
    pub fn finish(self, done: Done) -> Output {
        Output {
            text: self.text,
            events: self.events,
            finish_reason: done.finish_reason,
            slot: done.slot,
            usage: done.usage,
            timings: done.timings,
        }
    }

    /// Add any event; the terminal one gives the request's result.
    pub fn push(&mut self, event: Event) -> Option<Result<Output, EngineError>> {
        match event {
            Event::Token(t) => {
                self.push_token(t);
                None
            }
            Event::Done(done) => Some(Ok(std::mem::take(self).finish(done))),
            Event::Error(e) => Some(Err(e)),
        }
    }
}

/// One embedding from [`Engine::embed`](crate::Engine::embed).
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// The pooled vector.
    pub vector: Vec<f32>,
    /// Tokens in the input.
    pub n_tokens: u32,
}

/// A [`llama_core::Error`] carried across the runtime boundary, typed and
/// cheap to clone (events and results are cloneable; the core error is not).
/// [`CoreError::get`] gives the original error to match on.
#[derive(Clone, Debug, thiserror::Error)]
#[error(transparent)]
pub struct CoreError(Arc<llama_core::Error>);

impl CoreError {
    /// The llama-core error.
    pub fn get(&self) -> &llama_core::Error {
        &self.0
    }
}

impl From<llama_core::Error> for CoreError {
    fn from(e: llama_core::Error) -> Self {
        CoreError(Arc::new(e))
    }
}

impl PartialEq for CoreError {
    /// Two errors are equal when they are the same error or say the same.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

/// Why [`Engine::submit`](crate::Engine::submit) or
/// [`Engine::embed`](crate::Engine::embed) refused work. Nothing was
/// queued; no event will follow.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The admission queue is full; retry later.
    #[error("the engine is overloaded: {queue_capacity} requests are already waiting")]
    Overloaded {
        /// The queue's capacity.
        queue_capacity: usize,
    },
    /// The engine is shutting down or has stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// [`Engine::embed`](crate::Engine::embed) on an engine started without `embeddings`.
    #[error("embeddings are disabled on this engine")]
    EmbeddingsDisabled,
    /// [`Engine::rerank`](crate::Engine::rerank) on an engine not started
    /// for reranking (`embeddings` with rank pooling).
    #[error("reranking is disabled on this engine")]
    RerankingDisabled,
    /// [`Engine::embed`](crate::Engine::embed) on an engine started for
    /// reranking: its embedding context ranks (one score per input) and
    /// serves [`Engine::rerank`](crate::Engine::rerank), not embeddings.
    #[error("this engine was started for reranking; it does not serve embeddings")]
    RerankingOnly,
    /// [`Engine::submit`](crate::Engine::submit) on an engine whose model
    /// cannot generate text (its attention is not causal: an embedding or
    /// reranking model, [`ModelInfo::encoder_only`](crate::ModelInfo::encoder_only)).
    #[error("this model cannot generate text: its attention is not causal (an embedding or reranking model)")]
    CannotGenerate,
    /// The prompt does not leave room for a single generated token.
    #[error("the prompt has {n_prompt} tokens, but the context window is {n_ctx} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        n_prompt: u32,
        /// Context window per sequence.
        n_ctx: u32,
    },
    /// An embedding input has more tokens than one micro-batch can pool.
    #[error("{n_tokens} tokens; at most {limit} can be embedded")]
    InputTooLong {
        /// Tokens in the input.
        n_tokens: u32,
        /// The most an input may have (`min(n_ubatch, n_ctx_seq)`).
        limit: u32,
    },
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A prompt token is outside the vocabulary.
    #[error("token {token} is outside the vocabulary (0..{n_vocab})")]
    InvalidToken {
        /// The offending token.
        token: Token,
        /// The vocabulary size.
        n_vocab: i32,
    },
    /// A request field is out of range: sampling parameters
    /// ([`llama_core::Error::InvalidParam`] naming the field), a grammar that
    /// does not parse ([`llama_core::Error::Grammar`]), stop strings,
    /// `n_probs`.
    #[error("invalid request: {0}")]
    Invalid(CoreError),
    /// The prompt text could not be tokenized.
    #[error(transparent)]
    Tokenize(CoreError),
    /// Input `index` of an embedding call was refused (the reason is one of
    /// the prompt variants above).
    #[error("input {index}: {reason}")]
    Input {
        /// Which input.
        index: usize,
        /// Why.
        reason: Box<Rejected>,
    },
}

impl Rejected {
    /// A refused request field, as llama-core reports one.
    pub(crate) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Rejected::Invalid(llama_core::Error::InvalidParam { name, reason: reason.into() }.into())
    }
}

/// Why an admitted request (or an embedding job) ended without success.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request was cancelled ([`Handle::cancel`](crate::Handle::cancel) or dropping the handle).
    #[error("the request was cancelled")]
    Cancelled,
    /// The request's deadline passed.
    #[error("the request's deadline passed")]
    DeadlineExceeded,
    /// The engine shut down before the request finished.
    #[error("the engine shut down")]
    ShuttingDown,
    /// llama.cpp failed to decode the request's batch.
    #[error("decode failed: {0}")]
    Decode(CoreError),
    /// No room was left in the KV cache for the request's next step.
    #[error("decode failed: the KV cache is full")]
    KvCacheFull,
    /// The reader left the event channel full for longer than
    /// [`EngineConfig::slow_consumer_timeout`](crate::EngineConfig::slow_consumer_timeout).
    #[error("the client did not read its events for {timeout:?}")]
    SlowConsumer {
        /// The configured bound.
        timeout: Duration,
    },
    /// The request's grammar (or JSON schema) allows no token of the model
    /// at this point of the output, so the output can never be completed
    /// (for example a grammar that names a token id the model does not
    /// have). The request's fault: what was generated so far was sent.
    #[error("the output constraint allows no token of the model here: {0}")]
    Constraint(String),
    /// A bug or an unexpected failure inside the engine (including the engine
    /// thread having stopped).
    #[error("internal engine error: {0}")]
    Internal(String),
}

/// Why [`Engine::start`](crate::Engine::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration field is out of range.
    #[error("invalid engine config `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// llama.cpp could not create the context.
    #[error("could not create the inference context: {0}")]
    Context(#[from] llama_core::Error),
    /// A LoRA adapter of [`EngineConfig::lora`](crate::EngineConfig::lora)
    /// could not be loaded (missing, not an adapter, made for another model).
    #[error("could not load the LoRA adapter {}: {source}", path.display())]
    Adapter {
        /// The adapter's path.
        path: std::path::PathBuf,
        /// Why.
        source: llama_core::Error,
    },
    /// The engine thread could not be spawned.
    #[error("could not spawn the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}
