//! `POST /completion` (and `/completions`): llama.cpp's completion of one
//! or several prompts, whole or streamed, with `completion_probabilities`.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_core::Token;
use llama_runtime::{Done, FinishReason, Infill, InfillError, Output, TokenEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::generation_settings::{GenerationSettings, RunSettings};
use crate::error::AppError;
use crate::extract::Json;
use crate::logprobs::{TokenLogprob, parse_top};
use crate::prompt::{PromptIn, parse_prompts};
use crate::request::{MAX_CHOICES, StopField, effective_max_tokens, stop_strings};
use crate::sampling::{build_sampling, request_with_sampling};
use crate::sse::{self, Frame, Renderer};
use crate::state::{AppState, Ready};
use crate::submit::{collect_all, submit_all};
use crate::timings::Timings;

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
        /// `/infill`: the code before the gap.
        pub input_prefix: Option<String>,
        /// `/infill`: the code after the gap.
        pub input_suffix: Option<String>,
        /// `/infill`: extra context (files) before the prefix.
        pub input_extra: Option<Vec<ExtraChunk>>,
    }
}

/// One `input_extra` chunk of `/infill`.
#[derive(Debug, Default, Deserialize)]
pub struct ExtraChunk {
    /// The file it comes from.
    #[serde(default)]
    pub filename: String,
    /// Its text.
    pub text: String,
}

/// The object that ends a prompt's completion: the whole result when not
/// streamed, the last chunk (with no new content) when streamed.
#[derive(Debug, Serialize)]
struct FinalChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<Vec<TokenLogprob<'a>>>,
    content: &'a str,
    generation_settings: &'a GenerationSettings,
    has_new_line: bool,
    id_slot: i32,
    index: usize,
    model: &'a str,
    prompt: &'a str,
    stop: bool,
    stop_type: &'static str,
    stopping_word: &'a str,
    timings: Timings,
    tokens: Vec<Token>,
    tokens_cached: u32,
    tokens_evaluated: u32,
    tokens_predicted: u32,
    truncated: bool,
}

/// A streamed chunk with one token.
#[derive(Debug, Serialize)]
struct TokenChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<[TokenLogprob<'a>; 1]>,
    content: &'a str,
    id_slot: i32,
    index: usize,
    stop: bool,
    tokens: [Token; 1],
    tokens_predicted: u32,
}

/// llama.cpp's `stop_type`, `stopping_word` and `truncated`.
fn stop_type(reason: &FinishReason) -> (&'static str, &str, bool) {
    match reason {
        FinishReason::Eos => ("eos", "", false),
        FinishReason::Stop { word } => ("word", word, false),
        FinishReason::MaxTokens => ("limit", "", false),
        FinishReason::ContextFull => ("limit", "", true),
        // A reason this server does not know yet: llama.cpp's catch-all.
        _ => ("none", "", false),
    }
}

struct NativePlan {
    ready: Arc<Ready>,
    model: String,
    settings: GenerationSettings,
    /// Each prompt as text.
    prompts: Vec<String>,
    n_probs: u32,
    return_tokens: bool,
}

impl NativePlan {
    fn final_chunk<'a>(
        &'a self,
        index: usize,
        content: &'a str,
        tokens: Vec<Token>,
        probs: Option<Vec<TokenLogprob<'a>>>,
        done: &'a Done,
        stream: bool,
    ) -> FinalChunk<'a> {
        let (stop_type, stopping_word, truncated) = stop_type(&done.finish_reason);
        FinalChunk {
            completion_probabilities: probs,
            content,
            generation_settings: &self.settings,
            has_new_line: false,
            id_slot: i32::try_from(done.slot).unwrap_or(-1),
            index,
            model: &self.model,
            prompt: self.prompts.get(index).map_or("", String::as_str),
            stop: true,
            stop_type,
            stopping_word,
            timings: Timings::of(done),
            tokens: if self.return_tokens || stream { tokens } else { Vec::new() },
            tokens_cached: done.usage.cached_tokens,
            tokens_evaluated: done.usage.prompt_tokens,
            tokens_predicted: done.usage.completion_tokens,
            truncated,
        }
    }
}

