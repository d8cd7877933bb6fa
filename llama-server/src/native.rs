//! llama.cpp's own API: `/health`, `/completion`, `/tokenize`,
//! `/detokenize`, `/apply-template`, `/embedding`, `/props`, `/slots`,
//! `/metrics`.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json as JsonResponse;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use llama_core::{SamplingParams, Token};
use llama_runtime::{Done, Event, FinishReason, SlotState, TokenEvent};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::extract::Json;
use crate::generate::{
    MAX_CHOICES, MAX_TOP_LOGPROBS, PromptIn, StopField, build_sampling, collect_all, effective_max_tokens, error_frame,
    maybe_blocking, parse_prompts, request_with_sampling, stop_strings, submit_all, timings_json, token_text,
};
use crate::metrics;
use crate::openai::{InMessage, embedding_inputs, render_chat, to_chat_messages};
use crate::sse::{self, Frame, Renderer};
use crate::state::{AppState, Ready};

/// Reported as `build_info`.
pub const BUILD_INFO: &str = concat!("llama.rs ", env!("CARGO_PKG_VERSION"));

/// `GET /health`: 200 `{"status":"ok"}` when serving; 503 while loading or
/// when the engine is stalled or stopped.
pub async fn health(State(state): State<AppState>) -> Result<Response, AppError> {
    state.health()?;
    Ok(JsonResponse(json!({"status": "ok"})).into_response())
}

/// `GET /`: there is no web UI; say where the API is described.
pub async fn index(State(state): State<AppState>) -> Response {
    JsonResponse(json!({
        "name": "llama-server (llama.rs)",
        "version": env!("CARGO_PKG_VERSION"),
        "model": state.model_id(),
        "openapi": "/openapi.json",
    }))
    .into_response()
}

request_with_sampling! {
    /// `POST /completion` (and `/completions`).
    pub struct CompletionRequest {
        /// The prompt: a string, token ids, `[12, "text", 34]`, or an array of prompts.
        pub prompt: Option<Value>,
        /// Most tokens to generate (-1 = until the context is full; 0 = only evaluate the prompt).
        pub n_predict: Option<i64>,
        /// OpenAI-style synonym of `n_predict`.
        pub max_tokens: Option<i64>,
        /// Stream chunks.
        pub stream: Option<bool>,
        /// Stop strings.
        pub stop: Option<StopField>,
        /// Alternatives per token with their log-probabilities (0..=20).
        pub n_probs: Option<i64>,
        /// Fill `tokens` with the generated token ids.
        pub return_tokens: Option<bool>,
        /// Model name (checked like on the OpenAI routes).
        pub model: Option<String>,
    }
}

/// The per-request settings reported beside the sampling parameters.
pub(crate) struct RunSettings<'a> {
    pub n_predict: Option<u32>,
    pub stop: &'a [String],
    pub n_probs: u32,
    pub ignore_eos: bool,
    pub stream: bool,
}

/// The generation settings a `/completion` runs with, in llama.cpp's shape.
pub(crate) fn generation_settings(p: &SamplingParams, run: &RunSettings<'_>, ready: &Ready, model: &str) -> Value {
    let RunSettings { n_predict, stop, n_probs, ignore_eos, stream } = *run;
    json!({
        "n_ctx": ready.n_ctx_seq,
        "n_predict": n_predict.map_or(-1, i64::from),
        "model": model,
        "seed": p.seed,
        "temperature": p.temperature,
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_k": p.top_k,
        "top_p": p.top_p,
        "min_p": p.min_p,
        "xtc_probability": p.xtc_probability,
        "xtc_threshold": p.xtc_threshold,
        "typical_p": p.typical_p,
        "repeat_last_n": p.repeat_last_n,
        "repeat_penalty": p.repeat_penalty,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "dry_multiplier": p.dry_multiplier,
        "dry_base": p.dry_base,
        "dry_allowed_length": p.dry_allowed_length,
        "dry_penalty_last_n": p.dry_penalty_last_n,
        "dry_sequence_breakers": p.dry_sequence_breakers,
        "mirostat": p.mirostat,
        "mirostat_tau": p.mirostat_tau,
        "mirostat_eta": p.mirostat_eta,
        "stop": stop,
        "max_tokens": n_predict.map_or(-1, i64::from),
        "n_keep": 0,
        "n_discard": 0,
        "ignore_eos": ignore_eos,
        "stream": stream,
        "n_probs": n_probs,
        "min_keep": p.min_keep,
        "grammar": p.grammar.clone().unwrap_or_default(),
        "samplers": ["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"],
    })
}

