//! Continuous batching over an [`Inference`]: pure scheduling logic, driven
//! one [`tick`](Scheduler::tick) at a time by the engine thread (or by a
//! property test with a virtual clock).
//!
//! One tick: take the shutdown request into account, retire cancelled and
//! expired sequences, flush held-back events, run queued slot operations
//! (save, restore, erase an idle slot), admit queued requests into free
//! slots (FIFO), run one embedding input if one waits, then build one batch
//! from every runnable sequence, decode it, sample and push events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Instant;

use llama_core::{Pos, SeqId, Token, TokenDecoder};

use crate::config::EngineConfig;
use crate::handle::{EventSink, RequestControl, SendError, done_event};
use crate::inbox::{Admission, EmbedJob, Inbox};
use crate::inference::{BatchEntry, DecodeError, Inference, SampleError, Sampled, SamplerOf};
use crate::lora::LoraSet;
use crate::metrics::{MetricsCell, SlotInfo, SlotState};
use crate::request::{
    ContextShift, Embedding, EngineError, Event, FinishReason, Timings, TokenEvent, TopLogprob, Usage,
};
use crate::slot::{SavedSlot, SlotError, SlotJob};
use crate::stop::{StopMatcher, StopOutcome};

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Something happened; tick again.
    Worked,
    /// Nothing to do until a notification or `wake_at`.
    Idle {
        /// The next time-based event (deadline, slow-consumer bound, drain end).
        wake_at: Option<Instant>,
    },
    /// Shut down: every request ended, every KV cell freed.
    Finished,
}

/// A request holding a slot.
#[derive(Debug)]
struct Sequence {
    id: u64,
    /// Admission order (larger = newer).
    order: u64,
    prompt: Vec<Token>,
    n_cached: u32,
    /// A sampled token not yet in the KV cache.
    pending: Option<Token>,
    n_generated: u32,
    max_tokens: Option<u32>,
    ignore_eos: bool,
    n_probs: u32,
    cache_prompt: bool,
    deterministic: bool,
    context_shift: Option<ContextShift>,
    /// Tokens dropped from the KV by context shifts (after the kept ones).
    n_discarded: usize,
    /// The LoRA scales every step of this sequence runs with.
    lora: LoraSet,
    deadline: Option<Instant>,
    decoder: TokenDecoder,
    stop: StopMatcher,
    /// Token events the channel did not take yet (at most one in practice:
    /// a sequence with a backlog is not decoded).
    outbox: VecDeque<Event>,
    paused_since: Option<Instant>,
    control: Arc<RequestControl>,
    sink: Option<EventSink>,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    fn is_prefilling(&self, n_in_kv: usize) -> bool {
        n_in_kv + self.n_discarded < self.prompt.len()
    }
}

/// One llama.cpp sequence and what its KV cache holds.
#[derive(Debug)]
struct Slot {
    id: SeqId,
    /// Exactly the tokens at positions `0..cache.len()` of this sequence's
    /// KV cache. Kept after a request ends, for prefix reuse.
    cache: Vec<Token>,
    /// The LoRA scales `cache` was computed with: only a request with the
    /// same set may reuse it.
    cache_lora: LoraSet,
    seq: Option<Sequence>,
    /// Tick of the last use (least recently used slots are evicted first).
    last_used: u64,
    /// The last request's counters, for `SlotInfo` of an idle slot.
    last_prompt: u32,
    last_decoded: u32,
}

/// How a sequence ends.
#[derive(Debug)]
enum End {
    Finished(FinishReason),
    Failed(EngineError),
}

/// One sequence's part of a planned step.
#[derive(Debug)]
struct Item {
    slot: usize,
    pos: Pos,
    tokens: Vec<Token>,
    logits: bool,
    prompt: bool,
}

