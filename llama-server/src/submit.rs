//! Handing engine requests to the engine (all or none) and collecting what
//! they produce when the response is not streamed.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::try_join_all;
use llama_runtime::{Done, Event, Handle, Prompt, Rejected, Request, TokenEvent};

use crate::blocking::maybe_blocking;
use crate::error::AppError;
use crate::metrics::Observed;
use crate::state::Ready;

/// Submit every request, or none: if one is refused, the handles already
/// obtained are dropped (which cancels them) and the refusal is returned,
/// naming `prompt_param` when the prompt is at fault. Submitting tokenizes
/// text prompts, so large ones go to a blocking thread.
pub(crate) async fn submit_all(
    ready: &Ready,
    requests: Vec<Request>,
    prompt_param: &str,
) -> Result<Vec<Observed<Handle>>, AppError> {
    let start = Instant::now();
    let text_bytes = requests
        .iter()
        .map(|r| match &r.prompt {
            Prompt::Text(t) => t.len(),
            _ => 0,
        })
        .sum();
    let engine = Arc::clone(&ready.engine);
    let submitted = maybe_blocking(text_bytes, move || {
        requests.into_iter().map(|r| engine.submit(r)).collect::<Result<Vec<Handle>, Rejected>>()
    })
    .await?;
    let handles = submitted.map_err(|r| AppError::from_rejected(r, prompt_param))?;
    Ok(handles.into_iter().map(|h| Observed::new(h, Arc::clone(&ready.stats), start)).collect())
}

/// Everything one finished request produced.
#[derive(Debug, Clone)]
pub(crate) struct Collected {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub done: Done,
}

/// Drain every request's events (result `i` is `handles[i]`'s). The first
/// failure is returned and drops the other handles, which cancels them.
pub(crate) async fn collect_all(handles: Vec<Observed<Handle>>) -> Result<Vec<Collected>, AppError> {
    try_join_all(handles.into_iter().map(collect)).await
}

/// Drain one request's events. Dropping the returned future (client gone)
/// drops the handle, which cancels the request.
async fn collect(mut events: Observed<Handle>) -> Result<Collected, AppError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::Token(t) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Event::Done(done) => return Ok(Collected { text, tokens, done }),
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(AppError::Internal("event stream ended without a terminal event".into()))
}
