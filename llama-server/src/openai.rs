//! The OpenAI API: `/v1/models`, `/v1/chat/completions`, `/v1/completions`
//! and `/v1/embeddings`, with OpenAI's request and response shapes.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_core::ChatMessage;
use llama_runtime::{Done, Event, Prompt, TokenEvent, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::extract::Json;
use crate::generate::{
    Collected, MAX_CHOICES, MAX_TOP_LOGPROBS, PromptIn, StopField, build_sampling, collect_all, effective_max_tokens,
    error_frame, maybe_blocking, parse_prompts, random_id, request_with_sampling, stop_strings, submit_all,
    timings_json, token_text, unix_now,
};
use crate::sse::{self, Frame, Renderer};
use crate::state::{AppState, Ready};
use llama_core::json_schema::{self, OrderedJson};

/// Reported as `system_fingerprint`.
pub const FINGERPRINT: &str = concat!("llamars-", env!("CARGO_PKG_VERSION"));
/// Most inputs per embeddings request.
pub const MAX_EMBED_INPUTS: usize = 256;

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `json_schema`: `{name, schema, strict}`.
    pub json_schema: Option<JsonSchemaFormat>,
    /// llama.cpp extension: a schema directly under `response_format`.
    pub schema: Option<OrderedJson>,
}

/// `response_format.json_schema` (`name` and `strict` are accepted and
/// ignored: output is always constrained exactly).
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema.
    pub schema: Option<OrderedJson>,
}

/// A grammar for `response_format`, if it asks for JSON.
pub(crate) fn response_format_grammar(rf: Option<&ResponseFormat>) -> Result<Option<String>, AppError> {
    let Some(rf) = rf else { return Ok(None) };
    let convert = |s: &OrderedJson| {
        json_schema::json_schema_to_gbnf(s).map_err(|e| AppError::invalid("response_format", e.to_string()))
    };
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => match &rf.schema {
            Some(schema) => convert(schema).map(Some),
            None => Ok(Some(json_schema::json_object_grammar())),
        },
        "json_schema" => {
            let schema =
                rf.json_schema.as_ref().and_then(|j| j.schema.as_ref()).or(rf.schema.as_ref()).ok_or_else(|| {
                    AppError::invalid("response_format", "`response_format.json_schema.schema` is required")
                })?;
            convert(schema).map(Some)
        }
        other => Err(AppError::invalid(
            "response_format",
            format!("unknown response_format type {other:?} (expected text, json_object or json_schema)"),
        )),
    }
}