/// An embedding job being worked through, one input per tick.
#[derive(Debug)]
struct EmbedWork {
    job: EmbedJob,
    done: Vec<Embedding>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Scheduler<I: Inference> {
    inf: I,
    cfg: EngineConfig,
    n_ctx_seq: u32,
    inbox: Arc<Inbox<SamplerOf<I>>>,
    metrics: Arc<MetricsCell>,
    abort: Arc<AtomicBool>,
    slots: Vec<Slot>,
    n_admitted: u64,
    n_ticks: u64,
    rotation: usize,
    embed: Option<EmbedWork>,
    /// The LoRA scales applied in the backend; `None` when unknown (a
    /// failed switch), so that the next step sets them again.
    active_lora: Option<LoraSet>,
    /// Adapters off: what empty slots' caches count as.
    no_lora: LoraSet,
    /// Request ids in admission order (checked by the property tests).
    #[cfg(test)]
    pub(crate) admission_log: Vec<u64>,
    /// Every decode step: `(request id, deterministic, pos, n_tokens)` per entry.
    #[cfg(test)]
    pub(crate) step_log: Vec<Vec<(u64, bool, Pos, usize)>>,
    /// Every decode step: the LoRA set of each entry's sequence, and the
    /// set the backend was told to apply (checked by the property tests).
    #[cfg(test)]
    pub(crate) lora_log: Vec<(Vec<LoraSet>, LoraSet)>,
}

impl<I: Inference> Scheduler<I> {
    pub(crate) fn new(
        inf: I,
        cfg: EngineConfig,
        n_ctx_seq: u32,
        inbox: Arc<Inbox<SamplerOf<I>>>,
        metrics: Arc<MetricsCell>,
    ) -> Self {
        let abort = inf.abort_flag();
        let no_lora = LoraSet::zeros(inf.lora_adapters().len());
        let slots = (0..cfg.n_seq_max)
            .map(|i| Slot {
                id: i as SeqId,
                cache: Vec::new(),
                cache_lora: no_lora.clone(),
                seq: None,
                last_used: 0,
                last_prompt: 0,
                last_decoded: 0,
            })
            .collect();
        Scheduler {
            inf,
            cfg,
            n_ctx_seq,
            inbox,
            metrics,
            abort,
            slots,
            n_admitted: 0,
            n_ticks: 0,
            rotation: 0,
            embed: None,
            // A new context applies no adapters.
            active_lora: Some(no_lora.clone()),
            no_lora,
            #[cfg(test)]
            admission_log: Vec::new(),
            #[cfg(test)]
            step_log: Vec::new(),
            #[cfg(test)]
            lora_log: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn inference(&self) -> &I {
        &self.inf
    }

    /// Tokens each slot's KV cache holds (checked against the fake's KV).
    #[cfg(test)]
    pub(crate) fn slot_caches(&self) -> Vec<Vec<Token>> {
        self.slots.iter().map(|s| s.cache.clone()).collect()
    }

    pub(crate) fn n_active(&self) -> usize {
        self.slots.iter().filter(|s| s.seq.is_some()).count()
    }

    /// Run one round of scheduling at time `now`.
    ///
    /// After shutdown was requested (the inbox is closed), requests already
    /// accepted, queued or running, are still served until the drain
    /// deadline; then everything left ends with `ShuttingDown`.
    pub(crate) fn tick(&mut self, now: Instant) -> Tick {
        self.n_ticks += 1;
        let drain_until = self.inbox.drain_until();
        if drain_until.is_some_and(|d| now >= d) {
            let (reqs, embeds) = self.inbox.take_all();
            for adm in reqs {
                self.reject_queued(adm, EngineError::ShuttingDown);
            }
            for job in embeds {
                let _ = job.reply.send(Err(EngineError::ShuttingDown));
            }
            if let Some(w) = self.embed.take() {
                let _ = w.job.reply.send(Err(EngineError::ShuttingDown));
            }
            for job in self.inbox.take_slot_jobs() {
                job.fail(SlotError::ShuttingDown);
            }
        }
        self.sweep(now, drain_until);
        self.sweep_queue(now);
        // Before admission: a slot that is idle now is still idle for them.
        let slot_work = self.run_slot_jobs();
        self.admit(now);
        if drain_until.is_some() && self.n_active() == 0 && self.embed.is_none() && self.inbox.is_empty() {
            self.release_all_kv();
            self.publish(now, false);
            return Tick::Finished;
        }
        let mut worked = self.embed_one() | slot_work;
        if let Some((items, lora)) = self.plan() {
            self.execute(items, lora);
            worked = true;
        }
        if worked {
            // Not the tick's `now`: the step may have taken long, and
            // progress is measured from its end.
            self.publish(Instant::now(), true);
            return Tick::Worked;
        }
        self.publish(now, false);
        Tick::Idle { wake_at: self.next_wake(drain_until) }
    }

    fn publish(&self, now: Instant, busy: bool) {
        self.metrics.kv_cells_used.store(self.inf.kv_cells_used(), Relaxed);
        for i in 0..self.slots.len() {
            self.publish_slot(i);
        }
        self.metrics.mark_progress(now, busy);
    }

    fn publish_slot(&self, slot_idx: usize) {
        let slot = &self.slots[slot_idx];
        let info = match &slot.seq {
            Some(seq) => SlotInfo {
                id: slot.id as u32,
                state: if seq.is_prefilling(slot.cache.len()) { SlotState::Prefill } else { SlotState::Decode },
                n_prompt: seq.prompt.len() as u32,
                n_cached: slot.cache.len() as u32,
                n_decoded: seq.n_generated,
                request_id: Some(seq.id),
            },
            None => SlotInfo {
                id: slot.id as u32,
                state: SlotState::Idle,
                n_prompt: slot.last_prompt,
                n_cached: slot.cache.len() as u32,
                n_decoded: slot.last_decoded,
                request_id: None,
            },
        };
        if let Some(cell) = self.metrics.slots.get(slot_idx) {
            cell.publish(&info);
        }
    }

    fn next_wake(&self, drain_until: Option<Instant>) -> Option<Instant> {
        let slow = self.cfg.slow_consumer_timeout;
        let active = self
            .slots
            .iter()
            .filter_map(|s| s.seq.as_ref())
            .flat_map(|q| [q.deadline, q.paused_since.map(|p| p + slow)].into_iter().flatten());
        active.chain(self.inbox.earliest_deadline()).chain(drain_until).min()
    }

    // ---- ending requests -------------------------------------------------

    fn count_end(&self, end: &End) {
        let m = &self.metrics;
        let counter = match end {
            End::Finished(_) => &m.requests_done,
            End::Failed(EngineError::Cancelled) => &m.requests_cancelled,
            End::Failed(EngineError::DeadlineExceeded) => &m.requests_timed_out,
            End::Failed(_) => &m.requests_failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// End a request that never got a slot.
    fn reject_queued(&self, adm: Admission<SamplerOf<I>>, err: EngineError) {
        let end = End::Failed(err.clone());
        self.count_end(&end);
        adm.sink.finish(VecDeque::new(), Event::Error(err));
    }

    /// End the sequence in `slot_idx` and free the slot. Its KV stays cached
    /// after a normal finish of a `cache_prompt` request; otherwise it is
    /// cleared.
    fn end(&mut self, slot_idx: usize, end: End) {
        let Some(mut seq) = self.slots[slot_idx].seq.take() else { return };
        self.count_end(&end);
        seq.control.clear_in_flight();
        seq.control.set_paused(false);
        let slot = &mut self.slots[slot_idx];
        slot.last_prompt = seq.prompt.len() as u32;
        slot.last_decoded = seq.n_generated;
        slot.last_used = self.n_ticks;
        if !(matches!(end, End::Finished(_)) && seq.cache_prompt) {
            self.clear_slot_kv(slot_idx);
        } else if seq.n_discarded > 0 {
            // After a context shift the cells past the kept prefix were
            // computed at other positions: not a prefix to offer later requests.
            let keep = shift_keep(&seq, slot.cache.len());
            if self.inf.kv_seq_rm(slot.id, keep as Pos) {
                slot.cache.truncate(keep);
            } else {
                self.clear_slot_kv(slot_idx);
            }
        }
        // Counters first, so that whoever reads the terminal event sees the
        // slot free and its KV released.
        self.metrics.active_sequences.fetch_sub(1, Relaxed);
        self.metrics.kv_cells_used.store(self.inf.kv_cells_used(), Relaxed);
        self.publish_slot(slot_idx);
        let event = match end {
            End::Finished(finish_reason) => {
                // Timings are wall-clock: the tick's `now` may predate a long decode.
                let now = Instant::now();
                let first = seq.first_token.unwrap_or(now);
                let timings = Timings {
                    queued: seq.admitted.saturating_duration_since(seq.submitted),
                    prefill: first.saturating_duration_since(seq.admitted),
                    decode: now.saturating_duration_since(first),
                    first_token: seq.first_token.map(|t| t.saturating_duration_since(seq.submitted)),
                };
                let usage = Usage {
                    prompt_tokens: seq.prompt.len() as u32,
                    cached_tokens: seq.n_cached,
                    completion_tokens: seq.n_generated,
                };
                done_event(finish_reason, slot_idx as u32, usage, timings)
            }
            End::Failed(e) => Event::Error(e),
        };
        if let Some(sink) = seq.sink.take() {
            sink.finish(std::mem::take(&mut seq.outbox), event);
        }
    }

    fn clear_slot_kv(&mut self, slot_idx: usize) {
        let slot = &mut self.slots[slot_idx];
        // Removing from position 0 always succeeds.
        self.inf.kv_seq_rm(slot.id, 0);
        slot.cache.clear();
    }

    /// Shutdown: forget every cached prefix.
    fn release_all_kv(&mut self) {
        for i in 0..self.slots.len() {
            self.clear_slot_kv(i);
        }
    }

    // ---- sweeping ----------------------------------------------------------

    /// Retire cancelled, expired and abandoned sequences; flush backlogs.
    fn sweep(&mut self, now: Instant, drain_until: Option<Instant>) {
        let slow = self.cfg.slow_consumer_timeout;
        for i in 0..self.slots.len() {
            let Some(seq) = self.slots[i].seq.as_mut() else { continue };
            let closed = seq.sink.as_ref().is_none_or(EventSink::is_closed);
            let verdict = if seq.control.is_cancelled() || closed {
                Some(EngineError::Cancelled)
            } else if seq.deadline.is_some_and(|d| now >= d) {
                Some(EngineError::DeadlineExceeded)
            } else if drain_until.is_some_and(|d| now >= d) {
                Some(EngineError::ShuttingDown)
            } else {
                match flush_outbox(seq, now) {
                    Flush::Closed => Some(EngineError::Cancelled),
                    Flush::Empty => None,
                    Flush::Blocked(since) => (now.saturating_duration_since(since) >= slow)
                        .then_some(EngineError::SlowConsumer { timeout: slow }),
                }
            };
            if let Some(err) = verdict {
                self.end(i, End::Failed(err));
            }
        }
    }

    /// End queued requests that were cancelled or passed their deadline, so
    /// that they do not hold queue capacity.
    fn sweep_queue(&mut self, now: Instant) {
        let dead = self
            .inbox
            .take_dead(|a| a.control.is_cancelled() || a.sink.is_closed() || a.deadline.is_some_and(|d| now >= d));
        for adm in dead {
            let err = if adm.deadline.is_some_and(|d| now >= d) && !adm.control.is_cancelled() {
                EngineError::DeadlineExceeded
            } else {
                EngineError::Cancelled
            };
            self.reject_queued(adm, err);
        }
    }

    // ---- admission ---------------------------------------------------------

    /// Move queued requests into free slots, oldest first.
    fn admit(&mut self, now: Instant) {
        loop {
            let free: Vec<bool> = self.slots.iter().map(|s| s.seq.is_none()).collect();
            let Some(adm) = self.inbox.pop(&free) else { break };
            if adm.control.is_cancelled() || adm.sink.is_closed() {
                self.reject_queued(adm, EngineError::Cancelled);
                continue;
            }
            if adm.deadline.is_some_and(|d| now >= d) {
                self.reject_queued(adm, EngineError::DeadlineExceeded);
                continue;
            }
            self.admit_one(adm);
        }
    }

    /// The free slot to use: the longest cached common prefix when the
    /// request reuses the cache, else the emptiest, least recently used one.
    fn pick_slot(&self, adm: &Admission<SamplerOf<I>>) -> Option<(usize, usize)> {
        let reuse = adm.cache_prompt && !adm.deterministic;
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| s.seq.is_none() && adm.slot.is_none_or(|p| p as usize == *i))
            .map(|(i, s)| {
                // KV computed under other adapters is no prefix of this request's.
                let common = if reuse && s.cache_lora == adm.lora { common_prefix(&s.cache, &adm.tokens) } else { 0 };
                (i, common, s.cache.len(), s.last_used)
            })
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2).then(b.3.cmp(&a.3)).then(b.0.cmp(&a.0))))
            .map(|(i, common, _, _)| (i, common))
    }

