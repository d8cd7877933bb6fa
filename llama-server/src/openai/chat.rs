//! `POST /v1/chat/completions` (and `/chat/completions`): the request, the
//! whole response and the streamed chunks.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_core::json_schema::OrderedJson;
use llama_runtime::{Done, Prompt, TokenEvent, Usage as Counts};
use serde::Serialize;

use super::messages::{InMessage, Message as InputMessage, convert_messages, render_chat, render_json};
use super::response::{CHAT, Envelope, Plan, StreamOptions};
use super::response_format::{ResponseFormat, response_format_grammar, response_format_schema};
use super::usage;
use crate::error::AppError;
use crate::extract::Json;
use crate::logprobs::{TokenLogprob, parse_top};
use crate::request::{StopField, effective_max_tokens, parse_max_tokens, parse_n, stop_strings};
use crate::sampling::{build_sampling, request_with_sampling};
use crate::sse::{self, Frame, Renderer};
use crate::state::{AppState, Ready};
use crate::submit::{collect_all, submit_all};
use crate::tool_calls::{
    Call, Choice, Format, Parsed, StreamDelta, ToolStream, Tools, parse_output, template_input, tool_grammar,
};

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
        /// Functions the model may call (`{"type": "function", "function": {...}}`).
        pub tools: Option<Vec<OrderedJson>>,
        /// `none`, `auto` (default), `required`, or `{"type": "function", "function": {"name"}}`.
        pub tool_choice: Option<OrderedJson>,
        /// Whether the model may call several tools at once (default false, as llama.cpp).
        pub parallel_tool_calls: Option<bool>,
        /// llama.cpp: read tool calls from the output (default true).
        pub parse_tool_calls: Option<bool>,
        /// llama.cpp: extra chat template variables (an object), over `--chat-template-kwargs`.
        pub chat_template_kwargs: Option<OrderedJson>,
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
    /// `null` when the message is only tool calls.
    content: Option<&'a str>,
    role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

/// One call of `message.tool_calls`.
#[derive(Debug, Serialize)]
struct ToolCall<'a> {
    function: FunctionCall<'a>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The function a call calls, with its arguments as JSON text.
#[derive(Debug, Serialize)]
struct FunctionCall<'a> {
    arguments: &'a str,
    name: &'a str,
}

impl<'a> From<&'a Call> for ToolCall<'a> {
    fn from(c: &'a Call) -> Self {
        ToolCall { function: FunctionCall { arguments: &c.arguments, name: &c.name }, id: &c.id, kind: "function" }
    }
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

/// What a chunk adds to the message: the role on the first chunk, text or
/// tool calls on the next ones, nothing on the last.
#[derive(Debug, Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallDelta<'a>>,
}

/// A piece of a streamed call: the first has its id, type and name; the
/// next ones more of its `arguments`.
#[derive(Debug, Serialize)]
struct ToolCallDelta<'a> {
    function: FunctionDelta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    index: usize,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

/// See [`ToolCallDelta`].
#[derive(Debug, Serialize)]
struct FunctionDelta<'a> {
    arguments: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a StreamDelta> for Delta<'a> {
    fn from(d: &'a StreamDelta) -> Self {
        match d {
            StreamDelta::Content(text) => Delta { content: Some(text), ..Delta::default() },
            StreamDelta::Call { index, head, arguments } => Delta {
                tool_calls: vec![ToolCallDelta {
                    function: FunctionDelta { arguments, name: head.as_ref().map(|(_, name)| name.as_str()) },
                    id: head.as_ref().map(|(id, _)| id.as_str()),
                    index: *index,
                    kind: head.as_ref().map(|_| "function"),
                }],
                ..Delta::default()
            },
        }
    }
}

/// `finish_reason` of a choice whose output held tool calls: `tool_calls`
/// when it stopped by itself (a cut output stays `length`).
fn finish_reason(done: &Done, has_calls: bool) -> &'static str {
    match done.finish_reason.openai_str() {
        "stop" if has_calls => "tool_calls",
        other => other,
    }
}

/// The fields of a chat request that make its prompt (shared with
/// `/apply-template`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PromptFields<'a> {
    pub messages: &'a [InMessage],
    pub tools: Option<&'a [OrderedJson]>,
    pub tool_choice: Option<&'a OrderedJson>,
    pub parallel_tool_calls: Option<bool>,
    pub chat_template_kwargs: Option<&'a OrderedJson>,
    pub response_format: Option<&'a ResponseFormat>,
    /// `grammar` or `json_schema` is set (they cannot be combined with a
    /// tool grammar): the field's name.
    pub own_grammar: Option<&'static str>,
    pub parse_tool_calls: Option<bool>,
}

