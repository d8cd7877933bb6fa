//! `POST /v1/chat/completions` (and `/chat/completions`): the request, the
//! whole response and the streamed chunks.

use std::collections::VecDeque;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_runtime::{Done, Prompt, TokenEvent, Usage as Counts};
use serde::Serialize;
use serde_json::Value;

use super::messages::{InMessage, render_chat, to_chat_messages};
use super::response::{CHAT, Envelope, Plan, StreamOptions};
use super::response_format::{ResponseFormat, response_format_grammar};
use super::usage;
use crate::error::AppError;
use crate::extract::Json;
use crate::logprobs::{TokenLogprob, parse_top};
use crate::request::{StopField, effective_max_tokens, parse_max_tokens, parse_n, stop_strings};
use crate::sampling::{build_sampling, request_with_sampling};
use crate::sse::{self, Frame, Renderer};
use crate::state::{AppState, Ready};
use crate::submit::{collect_all, submit_all};

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

/// The body of a chat completion.
type ChatCompletion<'a> = Envelope<'a, ChatChoice<'a>>;
/// One streamed chunk of a chat completion.
type ChatCompletionChunk<'a> = Envelope<'a, ChunkChoice<'a>>;

/// A choice of a whole chat completion.
#[derive(Debug, Serialize)]
struct ChatChoice<'a> {
    finish_reason: &'static str,
    index: usize,
    logprobs: Option<ChatLogprobs<'a>>,
    message: Message<'a>,
}

/// The assistant's message.
#[derive(Debug, Serialize)]
struct Message<'a> {
    content: &'a str,
    role: &'static str,
}

/// A choice's `logprobs`.
#[derive(Debug, Serialize)]
struct ChatLogprobs<'a> {
    content: Vec<TokenLogprob<'a>>,
}

impl<'a> ChatLogprobs<'a> {
    fn new(ready: &Ready, tokens: &'a [TokenEvent], k: u32) -> Self {
        ChatLogprobs { content: tokens.iter().map(|t| TokenLogprob::chat(ready, t, k)).collect() }
    }
}

/// A choice of a streamed chunk.
#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    index: usize,
    logprobs: Option<ChatLogprobs<'a>>,
}

/// What a chunk adds to the message: the role on the first chunk, text on
/// the next ones, nothing on the last.
#[derive(Debug, Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

/// `POST /v1/chat/completions`
pub(crate) async fn chat_completions(
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
    let template = req.request_template(&ready, sampling, max_tokens, stop, logprobs.map_or(0, |k| k.max(1)))?;
    let requests = (0..n).map(|i| template.request(Prompt::Text(prompt.clone()), i, &ready)).collect();
    let handles = submit_all(&ready, requests, "messages").await?;
    let plan = Plan::new(&CHAT, &state, ready, n, logprobs, req.stream_options.as_ref());

    if req.stream.unwrap_or(false) {
        let head = (0..n)
            .map(|i| {
                let delta = Delta { content: Some(""), role: Some("assistant") };
                Frame::json(&chunk(&plan, i, delta, None, None))
            })
            .collect();
        let renderer = ChatRenderer { plan, usage: Counts::default(), finished: 0 };
        return Ok(sse::response(sse::render_stream(handles, renderer, head)));
    }

    let results = collect_all(handles).await?;
    let choices = results
        .iter()
        .enumerate()
        .map(|(i, r)| ChatChoice {
            finish_reason: r.finish_reason.openai_str(),
            index: i,
            logprobs: plan.logprobs.map(|k| ChatLogprobs::new(&plan.ready, &r.events, k)),
            message: Message { content: &r.text, role: "assistant" },
        })
        .collect();
    let body: ChatCompletion<'_> = plan.response(choices, &usage::sum_choices(&results), &results[0].done());
    Ok(JsonResponse(body).into_response())
}

fn chunk<'a>(
    plan: &'a Plan,
    index: usize,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<ChatLogprobs<'a>>,
) -> ChatCompletionChunk<'a> {
    plan.chunk(ChunkChoice { delta, finish_reason, index, logprobs })
}

struct ChatRenderer {
    plan: Plan,
    usage: Counts,
    finished: usize,
}

impl Renderer for ChatRenderer {
    fn token(&mut self, index: usize, t: TokenEvent, out: &mut VecDeque<Frame>) {
        let logprobs = self.plan.logprobs.map(|k| ChatLogprobs::new(&self.plan.ready, std::slice::from_ref(&t), k));
        if !t.text.is_empty() || logprobs.is_some() {
            let delta = Delta { content: Some(&t.text), role: None };
            out.push_back(Frame::json(&chunk(&self.plan, index, delta, None, logprobs)));
        }
    }

    fn done(&mut self, index: usize, d: Done, out: &mut VecDeque<Frame>) {
        usage::add_choice(&mut self.usage, &d.usage);
        self.finished += 1;
        let last = chunk(&self.plan, index, Delta::default(), Some(d.finish_reason.openai_str()), None);
        out.push_back(self.plan.finish_frame(last, self.finished, &d));
    }

    fn end(&mut self, out: &mut VecDeque<Frame>) {
        self.plan.end_stream(&self.usage, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn choices_in_wire_order() {
        let logprobs = || Some(ChatLogprobs { content: Vec::new() });
        assert_wire_order(&ChatChoice {
            finish_reason: "stop",
            index: 0,
            logprobs: logprobs(),
            message: Message { content: "hi", role: "assistant" },
        });
        for delta in [Delta { content: Some(""), role: Some("assistant") }, Delta::default()] {
            assert_wire_order(&ChunkChoice { delta, finish_reason: Some("length"), index: 1, logprobs: logprobs() });
        }
        let json = serde_json::to_string(&Delta { content: Some("x"), role: None }).unwrap();
        assert_eq!(json, r#"{"content":"x"}"#);
    }
}
