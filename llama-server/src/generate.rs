//! What the OpenAI and the native endpoints share: sampling fields and
//! their validation, stop strings, logit bias, submitting to the engine,
//! collecting a result, and the mapping of engine errors to HTTP errors.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::try_join_all;
use llama_core::{RANDOM_SEED, SamplingParams, Token};
use llama_runtime::{Done, EngineError, Event, Handle, Prompt, Rejected, Request, TokenEvent};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::metrics::Observed;
use crate::sse::Frame;
use crate::state::Ready;
use llama_core::json_schema::{self, OrderedJson};

/// Most choices per request (`n`, or prompts × `n`).
pub const MAX_CHOICES: usize = 8;
/// Most stop strings per request.
pub const MAX_STOP: usize = llama_runtime::MAX_STOP_STRINGS;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = llama_runtime::MAX_STOP_BYTES;
/// Most alternatives per token (`top_logprobs`, `n_probs`, `logprobs`).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Longest GBNF grammar accepted, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = llama_core::MAX_GRAMMAR_BYTES;
/// Most logit-bias entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Longest text key of a logit bias, in bytes. A key stands for a word or a
/// phrase; at most [`MAX_LOGIT_BIAS`] tokens can result anyway, so longer
/// text is refused before it is tokenized.
pub const MAX_LOGIT_BIAS_TEXT_BYTES: usize = 4096;

/// Defines a request struct with the sampling fields that every generation
/// endpoint accepts (llama.cpp accepts its sampling knobs on the OpenAI
/// routes too), plus the endpoint's own fields.
macro_rules! request_with_sampling {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Sampling temperature (`<= 0` is greedy).
            pub temperature: Option<f32>,
            /// Top-k.
            pub top_k: Option<i32>,
            /// Top-p.
            pub top_p: Option<f32>,
            /// Min-p.
            pub min_p: Option<f32>,
            /// Locally typical sampling.
            pub typical_p: Option<f32>,
            /// Repeat penalty.
            pub repeat_penalty: Option<f32>,
            /// Repeat penalty look-back.
            pub repeat_last_n: Option<i32>,
            /// Presence penalty.
            pub presence_penalty: Option<f32>,
            /// Frequency penalty.
            pub frequency_penalty: Option<f32>,
            /// Mirostat mode (0, 1, 2).
            pub mirostat: Option<u32>,
            /// Mirostat tau.
            pub mirostat_tau: Option<f32>,
            /// Mirostat eta.
            pub mirostat_eta: Option<f32>,
            /// DRY multiplier.
            pub dry_multiplier: Option<f32>,
            /// DRY base.
            pub dry_base: Option<f32>,
            /// DRY allowed length.
            pub dry_allowed_length: Option<i32>,
            /// DRY look-back.
            pub dry_penalty_last_n: Option<i32>,
            /// DRY sequence breakers.
            pub dry_sequence_breakers: Option<Vec<String>>,
            /// XTC probability.
            pub xtc_probability: Option<f32>,
            /// XTC threshold.
            pub xtc_threshold: Option<f32>,
            /// Minimum candidates kept.
            pub min_keep: Option<usize>,
            /// RNG seed (-1 = random).
            pub seed: Option<i64>,
            /// Logit bias: `{"id": bias}` or `[[id, bias|false], ["text", bias]]`.
            pub logit_bias: Option<serde_json::Value>,
            /// A GBNF grammar.
            pub grammar: Option<String>,
            /// A JSON schema the output must match.
            pub json_schema: Option<::llama_core::json_schema::OrderedJson>,
            /// Reuse a cached prompt prefix (default true).
            pub cache_prompt: Option<bool>,
            /// Keep generating past end-of-generation.
            pub ignore_eos: Option<bool>,
        }

        impl $name {
            /// The engine settings of this request: the fields every
            /// generation endpoint shares, around what the endpoint validated.
            pub(crate) fn request_template(
                &self,
                sampling: llama_core::SamplingParams,
                max_tokens: Option<u32>,
                stop: Vec<String>,
                n_probs: u32,
            ) -> $crate::generate::RequestTemplate {
                $crate::generate::RequestTemplate {
                    sampling,
                    max_tokens,
                    stop,
                    ignore_eos: self.ignore_eos.unwrap_or(false),
                    n_probs,
                    cache_prompt: self.cache_prompt.unwrap_or(true),
                }
            }

            /// The sampling fields of this request.
            pub(crate) fn sampling_fields(&self) -> $crate::generate::SamplingFields<'_> {
                $crate::generate::SamplingFields {
                    temperature: self.temperature,
                    top_k: self.top_k,
                    top_p: self.top_p,
                    min_p: self.min_p,
                    typical_p: self.typical_p,
                    repeat_penalty: self.repeat_penalty,
                    repeat_last_n: self.repeat_last_n,
                    presence_penalty: self.presence_penalty,
                    frequency_penalty: self.frequency_penalty,
                    mirostat: self.mirostat,
                    mirostat_tau: self.mirostat_tau,
                    mirostat_eta: self.mirostat_eta,
                    dry_multiplier: self.dry_multiplier,
                    dry_base: self.dry_base,
                    dry_allowed_length: self.dry_allowed_length,
                    dry_penalty_last_n: self.dry_penalty_last_n,
                    dry_sequence_breakers: self.dry_sequence_breakers.as_deref(),
                    xtc_probability: self.xtc_probability,
                    xtc_threshold: self.xtc_threshold,
                    min_keep: self.min_keep,
                    seed: self.seed,
                    logit_bias: self.logit_bias.as_ref(),
                    grammar: self.grammar.as_deref(),
                    json_schema: self.json_schema.as_ref(),
                }
            }
        }
    };
}
pub(crate) use request_with_sampling;

