//! Chat messages as OpenAI sends them, turned into the template's messages
//! and rendered into a prompt.

use std::sync::Arc;

use llama_core::ChatMessage;
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
}