    fn admit_one(&mut self, adm: Admission<SamplerOf<I>>) {
        let Some((idx, common)) = self.pick_slot(&adm) else { return };
        #[cfg(test)]
        self.admission_log.push(adm.id);
        self.n_admitted += 1;
        let n_prompt = adm.tokens.len();
        // At least one prompt token is decoded, to get logits for the first sample.
        let mut keep = common.min(n_prompt.saturating_sub(1));
        let seq_id = self.slots[idx].id;
        if keep < self.slots[idx].cache.len() && !self.inf.kv_seq_rm(seq_id, keep as Pos) {
            self.inf.kv_seq_rm(seq_id, 0);
            keep = 0;
        }
        self.slots[idx].cache.truncate(keep);
        self.slots[idx].cache_lora = adm.lora.clone();
        self.slots[idx].last_used = self.n_ticks;
        self.metrics.prompt_tokens_total.fetch_add(n_prompt as u64, Relaxed);
        self.metrics.cached_tokens_total.fetch_add(keep as u64, Relaxed);
        let started = self.inf.start_sequence(seq_id, adm.sampler, &adm.tokens);
        let seq = Sequence {
            id: adm.id,
            order: self.n_admitted,
            prompt: adm.tokens,
            n_cached: keep as u32,
            pending: None,
            n_generated: 0,
            max_tokens: adm.max_tokens,
            ignore_eos: adm.ignore_eos,
            n_probs: adm.n_probs,
            cache_prompt: adm.cache_prompt,
            deterministic: adm.deterministic,
            context_shift: adm.context_shift,
            n_discarded: 0,
            lora: adm.lora,
            deadline: adm.deadline,
            decoder: TokenDecoder::new(),
            stop: StopMatcher::new(adm.stop),
            outbox: VecDeque::new(),
            paused_since: None,
            control: adm.control,
            sink: Some(adm.sink),
            submitted: adm.submitted,
            admitted: Instant::now(),
            first_token: None,
        };
        self.slots[idx].seq = Some(seq);
        self.metrics.active_sequences.fetch_add(1, Relaxed);
        if let Err(e) = started {
            self.end(idx, End::Failed(EngineError::Internal(format!("sampler: {e}"))));
        } else if adm.max_tokens == Some(0) {
            self.end(idx, End::Finished(FinishReason::MaxTokens));
        }
    }

