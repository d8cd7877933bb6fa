//! Property tests: the real scheduler over the fake backend, driven tick by
//! tick with a virtual clock through random interleavings of submit, cancel,
//! drop, deadlines, slow and stalled readers, injected decode failures,
//! aborts inside a decode, embedding jobs, slot save / restore / erase
//! (genuine and edited states), LoRA adapter sets (per request and global,
//! failed switches) and shutdown.
//!
//! Case count: `PROPTEST_CASES` (default 256 here; CI may raise it).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use llama_core::{SamplingParams, Token, TokenDecoder};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::sync::oneshot;

use crate::engine::Front;
use crate::fake::{
    FAKE_EOG, FakeControl, FakeInference, FakeModel, fake_lora_hash, fake_next_token_with_lora, fake_piece,
};
use crate::inbox::{EmbedJob, Inbox};
use crate::inference::{DecodeError, ModelFacade};
use crate::lora::{LoraSpec, LoraTable};
use crate::metrics::MetricsCell;
use crate::scheduler::{Scheduler, Tick};
use crate::slot::{SlotJob, SlotOp};
use crate::{Embedding, EngineConfig, EngineError, Event, FinishReason, Rejected, Request, SavedSlot, SlotError};

const SLOW_CONSUMER_MS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Reads everything after every tick.
    Eager,
    /// Reads only on `Op::Read`.
    Lazy,
    /// Never reads until the end.
    Never,
}

#[derive(Debug, Clone)]
struct Spec {
    /// Start with a prefix of an earlier request's prompt (prefix reuse).
    base: Option<(Index, Index)>,
    text: String,
    seed: u32,
    max_tokens: Option<u32>,
    stop: Vec<String>,
    deadline_ms: Option<u64>,
    cache_prompt: bool,
    deterministic: bool,
    ignore_eos: bool,
    n_probs: u32,
    reader: Reader,
    /// The request's own LoRA list (ids up to one past the last adapter).
    lora: Option<Vec<(usize, f32)>>,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Spec),
    Cancel(Index),
    Drop(Index),
    Read(Index, usize),
    Tick(u8),
    Advance(u16),
    Fail(DecodeError),
    CancelMidDecode(Index),
    Embed(Index, u8),
    /// Slot operations; slot ids run one past the last slot.
    SaveSlot(u8),
    /// Restore the `Index`th saved state (edited when the flag is set).
    RestoreSlot(Index, u8, bool),
    EraseSlot(u8),
    /// Replace the global LoRA scales (ids up to one past the last adapter).
    SetLora(Vec<(usize, f32)>),
    /// The next switch of LoRA adapters fails.
    FailLora,
    Shutdown(u16),
}

/// A slot operation waiting for its answer, with what it must be.
#[derive(Debug)]
enum SlotReply {
    Save(u32, SlotOp<SavedSlot>),
    Restore { slot: u32, want: Option<Vec<Token>>, op: SlotOp<Vec<Token>> },
    Erase(u32, SlotOp<usize>),
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (prop::option::of((any::<Index>(), any::<Index>())), "[abc \n]{0,24}", 0u32..3),
        (prop::option::weighted(0.7, 0u32..12), prop::collection::vec("[a-z ]{1,2}", 0..3)),
        (prop::option::weighted(0.3, 0u64..80), any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.1)),
        (
            0u32..3,
            prop_oneof![6 => Just(Reader::Eager), 3 => Just(Reader::Lazy), 1 => Just(Reader::Never)],
            prop::option::weighted(0.4, lora_list()),
        ),
    )
        .prop_map(
            |(
                (base, text, seed),
                (max_tokens, stop),
                (deadline_ms, cache_prompt, deterministic, ignore_eos),
                (n_probs, reader, lora),
            )| Spec {
                base,
                text,
                seed,
                max_tokens,
                stop,
                deadline_ms,
                cache_prompt: cache_prompt || deterministic,
                deterministic,
                ignore_eos,
                n_probs,
                reader,
                lora,
            },
        )
}