/// `POST /completion`
pub(crate) async fn completion(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, AppError> {
    run(state, req, false).await
}

/// `POST /infill`: a completion whose prompt is laid out around the
/// model's fill-in-the-middle tokens (see [`llama_runtime::Infill`]).
pub(crate) async fn infill(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, AppError> {
    run(state, req, true).await
}

/// The prompt of an `/infill` request: `prompt` (a string, or absent) goes
/// after the FIM middle token. The prefix and suffix share a budget of
/// `n_batch` tokens (at most half a slot), the extra context what is left
/// of three quarters of a slot, as llama.cpp's server does.
fn infill_prompt(req: &CompletionRequest, ready: &Ready) -> Result<PromptIn, AppError> {
    let prompt = match &req.prompt {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(AppError::invalid("prompt", "`prompt` of /infill must be a string")),
    };
    let infill = Infill {
        prefix: req.input_prefix.clone().unwrap_or_default(),
        suffix: req.input_suffix.clone().unwrap_or_default(),
        prompt,
        extra: req.input_extra.iter().flatten().map(|c| (c.filename.clone(), c.text.clone())).collect(),
    };
    let n_ctx = ready.n_ctx_seq as usize;
    let budget = (ready.engine.config().n_batch as usize).min(n_ctx / 2);
    let tokens = infill.tokens(ready.model(), budget, n_ctx * 3 / 4).map_err(|e| match e {
        InfillError::Tokenize { field, source } => {
            let param = match field {
                "prompt" => "prompt",
                "prefix" => "input_prefix",
                "suffix" => "input_suffix",
                _ => "input_extra",
            };
            AppError::from(source).with_param(param)
        }
        other => AppError::bad_request(other.to_string()),
    })?;
    Ok(PromptIn::Tokens(tokens))
}

async fn run(state: AppState, req: CompletionRequest, infill: bool) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    let n_predict = match req.n_predict.or(req.max_tokens) {
        None | Some(-1) => None,
        Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(n) => return Err(AppError::invalid("n_predict", format!("`n_predict` must be -1 or >= 0, got {n}"))),
    };
    let n_probs = parse_top("n_probs", req.n_probs)?;
    let stop = stop_strings(req.stop.as_ref());
    let prompts = if infill {
        Vec::new()
    } else {
        let prompt_value =
            req.prompt.as_ref().ok_or_else(|| AppError::invalid("prompt", "missing required field `prompt`"))?;
        parse_prompts(prompt_value, "prompt", true, MAX_CHOICES)?
    };
    let ready = state.ready()?;
    let prompts = if infill { vec![infill_prompt(&req, &ready)?] } else { prompts };
    let sampling = build_sampling(&ready.defaults, &req.sampling_fields(), None, &ready).await?;
    let stream = req.stream.unwrap_or(false);
    let max_tokens = effective_max_tokens(n_predict, ready.n_predict);
    let model = state.model_id();
    let template = req.request_template(&ready, sampling, max_tokens, stop, n_probs)?;
    let run = RunSettings {
        n_predict: max_tokens,
        stop: &template.stop,
        n_probs,
        ignore_eos: template.ignore_eos,
        stream,
        n_keep: template.context_shift.map_or(ready.request_defaults.n_keep, |c| c.n_keep),
        n_discard: template.context_shift.map_or(0, |c| c.n_discard),
        lora: &template.lora,
    };
    let settings = GenerationSettings::new(&template.sampling, &run, ready.n_ctx_seq, &model);

    let mut requests = Vec::with_capacity(prompts.len());
    for p in &prompts {
        // Each prompt is choice 0 of its own: all sample with the request's seed.
        requests.push(template.request(p.to_prompt(&ready, "prompt")?, 0, &ready));
    }
    let handles = submit_all(&ready, requests, "prompt").await?;
    let plan = NativePlan {
        prompts: prompts.iter().map(|p| p.text(&ready)).collect(),
        ready,
        model,
        settings,
        n_probs,
        return_tokens: req.return_tokens.unwrap_or(false),
    };

    if stream {
        let n = handles.len();
        let renderer = NativeRenderer { plan, predicted: vec![0; n] };
        return Ok(sse::response(sse::render_stream(handles, renderer, Vec::new())));
    }

    let results = collect_all(handles).await?;
    let dones: Vec<Done> = results.iter().map(Output::done).collect();
    let objects: Vec<FinalChunk<'_>> = results
        .iter()
        .zip(&dones)
        .enumerate()
        .map(|(i, (r, done))| {
            let probs = (plan.n_probs > 0)
                .then(|| r.events.iter().map(|t| TokenLogprob::native(&plan.ready, t, plan.n_probs)).collect());
            let tokens = r.events.iter().map(|t| t.token).collect();
            plan.final_chunk(i, &r.text, tokens, probs, done, false)
        })
        .collect();
    // One prompt: one object; several: an array, as llama.cpp does.
    Ok(match objects.as_slice() {
        [one] => JsonResponse(one).into_response(),
        several => JsonResponse(several).into_response(),
    })
}

struct NativeRenderer {
    plan: NativePlan,
    /// Tokens streamed so far, per prompt.
    predicted: Vec<u32>,
}

impl Renderer for NativeRenderer {
    fn token(&mut self, index: usize, t: TokenEvent, out: &mut VecDeque<Frame>) {
        self.predicted[index] += 1;
        let probs = self.plan.n_probs > 0;
        let chunk = TokenChunk {
            completion_probabilities: probs.then(|| [TokenLogprob::native(&self.plan.ready, &t, self.plan.n_probs)]),
            content: &t.text,
            id_slot: -1,
            index,
            stop: false,
            tokens: [t.token],
            tokens_predicted: self.predicted[index],
        };
        out.push_back(Frame::json(&chunk));
    }

    fn done(&mut self, index: usize, d: Done, out: &mut VecDeque<Frame>) {
        // The final chunk has no new content, like llama.cpp's.
        out.push_back(Frame::json(&self.plan.final_chunk(index, "", Vec::new(), None, &d, true)));
    }

    fn end(&mut self, _out: &mut VecDeque<Frame>) {}
}

#[cfg(test)]
mod tests {
    use llama_runtime::Usage;

    use super::*;
    use crate::native::generation_settings::tests::example;
    use crate::test_support::assert_wire_order;

    #[test]
    fn stop_types() {
        assert_eq!(stop_type(&FinishReason::Eos).0, "eos");
        assert_eq!(stop_type(&FinishReason::Stop { word: "x".into() }), ("word", "x", false));
        assert_eq!(stop_type(&FinishReason::MaxTokens).0, "limit");
        assert_eq!(stop_type(&FinishReason::ContextFull), ("limit", "", true));
    }

    #[test]
    fn chunks_in_wire_order() {
        let settings = example();
        for probs in [None, Some(Vec::new())] {
            assert_wire_order(&FinalChunk {
                completion_probabilities: probs,
                content: "hi",
                generation_settings: &settings,
                has_new_line: false,
                id_slot: -1,
                index: 0,
                model: "m",
                prompt: "p",
                stop: true,
                stop_type: "limit",
                stopping_word: "",
                timings: Timings::new(&Usage::default(), &Default::default()),
                tokens: vec![1, 2],
                tokens_cached: 0,
                tokens_evaluated: 3,
                tokens_predicted: 2,
                truncated: false,
            });
        }
        assert_wire_order(&TokenChunk {
            completion_probabilities: None,
            content: "x",
            id_slot: -1,
            index: 1,
            stop: false,
            tokens: [7],
            tokens_predicted: 1,
        });
    }
}
