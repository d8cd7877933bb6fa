//! The engine thread's inbox: the bounded admission queue, embedding jobs,
//! slot operations, the shutdown request, and the wake-up signal the engine sleeps on when it
//! has nothing to do.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use llama_core::Token;
use tokio::sync::oneshot;

use crate::handle::{EventSink, RequestControl};
use crate::metrics::MetricsCell;
use crate::request::{Embedding, EngineError};
use crate::slot::SlotJob;

/// A validated, tokenized request waiting for a slot.
#[derive(Debug)]
pub(crate) struct Admission<S> {
    pub(crate) id: u64,
    pub(crate) tokens: Vec<Token>,
    /// The request's sampler, built and validated at submit.
    pub(crate) sampler: S,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) stop: Vec<String>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) ignore_eos: bool,
    pub(crate) n_probs: u32,
    pub(crate) cache_prompt: bool,
    pub(crate) deterministic: bool,
    pub(crate) context_shift: Option<crate::request::ContextShift>,
    /// The slot the request must run in, if any.
    pub(crate) slot: Option<u32>,
    /// The LoRA scales it runs with (resolved at submit).
    pub(crate) lora: crate::lora::LoraSet,
    pub(crate) submitted: Instant,
    pub(crate) control: Arc<RequestControl>,
    pub(crate) sink: EventSink,
}

/// An embedding call waiting for the engine thread.
#[derive(Debug)]
pub(crate) struct EmbedJob {
    pub(crate) inputs: Vec<Vec<Token>>,
    pub(crate) normalize: bool,
    pub(crate) reply: oneshot::Sender<Result<Vec<Embedding>, EngineError>>,
}

/// Why a push was refused.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

#[derive(Debug)]
struct State<S> {
    requests: VecDeque<Admission<S>>,
    embeds: VecDeque<EmbedJob>,
    slot_jobs: VecDeque<SlotJob>,
    /// No more pushes (shutdown requested or the engine thread exited).
    closed: bool,
    /// When in-flight requests must be finished by (set with `closed`).
    drain_until: Option<Instant>,
    /// A wake-up arrived since the engine last looked.
    notified: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Inbox<S> {
    state: Mutex<State<S>>,
    cond: Condvar,
    capacity: usize,
    metrics: Arc<MetricsCell>,
}

impl<S> Default for State<S> {
    fn default() -> Self {
        State {
            requests: VecDeque::new(),
            embeds: VecDeque::new(),
            slot_jobs: VecDeque::new(),
            closed: false,
            drain_until: None,
            notified: false,
        }
    }
}

/// Wakes the engine thread (what a request's handle needs of the inbox).
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    /// Wake the engine thread if it is waiting.
    fn notify(&self);
}

impl<S: Send + std::fmt::Debug> Wake for Inbox<S> {
    fn notify(&self) {
        Inbox::notify(self);
    }
}