/// A LoRA list: ids 0..3 (the configs have at most two adapters), scales
/// that collide often, so that sets are shared as well as different.
fn lora_list() -> impl Strategy<Value = Vec<(usize, f32)>> {
    prop::collection::vec((0usize..3, prop_oneof![Just(0.0f32), Just(0.5), Just(1.0)]), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => spec().prop_map(Op::Submit),
        1 => any::<Index>().prop_map(Op::Cancel),
        1 => any::<Index>().prop_map(Op::Drop),
        2 => (any::<Index>(), 1usize..5).prop_map(|(i, n)| Op::Read(i, n)),
        10 => (1u8..24).prop_map(Op::Tick),
        1 => (1u16..40).prop_map(Op::Advance),
        1 => prop_oneof![
            Just(DecodeError::Aborted),
            Just(DecodeError::NoKvSlot),
            Just(DecodeError::Failed(llama_core::Error::InvalidParam { name: "test", reason: "injected".into() }.into())),
        ]
        .prop_map(Op::Fail),
        1 => any::<Index>().prop_map(Op::CancelMidDecode),
        1 => (any::<Index>(), 1u8..4).prop_map(|(i, n)| Op::Embed(i, n)),
        1 => any::<u8>().prop_map(Op::SaveSlot),
        1 => (any::<Index>(), any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(i, s, e)| Op::RestoreSlot(i, s, e)),
        1 => any::<u8>().prop_map(Op::EraseSlot),
        1 => lora_list().prop_map(Op::SetLora),
        1 => Just(Op::FailLora),
        1 => (0u16..200).prop_map(Op::Shutdown),
    ]
}

fn config() -> impl Strategy<Value = EngineConfig> {
    (
        (1u32..=4, 16u32..40, 0u32..12, 1u32..=16),
        (1usize..4, 1usize..8, 1usize..4),
        prop::collection::vec(prop_oneof![Just(0.0f32), Just(1.0)], 0..=2),
    )
        .prop_map(|((n_seq, per_seq, extra_batch, ubatch), (queue, chunk, events), lora)| {
            let n_batch = n_seq + extra_batch;
            EngineConfig {
                n_ctx: per_seq * n_seq,
                n_seq_max: n_seq,
                n_batch,
                n_ubatch: ubatch.min(n_batch),
                n_threads: 1,
                n_threads_batch: 1,
                queue_capacity: queue,
                prefill_chunk: chunk,
                event_capacity: events,
                embeddings: true,
                stall_timeout: Duration::from_secs(1),
                slow_consumer_timeout: Duration::from_millis(SLOW_CONSUMER_MS),
                lora: lora.iter().enumerate().map(|(i, &scale)| LoraSpec::new(format!("a{i}.gguf"), scale)).collect(),
                ..EngineConfig::default()
            }
        })
}

#[derive(Debug)]
struct Tracked {
    spec: Spec,
    text: String,
    prompt: Vec<Token>,
    handle: Option<crate::Handle>,
    events: Vec<Event>,
    cancelled: bool,
    dropped: bool,
    /// [`fake_lora_hash`] of the LoRA scales the request runs with.
    lora: u64,
}

type EmbedReply = oneshot::Receiver<Result<Vec<Embedding>, EngineError>>;

struct Harness {
    front: Front<FakeModel>,
    sched: Scheduler<FakeInference>,
    ctl: Arc<Mutex<FakeControl>>,
    cfg: EngineConfig,
    n_ctx_seq: usize,
    base: Instant,
    now: Instant,
    reqs: Vec<Tracked>,
    embeds: Vec<(usize, EmbedReply)>,
    slot_replies: Vec<SlotReply>,
    saved: Vec<SavedSlot>,
    steps_checked: usize,
    /// The global LoRA scales, as the harness set them.
    global_lora: Vec<f32>,
    failures_injected: bool,
    shutdown: bool,
    finished: bool,
    n_accepted: u64,
}