fn stop_type(reason: &FinishReason) -> (&'static str, String, bool) {
    match reason {
        FinishReason::Eos => ("eos", String::new(), false),
        FinishReason::Stop { word } => ("word", word.clone(), false),
        FinishReason::MaxTokens => ("limit", String::new(), false),
        FinishReason::ContextFull => ("limit", String::new(), true),
    }
}

fn probs_entry(ready: &Ready, t: &TokenEvent, k: u32) -> Value {
    let (text, bytes) = token_text(ready, t.token);
    json!({
        "id": t.token,
        "token": text,
        "bytes": bytes,
        "logprob": t.logprob.unwrap_or(0.0),
        "top_logprobs": t.top_logprobs.iter().take(k as usize).map(|a| json!({
            "id": a.token,
            "token": a.text,
            "bytes": a.text.as_bytes(),
            "logprob": a.logprob,
        })).collect::<Vec<_>>(),
    })
}

struct NativePlan {
    ready: Arc<Ready>,
    model: String,
    settings: Value,
    prompts: Vec<String>,
    n_probs: u32,
    return_tokens: bool,
}

impl NativePlan {
    #[allow(clippy::too_many_arguments)] // one place builds the final object for both paths
    fn final_object(
        &self,
        index: usize,
        content: String,
        tokens: Vec<Token>,
        probs: Option<Vec<Value>>,
        done: &Done,
        stream: bool,
    ) -> Value {
        let (stop_type, word, truncated) = stop_type(&done.finish_reason);
        let mut v = json!({
            "index": index,
            "content": content,
            "tokens": if self.return_tokens || stream { tokens } else { Vec::new() },
            "id_slot": -1,
            "stop": true,
            "model": self.model,
            "tokens_predicted": done.usage.completion_tokens,
            "tokens_evaluated": done.usage.prompt_tokens,
            "generation_settings": self.settings,
            "prompt": self.prompts.get(index).cloned().unwrap_or_default(),
            "has_new_line": false,
            "truncated": truncated,
            "stop_type": stop_type,
            "stopping_word": word,
            "tokens_cached": done.usage.cached_tokens,
            "timings": timings_json(done),
        });
        if let Some(probs) = probs {
            v["completion_probabilities"] = json!(probs);
        }
        v
    }
}

/// `POST /completion`
pub async fn completion(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    let n_predict = match req.n_predict.or(req.max_tokens) {
        None | Some(-1) => None,
        Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(n) => return Err(AppError::invalid("n_predict", format!("`n_predict` must be -1 or >= 0, got {n}"))),
    };
    let n_probs = match req.n_probs {
        None => 0,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => k as u32,
        Some(k) => {
            return Err(AppError::invalid(
                "n_probs",
                format!("`n_probs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ));
        }
    };
    let stop = stop_strings(req.stop.as_ref());
    let prompt_value =
        req.prompt.as_ref().ok_or_else(|| AppError::invalid("prompt", "missing required field `prompt`"))?;
    let prompts = parse_prompts(prompt_value, "prompt", true)?;
    if prompts.len() > MAX_CHOICES {
        return Err(AppError::invalid("prompt", format!("at most {MAX_CHOICES} prompts per request")));
    }
    let ready = state.ready()?;
    let sampling = build_sampling(&ready.defaults, &req.sampling_fields(), None, &ready).await?;
    let stream = req.stream.unwrap_or(false);
    let max_tokens = effective_max_tokens(n_predict, ready.n_predict);
    let model = state.model_id();
    let template = req.request_template(sampling, max_tokens, stop, n_probs);
    let run =
        RunSettings { n_predict: max_tokens, stop: &template.stop, n_probs, ignore_eos: template.ignore_eos, stream };
    let settings = generation_settings(&template.sampling, &run, &ready, &model);

    let mut requests = Vec::with_capacity(prompts.len());
    for p in &prompts {
        // Each prompt is choice 0 of its own: all sample with the request's seed.
        requests.push(template.request(p.to_prompt(&ready)?, 0, &ready));
    }
    let handles = submit_all(&ready, requests, "prompt").await?;
    let plan = NativePlan {
        prompts: prompts.iter().map(|p: &PromptIn| p.text(&ready)).collect(),
        ready,
        model,
        settings,
        n_probs,
        return_tokens: req.return_tokens.unwrap_or(false),
    };

    if stream {
        let n = handles.len();
        let renderer = NativeRenderer { plan, predicted: vec![0; n], tokens: vec![Vec::new(); n] };
        return Ok(sse::response(sse::render_stream(handles, renderer, Vec::new())));
    }

    let results = collect_all(handles).await?;
    let objects: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let probs = (plan.n_probs > 0)
                .then(|| r.tokens.iter().map(|t| probs_entry(&plan.ready, t, plan.n_probs)).collect());
            let tokens = r.tokens.iter().map(|t| t.token).collect();
            plan.final_object(i, r.text, tokens, probs, &r.done, false)
        })
        .collect();
    // One prompt: one object; several: an array, as llama.cpp does.
    let body =
        if objects.len() == 1 { objects.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(objects) };
    Ok(JsonResponse(body).into_response())
}

struct NativeRenderer {
    plan: NativePlan,
    predicted: Vec<u32>,
    tokens: Vec<Vec<Token>>,
}

impl Renderer for NativeRenderer {
    fn event(&mut self, index: usize, event: Event, out: &mut VecDeque<Frame>) -> bool {
        match event {
            Event::Token(t) => {
                self.predicted[index] += 1;
                self.tokens[index].push(t.token);
                let mut v = json!({
                    "index": index,
                    "content": t.text,
                    "tokens": [t.token],
                    "stop": false,
                    "id_slot": -1,
                    "tokens_predicted": self.predicted[index],
                });
                if self.plan.n_probs > 0 {
                    v["completion_probabilities"] = json!([probs_entry(&self.plan.ready, &t, self.plan.n_probs)]);
                }
                out.push_back(Frame::json(&v));
                false
            }
            Event::Done(d) => {
                // The final chunk has no new content, like llama.cpp's.
                let v = self.plan.final_object(index, String::new(), Vec::new(), None, &d, true);
                out.push_back(Frame::json(&v));
                false
            }
            Event::Error(e) => {
                out.push_back(error_frame(e));
                true
            }
        }
    }

    fn end(&mut self, _out: &mut VecDeque<Frame>) {}
}

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// The text.
    pub content: String,
    /// Add BOS/EOS as the model wants (default false).
    pub add_special: Option<bool>,
    /// Turn special-token text into special tokens (default true).
    pub parse_special: Option<bool>,
    /// Return `{id, piece}` objects instead of ids.
    pub with_pieces: Option<bool>,
}