/// Borrowed view of the shared sampling fields of a request.
#[derive(Debug, Default)]
pub(crate) struct SamplingFields<'a> {
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub typical_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub mirostat: Option<u32>,
    pub mirostat_tau: Option<f32>,
    pub mirostat_eta: Option<f32>,
    pub dry_multiplier: Option<f32>,
    pub dry_base: Option<f32>,
    pub dry_allowed_length: Option<i32>,
    pub dry_penalty_last_n: Option<i32>,
    pub dry_sequence_breakers: Option<&'a [String]>,
    pub xtc_probability: Option<f32>,
    pub xtc_threshold: Option<f32>,
    pub min_keep: Option<usize>,
    pub seed: Option<i64>,
    pub logit_bias: Option<&'a Value>,
    pub grammar: Option<&'a str>,
    pub json_schema: Option<&'a OrderedJson>,
}

/// Build sampling parameters from the server defaults and a request's
/// fields. `extra_grammar` is a grammar derived from `response_format`.
/// Text keys of a logit bias are tokenized, on a blocking thread when
/// together they are long (see [`INLINE_WORK_BYTES`]).
pub(crate) async fn build_sampling(
    defaults: &SamplingParams,
    f: &SamplingFields<'_>,
    extra_grammar: Option<String>,
    ready: &Arc<Ready>,
) -> Result<SamplingParams, AppError> {
    let mut p = defaults.clone();
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = f.$field { p.$field = v; })* };
    }
    set!(
        temperature,
        top_k,
        top_p,
        min_p,
        typical_p,
        repeat_penalty,
        repeat_last_n,
        presence_penalty,
        frequency_penalty,
        mirostat_tau,
        mirostat_eta,
        dry_multiplier,
        dry_base,
        dry_allowed_length,
        dry_penalty_last_n,
        xtc_probability,
        xtc_threshold,
        min_keep
    );
    if let Some(m) = f.mirostat {
        if m > 2 {
            return Err(AppError::invalid("mirostat", "`mirostat` must be 0, 1 or 2"));
        }
        p.mirostat = m as u8;
    }
    if let Some(b) = f.dry_sequence_breakers {
        p.dry_sequence_breakers = b.to_vec();
    }
    if let Some(seed) = f.seed {
        p.seed = seed_from(seed);
    }
    if let Some(bias) = f.logit_bias {
        let text_bytes = logit_bias_text_bytes(bias)?;
        p.logit_bias = if text_bytes <= INLINE_WORK_BYTES {
            parse_logit_bias(bias, ready)?
        } else {
            let (bias, ready) = (bias.clone(), Arc::clone(ready));
            maybe_blocking(text_bytes, move || parse_logit_bias(&bias, &ready)).await??
        };
    }
    let mut grammars = Vec::new();
    if let Some(g) = f.grammar.filter(|g| !g.trim().is_empty()) {
        if g.len() > MAX_GRAMMAR_BYTES {
            return Err(AppError::invalid("grammar", format!("`grammar` is longer than {MAX_GRAMMAR_BYTES} bytes")));
        }
        grammars.push(g.to_string());
    }
    if let Some(schema) = f.json_schema {
        grammars.push(
            json_schema::json_schema_to_gbnf(schema).map_err(|e| AppError::invalid("json_schema", e.to_string()))?,
        );
    }
    if let Some(g) = extra_grammar {
        grammars.push(g);
    }
    if grammars.len() > 1 {
        return Err(AppError::bad_request(
            "use only one of `grammar`, `json_schema` and `response_format` to constrain the output",
        ));
    }
    p.grammar = grammars.pop();
    // Validated once, by the engine at submit (which builds the sampler).
    Ok(p)
}