impl Harness {
    fn new(cfg: EngineConfig) -> Self {
        let metrics = Arc::new(MetricsCell::new(cfg.n_seq_max as usize));
        let inbox = Arc::new(Inbox::new(cfg.queue_capacity, Arc::clone(&metrics)));
        let fake = FakeInference::for_config(&cfg);
        let lora = LoraTable::new(crate::inference::Inference::lora_adapters(&fake));
        let global_lora = cfg.lora.iter().map(|l| l.scale).collect();
        let ctl = fake.control();
        ctl.lock().unwrap().record = true;
        let abort = crate::inference::Inference::abort_flag(&fake);
        let n_ctx_seq = cfg.n_ctx_seq();
        let sched = Scheduler::new(fake, cfg.clone(), n_ctx_seq, Arc::clone(&inbox), Arc::clone(&metrics));
        let front = Front {
            model: FakeModel::default(),
            config: cfg.clone(),
            n_ctx_seq,
            inbox,
            metrics,
            abort,
            next_id: AtomicU64::new(1),
            lora,
        };
        let base = Instant::now();
        Harness {
            front,
            sched,
            ctl,
            cfg,
            n_ctx_seq: n_ctx_seq as usize,
            base,
            now: base,
            reqs: Vec::new(),
            embeds: Vec::new(),
            slot_replies: Vec::new(),
            saved: Vec::new(),
            steps_checked: 0,
            global_lora,
            failures_injected: false,
            shutdown: false,
            finished: false,
            n_accepted: 0,
        }
    }

    fn pick(&self, i: Index) -> Option<usize> {
        (!self.reqs.is_empty()).then(|| i.index(self.reqs.len()))
    }

    fn submit(&mut self, spec: Spec) -> Result<(), TestCaseError> {
        let mut text = String::new();
        if let Some((r, cut)) = spec.base
            && let Some(r) = self.pick(r)
        {
            let t = &self.reqs[r].text;
            text.push_str(&t[..cut.index(t.len() + 1)]);
        }
        text.push_str(&spec.text);
        let prompt = FakeModel::default().tokenize(&text, true, true).unwrap();
        let mut req = Request::new(text.clone());
        req.sampling = SamplingParams { seed: spec.seed, ..SamplingParams::greedy() };
        req.max_tokens = spec.max_tokens;
        req.stop = spec.stop.clone();
        req.deadline = spec.deadline_ms.map(|ms| self.now + Duration::from_millis(ms));
        req.cache_prompt = spec.cache_prompt;
        req.deterministic = spec.deterministic;
        req.ignore_eos = spec.ignore_eos;
        req.n_probs = spec.n_probs;
        req.lora = spec.lora.clone();
        let n_lora = self.global_lora.len();
        let bad_lora = spec.lora.as_ref().is_some_and(|l| l.iter().any(|&(id, _)| id >= n_lora));
        let lora = match &spec.lora {
            Some(list) => {
                let mut scales = vec![0.0; n_lora];
                for &(id, scale) in list.iter().filter(|(id, _)| *id < n_lora) {
                    scales[id] = scale;
                }
                fake_lora_hash(&scales)
            }
            None => fake_lora_hash(&self.global_lora),
        };
        let depth = self.front.metrics.queue_depth.load(std::sync::atomic::Ordering::Relaxed);
        let too_long = prompt.len() >= self.n_ctx_seq;
        match self.front.submit(req) {
            Ok(handle) => {
                prop_assert!(!self.shutdown, "accepted after shutdown");
                prop_assert!(!bad_lora, "accepted an unknown adapter id: {:?}", spec.lora);
                prop_assert!(!too_long, "accepted a prompt of {} tokens, window {}", prompt.len(), self.n_ctx_seq);
                prop_assert!(depth < self.cfg.queue_capacity, "accepted into a full queue");
                prop_assert_eq!(handle.n_prompt_tokens() as usize, prompt.len());
                self.n_accepted += 1;
                self.reqs.push(Tracked {
                    spec,
                    text,
                    prompt,
                    handle: Some(handle),
                    events: Vec::new(),
                    cancelled: false,
                    dropped: false,
                    lora,
                });
            }
            Err(Rejected::ShuttingDown) => prop_assert!(self.shutdown),
            Err(Rejected::PromptTooLong { n_prompt, n_ctx }) => {
                prop_assert!(too_long && !bad_lora);
                prop_assert_eq!(n_prompt as usize, prompt.len());
                prop_assert_eq!(n_ctx as usize, self.n_ctx_seq);
            }
            Err(Rejected::Invalid(e)) if bad_lora => {
                prop_assert!(!self.shutdown);
                prop_assert!(matches!(e.get(), llama_core::Error::InvalidParam { name: "lora", .. }), "{e}");
            }
            Err(Rejected::Overloaded { queue_capacity }) => {
                prop_assert!(!too_long && !self.shutdown && !bad_lora);
                prop_assert_eq!(queue_capacity, self.cfg.queue_capacity);
                prop_assert_eq!(depth, self.cfg.queue_capacity, "overloaded with room in the queue");
            }
            Err(e) => prop_assert!(false, "unexpected rejection {e:?}"),
        }
        Ok(())
    }