    // ---- slot operations -----------------------------------------------------

    /// Run every queued slot operation, oldest first; true if there were any.
    fn run_slot_jobs(&mut self) -> bool {
        let jobs = self.inbox.take_slot_jobs();
        let worked = !jobs.is_empty();
        for job in jobs {
            if job.is_abandoned() {
                continue;
            }
            match job {
                SlotJob::Save { slot, reply } => {
                    let result = self.save_slot(slot);
                    let _ = reply.send(result);
                }
                SlotJob::Restore { slot, bytes, reply } => {
                    let result = self.restore_slot(slot, &bytes);
                    self.publish_slot_change(slot);
                    let _ = reply.send(result);
                }
                SlotJob::Erase { slot, reply } => {
                    let result = self.erase_slot(slot);
                    self.publish_slot_change(slot);
                    let _ = reply.send(result);
                }
            }
        }
        worked
    }

    /// Counters first, so that whoever reads an operation's answer sees
    /// the slot and the KV cells as the operation left them.
    fn publish_slot_change(&self, slot: u32) {
        self.metrics.kv_cells_used.store(self.inf.kv_cells_used(), Relaxed);
        if (slot as usize) < self.slots.len() {
            self.publish_slot(slot as usize);
        }
    }

    /// The index of `slot`, if it exists and serves no request.
    fn idle_slot(&self, slot: u32) -> Result<usize, SlotError> {
        match self.slots.get(slot as usize) {
            None => Err(SlotError::NoSuchSlot { slot, n_slots: self.slots.len() as u32 }),
            Some(s) if s.seq.is_some() => Err(SlotError::Busy { slot }),
            Some(_) => Ok(slot as usize),
        }
    }

