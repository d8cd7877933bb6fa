//! `POST /v1/completions`: text completions of one or several prompts, with
//! `n` choices each, whole or streamed.

use std::collections::VecDeque;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_runtime::{Done, TokenEvent, Usage as Counts};
use serde::Serialize;
use serde_json::Value;

use super::response::{Envelope, Plan, StreamOptions, TEXT};
use super::response_format::{ResponseFormat, response_format_grammar};
use super::usage;
use crate::error::AppError;
use crate::extract::Json;
use crate::logprobs::{TextLogprobs, parse_top};
use crate::prompt::parse_prompts;
use crate::request::{MAX_CHOICES, StopField, effective_max_tokens, parse_max_tokens, parse_n, stop_strings};
use crate::sampling::{build_sampling, request_with_sampling};
use crate::sse::{self, Frame, Renderer};
use crate::state::AppState;
use crate::submit::{collect_all, submit_all};

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

/// The body of a text completion, and one streamed chunk (the same shape).
type Completion<'a> = Envelope<'a, TextChoice<'a>>;

/// A choice: the whole text, or in a chunk the text it adds.
#[derive(Debug, Serialize)]
struct TextChoice<'a> {
    /// `null` until the choice's last chunk.
    finish_reason: Option<&'static str>,
    index: usize,
    logprobs: Option<TextLogprobs>,
    text: &'a str,
}

/// `POST /v1/completions`
pub(crate) async fn completions(
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
    let prompts = parse_prompts(prompt_value, "prompt", false, MAX_CHOICES * 8)?;
    if prompts.len() * n > MAX_CHOICES {
        return Err(AppError::invalid("n", format!("prompts × n must be at most {MAX_CHOICES}")));
    }
    let rf_grammar = response_format_grammar(req.response_format.as_ref())?;
    let ready = state.ready()?;
    let sampling = build_sampling(&ready.defaults, &req.sampling_fields(), rf_grammar, &ready).await?;

    let max_tokens = effective_max_tokens(max_tokens, ready.n_predict);
    let template = req.request_template(&ready, sampling, max_tokens, stop, logprobs.map_or(0, |k| k.max(1)))?;
    let mut requests = Vec::with_capacity(prompts.len() * n);
    let mut echoes = Vec::with_capacity(prompts.len() * n);
    for p in &prompts {
        let prompt = p.to_prompt(&ready, "prompt")?;
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
            .map(|(i, e)| Frame::json(&chunk(&plan, i, e, None, None)))
            .collect();
        let renderer = TextRenderer {
            plan,
            finished: 0,
            offsets: vec![0; total],
            per_prompt: n,
            prompt_usage: vec![Counts::default(); prompts.len()],
        };
        return Ok(sse::response(sse::render_stream(handles, renderer, head)));
    }

    let results = collect_all(handles).await?;
    let texts: Vec<String> = results.iter().zip(&echoes).map(|(r, echo)| format!("{echo}{}", r.text)).collect();
    let choices = results
        .iter()
        .zip(&texts)
        .enumerate()
        .map(|(i, (r, text))| TextChoice {
            finish_reason: Some(r.finish_reason.openai_str()),
            index: i,
            logprobs: plan.logprobs.map(|k| TextLogprobs::new(&plan.ready, &r.events, k, 0).0),
            text,
        })
        .collect();
    let counts = usage::add_prompts(results.chunks(n).map(usage::sum_choices));
    let body: Completion<'_> = plan.response(choices, &counts, &results[0].done());
    Ok(JsonResponse(body).into_response())
}

fn chunk<'a>(
    plan: &'a Plan,
    index: usize,
    text: &'a str,
    finish_reason: Option<&'static str>,
    logprobs: Option<TextLogprobs>,
) -> Completion<'a> {
    plan.chunk(TextChoice { finish_reason, index, logprobs, text })
}

struct TextRenderer {
    plan: Plan,
    finished: usize,
    /// Per choice: characters of text streamed so far (`text_offset`).
    offsets: Vec<usize>,
    /// Choices per prompt: choice `i` belongs to prompt `i / per_prompt`.
    per_prompt: usize,
    /// Counts of each prompt's choices (its prompt counted once however many choices it has).
    prompt_usage: Vec<Counts>,
}

impl Renderer for TextRenderer {
    fn token(&mut self, index: usize, t: TokenEvent, out: &mut VecDeque<Frame>) {
        let logprobs = self.plan.logprobs.map(|k| {
            let (logprobs, next) =
                TextLogprobs::new(&self.plan.ready, std::slice::from_ref(&t), k, self.offsets[index]);
            self.offsets[index] = next;
            logprobs
        });
        if !t.text.is_empty() || logprobs.is_some() {
            out.push_back(Frame::json(&chunk(&self.plan, index, &t.text, None, logprobs)));
        }
    }

    fn done(&mut self, index: usize, d: Done, out: &mut VecDeque<Frame>) {
        let p = index / self.per_prompt.max(1);
        // Choices of one prompt share it: its prompt and cached
        // tokens count once (as in the non-streamed response).
        if let Some(slot) = self.prompt_usage.get_mut(p) {
            usage::add_choice(slot, &d.usage);
        }
        self.finished += 1;
        let last = chunk(&self.plan, index, "", Some(d.finish_reason.openai_str()), None);
        out.push_back(self.plan.finish_frame(last, self.finished, &d));
    }

    fn end(&mut self, out: &mut VecDeque<Frame>) {
        let counts = usage::add_prompts(self.prompt_usage.iter().copied());
        self.plan.end_stream(&counts, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn choices_in_wire_order() {
        for finish_reason in [None, Some("stop")] {
            assert_wire_order(&TextChoice { finish_reason, index: 0, logprobs: None, text: "hi" });
        }
    }
}