    fn read(&mut self, i: usize, max: usize) {
        let r = &mut self.reqs[i];
        let Some(h) = r.handle.as_mut() else { return };
        for _ in 0..max {
            match h.next().now_or_never() {
                Some(Some(ev)) => r.events.push(ev),
                Some(None) | None => break,
            }
        }
    }

    fn tick(&mut self) -> Result<(), TestCaseError> {
        if self.finished {
            return Ok(());
        }
        let t = self.sched.tick(self.now);
        self.now += Duration::from_millis(1);
        self.check_invariants()?;
        for i in 0..self.reqs.len() {
            if self.reqs[i].spec.reader == Reader::Eager {
                self.read(i, usize::MAX);
            }
        }
        if t == Tick::Finished {
            self.finished = true;
        }
        self.check_slot_replies()
    }

    /// Check the slot operations answered since the last look; keep the
    /// states saved for later restores.
    fn check_slot_replies(&mut self) -> Result<(), TestCaseError> {
        let n_slots = self.cfg.n_seq_max;
        let mut waiting = Vec::new();
        for reply in std::mem::take(&mut self.slot_replies) {
            // Errors every operation may get: a busy slot, a slot past the
            // last, a full queue, shutdown.
            let allowed = |slot: u32, e: &SlotError| match e {
                SlotError::Busy { slot: s } => *s == slot && slot < n_slots,
                SlotError::NoSuchSlot { slot: s, n_slots: n } => *s == slot && *n == n_slots && slot >= n_slots,
                SlotError::Overloaded { queue_capacity } => *queue_capacity == self.cfg.queue_capacity,
                SlotError::ShuttingDown => self.shutdown,
                _ => false,
            };
            match reply {
                SlotReply::Save(slot, mut op) => match (&mut op).now_or_never() {
                    None => waiting.push(SlotReply::Save(slot, op)),
                    Some(Ok(saved)) => {
                        prop_assert!(slot < n_slots && saved.tokens.len() <= self.n_ctx_seq);
                        self.saved.push(saved);
                    }
                    Some(Err(e)) => prop_assert!(allowed(slot, &e), "save of slot {slot}: {e:?}"),
                },
                SlotReply::Restore { slot, want, mut op } => match (&mut op).now_or_never() {
                    None => waiting.push(SlotReply::Restore { slot, want, op }),
                    Some(Ok(tokens)) => {
                        prop_assert!(want.is_some(), "an edited state was restored into slot {slot}");
                        prop_assert_eq!(Some(tokens), want);
                    }
                    Some(Err(SlotError::InvalidState(_))) => {
                        prop_assert!(want.is_none(), "a genuine state was refused")
                    }
                    Some(Err(e)) => prop_assert!(allowed(slot, &e), "restore into slot {slot}: {e:?}"),
                },
                SlotReply::Erase(slot, mut op) => match (&mut op).now_or_never() {
                    None => waiting.push(SlotReply::Erase(slot, op)),
                    Some(Ok(n)) => prop_assert!(slot < n_slots && n <= self.n_ctx_seq),
                    Some(Err(e)) => prop_assert!(allowed(slot, &e), "erase of slot {slot}: {e:?}"),
                },
            }
        }
        self.slot_replies = waiting;
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let caches = self.sched.slot_caches();
        prop_assert_eq!(caches.len(), self.cfg.n_seq_max as usize);
        for (i, cache) in caches.iter().enumerate() {
            prop_assert_eq!(self.sched.inference().kv(i as i32), cache.as_slice(), "slot {} KV drifted", i);
        }
        let m = &self.front.metrics;
        prop_assert!(m.queue_depth.load(std::sync::atomic::Ordering::Relaxed) <= self.cfg.queue_capacity);
        prop_assert!(self.sched.n_active() <= self.cfg.n_seq_max as usize);
        prop_assert_eq!(m.active_sequences.load(std::sync::atomic::Ordering::Relaxed), self.sched.n_active());
        prop_assert_eq!(
            m.kv_cells_used.load(std::sync::atomic::Ordering::Relaxed),
            crate::inference::Inference::kv_cells_used(self.sched.inference())
        );
        // Deterministic requests run alone, in the fixed solo shape.
        let solo = self.cfg.solo_chunk();
        for step in &self.sched.step_log[self.steps_checked..] {
            prop_assert!(step.len() <= self.cfg.n_seq_max as usize);
            prop_assert!(step.iter().map(|e| e.3).sum::<usize>() <= self.cfg.n_batch as usize);
            if let Some(&(id, _, pos, n)) = step.iter().find(|e| e.1) {
                prop_assert_eq!(step.len(), 1, "deterministic request {} shared a step: {:?}", id, step);
                let prompt_len = self.reqs.iter().find(|r| r.handle_id() == Some(id)).map(|r| r.prompt.len());
                if let Some(len) = prompt_len
                    && (pos as usize) < len
                {
                    prop_assert_eq!(pos as usize % solo, 0, "chunk start");
                    prop_assert_eq!(n, solo.min(len - pos as usize), "chunk size");
                }
            }
        }
        // One LoRA set per step: every sequence's own, and the one the backend applied.
        let ctl = self.ctl.lock().unwrap();
        prop_assert_eq!(ctl.lora_log.len(), self.sched.lora_log.len());
        let steps = self.sched.lora_log[self.steps_checked..].iter().zip(&ctl.lora_log[self.steps_checked..]);
        for ((seqs, set), applied) in steps {
            prop_assert!(seqs.iter().all(|s| s == set), "a step mixed LoRA sets: {:?} under {:?}", seqs, set);
            prop_assert_eq!(set.scales(), applied.as_slice());
        }
        drop(ctl);
        self.steps_checked = self.sched.step_log.len();
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Submit(spec) => self.submit(spec)?,
            Op::Cancel(i) => {
                if let Some(i) = self.pick(i)
                    && let Some(h) = &self.reqs[i].handle
                {
                    h.cancel();
                    self.reqs[i].cancelled = true;
                }
            }
            Op::Drop(i) => {
                if let Some(i) = self.pick(i) {
                    self.reqs[i].handle = None;
                    self.reqs[i].dropped = true;
                }
            }
            Op::Read(i, n) => {
                if let Some(i) = self.pick(i) {
                    self.read(i, n);
                }
            }
            Op::Tick(n) => {
                for _ in 0..n {
                    self.tick()?;
                }
            }
            Op::Advance(ms) => self.now += Duration::from_millis(u64::from(ms)),
            Op::Fail(e) => {
                self.ctl.lock().unwrap().fail_next = Some(e);
                self.failures_injected = true;
            }
            Op::CancelMidDecode(i) => {
                if let Some(i) = self.pick(i)
                    && let Some(h) = &self.reqs[i].handle
                {
                    let c = h.canceller();
                    self.reqs[i].cancelled = true;
                    let mut fired = false;
                    self.ctl.lock().unwrap().on_ubatch = Some(Box::new(move |_| {
                        if !std::mem::replace(&mut fired, true) {
                            c.cancel();
                        }
                    }));
                }
            }
            Op::Embed(i, n) => {
                if let Some(i) = self.pick(i) {
                    let inputs = vec![self.reqs[i].prompt.clone(); usize::from(n)];
                    let (reply, rx) = oneshot::channel();
                    if self.front.inbox.push_embed(EmbedJob { inputs, normalize: n % 2 == 0, reply }).is_ok() {
                        self.embeds.push((usize::from(n), rx));
                    }
                }
            }
            Op::SaveSlot(slot) => {
                let slot = u32::from(slot) % (self.cfg.n_seq_max + 1);
                let (reply, op) = SlotOp::channel();
                self.front.push_slot_job(slot, SlotJob::Save { slot, reply });
                self.slot_replies.push(SlotReply::Save(slot, op));
            }
            Op::RestoreSlot(i, slot, edit) => {
                if self.saved.is_empty() {
                    return Ok(());
                }
                let saved = &self.saved[i.index(self.saved.len())];
                let slot = u32::from(slot) % (self.cfg.n_seq_max + 1);
                let mut bytes = saved.bytes.clone();
                let want = if edit {
                    let at = i.index(bytes.len());
                    bytes[at] ^= 0x5a;
                    None
                } else {
                    Some(saved.tokens.clone())
                };
                let (reply, op) = SlotOp::channel();
                self.front.push_slot_job(slot, SlotJob::Restore { slot, bytes, reply });
                self.slot_replies.push(SlotReply::Restore { slot, want, op });
            }
            Op::EraseSlot(slot) => {
                let slot = u32::from(slot) % (self.cfg.n_seq_max + 1);
                let (reply, op) = SlotOp::channel();
                self.front.push_slot_job(slot, SlotJob::Erase { slot, reply });
                self.slot_replies.push(SlotReply::Erase(slot, op));
            }
            Op::SetLora(list) => {
                let n = self.global_lora.len();
                let result = self.front.lora.set_global(&list);
                if list.iter().any(|&(id, _)| id >= n) {
                    prop_assert!(result.is_err(), "an unknown id was accepted: {:?}", list);
                } else {
                    prop_assert!(result.is_ok(), "{:?}: {:?}", list, result);
                    self.global_lora = vec![0.0; n];
                    for (id, scale) in list {
                        self.global_lora[id] = scale;
                    }
                }
            }
            Op::FailLora => {
                self.ctl.lock().unwrap().fail_set_lora = true;
                self.failures_injected = true;
            }
            Op::Shutdown(ms) => {
                self.front.inbox.close(self.now + Duration::from_millis(u64::from(ms)));
                self.shutdown = true;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TestCaseError> {
        if !self.shutdown {
            self.apply(Op::Shutdown(300))?;
        }
        for _ in 0..100_000 {
            if self.finished {
                break;
            }
            self.tick()?;
        }
        prop_assert!(self.finished, "the scheduler never finished");
        for i in 0..self.reqs.len() {
            self.read(i, usize::MAX);
        }
        // Everything released.
        prop_assert!(self.sched.slot_caches().iter().all(Vec::is_empty));
        prop_assert_eq!(crate::inference::Inference::kv_cells_used(self.sched.inference()), 0);
        prop_assert_eq!(self.sched.n_active(), 0);
        let m = self.front.metrics.snapshot(self.cfg.queue_capacity, self.cfg.n_seq_max, 0);
        prop_assert_eq!(m.queue_depth, 0);
        prop_assert_eq!(
            m.requests_done + m.requests_cancelled + m.requests_failed + m.requests_timed_out,
            self.n_accepted,
            "every accepted request is counted once: {:?}",
            m
        );
        // FIFO admission.
        prop_assert!(self.sched.admission_log.windows(2).all(|w| w[0] < w[1]), "{:?}", self.sched.admission_log);
        for r in &self.reqs {
            self.check_request(r)?;
        }
        // Every slot operation was answered.
        self.check_slot_replies()?;
        prop_assert!(self.slot_replies.is_empty(), "unanswered slot operations: {:?}", self.slot_replies);
        for (n, rx) in &mut self.embeds {
            match rx.try_recv() {
                Ok(Ok(v)) => prop_assert_eq!(v.len(), *n),
                Ok(Err(EngineError::ShuttingDown)) => {}
                other => prop_assert!(false, "embedding job got {other:?}"),
            }
        }
        Ok(())
    }

    fn check_request(&self, r: &Tracked) -> Result<(), TestCaseError> {
        if r.dropped {
            return Ok(());
        }
        let n_terminal = r.events.iter().filter(|e| e.is_terminal()).count();
        prop_assert_eq!(n_terminal, 1, "request {:?}: {} terminal events in {:?}", r.spec, n_terminal, r.events);
        prop_assert!(r.events.last().is_some_and(Event::is_terminal));
        let tokens: Vec<Token> = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Token(t) => Some(t.token),
                _ => None,
            })
            .collect();
        let text: String = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Token(t) => Some(t.text.as_str()),
                _ => None,
            })
            .collect();
        for e in &r.events {
            if let Event::Token(t) = e {
                prop_assert_eq!(t.logprob.is_some(), r.spec.n_probs > 0);
                prop_assert_eq!(t.top_logprobs.len(), r.spec.n_probs as usize);
            }
        }
        let (want_tokens, want_text, want_reason) = reference(&r.prompt, &r.spec, r.lora, self.n_ctx_seq);
        match r.events.last() {
            Some(Event::Done(d)) => {
                prop_assert_eq!(&tokens, &want_tokens, "tokens of {:?}", r.spec);
                prop_assert_eq!(&text, &want_text, "text of {:?}", r.spec);
                prop_assert_eq!(&d.finish_reason, &want_reason);
                prop_assert_eq!(d.usage.completion_tokens as usize, tokens.len());
                prop_assert_eq!(d.usage.prompt_tokens as usize, r.prompt.len());
                prop_assert!((d.usage.cached_tokens as usize) < r.prompt.len());
                if r.spec.deterministic || !r.spec.cache_prompt {
                    prop_assert_eq!(d.usage.cached_tokens, 0);
                }
            }
            Some(Event::Error(e)) => {
                prop_assert!(want_tokens.starts_with(&tokens), "partial output diverged: {:?}", r.spec);
                let allowed = match e {
                    EngineError::Cancelled => r.cancelled,
                    EngineError::DeadlineExceeded => r.spec.deadline_ms.is_some(),
                    EngineError::ShuttingDown => self.shutdown,
                    EngineError::Decode(_) | EngineError::KvCacheFull => self.failures_injected,
                    EngineError::SlowConsumer { .. } => r.spec.reader != Reader::Eager,
                    _ => false,
                };
                prop_assert!(allowed, "unexpected {e:?} for {:?}", r.spec);
            }
            other => prop_assert!(false, "no terminal event: {other:?}"),
        }
        Ok(())
    }
}