    /// The tokens and KV of an idle slot.
    fn save_slot(&mut self, slot: u32) -> Result<SavedSlot, SlotError> {
        let idx = self.idle_slot(slot)?;
        let s = &self.slots[idx];
        let bytes = self.inf.seq_state(s.id, &s.cache).map_err(SlotError::Failed)?;
        Ok(SavedSlot { tokens: s.cache.clone(), bytes })
    }

    /// Replace an idle slot's KV and cached tokens with a saved state, so
    /// that the next request sharing its prefix reuses it.
    fn restore_slot(&mut self, slot: u32, bytes: &[u8]) -> Result<Vec<Token>, SlotError> {
        let idx = self.idle_slot(slot)?;
        let seq = self.slots[idx].id;
        match self.inf.set_seq_state(seq, bytes) {
            Ok(tokens) => {
                let s = &mut self.slots[idx];
                s.cache.clone_from(&tokens);
                // A saved state does not say which adapters computed it: it
                // counts as computed without any.
                s.cache_lora = self.no_lora.clone();
                s.last_used = self.n_ticks;
                Ok(tokens)
            }
            Err(e) => {
                // The sequence holds what it held or nothing: empty it, so
                // that the slot's cached tokens say what its KV holds.
                self.clear_slot_kv(idx);
                Err(match e.get() {
                    llama_core::Error::State(_) => SlotError::InvalidState(e),
                    _ => SlotError::Failed(e),
                })
            }
        }
    }

    /// Empty an idle slot's KV and cached tokens; how many tokens it held.
    fn erase_slot(&mut self, slot: u32) -> Result<usize, SlotError> {
        let idx = self.idle_slot(slot)?;
        let n = self.slots[idx].cache.len();
        self.clear_slot_kv(idx);
        Ok(n)
    }

    // ---- embeddings --------------------------------------------------------

    /// Embed one input of the current job; true if any work was done.
    fn embed_one(&mut self) -> bool {
        if self.embed.is_none() {
            loop {
                let Some(job) = self.inbox.pop_embed() else { return false };
                if !job.reply.is_closed() {
                    self.embed = Some(EmbedWork { done: Vec::with_capacity(job.inputs.len()), job });
                    break;
                }
            }
        }
        let Some(work) = self.embed.as_mut() else { return false };
        if work.job.reply.is_closed() {
            self.embed = None;
            return true;
        }
        let input = &work.job.inputs[work.done.len()];
        // A stale abort (a cancel that raced with the last step) must not
        // fail an embedding.
        self.abort.store(false, SeqCst);
        match self.inf.embed(input) {
            Ok(mut vector) => {
                if work.job.normalize {
                    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                    if norm > 0.0 {
                        vector.iter_mut().for_each(|x| *x /= norm);
                    }
                }
                work.done.push(Embedding { vector, n_tokens: input.len() as u32 });
                if work.done.len() == work.job.inputs.len()
                    && let Some(w) = self.embed.take()
                {
                    let _ = w.job.reply.send(Ok(w.done));
                }
            }
            Err(e) => {
                if let Some(w) = self.embed.take() {
                    let _ = w.job.reply.send(Err(EngineError::Decode(e)));
                }
            }
        }
        true
    }

    // ---- planning ----------------------------------------------------------

    fn runnable(&self, slot: &Slot) -> bool {
        slot.seq
            .as_ref()
            .is_some_and(|q| q.outbox.is_empty() && (q.is_prefilling(slot.cache.len()) || q.pending.is_some()))
    }