/// `POST /tokenize`
pub async fn tokenize(State(state): State<AppState>, Json(req): Json<TokenizeRequest>) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let (add, parse) = (req.add_special.unwrap_or(false), req.parse_special.unwrap_or(true));
    let content = req.content;
    let engine = Arc::clone(&ready.engine);
    let tokens = maybe_blocking(content.len(), move || engine.model().tokenize(&content, add, parse)).await??;
    let model = ready.model();
    let body = if req.with_pieces.unwrap_or(false) {
        let items: Vec<Value> = tokens
            .iter()
            .map(|&t| {
                let bytes = model.token_piece(t);
                let piece = match String::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": t, "piece": piece})
            })
            .collect();
        json!({"tokens": items})
    } else {
        json!({"tokens": tokens})
    };
    Ok(JsonResponse(body).into_response())
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<i64>,
}

/// `POST /detokenize`
pub async fn detokenize(
    State(state): State<AppState>,
    Json(req): Json<DetokenizeRequest>,
) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let n_vocab = ready.model().info().n_vocab;
    let tokens: Vec<Token> = req
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if (0..n_vocab as i64).contains(&t) {
                Ok(t as Token)
            } else {
                Err(AppError::invalid(
                    format!("tokens[{i}]"),
                    format!("token id {t} is outside the vocabulary (0..{n_vocab})"),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let engine = Arc::clone(&ready.engine);
    let content = maybe_blocking(tokens.len() * 4, move || engine.model().detokenize(&tokens, false, true)).await??;
    Ok(JsonResponse(json!({"content": content})).into_response())
}

/// `POST /apply-template` body.
#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    /// Chat messages, as for `/v1/chat/completions`.
    pub messages: Vec<InMessage>,
}

/// `POST /apply-template`: the prompt the chat template makes of `messages`.
pub async fn apply_template(
    State(state): State<AppState>,
    Json(req): Json<ApplyTemplateRequest>,
) -> Result<Response, AppError> {
    let messages = to_chat_messages(&req.messages)?;
    let ready = state.ready()?;
    let prompt = render_chat(&ready, messages).await?;
    Ok(JsonResponse(json!({"prompt": prompt})).into_response())
}

/// `POST /embedding` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// The text(s) or token ids.
    pub content: Option<Value>,
    /// Synonym of `content`.
    pub input: Option<Value>,
    /// 2 = Euclidean (default), -1 = none; other norms are not supported.
    pub embd_normalize: Option<i64>,
}