/// Message content: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string, null, or an array of content parts")]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type (`text` is the only one supported).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// The roles a chat message may have, as OpenAI accepts them (`function` is
/// OpenAI's deprecated name for a tool result). Anything else is a 400.
pub const CHAT_ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// One of [`CHAT_ROLES`]; `developer` is rendered as `system`.
    pub role: String,
    /// The content (null is allowed for assistant messages).
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// Turn OpenAI messages into template messages (400 on what we cannot render).
pub(crate) fn to_chat_messages(messages: &[InMessage]) -> Result<Vec<ChatMessage>, AppError> {
    if messages.is_empty() {
        return Err(AppError::invalid("messages", "`messages` must not be empty"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system".to_string(),
                r if CHAT_ROLES.contains(&r) => r.to_string(),
                r => {
                    // Debug formatting quotes the role and escapes control characters.
                    let shown: String = r.chars().take(64).collect();
                    return Err(AppError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "unknown role {shown:?} in `messages[{i}].role` (expected one of {})",
                            CHAT_ROLES.join(", ")
                        ),
                    ));
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            ("text", None) => {
                                return Err(AppError::invalid(
                                    format!("messages[{i}].content[{j}].text"),
                                    "a text part needs `text`",
                                ));
                            }
                            (kind, _) => {
                                return Err(AppError::invalid(
                                    format!("messages[{i}].content[{j}].type"),
                                    format!("content parts of type {kind:?} are not supported (text only)"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// Render chat messages with the model's template, on a blocking thread when they are large.
pub(crate) async fn render_chat(ready: &Arc<Ready>, messages: Vec<ChatMessage>) -> Result<String, AppError> {
    let bytes = messages.iter().map(|m| m.content.len()).sum();
    let ready = Arc::clone(ready);
    maybe_blocking(bytes, move || ready.render_chat(&messages)).await?
}

/// Validate `n`.
fn parse_n(n: Option<i64>) -> Result<usize, AppError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(AppError::invalid("n", format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"))),
    }
}

/// Validate an OpenAI `max_tokens`-style field (>= 1).
fn parse_max_tokens(field: &str, v: Option<i64>) -> Result<Option<u32>, AppError> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(n) => Err(AppError::invalid(field, format!("`{field}` must be at least 1, got {n}"))),
    }
}

fn parse_top(field: &str, v: Option<i64>) -> Result<u32, AppError> {
    match v {
        None => Ok(0),
        Some(n) if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) => Ok(n as u32),
        Some(n) => {
            Err(AppError::invalid(field, format!("`{field}` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}")))
        }
    }
}

/// `GET /v1/models`
pub async fn models(State(state): State<AppState>) -> Response {
    let meta = match state.phase() {
        crate::state::Phase::Ready(r) => {
            let info = r.model().info();
            json!({
                "vocab_type": 2,
                "n_vocab": info.n_vocab,
                "n_ctx_train": info.n_ctx_train,
                "n_embd": info.n_embd,
                "n_params": info.n_params,
                "size": info.size_bytes,
            })
        }
        _ => Value::Null,
    };
    JsonResponse(json!({
        "object": "list",
        "data": [{
            "id": state.model_id(),
            "object": "model",
            "created": state.created(),
            "owned_by": "llamars",
            "meta": meta,
        }],
    }))
    .into_response()
}

request_with_sampling! {
    /// `POST /v1/chat/completions`.
    pub struct ChatRequest {
        /// Model name (alias or file name).
        pub model: Option<String>,
        /// The conversation.
        pub messages: Vec<InMessage>,
        /// Stream chunks as server-sent events.
        pub stream: Option<bool>,
        /// Streaming options.
        pub stream_options: Option<StreamOptions>,
        /// Most tokens to generate (deprecated name).
        pub max_tokens: Option<i64>,
        /// Most tokens to generate.
        pub max_completion_tokens: Option<i64>,
        /// Number of choices.
        pub n: Option<i64>,
        /// Stop strings.
        pub stop: Option<StopField>,
        /// Return log-probabilities of the output tokens.
        pub logprobs: Option<bool>,
        /// Alternatives per token (0..=20), with `logprobs`.
        pub top_logprobs: Option<i64>,
        /// Output format constraint.
        pub response_format: Option<ResponseFormat>,
        /// Tool definitions (not supported when non-empty).
        pub tools: Option<Vec<Value>>,
    }
}

/// The names that tell a chat completion from a text completion.
struct Names {
    /// Prefix of the response id.
    id_prefix: &'static str,
    /// `object` of the whole response.
    object: &'static str,
    /// `object` of each streamed chunk.
    chunk_object: &'static str,
}

const CHAT: Names = Names { id_prefix: "chatcmpl-", object: "chat.completion", chunk_object: "chat.completion.chunk" };
const TEXT: Names = Names { id_prefix: "cmpl-", object: "text_completion", chunk_object: "text_completion" };

/// Common per-request settings after validation, and the parts of the
/// response that chat and text completions share.
struct Plan {
    ready: Arc<Ready>,
    names: &'static Names,
    id: String,
    created: u64,
    model: String,
    n: usize,
    include_usage: bool,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    logprobs: Option<u32>,
}

impl Plan {
    fn new(
        names: &'static Names,
        state: &AppState,
        ready: Arc<Ready>,
        n: usize,
        logprobs: Option<u32>,
        stream_options: Option<&StreamOptions>,
    ) -> Plan {
        Plan {
            ready,
            names,
            id: random_id(names.id_prefix),
            created: unix_now(),
            model: state.model_id(),
            n,
            include_usage: stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            logprobs,
        }
    }

    /// The fields that the response and every streamed chunk open with.
    fn envelope(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        })
    }

    /// The whole response, when not streamed.
    fn response(&self, choices: Vec<Value>, usage: &Usage, done: &Done) -> Response {
        let mut body = self.envelope(self.names.object, Value::Array(choices));
        body["usage"] = usage_json(usage);
        body["timings"] = timings_json(done);
        JsonResponse(body).into_response()
    }

    /// One streamed chunk: the same id/created/model on every chunk, and
    /// `usage: null` until the last when the client asked for usage.
    fn chunk(&self, choice: Value) -> Value {
        let mut chunk = self.envelope(self.names.chunk_object, json!([choice]));
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The last chunk of a choice, the `finished`th to end: the last of
    /// all carries llama.cpp's `timings`.
    fn finish_frame(&self, mut chunk: Value, finished: usize, done: &Done) -> Frame {
        if finished == self.n {
            chunk["timings"] = timings_json(done);
        }
        Frame::json(&chunk)
    }

    /// The end of a stream: a chunk with `usage` and no choices when the
    /// client asked for one, then `[DONE]`.
    fn end_stream(&self, usage: &Usage, out: &mut VecDeque<Frame>) {
        if self.include_usage {
            let mut last = self.envelope(self.names.chunk_object, json!([]));
            last["usage"] = usage_json(usage);
            out.push_back(Frame::json(&last));
        }
        out.push_back(Frame::Done);
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<AppState>,
    Json(req): Json<ChatRequest>,
) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    let n = parse_n(req.n)?;
    let max_tokens = parse_max_tokens("max_completion_tokens", req.max_completion_tokens)?
        .or(parse_max_tokens("max_tokens", req.max_tokens)?);
    let top = parse_top("top_logprobs", req.top_logprobs)?;
    if req.top_logprobs.is_some() && req.logprobs != Some(true) {
        return Err(AppError::invalid("top_logprobs", "`top_logprobs` requires `logprobs: true`"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(AppError::invalid("tools", "tool calling is not supported by this server"));
    }
    let stop = stop_strings(req.stop.as_ref());
    let messages = to_chat_messages(&req.messages)?;
    let rf_grammar = response_format_grammar(req.response_format.as_ref())?;
    let ready = state.ready()?;
    let sampling = build_sampling(&ready.defaults, &req.sampling_fields(), rf_grammar, &ready).await?;
    let prompt = render_chat(&ready, messages).await?;

    let logprobs = (req.logprobs == Some(true)).then_some(top);
    let max_tokens = effective_max_tokens(max_tokens, ready.n_predict);
    let template = req.request_template(sampling, max_tokens, stop, logprobs.map_or(0, |k| k.max(1)));
    let requests = (0..n).map(|i| template.request(Prompt::Text(prompt.clone()), i, &ready)).collect();
    let handles = submit_all(&ready, requests, "messages").await?;
    let plan = Plan::new(&CHAT, &state, ready, n, logprobs, req.stream_options.as_ref());

    if req.stream.unwrap_or(false) {
        let head = (0..n)
            .map(|i| Frame::json(&chat_chunk(&plan, i, json!({"role": "assistant", "content": ""}), None, None)))
            .collect();
        let renderer = ChatRenderer { plan, usage: Usage::default(), finished: 0 };
        return Ok(sse::response(sse::render_stream(handles, renderer, head)));
    }

    let results = collect_all(handles).await?;
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": plan.logprobs.map(|k| json!({"content": r.tokens.iter().map(|t| chat_logprob(&plan.ready, t, k)).collect::<Vec<_>>()})),
                "finish_reason": r.done.finish_reason.openai_str(),
            })
        })
        .collect();
    Ok(plan.response(choices, &sum_usage(&results), &results[0].done))
}

/// The usage of the choices of one prompt (see [`add_choice_usage`]).
fn sum_usage(results: &[Collected]) -> Usage {
    let mut u = Usage::default();
    for r in results {
        add_choice_usage(&mut u, &r.done.usage);
    }
    u
}

/// Count one finished choice into `total`: prompt tokens once (every choice
/// has the same prompt), completions summed.
fn add_choice_usage(total: &mut Usage, choice: &Usage) {
    total.prompt_tokens = total.prompt_tokens.max(choice.prompt_tokens);
    total.cached_tokens = total.cached_tokens.max(choice.cached_tokens);
    total.completion_tokens += choice.completion_tokens;
}

/// Several prompts: their usages add up (each already counts its prompt once).
fn add_prompt_usages(per_prompt: impl Iterator<Item = Usage>) -> Usage {
    per_prompt.fold(Usage::default(), |mut total, u| {
        total.prompt_tokens += u.prompt_tokens;
        total.cached_tokens += u.cached_tokens;
        total.completion_tokens += u.completion_tokens;
        total
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn chat_logprob(ready: &Ready, t: &TokenEvent, k: u32) -> Value {
    let (text, bytes) = token_text(ready, t.token);
    json!({
        "token": text,
        "logprob": t.logprob.unwrap_or(0.0),
        "bytes": bytes,
        "top_logprobs": t.top_logprobs.iter().take(k as usize).map(|a| json!({
            "token": a.text,
            "logprob": a.logprob,
            "bytes": a.text.as_bytes(),
        })).collect::<Vec<_>>(),
    })
}

fn chat_chunk(plan: &Plan, index: usize, delta: Value, finish: Option<&str>, logprobs: Option<Value>) -> Value {
    plan.chunk(json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}))
}

struct ChatRenderer {
    plan: Plan,
    usage: Usage,
    finished: usize,
}

impl Renderer for ChatRenderer {
    fn event(&mut self, index: usize, event: Event, out: &mut VecDeque<Frame>) -> bool {
        match event {
            Event::Token(t) => {
                let logprobs = self.plan.logprobs.map(|k| json!({"content": [chat_logprob(&self.plan.ready, &t, k)]}));
                if !t.text.is_empty() || logprobs.is_some() {
                    out.push_back(Frame::json(&chat_chunk(
                        &self.plan,
                        index,
                        json!({"content": t.text}),
                        None,
                        logprobs,
                    )));
                }
                false
            }
            Event::Done(d) => {
                add_choice_usage(&mut self.usage, &d.usage);
                self.finished += 1;
                let chunk = chat_chunk(&self.plan, index, json!({}), Some(d.finish_reason.openai_str()), None);
                out.push_back(self.plan.finish_frame(chunk, self.finished, &d));
                false
            }
            Event::Error(e) => {
                out.push_back(error_frame(e));
                true
            }
        }
    }

    fn end(&mut self, out: &mut VecDeque<Frame>) {
        self.plan.end_stream(&self.usage, out);
    }
}

request_with_sampling! {
    /// `POST /v1/completions`.
    pub struct CompletionRequest {
        /// Model name (alias or file name).
        pub model: Option<String>,
        /// A string, an array of strings, an array of token ids, or an array of token arrays.
        pub prompt: Option<Value>,
        /// Stream chunks.
        pub stream: Option<bool>,
        /// Streaming options.
        pub stream_options: Option<StreamOptions>,
        /// Most tokens to generate.
        pub max_tokens: Option<i64>,
        /// Choices per prompt.
        pub n: Option<i64>,
        /// Stop strings.
        pub stop: Option<StopField>,
        /// Log-probabilities with this many alternatives (0..=20).
        pub logprobs: Option<i64>,
        /// Put the prompt in front of the output.
        pub echo: Option<bool>,
        /// Not supported.
        pub suffix: Option<String>,
        /// Only `best_of == n` is supported.
        pub best_of: Option<i64>,
        /// Output format constraint (llama.cpp extension).
        pub response_format: Option<ResponseFormat>,
    }
}

/// `POST /v1/completions`
pub async fn completions(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    let n = parse_n(req.n)?;
    if let Some(b) = req.best_of
        && b != n as i64
    {
        return Err(AppError::invalid("best_of", "`best_of` other than `n` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(AppError::invalid("suffix", "`suffix` is not supported"));
    }
    let max_tokens = parse_max_tokens("max_tokens", req.max_tokens)?;
    let logprobs = req.logprobs.map(|k| parse_top("logprobs", Some(k))).transpose()?;
    let echo = req.echo.unwrap_or(false);
    if echo && logprobs.is_some() {
        return Err(AppError::invalid("echo", "`echo` together with `logprobs` is not supported"));
    }
    let stop = stop_strings(req.stop.as_ref());
    let prompt_value =
        req.prompt.as_ref().ok_or_else(|| AppError::invalid("prompt", "missing required field `prompt`"))?;
    let prompts = parse_prompts(prompt_value, "prompt", false)?;
    if prompts.len() * n > MAX_CHOICES {
        return Err(AppError::invalid("n", format!("prompts × n must be at most {MAX_CHOICES}")));
    }
    let rf_grammar = response_format_grammar(req.response_format.as_ref())?;
    let ready = state.ready()?;
    let sampling = build_sampling(&ready.defaults, &req.sampling_fields(), rf_grammar, &ready).await?;

    let max_tokens = effective_max_tokens(max_tokens, ready.n_predict);
    let template = req.request_template(sampling, max_tokens, stop, logprobs.map_or(0, |k| k.max(1)));
    let mut requests = Vec::with_capacity(prompts.len() * n);
    let mut echoes = Vec::with_capacity(prompts.len() * n);
    for p in &prompts {
        let prompt = p.to_prompt(&ready)?;
        let echo_text = if echo { p.text(&ready) } else { String::new() };
        for i in 0..n {
            requests.push(template.request(prompt.clone(), i, &ready));
            echoes.push(echo_text.clone());
        }
    }
    let total = requests.len();
    let handles = submit_all(&ready, requests, "prompt").await?;
    let plan = Plan::new(&TEXT, &state, ready, total, logprobs, req.stream_options.as_ref());

    if req.stream.unwrap_or(false) {
        let head = echoes
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_empty())
            .map(|(i, e)| Frame::json(&text_chunk(&plan, i, e, None, None)))
            .collect();
        let offsets = vec![0; total];
        let renderer = TextRenderer {
            plan,
            finished: 0,
            offsets,
            per_prompt: n,
            prompt_usage: vec![Usage::default(); prompts.len()],
        };
        return Ok(sse::response(sse::render_stream(handles, renderer, head)));
    }

    let results = collect_all(handles).await?;
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "text": format!("{}{}", echoes[i], r.text),
                "index": i,
                "logprobs": plan.logprobs.map(|k| text_logprobs(&plan.ready, &r.tokens, k, 0).0),
                "finish_reason": r.done.finish_reason.openai_str(),
            })
        })
        .collect();
    let usage = add_prompt_usages(results.chunks(n).map(sum_usage));
    Ok(plan.response(choices, &usage, &results[0].done))
}