/// OpenAI and llama.cpp take 64-bit seeds, -1 meaning random; llama.cpp's
/// sampler takes 32 bits. Negative means random; larger values wrap.
pub(crate) fn seed_from(seed: i64) -> u32 {
    if seed < 0 { RANDOM_SEED } else { (seed as u64 & 0xffff_ffff) as u32 }
}

/// The seed for choice `i` of a request with `n` choices: distinct choices
/// get distinct seeds when a seed was given.
fn seed_for_choice(p: &SamplingParams, i: usize) -> SamplingParams {
    let mut p = p.clone();
    if p.seed != RANDOM_SEED && i > 0 {
        p.seed = p.seed.wrapping_add(i as u32);
        if p.seed == RANDOM_SEED {
            p.seed = 0;
        }
    }
    p
}

/// The settings that every engine request made for one HTTP request shares:
/// [`RequestTemplate::request`] makes the request of each prompt or choice.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    /// Sampling; choice `i` moves its seed (see [`seed_for_choice`]).
    pub sampling: SamplingParams,
    /// Most tokens to generate, already capped by the server (see [`effective_max_tokens`]).
    pub max_tokens: Option<u32>,
    /// Validated stop strings.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation.
    pub ignore_eos: bool,
    /// Alternatives per token to report (0 = no log-probabilities).
    pub n_probs: u32,
    /// Reuse a cached prompt prefix.
    pub cache_prompt: bool,
}

impl RequestTemplate {
    /// The engine request for `prompt` as choice `choice` of its prompt
    /// (choice 0 samples with the request's own seed), its deadline counted
    /// from now.
    pub(crate) fn request(&self, prompt: Prompt, choice: usize, ready: &Ready) -> Request {
        Request {
            prompt,
            sampling: seed_for_choice(&self.sampling, choice),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            deadline: deadline(ready),
            ignore_eos: self.ignore_eos,
            n_probs: self.n_probs,
            cache_prompt: self.cache_prompt,
            deterministic: false,
        }
    }
}

/// Parse a logit bias in any of the shapes llama.cpp accepts:
/// `{"15043": 1.0}` (OpenAI), `{"Hello": -1}`, `[[15043, 1.0]]`,
/// `[[15043, false]]` (ban) and `[["Hello", -0.5]]` (every token of the text).
pub(crate) fn parse_logit_bias(value: &Value, ready: &Ready) -> Result<Vec<(Token, f32)>, AppError> {
    let bad = |msg: String| AppError::invalid("logit_bias", msg);
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => {
            // Keys are strings; numeric ones are token ids.
            return collect_bias(map.iter().map(|(k, v)| (KeyRef::Str(k), v)), ready);
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Ok((&pair[0], &pair[1])),
                _ => Err(bad("each entry must be a [token, bias] pair".into())),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`logit_bias` must be an object or an array of [token, bias] pairs".into())),
    };
    let keys = pairs.into_iter().map(|(k, v)| {
        let key = match k {
            Value::Number(n) => KeyRef::Num(n.as_i64()),
            Value::String(s) => KeyRef::Text(s),
            _ => KeyRef::Invalid,
        };
        (key, v)
    });
    collect_bias(keys, ready)
}

