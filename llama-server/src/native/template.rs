//! `POST /apply-template`: the prompt the chat template makes of messages.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::extract::Json;
use crate::openai::messages::{InMessage, render_chat, to_chat_messages};
use crate::state::AppState;

/// `POST /apply-template` body.
#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    /// Chat messages, as for `/v1/chat/completions`.
    pub messages: Vec<InMessage>,
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
    let messages = to_chat_messages(&req.messages)?;
    let ready = state.ready()?;
    let prompt = render_chat(&ready, messages).await?;
    Ok(JsonResponse(Applied { prompt }).into_response())
}
