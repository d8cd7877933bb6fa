//! The caller's side of a request ([`Handle`]) and the engine's side
//! ([`EventSink`]).
//!
//! Token events travel through a bounded channel; the terminal event travels
//! through a separate one-shot channel, so it never waits for capacity and is
//! never lost. The handle yields the one-shot's contents only after the token
//! channel is closed and drained, which keeps the order.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::inbox::Wake;
use crate::request::{EngineError, Event, FinishReason, Output, Timings, Usage};

/// Flags shared by a request's handle and the engine thread.
#[derive(Debug)]
pub(crate) struct RequestControl {
    cancelled: AtomicBool,
    /// The request has prompt tokens in the decode running now.
    in_flight: AtomicBool,
    /// The engine stopped generating for this request because its channel
    /// is full; a read should wake the engine.
    paused: AtomicBool,
    abort: Arc<AtomicBool>,
    inbox: Arc<dyn Wake>,
}

impl RequestControl {
    pub(crate) fn new(abort: Arc<AtomicBool>, inbox: Arc<dyn Wake>) -> Self {
        RequestControl {
            cancelled: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            abort,
            inbox,
        }
    }

    pub(crate) fn cancel(&self) {
        // SeqCst pairs with `mark_in_flight`: either the engine sees
        // `cancelled` before it decodes, or we see `in_flight` and abort the
        // decode. A stale `in_flight` can abort one later step needlessly,
        // which costs a retry and nothing else.
        if self.cancelled.swap(true, SeqCst) {
            return;
        }
        if self.in_flight.load(SeqCst) {
            self.abort.store(true, SeqCst);
        }
        self.inbox.notify();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(SeqCst)
    }

    /// Mark as part of the coming decode; returns whether it was cancelled
    /// already (then it must not be decoded).
    pub(crate) fn mark_in_flight(&self) -> bool {
        self.in_flight.store(true, SeqCst);
        self.cancelled.load(SeqCst)
    }

    pub(crate) fn clear_in_flight(&self) {
        self.in_flight.store(false, SeqCst);
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, SeqCst);
    }

    fn on_read(&self) {
        if self.paused.load(SeqCst) {
            self.inbox.notify();
        }
    }
}

/// What the one-shot channel carries: token events that did not fit in the
/// bounded channel, then the terminal event.
#[derive(Debug)]
pub(crate) struct Finale {
    pub(crate) backlog: VecDeque<Event>,
    pub(crate) end: Event,
}

/// Why a token event could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    Full,
    Closed,
}

/// The engine's side of a request's channels.
#[derive(Debug)]
pub(crate) struct EventSink {
    tokens: mpsc::Sender<Event>,
    finale: oneshot::Sender<Finale>,
}

impl EventSink {
    pub(crate) fn try_send(&self, event: Event) -> Result<(), (SendError, Event)> {
        self.tokens.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(ev) => (SendError::Full, ev),
            mpsc::error::TrySendError::Closed(ev) => (SendError::Closed, ev),
        })
    }

    /// Whether the handle is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tokens.is_closed()
    }

    /// Deliver the terminal event (never blocks, never fails for a live
    /// receiver) and close both channels.
    pub(crate) fn finish(self, backlog: VecDeque<Event>, end: Event) {
        // A send error means the handle is gone: nobody to tell.
        let _ = self.finale.send(Finale { backlog, end });
    }
}

/// Create the two sides of a request.
pub(crate) fn channel(id: u64, n_prompt: u32, capacity: usize, control: Arc<RequestControl>) -> (EventSink, Handle) {
    let (tx, rx) = mpsc::channel(capacity);
    let (ftx, frx) = oneshot::channel();
    let sink = EventSink { tokens: tx, finale: ftx };
    let handle =
        Handle { id, n_prompt, events: rx, finale: frx, tail: VecDeque::new(), phase: Phase::Streaming, control };
    (sink, handle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    Finale,
    Tail,
    Ended,
}

/// A submitted request: a [`Stream`] of [`Event`]s that ends after exactly
/// one terminal event ([`Event::Done`] or [`Event::Error`]).
///
/// Dropping the handle cancels the request.
#[derive(Debug)]
#[must_use = "dropping a Handle cancels its request"]
pub struct Handle {
    id: u64,
    n_prompt: u32,
    events: mpsc::Receiver<Event>,
    finale: oneshot::Receiver<Finale>,
    tail: VecDeque<Event>,
    phase: Phase,
    control: Arc<RequestControl>,
}

impl Handle {
    /// The request's id (unique within the engine, starting at 1).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prompt tokens after tokenization.
    pub fn n_prompt_tokens(&self) -> u32 {
        self.n_prompt
    }

    /// Cancel the request. The engine stops working on it within one step
    /// (within one micro-batch during a long prompt); the stream then ends
    /// with `Error(Cancelled)` unless it had already finished.
    pub fn cancel(&self) {
        if self.phase != Phase::Ended {
            self.control.cancel();
        }
    }

    /// A cloneable token that cancels this request from anywhere.
    pub fn canceller(&self) -> Canceller {
        Canceller { control: Arc::clone(&self.control) }
    }

    /// Iterate over the events, blocking the current thread. For non-async
    /// callers only: never call it from inside an async runtime's worker.
    pub fn blocking_iter(mut self) -> impl Iterator<Item = Event> {
        std::iter::from_fn(move || futures::executor::block_on(self.next()))
    }

    /// Wait for the whole output.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that matters: dropping the future drops
    /// the handle, which cancels the request, and the tokens generated so far
    /// are lost.
    ///
    /// # Errors
    /// The request's terminal [`EngineError`].
    pub async fn collect(self) -> Result<Output, EngineError> {
        Output::collect(self).await
    }
}

impl Stream for Handle {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Streaming => match this.events.poll_recv(cx) {
                    Poll::Ready(Some(ev)) => {
                        this.control.on_read();
                        return Poll::Ready(Some(ev));
                    }
                    Poll::Ready(None) => this.phase = Phase::Finale,
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Finale => match Pin::new(&mut this.finale).poll(cx) {
                    Poll::Ready(Ok(f)) => {
                        this.tail = f.backlog;
                        this.tail.push_back(f.end);
                        this.phase = Phase::Tail;
                    }
                    Poll::Ready(Err(_)) => {
                        this.tail.push_back(Event::Error(EngineError::Internal(
                            "the engine stopped without finishing the request".into(),
                        )));
                        this.phase = Phase::Tail;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Tail => match this.tail.pop_front() {
                    Some(ev) => {
                        if ev.is_terminal() {
                            this.phase = Phase::Ended;
                            this.tail.clear();
                        }
                        return Poll::Ready(Some(ev));
                    }
                    None => this.phase = Phase::Ended,
                },
                Phase::Ended => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Cancels one request from any thread ([`Handle::canceller`]).
#[derive(Clone, Debug)]
pub struct Canceller {
    control: Arc<RequestControl>,
}

impl Canceller {
    /// Same as [`Handle::cancel`].
    pub fn cancel(&self) {
        self.control.cancel();
    }
}

/// A terminal event for a finished request (helper for the scheduler).
pub(crate) fn done_event(finish_reason: FinishReason, slot: u32, usage: Usage, timings: Timings) -> Event {
    Event::Done(crate::request::Done { finish_reason, slot, usage, timings })
}