/// The bytes of the string keys of a logit bias (the text it may tokenize),
/// after refusing any key longer than [`MAX_LOGIT_BIAS_TEXT_BYTES`].
/// Shapes that are not a bias count nothing; [`parse_logit_bias`] refuses them.
fn logit_bias_text_bytes(value: &Value) -> Result<usize, AppError> {
    let keys: Vec<&str> = match value {
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) => pair.first().and_then(Value::as_str),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut total = 0;
    for key in keys {
        if key.len() > MAX_LOGIT_BIAS_TEXT_BYTES {
            return Err(AppError::invalid(
                "logit_bias",
                format!("a logit_bias text may be at most {MAX_LOGIT_BIAS_TEXT_BYTES} bytes, one has {}", key.len()),
            ));
        }
        total += key.len();
    }
    Ok(total)
}

enum KeyRef<'a> {
    /// A JSON number key.
    Num(Option<i64>),
    /// An object key: a token id if numeric, else text.
    Str(&'a str),
    /// A string in the array form: always text.
    Text(&'a str),
    Invalid,
}

fn collect_bias<'a>(
    entries: impl Iterator<Item = (KeyRef<'a>, &'a Value)>,
    ready: &Ready,
) -> Result<Vec<(Token, f32)>, AppError> {
    let bad = |msg: String| AppError::invalid("logit_bias", msg);
    let model = ready.model();
    let n_vocab = model.info().n_vocab;
    let mut out = Vec::new();
    for (key, value) in entries {
        let bias = match value {
            Value::Number(n) => {
                let b = n.as_f64().unwrap_or(f64::NAN) as f32;
                if !b.is_finite() {
                    return Err(bad(format!("bias {n} is not a finite number")));
                }
                b
            }
            Value::Bool(false) => f32::NEG_INFINITY,
            _ => return Err(bad("a bias must be a number or false".into())),
        };
        let tokens: Vec<Token> = match key {
            KeyRef::Num(Some(id)) => vec![check_id(id, n_vocab)?],
            KeyRef::Str(s) => match s.trim().parse::<i64>() {
                Ok(id) => vec![check_id(id, n_vocab)?],
                Err(_) => model.tokenize(s, false, false)?,
            },
            KeyRef::Text(text) => model.tokenize(text, false, false)?,
            KeyRef::Num(None) | KeyRef::Invalid => return Err(bad("a token must be an integer id or a string".into())),
        };
        out.extend(tokens.into_iter().map(|t| (t, bias)));
        if out.len() > MAX_LOGIT_BIAS {
            return Err(bad(format!("at most {MAX_LOGIT_BIAS} tokens may be biased")));
        }
    }
    Ok(out)
}

fn check_id(id: i64, n_vocab: i32) -> Result<Token, AppError> {
    if (0..n_vocab as i64).contains(&id) {
        Ok(id as Token)
    } else {
        Err(AppError::invalid("logit_bias", format!("token id {id} is outside the vocabulary (0..{n_vocab})")))
    }
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The stop strings of a `stop` field (the engine checks them at submit).
pub(crate) fn stop_strings(stop: Option<&StopField>) -> Vec<String> {
    match stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    }
}

/// The number of tokens to generate: the request's ask, capped by the
/// server's `--n-predict`.
pub(crate) fn effective_max_tokens(requested: Option<u32>, server_cap: Option<u32>) -> Option<u32> {
    match (requested, server_cap) {
        (Some(r), Some(s)) => Some(r.min(s)),
        (r, s) => r.or(s),
    }
}

/// The frame that reports an engine failure in the middle of a stream.
pub(crate) fn error_frame(e: EngineError) -> Frame {
    Frame::Json(AppError::from(e).sse_payload())
}

/// Text longer than this (bytes, all prompts of a request together) is
/// tokenized on a blocking thread: the HTTP runtime has only two workers,
/// and a multi-megabyte prompt takes long enough to stall every other
/// connection.
pub(crate) const INLINE_WORK_BYTES: usize = 64 << 10;

/// Run `f` here when `bytes` of input is small, else on a blocking thread.
pub(crate) async fn maybe_blocking<T, F>(bytes: usize, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if bytes <= INLINE_WORK_BYTES {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))
    }
}