    /// Choose this step's batch and the LoRA set it runs with.
    /// Deterministic sequences run alone, each in its own step; every other
    /// sequence shares the other steps with the sequences of the same LoRA
    /// set (llama.cpp applies one set per decode). Steps rotate over these
    /// groups: deterministic sequences oldest first, then one group per
    /// LoRA set, ordered by their oldest sequence.
    fn plan(&mut self) -> Option<(Vec<Item>, LoraSet)> {
        let mut det: Vec<(u64, usize)> = Vec::new();
        // (oldest order, the set) per set of the shared sequences.
        let mut shared: Vec<(u64, LoraSet)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if !self.runnable(slot) {
                continue;
            }
            match &slot.seq {
                Some(q) if q.deterministic => det.push((q.order, i)),
                Some(q) => match shared.iter_mut().find(|(_, set)| *set == q.lora) {
                    Some(group) => group.0 = group.0.min(q.order),
                    None => shared.push((q.order, q.lora.clone())),
                },
                None => {}
            }
        }
        det.sort_unstable();
        shared.sort_unstable_by_key(|(order, _)| *order);
        let n_groups = det.len() + shared.len();
        if n_groups == 0 {
            return None;
        }
        let pick = self.rotation % n_groups;
        self.rotation = self.rotation.wrapping_add(1);
        if let Some(&(_, slot)) = det.get(pick) {
            let lora = self.slots[slot].seq.as_ref().map_or_else(|| self.no_lora.clone(), |q| q.lora.clone());
            Some((vec![self.item(slot, self.cfg.solo_chunk())], lora))
        } else {
            let lora = shared.swap_remove(pick - det.len()).1;
            Some((self.plan_shared(&lora), lora))
        }
    }

    /// One sequence's item: its pending token, or its next prompt chunk of
    /// at most `chunk` tokens.
    fn item(&self, slot_idx: usize, chunk: usize) -> Item {
        let slot = &self.slots[slot_idx];
        let pos = slot.cache.len();
        match slot.seq.as_ref() {
            Some(q) if q.is_prefilling(pos) => {
                let end = (pos + chunk).min(q.prompt.len());
                Item {
                    slot: slot_idx,
                    pos: pos as Pos,
                    tokens: q.prompt[pos..end].to_vec(),
                    logits: end == q.prompt.len(),
                    prompt: true,
                }
            }
            Some(q) => Item {
                slot: slot_idx,
                pos: pos as Pos,
                tokens: q.pending.into_iter().collect(),
                logits: true,
                prompt: false,
            },
            None => Item { slot: slot_idx, pos: pos as Pos, tokens: Vec::new(), logits: false, prompt: false },
        }
    }