impl Tracked {
    fn handle_id(&self) -> Option<u64> {
        self.handle.as_ref().map(crate::Handle::id)
    }
}

fn earliest_stop(text: &str, stops: &[String]) -> Option<(usize, String)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, std::cmp::Reverse(s.len()), s.clone())))
        .min()
        .map(|(at, _, s)| (at, s))
}

/// What the fake model generates for a request run alone, computed on the
/// whole text (no streaming).
fn reference(prompt: &[Token], spec: &Spec, lora: u64, n_ctx_seq: usize) -> (Vec<Token>, String, FinishReason) {
    if spec.max_tokens == Some(0) {
        return (Vec::new(), String::new(), FinishReason::MaxTokens);
    }
    let mut hist = prompt.to_vec();
    let mut toks = Vec::new();
    let mut dec = TokenDecoder::new();
    let mut text = String::new();
    loop {
        let t = fake_next_token_with_lora(spec.seed, &hist, lora);
        toks.push(t);
        let eog = t == FAKE_EOG && !spec.ignore_eos;
        if !eog {
            text.push_str(&dec.push(&fake_piece(t)));
        }
        if let Some((at, word)) = earliest_stop(&text, &spec.stop) {
            text.truncate(at);
            return (toks, text, FinishReason::Stop { word });
        }
        let limit = if eog {
            Some(FinishReason::Eos)
        } else if spec.max_tokens.is_some_and(|m| toks.len() >= m as usize) {
            Some(FinishReason::MaxTokens)
        } else if hist.len() >= n_ctx_seq {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        if let Some(reason) = limit {
            text.push_str(&dec.finish());
            if let Some((at, word)) = earliest_stop(&text, &spec.stop) {
                text.truncate(at);
                return (toks, text, FinishReason::Stop { word });
            }
            return (toks, text, reason);
        }
        hist.push(t);
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// The central invariant: whatever happens, every live request gets
    /// exactly one terminal event, its output equals a solo run, slots and KV
    /// cells never leak, admission is FIFO and bounded.
    #[test]
    fn scheduler_invariants(cfg in config(), ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new(cfg);
        for op in ops {
            h.apply(op)?;
        }
        h.finish()?;
        let _ = h.base;
    }
}