/// Submit every request, or none: if one is refused, the handles already
/// obtained are dropped (which cancels them) and the refusal is returned.
/// Submitting tokenizes text prompts, so large ones go to a blocking thread.
pub(crate) async fn submit_all(
    ready: &Ready,
    requests: Vec<Request>,
    prompt_param: &str,
) -> Result<Vec<Observed<Handle>>, AppError> {
    let start = Instant::now();
    let text_bytes = requests
        .iter()
        .map(|r| match &r.prompt {
            Prompt::Text(t) => t.len(),
            _ => 0,
        })
        .sum();
    let engine = Arc::clone(&ready.engine);
    let submitted = maybe_blocking(text_bytes, move || {
        requests.into_iter().map(|r| engine.submit(r)).collect::<Result<Vec<Handle>, Rejected>>()
    })
    .await?;
    let handles = submitted.map_err(|r| AppError::from_rejected(r, prompt_param))?;
    Ok(handles.into_iter().map(|h| Observed::new(h, Arc::clone(&ready.stats), start)).collect())
}

/// Everything one finished request produced.
#[derive(Debug, Clone)]
pub(crate) struct Collected {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub done: Done,
}

/// Drain every request's events (result `i` is `handles[i]`'s). The first
/// failure is returned and drops the other handles, which cancels them.
pub(crate) async fn collect_all(handles: Vec<Observed<Handle>>) -> Result<Vec<Collected>, AppError> {
    try_join_all(handles.into_iter().map(collect)).await
}

/// Drain one request's events. Dropping the returned future (client gone)
/// drops the handle, which cancels the request.
async fn collect(mut events: Observed<Handle>) -> Result<Collected, AppError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::Token(t) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Event::Done(done) => return Ok(Collected { text, tokens, done }),
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(AppError::Internal("event stream ended without a terminal event".into()))
}

/// One prompt as a request gave it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PromptIn {
    /// Text (tokenized with BOS where the model wants it, special tokens parsed).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<Token>),
    /// llama.cpp's mixed form `[12, "text", 34]`.
    Mixed(Vec<Piece>),
}

/// A piece of a mixed prompt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Token(Token),
}

