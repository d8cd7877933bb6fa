//! Chat messages as OpenAI sends them, turned into the template's messages
//! and rendered into a prompt.

use std::sync::Arc;

use llama_core::json_schema::OrderedJson;
use llama_core::{ChatMessage, RenderOptions};
use serde::Deserialize;

use crate::blocking::maybe_blocking;
use crate::error::AppError;
use crate::state::Ready;

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
    /// The calls an assistant message made.
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The author's name (for a `tool` or `function` message, the function's).
    #[serde(default)]
    pub name: Option<String>,
}

/// One call of an assistant message's `tool_calls`.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    /// The call's id, which the `tool` message answering it repeats.
    #[serde(default)]
    pub id: Option<String>,
    /// `function` (the only type).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The function called.
    pub function: InFunctionCall,
}

/// The function of a call.
#[derive(Debug, Deserialize)]
pub struct InFunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: JSON text, as OpenAI sends them (an object is taken too).
    #[serde(default)]
    pub arguments: Option<OrderedJson>,
}

/// A chat message, validated: what the template is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Message {
    /// The role (`developer` already `system`).
    pub role: String,
    /// The text (parts joined; null is empty).
    pub content: String,
    /// An assistant message's calls.
    pub tool_calls: Vec<CallIn>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// The author's name.
    pub name: Option<String>,
}

impl Message {
    /// The role and text, for a template that needs no more.
    pub(crate) fn into_chat(self) -> ChatMessage {
        ChatMessage { role: self.role, content: self.content }
    }
}

/// A call in the conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallIn {
    /// Its id.
    pub id: Option<String>,
    /// The function.
    pub name: String,
    /// The arguments' JSON text.
    pub arguments: String,
}

/// Validate OpenAI messages (400 naming the field on what we cannot render).
pub(crate) fn convert_messages(messages: &[InMessage]) -> Result<Vec<Message>, AppError> {
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
            let tool_calls = match &m.tool_calls {
                Some(calls) if !calls.is_empty() => {
                    if role != "assistant" {
                        return Err(AppError::invalid(
                            format!("messages[{i}].tool_calls"),
                            "only assistant messages have `tool_calls`",
                        ));
                    }
                    calls.iter().enumerate().map(|(j, c)| tool_call(i, j, c)).collect::<Result<_, _>>()?
                }
                _ => Vec::new(),
            };
            Ok(Message { role, content, tool_calls, tool_call_id: m.tool_call_id.clone(), name: m.name.clone() })
        })
        .collect()
}

fn tool_call(i: usize, j: usize, c: &InToolCall) -> Result<CallIn, AppError> {
    let at = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
    if c.kind.as_deref().is_some_and(|k| k != "function") {
        return Err(AppError::invalid(at("type"), "the only type of tool call is \"function\""));
    }
    if c.function.name.is_empty() {
        return Err(AppError::invalid(at("function.name"), "a tool call needs the function's name"));
    }
    let arguments = match &c.function.arguments {
        None | Some(OrderedJson::Null) => "{}".to_owned(),
        Some(OrderedJson::String(text)) => text.clone(),
        Some(object @ OrderedJson::Object(_)) => object.to_json_text(),
        Some(_) => {
            return Err(AppError::invalid(
                at("function.arguments"),
                "`arguments` must be a string of JSON (or an object)",
            ));
        }
    };
    Ok(CallIn { id: c.id.clone(), name: c.function.name.clone(), arguments })
}

/// Render chat messages with the model's template, on a blocking thread when they are large.
pub(crate) async fn render_chat(ready: &Arc<Ready>, messages: Vec<ChatMessage>) -> Result<String, AppError> {
    let bytes = messages.iter().map(|m| m.content.len()).sum();
    let ready = Arc::clone(ready);
    maybe_blocking(bytes, move || ready.render_chat(&messages)).await?
}

/// Render JSON messages with the model's template, with `tools` and extra
/// template variables (on a blocking thread when they are large).
pub(crate) async fn render_json(
    ready: &Arc<Ready>,
    messages: Vec<OrderedJson>,
    tools: Option<Vec<OrderedJson>>,
    kwargs: Vec<(String, OrderedJson)>,
) -> Result<String, AppError> {
    let bytes = messages.iter().chain(tools.iter().flatten()).map(|m| m.to_json_text().len()).sum();
    let ready = Arc::clone(ready);
    maybe_blocking(bytes, move || {
        let options = RenderOptions { add_generation_prompt: true, tools: tools.as_deref(), kwargs: &kwargs };
        ready.template.render_with(&messages, &options).map_err(AppError::from)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_convert() {
        let msgs: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]))
        .unwrap();
        let out = convert_messages(&msgs).unwrap();
        assert_eq!(out[0].role, "system");
        assert_eq!(out[1].content, "ab");
        assert_eq!(out[2].content, "");
        let img: Vec<InMessage> = serde_json::from_value(
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        )
        .unwrap();
        match convert_messages(&img).unwrap_err() {
            AppError::InvalidRequest { param, .. } => assert_eq!(param.as_deref(), Some("messages[0].content[0].type")),
            e => panic!("{e:?}"),
        }
        assert!(convert_messages(&[]).is_err());
    }

    #[test]
    fn unknown_roles_are_refused_naming_the_message() {
        for role in CHAT_ROLES {
            let msgs: Vec<InMessage> = serde_json::from_value(json!([{"role": role, "content": "x"}])).unwrap();
            assert!(convert_messages(&msgs).is_ok(), "{role}");
        }
        for role in ["wizard", "", " user", "User", "SYSTEM", "user\u{0}", "assistant ", "\u{202e}user"] {
            let msgs: Vec<InMessage> = serde_json::from_value(json!([
                {"role": "user", "content": "a"},
                {"role": role, "content": "b"},
            ]))
            .unwrap();
            match convert_messages(&msgs).unwrap_err() {
                AppError::InvalidRequest { param, message } => {
                    assert_eq!(param.as_deref(), Some("messages[1].role"), "{role:?}");
                    assert!(message.contains("unknown role"), "{message}");
                }
                e => panic!("{role:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn tool_calls_and_results_convert() {
        let msgs: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": {"tz": "UTC"}}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        ]))
        .unwrap();
        let out = convert_messages(&msgs).unwrap();
        assert_eq!(out[1].content, "");
        assert_eq!(
            out[1].tool_calls,
            [
                CallIn {
                    id: Some("call_1".into()),
                    name: "get_weather".into(),
                    arguments: r#"{"city": "Paris"}"#.into()
                },
                CallIn { id: Some("call_2".into()), name: "now".into(), arguments: r#"{"tz":"UTC"}"#.into() },
            ]
        );
        assert_eq!(out[2].tool_call_id.as_deref(), Some("call_1"));

        let bad = |m: serde_json::Value| -> String {
            let msgs: Vec<InMessage> = serde_json::from_value(json!([m])).unwrap();
            match convert_messages(&msgs).unwrap_err() {
                AppError::InvalidRequest { param, .. } => param.unwrap_or_default(),
                e => panic!("{e:?}"),
            }
        };
        let call = json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        assert_eq!(bad(json!({"role": "user", "content": "x", "tool_calls": [call]})), "messages[0].tool_calls");
        assert_eq!(
            bad(json!({"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]})),
            "messages[0].tool_calls[0].type"
        );
        assert_eq!(
            bad(json!({"role": "assistant", "tool_calls": [{"function": {"name": ""}}]})),
            "messages[0].tool_calls[0].function.name"
        );
        assert_eq!(
            bad(json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]})),
            "messages[0].tool_calls[0].function.arguments"
        );
    }
}