/// The legacy `logprobs` object; returns it and the text offset after the tokens.
fn text_logprobs(ready: &Ready, tokens: &[TokenEvent], k: u32, start_offset: usize) -> (Value, usize) {
    let mut offset = start_offset;
    let mut texts = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut lps = Vec::with_capacity(tokens.len());
    let mut tops = Vec::with_capacity(tokens.len());
    for t in tokens {
        let (text, _) = token_text(ready, t.token);
        offsets.push(offset);
        offset += text.chars().count();
        texts.push(text);
        lps.push(t.logprob.unwrap_or(0.0));
        let top: serde_json::Map<String, Value> =
            t.top_logprobs.iter().take(k as usize).map(|a| (a.text.clone(), json!(a.logprob))).collect();
        tops.push(Value::Object(top));
    }
    (json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}), offset)
}

fn text_chunk(plan: &Plan, index: usize, text: &str, finish: Option<&str>, logprobs: Option<Value>) -> Value {
    plan.chunk(json!({"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}))
}

struct TextRenderer {
    plan: Plan,
    finished: usize,
    offsets: Vec<usize>,
    /// Choices per prompt: choice `i` belongs to prompt `i / per_prompt`.
    per_prompt: usize,
    /// Usage of each prompt's choices (its prompt counted once however many choices it has).
    prompt_usage: Vec<Usage>,
}

impl Renderer for TextRenderer {
    fn event(&mut self, index: usize, event: Event, out: &mut VecDeque<Frame>) -> bool {
        match event {
            Event::Token(t) => {
                let logprobs = self.plan.logprobs.map(|k| {
                    let (v, next) = text_logprobs(&self.plan.ready, std::slice::from_ref(&t), k, self.offsets[index]);
                    self.offsets[index] = next;
                    v
                });
                if !t.text.is_empty() || logprobs.is_some() {
                    out.push_back(Frame::json(&text_chunk(&self.plan, index, &t.text, None, logprobs)));
                }
                false
            }
            Event::Done(d) => {
                let p = index / self.per_prompt.max(1);
                // Choices of one prompt share it: its prompt and cached
                // tokens count once (as in the non-streamed response).
                if let Some(slot) = self.prompt_usage.get_mut(p) {
                    add_choice_usage(slot, &d.usage);
                }
                self.finished += 1;
                let chunk = text_chunk(&self.plan, index, "", Some(d.finish_reason.openai_str()), None);
                out.push_back(self.plan.finish_frame(chunk, self.finished, &d));
                false
            }
            Event::Error(e) => {
                out.push_back(error_frame(e));
                true
            }
        }
    }

    fn end(&mut self, out: &mut VecDeque<Frame>) {
        let usage = add_prompt_usages(self.prompt_usage.iter().copied());
        self.plan.end_stream(&usage, out);
    }
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: Option<String>,
    /// A string, an array of strings, an array of token ids, or an array of token arrays.
    pub input: Option<Value>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    /// Must equal the model's embedding size when given.
    pub dimensions: Option<u32>,
}

/// Parse embedding inputs into runtime prompts.
pub(crate) fn embedding_inputs(value: Option<&Value>, param: &str, ready: &Ready) -> Result<Vec<Prompt>, AppError> {
    let value = value.ok_or_else(|| AppError::invalid(param, format!("missing required field `{param}`")))?;
    let prompts = parse_prompts(value, param, true)?;
    if prompts.len() > MAX_EMBED_INPUTS {
        return Err(AppError::invalid(param, format!("at most {MAX_EMBED_INPUTS} inputs per request")));
    }
    prompts.iter().map(|p: &PromptIn| p.to_prompt(ready)).collect()
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(state): State<AppState>,
    Json(req): Json<EmbeddingsRequest>,
) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    if !state.settings().embeddings {
        return Err(AppError::NotSupported("this server does not serve embeddings; start it with --embeddings".into()));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(AppError::invalid(
                "encoding_format",
                format!("unknown encoding_format {other:?} (float or base64)"),
            ));
        }
    };
    let ready = state.ready()?;
    if let Some(d) = req.dimensions
        && d != ready.model().info().n_embd
    {
        return Err(AppError::invalid(
            "dimensions",
            format!("this model's embeddings have {} dimensions", ready.model().info().n_embd),
        ));
    }
    let inputs = embedding_inputs(req.input.as_ref(), "input", &ready)?;
    let result = ready.engine.embed(inputs, true).map_err(|r| AppError::from_rejected(r, "input"))?.await?;
    let mut n_tokens = 0u64;
    let data: Vec<Value> = result
        .iter()
        .enumerate()
        .map(|(i, e)| {
            n_tokens += u64::from(e.n_tokens);
            let embedding = if base64 { json!(base64_f32(&e.vector)) } else { json!(e.vector) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(JsonResponse(json!({
        "object": "list",
        "data": data,
        "model": state.model_id(),
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}

/// Little-endian f32 bytes, base64-encoded (what OpenAI's `encoding_format: base64` returns).
pub fn base64_f32(values: &[f32]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63] as char);
        out.push(TABLE[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { TABLE[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { TABLE[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        // 1.0f32 = 00 00 80 3f ; 2.0f32 = 00 00 00 40
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn messages_convert() {
        let msgs: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]))
        .unwrap();
        let out = to_chat_messages(&msgs).unwrap();
        assert_eq!(out[0].role, "system");
        assert_eq!(out[1].content, "ab");
        assert_eq!(out[2].content, "");
        let img: Vec<InMessage> = serde_json::from_value(
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        )
        .unwrap();
        match to_chat_messages(&img).unwrap_err() {
            AppError::InvalidRequest { param, .. } => assert_eq!(param.as_deref(), Some("messages[0].content[0].type")),
            e => panic!("{e:?}"),
        }
        assert!(to_chat_messages(&[]).is_err());
    }

    #[test]
    fn unknown_roles_are_refused_naming_the_message() {
        for role in CHAT_ROLES {
            let msgs: Vec<InMessage> = serde_json::from_value(json!([{"role": role, "content": "x"}])).unwrap();
            assert!(to_chat_messages(&msgs).is_ok(), "{role}");
        }
        for role in ["wizard", "", " user", "User", "SYSTEM", "user\u{0}", "assistant ", "\u{202e}user"] {
            let msgs: Vec<InMessage> = serde_json::from_value(json!([
                {"role": "user", "content": "a"},
                {"role": role, "content": "b"},
            ]))
            .unwrap();
            match to_chat_messages(&msgs).unwrap_err() {
                AppError::InvalidRequest { param, message } => {
                    assert_eq!(param.as_deref(), Some("messages[1].role"), "{role:?}");
                    assert!(message.contains("unknown role"), "{message}");
                }
                e => panic!("{role:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn response_formats() {
        let rf = |v: Value| -> ResponseFormat { serde_json::from_value(v).unwrap() };
        assert_eq!(response_format_grammar(Some(&rf(json!({"type": "text"})))).unwrap(), None);
        let g = response_format_grammar(Some(&rf(json!({"type": "json_object"})))).unwrap().unwrap();
        assert!(g.starts_with("root ::= object"));
        let g = response_format_grammar(Some(&rf(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "boolean"}}}),
        )))
        .unwrap()
        .unwrap();
        assert!(g.starts_with("root ::= boolean"), "{g}");
        assert!(response_format_grammar(Some(&rf(json!({"type": "json_schema"})))).is_err());
        assert!(response_format_grammar(Some(&rf(json!({"type": "yaml"})))).is_err());
        let unsupported =
            rf(json!({"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a"}}}));
        assert!(matches!(response_format_grammar(Some(&unsupported)), Err(AppError::InvalidRequest { .. })));
    }

    #[test]
    fn n_and_max_tokens_bounds() {
        assert_eq!(parse_n(None).unwrap(), 1);
        assert!(parse_n(Some(0)).is_err());
        assert!(parse_n(Some(MAX_CHOICES as i64 + 1)).is_err());
        assert_eq!(parse_max_tokens("max_tokens", Some(5)).unwrap(), Some(5));
        assert!(parse_max_tokens("max_tokens", Some(0)).is_err());
        assert!(parse_top("top_logprobs", Some(21)).is_err());
    }
}