    /// Every runnable non-deterministic sequence of LoRA set `lora`: one
    /// token per decoding sequence, then prompt chunks (oldest request
    /// first) within `n_batch`.
    fn plan_shared(&self, lora: &LoraSet) -> Vec<Item> {
        let mut budget = self.cfg.n_batch as usize;
        let mut items = Vec::new();
        let mut prefilling: Vec<(u64, usize)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(q) = slot.seq.as_ref() else { continue };
            if q.deterministic || q.lora != *lora || !self.runnable(slot) {
                continue;
            }
            if q.is_prefilling(slot.cache.len()) {
                prefilling.push((q.order, i));
            } else {
                items.push(self.item(i, 1));
                budget -= 1;
            }
        }
        prefilling.sort_unstable();
        // At most one chunk of prompt work per step, shared by the waiting
        // prompts oldest first: a decoding stream never waits for more than
        // one chunk, and a request's first token waits for at most one chunk
        // per request ahead of it instead of for every queued prompt at once
        // (measured at c = 8: TTFT p50 -38 %, first request -86 %, aggregate
        // throughput -7 %; tests/src/bench/NOTES.md).
        let mut prompt_budget = self.cfg.prefill_chunk.max(1);
        for (_, i) in prefilling {
            let take = prompt_budget.min(budget);
            if take == 0 {
                break;
            }
            let item = self.item(i, take);
            budget -= item.tokens.len();
            prompt_budget -= item.tokens.len();
            items.push(item);
        }
        items
    }

    // ---- executing ---------------------------------------------------------

    fn execute(&mut self, items: Vec<Item>, lora: LoraSet) {
        // Arm cancellation inside the decode for requests with prompt work.
        self.abort.store(false, SeqCst);
        let mut cancelled_early = false;
        for it in items.iter().filter(|it| it.prompt) {
            if let Some(q) = &self.slots[it.slot].seq {
                cancelled_early |= q.control.mark_in_flight();
            }
        }
        if cancelled_early {
            // The next tick's sweep retires it; the others run then.
            self.disarm(&items);
            return;
        }
        // Switch adapters only when the step's set differs from the applied
        // one: llama.cpp rebuilds its graphs after a switch.
        if self.active_lora.as_ref() != Some(&lora) {
            self.active_lora = None;
            if let Err(e) = self.inf.set_lora(lora.scales()) {
                for it in &items {
                    if self.slots[it.slot].seq.is_some() {
                        self.end(it.slot, End::Failed(EngineError::Decode(e.clone())));
                    }
                }
                self.disarm(&items);
                return;
            }
            self.active_lora = Some(lora.clone());
        }
        #[cfg(test)]
        self.lora_log.push((
            items.iter().filter_map(|it| self.slots[it.slot].seq.as_ref().map(|q| q.lora.clone())).collect(),
            lora,
        ));
        #[cfg(test)]
        self.step_log.push(
            items
                .iter()
                .filter_map(|it| {
                    self.slots[it.slot].seq.as_ref().map(|q| (q.id, q.deterministic, it.pos, it.tokens.len()))
                })
                .collect(),
        );
        let entries: Vec<BatchEntry<'_>> = items
            .iter()
            .map(|it| BatchEntry { seq: self.slots[it.slot].id, pos: it.pos, tokens: &it.tokens, logits: it.logits })
            .collect();
        let started = Instant::now();
        // Slots show their new requests during a long decode, and a decode
        // that never returns shows as a stall.
        self.publish(started, true);
        let result = self.inf.decode(&entries);
        let elapsed = started.elapsed();
        // Progress before the step's events go out: whoever sees a request
        // finish must not see the engine as stalled by that very step.
        self.metrics.mark_progress(started + elapsed, true);
        drop(entries);
        self.disarm(&items);
        let m = &self.metrics;
        m.decode_steps.fetch_add(1, Relaxed);
        m.busy_seqs_last_step.store(items.len() as u32, Relaxed);
        m.busy_seq_steps_total.fetch_add(items.len() as u64, Relaxed);
        let counter = if items.iter().any(|it| it.prompt) { &m.prefill_nanos } else { &m.decode_nanos };
        MetricsCell::add_duration(counter, elapsed);

        match result {
            // The tick's `now` predates the decode, which may have been long.
            Ok(()) => self.after_decode(items, started + elapsed),
            Err(err) => {
                // Whatever the step wrote is unspecified: roll every sequence
                // in it back to where it was before the step.
                for it in &items {
                    let seq = self.slots[it.slot].id;
                    if !self.inf.kv_seq_rm(seq, it.pos) {
                        self.inf.kv_seq_rm(seq, 0);
                        self.slots[it.slot].cache.clear();
                        // A sequence that lost its prefix cannot go on.
                        if self.slots[it.slot].seq.is_some() {
                            let e = EngineError::Internal("could not roll back the KV cache".into());
                            self.end(it.slot, End::Failed(e));
                        }
                    }
                }
                match err {
                    // Survivors are simply planned again next tick.
                    DecodeError::Aborted => {
                        self.metrics.aborted_steps.fetch_add(1, Relaxed);
                    }
                    DecodeError::NoKvSlot => {
                        let newest = items
                            .iter()
                            .filter_map(|it| self.slots[it.slot].seq.as_ref().map(|q| (q.order, it.slot)))
                            .max();
                        if let Some((_, slot)) = newest {
                            self.end(slot, End::Failed(EngineError::KvCacheFull));
                        }
                    }
                    DecodeError::Failed(e) => {
                        for it in &items {
                            if self.slots[it.slot].seq.is_some() {
                                self.end(it.slot, End::Failed(EngineError::Decode(e.clone())));
                            }
                        }
                    }
                }
            }
        }
    }

    fn disarm(&self, items: &[Item]) {
        for it in items.iter().filter(|it| it.prompt) {
            if let Some(q) = &self.slots[it.slot].seq {
                q.control.clear_in_flight();
            }
        }
    }

    fn after_decode(&mut self, items: Vec<Item>, now: Instant) {
        for (entry, it) in items.into_iter().enumerate() {
            let slot = &mut self.slots[it.slot];
            slot.cache.extend_from_slice(&it.tokens);
            slot.last_used = self.n_ticks;
            let Some(q) = slot.seq.as_mut() else { continue };
            if !it.prompt {
                q.pending = None;
            }
            if !it.logits {
                continue;
            }
            let seq_id = slot.id;
            let n_probs = q.n_probs;
            match self.inf.sample(seq_id, entry, n_probs) {
                Ok(s) => self.on_token(it.slot, s, now),
                Err(SampleError::Constraint(reason)) => {
                    self.end(it.slot, End::Failed(EngineError::Constraint(reason)));
                }
                Err(e) => self.end(it.slot, End::Failed(EngineError::Internal(format!("sampling: {e}")))),
            }
        }
    }

    /// Handle a sampled token: text, stop strings, limits, events.
    fn on_token(&mut self, slot_idx: usize, sampled: Sampled, now: Instant) {
        let n_ctx_seq = self.n_ctx_seq as usize;
        let top_logprobs = sampled
            .top
            .iter()
            .map(|&(token, logprob)| {
                let bytes = self.inf.token_piece(token);
                TopLogprob { token, text: String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob }
            })
            .collect();
        let token = sampled.token;
        let eog = self.inf.is_eog(token) && !self.slots[slot_idx].seq.as_ref().is_some_and(|q| q.ignore_eos);
        let bytes = if eog { Vec::new() } else { self.inf.token_bytes(token) };
        let mut n_in_kv = self.slots[slot_idx].cache.len();
        if n_in_kv >= n_ctx_seq && !eog && self.shift_context(slot_idx) {
            n_in_kv = self.slots[slot_idx].cache.len();
        }
        let Some(q) = self.slots[slot_idx].seq.as_mut() else { return };
        q.n_generated += 1;
        q.first_token.get_or_insert_with(Instant::now);
        self.metrics.generated_tokens_total.fetch_add(1, Relaxed);

        let limit = if eog {
            Some(FinishReason::Eos)
        } else if q.max_tokens.is_some_and(|m| q.n_generated >= m) {
            Some(FinishReason::MaxTokens)
        } else if n_in_kv >= n_ctx_seq {
            // The next decode would need position `n_in_kv`, past the window.
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        let piece = q.decoder.push(&bytes);
        let (mut text, mut finish) = match q.stop.push(&piece) {
            StopOutcome::Stopped { released, word } => (released, Some(FinishReason::Stop { word })),
            StopOutcome::Continue { released } => (released, None),
        };
        if finish.is_none() && limit.is_some() {
            // Ending: release what the decoder and the stop matcher held back.
            let rest = q.decoder.finish();
            match q.stop.push(&rest) {
                StopOutcome::Stopped { released, word } => {
                    text.push_str(&released);
                    finish = Some(FinishReason::Stop { word });
                }
                StopOutcome::Continue { released } => {
                    text.push_str(&released);
                    text.push_str(&q.stop.flush());
                    finish = limit;
                }
            }
        }
        q.outbox.push_back(Event::Token(TokenEvent { text, token, logprob: sampled.logprob, top_logprobs }));
        if let Some(reason) = finish {
            self.end(slot_idx, End::Finished(reason));
            return;
        }
        q.pending = Some(token);
        if let Flush::Closed = flush_outbox(q, now) {
            self.end(slot_idx, End::Failed(EngineError::Cancelled));
        }
    }
}

