//! Keeping large inputs off the HTTP runtime: tokenizing or rendering
//! megabytes of text on one of its two workers would stall every other
//! connection.

use crate::error::AppError;

/// Text longer than this (bytes, all prompts of a request together) is
/// tokenized on a blocking thread.
pub(crate) const INLINE_WORK_BYTES: usize = 64 << 10;

/// Run `f` here when `bytes` of input is small, else on a blocking thread.
pub(crate) async fn maybe_blocking<T, F>(bytes: usize, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if bytes <= INLINE_WORK_BYTES {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))
    }
}