/// `POST /embedding` (and `/embeddings`): `[{"index", "embedding": [[...]]}]`.
pub async fn embedding(State(state): State<AppState>, Json(req): Json<EmbeddingRequest>) -> Result<Response, AppError> {
    if !state.settings().embeddings {
        return Err(AppError::NotSupported("this server does not serve embeddings; start it with --embeddings".into()));
    }
    let normalize = match req.embd_normalize {
        None | Some(2) => true,
        Some(-1) => false,
        Some(other) => {
            return Err(AppError::invalid(
                "embd_normalize",
                format!("embd_normalize {other} is not supported (2 = Euclidean, -1 = none)"),
            ));
        }
    };
    let ready = state.ready()?;
    let (value, param) = match (&req.content, &req.input) {
        (Some(c), _) => (Some(c), "content"),
        (None, i) => (i.as_ref(), "content"),
    };
    let inputs = embedding_inputs(value, param, &ready)?;
    let result = ready.engine.embed(inputs, normalize).map_err(|r| AppError::from_rejected(r, param))?.await?;
    let body: Vec<Value> =
        result.iter().enumerate().map(|(i, e)| json!({"index": i, "embedding": [e.vector]})).collect();
    Ok(JsonResponse(Value::Array(body)).into_response())
}

/// `GET /props`
pub async fn props(State(state): State<AppState>) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let s = state.settings();
    let model = state.model_id();
    let run = RunSettings { n_predict: ready.n_predict, stop: &[], n_probs: 0, ignore_eos: false, stream: false };
    let params = generation_settings(&ready.defaults, &run, &ready, &model);
    Ok(JsonResponse(json!({
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": ready.n_ctx_seq,
            "speculative": false,
            "is_processing": false,
            "params": params,
            "prompt": "",
            "next_token": {"has_next_token": true, "has_new_line": false, "n_remain": -1, "n_decoded": 0, "stopping_word": ""},
        },
        "total_slots": s.parallel,
        "model_path": s.model_path.display().to_string(),
        "model_alias": model,
        "chat_template": ready.template_source,
        "chat_template_caps": {},
        "modalities": {"vision": false, "audio": false},
        "bos_token": ready.bos_text,
        "eos_token": ready.eos_text,
        "build_info": BUILD_INFO,
        "is_sleeping": false,
        "embeddings": s.embeddings,
        "endpoint_slots": s.slots,
        "endpoint_metrics": s.metrics,
    }))
    .into_response())
}

/// `GET /slots` query.
#[derive(Debug, Deserialize)]
pub struct SlotsQuery {
    /// `1`: answer 503 when no slot is free.
    pub fail_on_no_slot: Option<String>,
}

/// `GET /slots`
pub async fn slots(State(state): State<AppState>, Query(q): Query<SlotsQuery>) -> Result<Response, AppError> {
    if !state.settings().slots {
        return Err(AppError::NotSupported(
            "This server does not support slots endpoint. Start it with `--slots`".into(),
        ));
    }
    let ready = state.ready()?;
    let slots = ready.engine.slots();
    let fail = q.fail_on_no_slot.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if fail && slots.iter().all(|s| s.state != SlotState::Idle) {
        return Err(AppError::unavailable("no slot available", Some(1)));
    }
    let body: Vec<Value> = slots
        .iter()
        .map(|s| {
            let state_name = match s.state {
                SlotState::Idle => "idle",
                SlotState::Prefill => "prefill",
                SlotState::Decode => "decode",
            };
            json!({
                "id": s.id,
                "id_task": s.request_id.map_or(-1, |r| r as i64),
                "n_ctx": ready.n_ctx_seq,
                "speculative": false,
                "is_processing": s.state != SlotState::Idle,
                "state": state_name,
                "n_prompt_tokens": s.n_prompt,
                "n_cached": s.n_cached,
                "next_token": {"n_decoded": s.n_decoded},
            })
        })
        .collect();
    Ok(JsonResponse(Value::Array(body)).into_response())
}

/// `GET /metrics` (Prometheus text; needs `--metrics`).
pub async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    if !state.settings().metrics {
        return Err(AppError::NotSupported(
            "This server does not support metrics endpoint. Start it with `--metrics`".into(),
        ));
    }
    let ready = state.ready()?;
    let text = metrics::render(&ready.engine.metrics(), &ready.stats);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_types() {
        assert_eq!(stop_type(&FinishReason::Eos).0, "eos");
        assert_eq!(stop_type(&FinishReason::Stop { word: "x".into() }), ("word", "x".to_string(), false));
        assert_eq!(stop_type(&FinishReason::MaxTokens).0, "limit");
        assert_eq!(stop_type(&FinishReason::ContextFull), ("limit", String::new(), true));
    }
}