impl<I: Inference> Scheduler<I> {
    /// Context shift for the sequence in `slot_idx`, when it asked for one:
    /// keep its first `n_keep` cells, drop `n_discard` (default half) of the rest, move the
    /// remainder down. `false` when it did not ask or the model cannot shift.
    fn shift_context(&mut self, slot_idx: usize) -> bool {
        let slot = &mut self.slots[slot_idx];
        let Some(q) = slot.seq.as_mut() else { return false };
        if q.context_shift.is_none() {
            return false;
        }
        let n_past = slot.cache.len();
        let keep = shift_keep(q, n_past);
        let asked = q.context_shift.map_or(0, |c| c.n_discard as usize);
        let discard = if asked == 0 { (n_past - keep) / 2 } else { asked.min(n_past - keep) }.max(1);
        if !self.inf.kv_shift(slot.id, keep as Pos, discard as Pos, n_past as Pos) {
            return false;
        }
        slot.cache.drain(keep..keep + discard);
        q.n_discarded += discard;
        true
    }
}

/// The cells a context shift keeps: `n_keep` of the prompt (`-1`: all of
/// it), leaving at least two cells to work with.
fn shift_keep(q: &Sequence, n_past: usize) -> usize {
    let n_keep = match q.context_shift.map_or(0, |c| c.n_keep) {
        n if n < 0 => q.prompt.len(),
        n => n as usize,
    };
    n_keep.min(q.prompt.len()).min(n_past.saturating_sub(2))
}

enum Flush {
    /// Everything was sent.
    Empty,
    /// The channel is full; paused since this instant.
    Blocked(Instant),
    /// The handle is gone.
    Closed,
}

/// Send as much of the backlog as the channel takes, and keep the paused
/// state (ours and the handle's) in step.
fn flush_outbox(q: &mut Sequence, now: Instant) -> Flush {
    if q.outbox.is_empty() {
        return Flush::Empty;
    }
    let Some(sink) = q.sink.as_ref() else { return Flush::Closed };
    // Raised before trying to send: a reader that frees room after our
    // failed send is then sure to see it and wake us. Raised after, the
    // wake-up could be lost and the request would sit until the
    // slow-consumer bound.
    q.control.set_paused(true);
    while let Some(ev) = q.outbox.pop_front() {
        match sink.try_send(ev) {
            Ok(()) => {}
            Err((SendError::Full, ev)) => {
                q.outbox.push_front(ev);
                return Flush::Blocked(*q.paused_since.get_or_insert(now));
            }
            Err((SendError::Closed, _)) => return Flush::Closed,
        }
    }
    q.control.set_paused(false);
    q.paused_since = None;
    Flush::Empty
}

fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
