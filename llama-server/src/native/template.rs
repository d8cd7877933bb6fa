//! `POST /apply-template`: the prompt the chat template makes of messages.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_core::json_schema::OrderedJson;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::extract::Json;
use crate::openai::messages::InMessage;
use crate::openai::{PromptFields, chat_prompt};
use crate::state::AppState;

/// `POST /apply-template` body: the fields of `/v1/chat/completions` that
/// make the prompt.
#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    /// Chat messages, as for `/v1/chat/completions`.
    pub messages: Vec<InMessage>,
    /// Tools, as for `/v1/chat/completions`.
    pub tools: Option<Vec<OrderedJson>>,
    /// `tool_choice`, as for `/v1/chat/completions`.
    pub tool_choice: Option<OrderedJson>,
    /// `parallel_tool_calls`, as for `/v1/chat/completions`.
    pub parallel_tool_calls: Option<bool>,
    /// Extra template variables, as for `/v1/chat/completions`.
    pub chat_template_kwargs: Option<OrderedJson>,
}

/// The `/apply-template` body.
#[derive(Debug, Serialize)]
struct Applied {
    prompt: String,
}

/// `POST /apply-template`: the prompt the chat template makes of `messages`.
pub(crate) async fn apply_template(
    State(state): State<AppState>,
    Json(req): Json<ApplyTemplateRequest>,
) -> Result<Response, AppError> {
    let fields = PromptFields {
        messages: &req.messages,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls,
        chat_template_kwargs: req.chat_template_kwargs.as_ref(),
        ..PromptFields::default()
    };
    let (_, chat) = chat_prompt(&state, fields).await?;
    Ok(JsonResponse(Applied { prompt: chat.prompt }).into_response())
}
