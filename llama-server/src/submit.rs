//! Handing engine requests to the engine (all or none) and collecting what
//! they produce when the response is not streamed.

use std::sync::Arc;
use std::time::Instant;

use futures::future::try_join_all;
use llama_runtime::{Handle, Output, Prompt, Rejected, Request};

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

/// Drain every request's events into its [`Output`] (result `i` is
/// `handles[i]`'s). The first failure is returned and drops the other
/// handles, which cancels them (as does dropping the returned future when
/// the client goes away).
pub(crate) async fn collect_all(handles: Vec<Observed<Handle>>) -> Result<Vec<Output>, AppError> {
    try_join_all(handles.into_iter().map(|h| async move { Ok(Output::collect(h).await?) })).await
}
