//! Server-sent events: `data: <json>\n\n` frames, the OpenAI `[DONE]`
//! terminator and keep-alive comments.
//!
//! The stream handed to [`response`] owns the request [`Handle`]s:
//! when the client goes away hyper drops the body, which drops the stream,
//! which drops the handles, which cancels the generation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use llama_runtime::{Done, EngineError, Event, Handle, TokenEvent};
use serde::Serialize;

use crate::error::AppError;
use crate::metrics::Observed;

/// How often a comment line is sent while nothing else is, so that proxies
/// and clients do not time out during a long prompt.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One frame of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON payload (`data: {...}`).
    Json(String),
    /// OpenAI's end marker (`data: [DONE]`).
    Done,
}

impl Frame {
    /// A JSON frame from any serializable value.
    pub fn json<T: Serialize>(value: &T) -> Frame {
        // Serializing our own response types cannot fail: they hold no maps
        // with non-string keys and no non-finite floats that serde_json rejects
        // (non-finite floats serialize as null).
        Frame::Json(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
    }

    /// The frame that reports an engine failure in the middle of a stream
    /// (the status line has gone out already), in the JSON error shape.
    pub(crate) fn error(e: EngineError) -> Frame {
        Frame::Json(AppError::from(e).sse_payload())
    }

    fn into_event(self) -> SseEvent {
        match self {
            Frame::Json(s) => SseEvent::default().data(s),
            Frame::Done => SseEvent::default().data("[DONE]"),
        }
    }
}

/// A `text/event-stream` response carrying `frames`, with keep-alive comments.
pub fn response<S>(frames: S) -> Response
where
    S: Stream<Item = Frame> + Send + 'static,
{
    let events = frames.map(|f| Ok::<_, Infallible>(f.into_event()));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response()
}

/// Turns the events of a request's choices into frames. An engine error
/// is rendered by [`render_stream`] (one error frame, then the stream ends).
pub(crate) trait Renderer: Send + 'static {
    /// Render a token of choice `index`.
    fn token(&mut self, index: usize, token: TokenEvent, out: &mut VecDeque<Frame>);
    /// Render the end of choice `index`.
    fn done(&mut self, index: usize, done: Done, out: &mut VecDeque<Frame>);
    /// Render the end of the stream, once every choice has finished.
    fn end(&mut self, out: &mut VecDeque<Frame>);
}

struct Merge<R> {
    merged: SelectAll<Tagged>,
    renderer: R,
    pending: VecDeque<Frame>,
    finished: bool,
}

/// One choice's events, tagged with its index.
struct Tagged {
    index: usize,
    events: Observed<Handle>,
}

impl Stream for Tagged {
    type Item = (usize, Event);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let index = self.index;
        Pin::new(&mut self.events).poll_next(cx).map(|ev| ev.map(|e| (index, e)))
    }
}

/// Interleave the events of all `handles` (choice `i` = `handles[i]`) as
/// they come, render them, and end with the renderer's trailer. `head` goes
/// out first. Dropping the stream drops every handle, cancelling what is
/// still running.
pub(crate) fn render_stream<R: Renderer>(
    handles: Vec<Observed<Handle>>,
    renderer: R,
    head: Vec<Frame>,
) -> impl Stream<Item = Frame> + Send + 'static {
    let merged =
        futures::stream::select_all(handles.into_iter().enumerate().map(|(index, events)| Tagged { index, events }));
    let state = Merge { merged, renderer, pending: head.into(), finished: false };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((frame, st));
            }
            if st.finished {
                return None;
            }
            match st.merged.next().await {
                Some((index, event)) => match event {
                    Event::Token(t) => st.renderer.token(index, t, &mut st.pending),
                    Event::Done(d) => st.renderer.done(index, d, &mut st.pending),
                    Event::Error(e) => {
                        st.pending.push_back(Frame::error(e));
                        st.finished = true;
                    }
                    other => {
                        let e = EngineError::Internal(format!("unexpected event {other:?}"));
                        st.pending.push_back(Frame::error(e));
                        st.finished = true;
                    }
                },
                None => {
                    st.renderer.end(&mut st.pending);
                    st.finished = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[tokio::test]
    async fn frames_are_data_lines() {
        let frames = futures::stream::iter(vec![
            Frame::json(&serde_json::json!({"a": "x\ny"})),
            Frame::Json("{\"b\":1}".into()),
            Frame::Done,
        ]);
        let resp = response(frames);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        // A newline inside JSON is escaped, so each frame is a single data line.
        assert_eq!(text, "data: {\"a\":\"x\\ny\"}\n\ndata: {\"b\":1}\n\ndata: [DONE]\n\n");
    }
}