/// A chat request's prompt, and what its tools add.
#[derive(Debug)]
pub(crate) struct ChatPrompt {
    /// The prompt.
    pub prompt: String,
    /// The grammar the output must follow: `response_format`'s, or with
    /// tools the tool grammar (which carries `response_format`'s schema).
    pub grammar: Option<String>,
    /// The format to read calls in, when calls are read.
    pub reader: Option<Format>,
}

/// The template variables of `--chat-template-kwargs` and of the request's
/// `chat_template_kwargs` (which win).
///
/// # Errors
/// A 400 naming `chat_template_kwargs` when the request's is not an object.
fn template_kwargs(state: &AppState, request: Option<&OrderedJson>) -> Result<Vec<(String, OrderedJson)>, AppError> {
    let request = match request {
        None | Some(OrderedJson::Null) => &[][..],
        Some(OrderedJson::Object(entries)) => entries.as_slice(),
        Some(_) => {
            return Err(AppError::invalid("chat_template_kwargs", "`chat_template_kwargs` must be a JSON object"));
        }
    };
    let flags = state.settings().chat_template_kwargs.iter().filter(|(k, _)| !request.iter().any(|(r, _)| r == *k));
    Ok(flags
        .filter_map(|(k, v)| Some((k.clone(), serde_json::from_value::<OrderedJson>(v.clone()).ok()?)))
        .chain(request.iter().cloned())
        .collect())
}