impl<S> Inbox<S> {
    pub(crate) fn new(capacity: usize, metrics: Arc<MetricsCell>) -> Self {
        Inbox { state: Mutex::new(State::default()), cond: Condvar::new(), capacity, metrics }
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // Every critical section leaves the state consistent, so a panic
        // elsewhere while holding the lock does not invalidate it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queue a request; never blocks beyond the short lock.
    pub(crate) fn push(&self, adm: Admission<S>) -> Result<(), PushError<Box<Admission<S>>>> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed(Box::new(adm)));
        }
        if st.requests.len() >= self.capacity {
            return Err(PushError::Full(Box::new(adm)));
        }
        st.requests.push_back(adm);
        self.metrics.queue_depth.store(st.requests.len(), Relaxed);
        st.notified = true;
        drop(st);
        self.cond.notify_one();
        Ok(())
    }

    /// Queue an embedding job.
    pub(crate) fn push_embed(&self, job: EmbedJob) -> Result<(), PushError<EmbedJob>> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed(job));
        }
        if st.embeds.len() >= self.capacity {
            return Err(PushError::Full(job));
        }
        st.embeds.push_back(job);
        st.notified = true;
        drop(st);
        self.cond.notify_one();
        Ok(())
    }

    /// Queue a slot operation.
    pub(crate) fn push_slot_job(&self, job: SlotJob) -> Result<(), PushError<SlotJob>> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed(job));
        }
        if st.slot_jobs.len() >= self.capacity {
            return Err(PushError::Full(job));
        }
        st.slot_jobs.push_back(job);
        st.notified = true;
        drop(st);
        self.cond.notify_one();
        Ok(())
    }

    /// Take every queued slot operation, oldest first.
    pub(crate) fn take_slot_jobs(&self) -> Vec<SlotJob> {
        std::mem::take(&mut self.lock().slot_jobs).into()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Stop accepting work; requests already holding a slot may run until
    /// `drain_until`. A second call can only bring the deadline forward.
    pub(crate) fn close(&self, drain_until: Instant) {
        let mut st = self.lock();
        st.closed = true;
        st.drain_until = Some(st.drain_until.map_or(drain_until, |d| d.min(drain_until)));
        st.notified = true;
        drop(st);
        self.cond.notify_one();
    }

    /// Wake the engine thread if it is waiting.
    pub(crate) fn notify(&self) {
        let mut st = self.lock();
        st.notified = true;
        drop(st);
        self.cond.notify_one();
    }

    /// Sleep until notified or until `until` (forever when `None`).
    pub(crate) fn wait(&self, until: Option<Instant>) {
        let mut st = self.lock();
        while !st.notified {
            match until {
                None => st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        break;
                    }
                    st = self.cond.wait_timeout(st, t - now).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
        st.notified = false;
    }

    /// The drain deadline, once shutdown was requested.
    pub(crate) fn drain_until(&self) -> Option<Instant> {
        self.lock().drain_until
    }

    /// Take the oldest request that can start now: one without a slot of
    /// its own when any slot is free, or one whose slot is free (`free[i]`:
    /// slot `i` is free). Requests waiting for a busy slot stay queued.
    pub(crate) fn pop(&self, free: &[bool]) -> Option<Admission<S>> {
        let mut st = self.lock();
        let any_free = free.contains(&true);
        let at = st.requests.iter().position(|a| match a.slot {
            None => any_free,
            Some(s) => free.get(s as usize).copied().unwrap_or(false),
        })?;
        let adm = st.requests.remove(at);
        self.metrics.queue_depth.store(st.requests.len(), Relaxed);
        adm
    }

    /// Remove (and return) every queued request for which `dead` is true.
    pub(crate) fn take_dead(&self, mut dead: impl FnMut(&Admission<S>) -> bool) -> Vec<Admission<S>> {
        let mut st = self.lock();
        if !st.requests.iter().any(&mut dead) {
            return Vec::new();
        }
        let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.requests).into_iter().partition(dead);
        st.requests = kept;
        self.metrics.queue_depth.store(st.requests.len(), Relaxed);
        gone.into()
    }

    /// Remove everything queued (shutdown).
    pub(crate) fn take_all(&self) -> (Vec<Admission<S>>, Vec<EmbedJob>) {
        let mut st = self.lock();
        let reqs = std::mem::take(&mut st.requests).into();
        let embeds = std::mem::take(&mut st.embeds).into();
        self.metrics.queue_depth.store(0, Relaxed);
        (reqs, embeds)
    }

    /// Take the oldest embedding job.
    pub(crate) fn pop_embed(&self) -> Option<EmbedJob> {
        self.lock().embeds.pop_front()
    }

    /// Whether nothing is queued (requests, embedding jobs, slot operations).
    pub(crate) fn is_empty(&self) -> bool {
        let st = self.lock();
        st.requests.is_empty() && st.embeds.is_empty() && st.slot_jobs.is_empty()
    }

    /// Earliest deadline among queued requests.
    pub(crate) fn earliest_deadline(&self) -> Option<Instant> {
        self.lock().requests.iter().filter_map(|a| a.deadline).min()
    }
}