/// Parse a `prompt`/`input` field: a string, an array of token ids, an
/// array of strings (several prompts), or an array of those. `allow_mixed`
/// also accepts llama.cpp's `[12, "text", 34]`.
pub(crate) fn parse_prompts(value: &Value, param: &str, allow_mixed: bool) -> Result<Vec<PromptIn>, AppError> {
    let shape = || {
        AppError::invalid(
            param,
            format!("`{param}` must be a string, an array of token ids, or an array of strings or token arrays"),
        )
    };
    let one = |v: &Value| -> Result<PromptIn, AppError> {
        match v {
            Value::String(s) => Ok(PromptIn::Text(s.clone())),
            Value::Array(items) => {
                if items.iter().all(Value::is_number) {
                    Ok(PromptIn::Tokens(items.iter().map(|t| token_id(t, param)).collect::<Result<_, _>>()?))
                } else if allow_mixed && items.iter().all(|x| x.is_number() || x.is_string()) {
                    let pieces = items
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(Piece::Text(s.clone())),
                            other => token_id(other, param).map(Piece::Token),
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(PromptIn::Mixed(pieces))
                } else {
                    Err(shape())
                }
            }
            _ => Err(shape()),
        }
    };
    let prompts = match value {
        Value::String(_) => vec![one(value)?],
        Value::Array(items) if items.is_empty() => return Err(AppError::invalid(param, format!("`{param}` is empty"))),
        Value::Array(items) if items.iter().all(|x| x.is_string()) => {
            items.iter().map(one).collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(items) if items.iter().any(Value::is_array) => {
            items.iter().map(one).collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(_) => vec![one(value)?],
        _ => return Err(shape()),
    };
    if prompts.len() > MAX_CHOICES * 8 {
        return Err(AppError::invalid(param, format!("at most {} prompts per request", MAX_CHOICES * 8)));
    }
    Ok(prompts)
}

fn token_id(v: &Value, param: &str) -> Result<Token, AppError> {
    v.as_i64()
        .and_then(|t| Token::try_from(t).ok())
        .ok_or_else(|| AppError::invalid(param, format!("`{param}` has a token id that is not a 32-bit integer: {v}")))
}

impl PromptIn {
    /// The runtime prompt. Mixed prompts are tokenized here, with BOS only
    /// when they start with text (llama.cpp's rule).
    pub(crate) fn to_prompt(&self, ready: &Ready) -> Result<Prompt, AppError> {
        Ok(match self {
            PromptIn::Text(s) => Prompt::Text(s.clone()),
            PromptIn::Tokens(t) => Prompt::Tokens(t.clone()),
            PromptIn::Mixed(pieces) => {
                let model = ready.model();
                let mut tokens = Vec::new();
                for (i, piece) in pieces.iter().enumerate() {
                    match piece {
                        Piece::Token(t) => tokens.push(*t),
                        Piece::Text(s) => tokens.extend(model.tokenize(s, i == 0, true)?),
                    }
                }
                Prompt::Tokens(tokens)
            }
        })
    }

    /// The prompt as text (token ids detokenized), for `echo` and `prompt` fields.
    pub(crate) fn text(&self, ready: &Ready) -> String {
        let model = ready.model();
        let detok = |t: &[Token]| model.detokenize(t, false, true).unwrap_or_default();
        match self {
            PromptIn::Text(s) => s.clone(),
            PromptIn::Tokens(t) => detok(t),
            PromptIn::Mixed(pieces) => pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(s) => s.clone(),
                    Piece::Token(t) => detok(&[*t]),
                })
                .collect(),
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random id like `chatcmpl-<24 alphanumerics>`.
pub(crate) fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    let mut bits = 0u64;
    for i in 0..24 {
        if i % 8 == 0 {
            // std's RandomState is seeded from the OS per instance: enough for ids.
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            bits = h.finish();
        }
        out.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    out
}

/// The text of a token, for log-probability listings (lossy UTF-8).
pub(crate) fn token_text(ready: &Ready, token: Token) -> (String, Vec<u8>) {
    let bytes = ready.model().token_piece(token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// llama.cpp's `timings` object.
pub(crate) fn timings_json(done: &Done) -> Value {
    let prompt_n = done.usage.prompt_tokens.saturating_sub(done.usage.cached_tokens);
    let predicted_n = done.usage.completion_tokens;
    let prompt_ms = done.timings.prefill.as_secs_f64() * 1e3;
    let predicted_ms = done.timings.decode.as_secs_f64() * 1e3;
    let per = |ms: f64, n: u32| if n > 0 { ms / n as f64 } else { 0.0 };
    let rate = |ms: f64, n: u32| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    json!({
        "cache_n": done.usage.cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per(prompt_ms, prompt_n),
        "prompt_per_second": rate(prompt_ms, prompt_n),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per(predicted_ms, predicted_n),
        "predicted_per_second": rate(predicted_ms, predicted_n),
    })
}

/// The request deadline for `--timeout`.
fn deadline(ready: &Ready) -> Option<Instant> {
    Instant::now().checked_add(ready.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(seed_from(-1), RANDOM_SEED);
        assert_eq!(seed_from(42), 42);
        assert_eq!(seed_from(1 << 32 | 7), 7);
        let p = SamplingParams { seed: 10, ..Default::default() };
        assert_eq!(seed_for_choice(&p, 0).seed, 10);
        assert_eq!(seed_for_choice(&p, 3).seed, 13);
        let r = SamplingParams::default();
        assert_eq!(seed_for_choice(&r, 3).seed, RANDOM_SEED);
    }

    #[test]
    fn stops() {
        assert!(stop_strings(None).is_empty());
        assert_eq!(stop_strings(Some(&StopField::One("\n".into()))), ["\n"]);
        assert_eq!(stop_strings(Some(&StopField::Many(vec!["a".into(), "".into()]))), ["a", ""]);
    }

    #[test]
    fn max_tokens_cap() {
        assert_eq!(effective_max_tokens(None, None), None);
        assert_eq!(effective_max_tokens(Some(5), None), Some(5));
        assert_eq!(effective_max_tokens(None, Some(7)), Some(7));
        assert_eq!(effective_max_tokens(Some(50), Some(7)), Some(7));
    }

    #[test]
    fn ids_are_random_and_well_formed() {
        let a = random_id("chatcmpl-");
        let b = random_id("chatcmpl-");
        assert_ne!(a, b);
        assert_eq!(a.len(), "chatcmpl-".len() + 24);
        assert!(a["chatcmpl-".len()..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