/// Validate the messages and tools of a chat request and render its
/// prompt: through [`Ready::render_chat`] when there are no tools, tool
/// calls or template variables; else through the template's JSON render
/// with the tool format's input ([`template_input`]) and grammar.
pub(crate) async fn chat_prompt(
    state: &AppState,
    fields: PromptFields<'_>,
) -> Result<(Arc<Ready>, ChatPrompt), AppError> {
    let tools = Tools::from_request(fields.tools, fields.tool_choice, fields.parallel_tool_calls)?;
    let messages = convert_messages(fields.messages)?;
    let rf_grammar = response_format_grammar(fields.response_format)?;
    let kwargs = template_kwargs(state, fields.chat_template_kwargs)?;
    let ready = state.ready()?;
    if tools.is_none() && kwargs.is_empty() && messages.iter().all(|m| m.tool_calls.is_empty()) {
        let prompt = render_chat(&ready, messages.into_iter().map(InputMessage::into_chat).collect()).await?;
        return Ok((ready, ChatPrompt { prompt, grammar: rf_grammar, reader: None }));
    }
    let active = tools.as_ref().filter(|t| t.choice != Choice::None);
    let response = response_format_schema(fields.response_format);
    // With tools and a JSON response format, the generic format carries both
    // (as llama.cpp does).
    let format = match (active, &response) {
        (Some(_), Some(_)) => Format::Generic,
        _ => Format::detect(&ready.template),
    };
    let mut grammar = rf_grammar;
    if let Some(t) = active
        && let Some(g) = tool_grammar(format, t, response.as_ref())?
    {
        if let Some(field) = fields.own_grammar {
            return Err(AppError::invalid(field, format!("`{field}` cannot be combined with `tools`")));
        }
        grammar = Some(g);
    }
    let input = template_input(&messages, tools.as_ref(), format, ready.template.caps());
    let prompt = render_json(&ready, input.messages, input.tools, kwargs).await?;
    let reader = active.filter(|_| fields.parse_tool_calls != Some(false)).map(|_| format);
    Ok((ready, ChatPrompt { prompt, grammar, reader }))
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
    let stop = stop_strings(req.stop.as_ref());
    let fields = req.sampling_fields();
    let own_grammar = if fields.grammar.is_some_and(|g| !g.trim().is_empty()) {
        Some("grammar")
    } else {
        fields.json_schema.is_some().then_some("json_schema")
    };
    let prompt_fields = PromptFields {
        messages: &req.messages,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls,
        chat_template_kwargs: req.chat_template_kwargs.as_ref(),
        response_format: req.response_format.as_ref(),
        own_grammar,
        parse_tool_calls: req.parse_tool_calls,
    };
    let (ready, ChatPrompt { prompt, grammar, reader }) = chat_prompt(&state, prompt_fields).await?;
    let sampling = build_sampling(&ready.defaults, &fields, grammar, &ready).await?;

    let logprobs = (req.logprobs == Some(true)).then_some(top);
    let max_tokens = effective_max_tokens(max_tokens, ready.n_predict);
    let template = req.request_template(&ready, sampling, max_tokens, stop, logprobs.map_or(0, |k| k.max(1)))?;
    let requests = (0..n).map(|i| template.request(Prompt::Text(prompt.clone()), i, &ready)).collect();
    let handles = submit_all(&ready, requests, "messages").await?;
    let plan = Plan::new(&CHAT, &state, ready, n, logprobs, req.stream_options.as_ref());

    if req.stream.unwrap_or(false) {
        let head = (0..n)
            .map(|i| {
                let delta = Delta { content: Some(""), role: Some("assistant"), ..Delta::default() };
                Frame::json(&chunk(&plan, i, delta, None, None))
            })
            .collect();
        let tools = reader.map(|f| (0..n).map(|_| ToolStream::new(f)).collect());
        let renderer = ChatRenderer { plan, usage: Counts::default(), finished: 0, tools };
        return Ok(sse::response(sse::render_stream(handles, renderer, head)));
    }

    let results = collect_all(handles).await?;
    let parsed: Vec<Option<Parsed>> = results.iter().map(|r| reader.map(|f| parse_output(f, &r.text))).collect();
    let choices = results
        .iter()
        .zip(&parsed)
        .enumerate()
        .map(|(i, (r, p))| {
            let (message, finish) = match p {
                None => (
                    Message { content: Some(&r.text), role: "assistant", tool_calls: Vec::new() },
                    r.finish_reason.openai_str(),
                ),
                Some(p) => {
                    let content = (p.calls.is_empty() || !p.content.is_empty()).then_some(p.content.as_str());
                    let tool_calls = p.calls.iter().map(ToolCall::from).collect();
                    (Message { content, role: "assistant", tool_calls }, finish_reason(&r.done(), !p.calls.is_empty()))
                }
            };
            ChatChoice {
                finish_reason: finish,
                index: i,
                logprobs: plan.logprobs.map(|k| ChatLogprobs::new(&plan.ready, &r.events, k)),
                message,
            }
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
    /// Per choice, the reader of tool calls (when calls are read).
    tools: Option<Vec<ToolStream>>,
}

impl Renderer for ChatRenderer {
    fn token(&mut self, index: usize, t: TokenEvent, out: &mut VecDeque<Frame>) {
        let mut logprobs = self.plan.logprobs.map(|k| ChatLogprobs::new(&self.plan.ready, std::slice::from_ref(&t), k));
        if let Some(tools) = &mut self.tools {
            let deltas = tools[index].push(&t.text);
            for d in &deltas {
                out.push_back(Frame::json(&chunk(&self.plan, index, Delta::from(d), None, logprobs.take())));
            }
            if let Some(logprobs) = logprobs {
                let delta = Delta { content: Some(""), ..Delta::default() };
                out.push_back(Frame::json(&chunk(&self.plan, index, delta, None, Some(logprobs))));
            }
            return;
        }
        if !t.text.is_empty() || logprobs.is_some() {
            let delta = Delta { content: Some(&t.text), ..Delta::default() };
            out.push_back(Frame::json(&chunk(&self.plan, index, delta, None, logprobs)));
        }
    }

    fn done(&mut self, index: usize, d: Done, out: &mut VecDeque<Frame>) {
        usage::add_choice(&mut self.usage, &d.usage);
        self.finished += 1;
        let mut reason = d.finish_reason.openai_str();
        if let Some(tools) = &mut self.tools {
            for delta in tools[index].finish() {
                out.push_back(Frame::json(&chunk(&self.plan, index, Delta::from(&delta), None, None)));
            }
            reason = finish_reason(&d, tools[index].has_calls());
        }
        let last = chunk(&self.plan, index, Delta::default(), Some(reason), None);
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
            message: Message { content: Some("hi"), role: "assistant", tool_calls: Vec::new() },
        });
        for delta in [Delta { content: Some(""), role: Some("assistant"), ..Delta::default() }, Delta::default()] {
            assert_wire_order(&ChunkChoice { delta, finish_reason: Some("length"), index: 1, logprobs: logprobs() });
        }
        let json = serde_json::to_string(&Delta { content: Some("x"), ..Delta::default() }).unwrap();
        assert_eq!(json, r#"{"content":"x"}"#);
    }

    #[test]
    fn tool_calls_in_wire_order() {
        let call = Call { id: "call_1".into(), name: "f".into(), arguments: "{\"a\": 1}".into() };
        let message = Message { content: None, role: "assistant", tool_calls: vec![ToolCall::from(&call)] };
        assert_wire_order(&message);
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{\"a\": 1}","name":"f"},"id":"call_1","type":"function"}]}"#
        );
        let head = StreamDelta::Call { index: 0, head: Some(("call_1".into(), "f".into())), arguments: String::new() };
        let more = StreamDelta::Call { index: 0, head: None, arguments: "{\"a".into() };
        for d in [&head, &more] {
            assert_wire_order(&Delta::from(d));
        }
        assert_eq!(
            serde_json::to_string(&Delta::from(&head)).unwrap(),
            r#"{"tool_calls":[{"function":{"arguments":"","name":"f"},"id":"call_1","index":0,"type":"function"}]}"#
        );
        assert_eq!(
            serde_json::to_string(&Delta::from(&more)).unwrap(),
            r#"{"tool_calls":[{"function":{"arguments":"{\"a"},"index":0}]}"#
        );
    }
}
