//! Slot operations: save, restore and erase the KV cache of an idle slot
//! ([`Engine::save_slot`](crate::Engine::save_slot) and its siblings), run
//! on the engine thread between decode steps.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use llama_core::Token;
use tokio::sync::oneshot;

use crate::request::CoreError;

/// A slot's saved state, from [`Engine::save_slot`](crate::Engine::save_slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSlot {
    /// The tokens the slot's KV cache held (positions `0..tokens.len()`):
    /// the prefix a later request reuses after a restore.
    pub tokens: Vec<Token>,
    /// The whole state, self-contained and authenticated: the tokens and
    /// the KV cells, signed with the engine's state key
    /// ([`EngineConfig::state_key`](crate::EngineConfig::state_key)). Give
    /// these bytes to [`Engine::restore_slot`](crate::Engine::restore_slot);
    /// an engine refuses any state whose signature does not verify under
    /// its key.
    pub bytes: Vec<u8>,
}

/// Why a slot operation failed. Nothing changed in the slot, except where
/// a variant says otherwise.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// There is no slot with this id.
    #[error("slot {slot} does not exist; there are {n_slots} slots")]
    NoSuchSlot {
        /// The slot asked for.
        slot: u32,
        /// How many slots the engine has (`0..n_slots`).
        n_slots: u32,
    },
    /// The slot is serving a request; retry when it is idle.
    #[error("slot {slot} is busy with a request")]
    Busy {
        /// The slot.
        slot: u32,
    },
    /// A restore was refused: the state does not verify under the engine's
    /// key (corrupted, forged, or saved by another engine without the same
    /// key), belongs to another model, or llama.cpp refused it (a context
    /// of another shape, or more tokens than a slot holds). The slot is
    /// left empty.
    #[error("the slot state was refused: {0}")]
    InvalidState(CoreError),
    /// The backend failed to save or restore (the slot is left empty after
    /// a failed restore).
    #[error("the slot operation failed: {0}")]
    Failed(CoreError),
    /// Too many slot operations are waiting for the engine thread.
    #[error("the engine is overloaded: {queue_capacity} slot operations are already waiting")]
    Overloaded {
        /// The queue's capacity.
        queue_capacity: usize,
    },
    /// The engine is shutting down or has stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// A queued slot operation: resolves to its result once the engine thread
/// has run it (between two decode steps, so it never waits for a whole
/// request, only for the step in progress).
///
/// # Cancel safety
///
/// Dropping it before it resolves abandons the operation if the engine has
/// not run it yet. Each operation runs whole on the engine thread, so a
/// slot is never left half-restored either way.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited; dropping it abandons the operation"]
pub struct SlotOp<T> {
    rx: oneshot::Receiver<Result<T, SlotError>>,
}

impl<T> SlotOp<T> {
    /// An operation and the sender its result goes through.
    pub(crate) fn channel() -> (oneshot::Sender<Result<T, SlotError>>, SlotOp<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, SlotOp { rx })
    }
}

impl<T> Future for SlotOp<T> {
    type Output = Result<T, SlotError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender means the engine thread went away without
        // answering: it stopped.
        Pin::new(&mut self.get_mut().rx).poll(cx).map(|r| r.unwrap_or(Err(SlotError::ShuttingDown)))
    }
}

/// A slot operation waiting in the inbox for the engine thread.
#[derive(Debug)]
pub(crate) enum SlotJob {
    Save { slot: u32, reply: oneshot::Sender<Result<SavedSlot, SlotError>> },
    Restore { slot: u32, bytes: Vec<u8>, reply: oneshot::Sender<Result<Vec<Token>, SlotError>> },
    Erase { slot: u32, reply: oneshot::Sender<Result<usize, SlotError>> },
}

impl SlotJob {
    /// Whether the caller stopped waiting for the answer.
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            SlotJob::Save { reply, .. } => reply.is_closed(),
            SlotJob::Restore { reply, .. } => reply.is_closed(),
            SlotJob::Erase { reply, .. } => reply.is_closed(),
        }
    }

    /// Answer with `err` without running it.
    pub(crate) fn fail(self, err: SlotError) {
        match self {
            SlotJob::Save { reply, .. } => drop(reply.send(Err(err))),
            SlotJob::Restore { reply, .. } => drop(reply.send(Err(err))),
            SlotJob::Erase { reply, .. } => drop(reply.send(Err(err))),
        }
    }
}
