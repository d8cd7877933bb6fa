//! The public [`Engine`]: the engine thread, and the caller-side checks of
//! `submit`, `embed` and the slot operations.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use llama_core::{Model, Token};
use tokio::sync::{oneshot, watch};

use crate::config::EngineConfig;
use crate::handle::{Handle, RequestControl, channel};
use crate::inbox::{Admission, EmbedJob, Inbox, PushError};
use crate::inference::{Inference, ModelBackend, SamplerOf};
use crate::llama::LlamaInference;
use crate::lora::{LoraAdapterInfo, LoraError, LoraTable};
use crate::metrics::{Health, Metrics, MetricsCell, SlotInfo};
use crate::request::{
    Embedding, EngineError, MAX_N_PROBS, MAX_STOP_BYTES, MAX_STOP_STRINGS, Prompt, Rejected, Request, StartError,
};
use crate::scheduler::{Scheduler, Tick};
use crate::slot::{SavedSlot, SlotError, SlotJob, SlotOp};

/// The inference engine: one OS thread that owns the model context and
/// decodes every active request together, fed by a bounded queue.
///
/// `Engine` is cheap to clone (an `Arc` inside) and can be shared across
/// threads and tasks. When the last clone is dropped the engine shuts down
/// without draining (in-flight requests end with
/// [`EngineError::ShuttingDown`]); call [`shutdown`](Self::shutdown) for a
/// graceful stop.
///
/// The type parameter is the model backend; it defaults to llama.cpp
/// ([`LlamaInference`]), and tests may plug in a fake.
pub struct Engine<I: Inference = LlamaInference> {
    inner: Arc<Inner<I>>,
}

impl<I: Inference> Clone for Engine<I> {
    fn clone(&self) -> Self {
        Engine { inner: Arc::clone(&self.inner) }
    }
}

impl<I: Inference> fmt::Debug for Engine<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("n_ctx_seq", &self.inner.n_ctx_seq)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

struct Inner<I: Inference> {
    front: Front<I::Model>,
    thread: Mutex<Option<JoinHandle<()>>>,
    exit: Arc<ExitSignal>,
}

impl<I: Inference> std::ops::Deref for Inner<I> {
    type Target = Front<I::Model>;
    fn deref(&self) -> &Self::Target {
        &self.front
    }
}

/// The caller-side state: what `submit` and `embed` need.
pub(crate) struct Front<M: ModelBackend> {
    pub(crate) model: M,
    pub(crate) config: EngineConfig,
    pub(crate) n_ctx_seq: u32,
    pub(crate) inbox: Arc<Inbox<M::Sampler>>,
    pub(crate) metrics: Arc<MetricsCell>,
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) next_id: AtomicU64,
    /// The backend's LoRA adapters and their global scales.
    pub(crate) lora: LoraTable,
}

impl<I: Inference> Drop for Inner<I> {
    fn drop(&mut self) {
        // The last handle to the engine is gone: stop without draining. The
        // thread finishes on its own; nobody is left to wait for it.
        self.inbox.close(Instant::now());
    }
}

/// Set once, when the engine thread has exited.
#[derive(Debug)]
struct ExitSignal {
    done: Mutex<bool>,
    cond: Condvar,
    watch: watch::Sender<bool>,
}

impl ExitSignal {
    fn new() -> Self {
        ExitSignal { done: Mutex::new(false), cond: Condvar::new(), watch: watch::Sender::new(false) }
    }

    fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cond.notify_all();
        self.watch.send_replace(true);
    }

    fn wait_blocking(&self) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            done = self.cond.wait(done).unwrap_or_else(PoisonError::into_inner);
        }
    }

    async fn wait(&self) {
        let mut rx = self.watch.subscribe();
        // An error means the sender is gone, which cannot happen while we
        // hold `self`; either way there is nothing left to wait for.
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// Runs when the engine thread exits, normally or by panic: nothing queued
/// may be left without its terminal event.
struct ThreadGuard<S> {
    inbox: Arc<Inbox<S>>,
    metrics: Arc<MetricsCell>,
    exit: Arc<ExitSignal>,
}

impl<S> Drop for ThreadGuard<S> {
    fn drop(&mut self) {
        self.inbox.close(Instant::now());
        let (reqs, embeds) = self.inbox.take_all();
        for adm in reqs {
            adm.sink.finish(Default::default(), crate::Event::Error(EngineError::ShuttingDown));
        }
        for job in embeds {
            let _ = job.reply.send(Err(EngineError::ShuttingDown));
        }
        for job in self.inbox.take_slot_jobs() {
            job.fail(SlotError::ShuttingDown);
        }
        self.metrics.stopped.store(true, Relaxed);
        self.metrics.busy.store(false, Relaxed);
        self.exit.set();
    }
}

impl Engine<LlamaInference> {
    /// Create the llama.cpp context for `model` and start the engine thread.
    ///
    /// The configuration is checked first; a bad value is a
    /// [`StartError::InvalidConfig`]. The context holds `config.n_ctx` KV
    /// cells split evenly across `config.n_seq_max` slots; with
    /// `config.embeddings` a second, small context serves [`embed`](Self::embed).
    ///
    /// # Errors
    /// [`StartError`] when the configuration does not validate, the context
    /// cannot be created, or the engine thread cannot be spawned.
    pub fn start(model: Arc<Model>, config: EngineConfig) -> Result<Self, StartError> {
        config.validate()?;
        let (inference, facade) = LlamaInference::new(model, &config)?;
        Self::with_inference(inference, facade, config)
    }

    /// The llama-core model this engine runs (for what [`LlamaModel`](crate::LlamaModel)
    /// does not cover).
    pub fn llama_model(&self) -> &Arc<Model> {
        self.inner.model.model()
    }
}

impl<I: Inference> Engine<I> {
    /// Start an engine over any [`Inference`] backend.
    ///
    /// # Errors
    /// [`StartError`] when the configuration does not validate or the engine
    /// thread cannot be spawned.
    pub fn with_inference(inference: I, model: I::Model, config: EngineConfig) -> Result<Self, StartError> {
        config.validate()?;
        let n_ctx_seq = config.n_ctx_seq().min(inference.n_ctx_seq());
        let metrics = Arc::new(MetricsCell::new(config.n_seq_max as usize));
        let inbox = Arc::new(Inbox::new(config.queue_capacity, Arc::clone(&metrics)));
        let exit = Arc::new(ExitSignal::new());
        let abort = inference.abort_flag();
        let lora = LoraTable::new(inference.lora_adapters());
        let sched = Scheduler::new(inference, config.clone(), n_ctx_seq, Arc::clone(&inbox), Arc::clone(&metrics));
        let guard = ThreadGuard { inbox: Arc::clone(&inbox), metrics: Arc::clone(&metrics), exit: Arc::clone(&exit) };
        metrics.mark_progress(Instant::now(), false);
        let thread = std::thread::Builder::new().name("llama-engine".into()).spawn(move || run(sched, guard))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                front: Front { model, config, n_ctx_seq, inbox, metrics, abort, next_id: AtomicU64::new(1), lora },
                thread: Mutex::new(Some(thread)),
                exit,
            }),
        })
    }

    /// The caller-side state (for the operations defined in other modules).
    pub(crate) fn front(&self) -> &Front<I::Model> {
        &self.inner.front
    }

    /// The LoRA adapters the engine loaded ([`EngineConfig::lora`]), in id
    /// order, with their current global scales (llama.cpp's
    /// `GET /lora-adapters`).
    pub fn lora_adapters(&self) -> Vec<LoraAdapterInfo> {
        self.inner.lora.list()
    }

    /// Replace the global LoRA scales (llama.cpp's `POST /lora-adapters`):
    /// each listed adapter `(id, scale)` gets its scale, every other one 0.
    /// Requests submitted from now on without their own
    /// [`Request::lora`] use them; requests already submitted keep theirs.
    ///
    /// # Errors
    /// [`LoraError`] for an unknown id or a scale that is not finite;
    /// nothing changes then.
    pub fn set_lora_scales(&self, scales: &[(usize, f32)]) -> Result<(), LoraError> {
        self.inner.lora.set_global(scales)
    }

    /// The configuration the engine was started with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The context window of one request (prompt plus generated tokens).
    pub fn n_ctx_seq(&self) -> u32 {
        self.inner.n_ctx_seq
    }

    /// The model this engine runs: tokenization, token text, the chat
    /// template, model facts. Usable from any thread.
    pub fn model(&self) -> &I::Model {
        &self.inner.model
    }

    /// Queue a request. Never blocks: the prompt is tokenized and checked on
    /// the caller's thread, then the request goes into the bounded queue or
    /// is refused at once ([`Rejected::Overloaded`] when the queue is full).
    ///
    /// # Errors
    /// [`Rejected`]: the queue is full ([`Rejected::Overloaded`]), the engine
    /// is shutting down, the model cannot generate ([`Rejected::CannotGenerate`]),
    /// or the request does not validate (prompt too long,
    /// bad sampling parameters or grammar, tokens outside the vocabulary).
    pub fn submit(&self, req: Request) -> Result<Handle, Rejected> {
        self.inner.front.submit(req)
    }

    /// Queue an embedding job: each input pooled over its tokens
    /// (L2-normalized when `normalize`). Never blocks: inputs are tokenized
    /// and checked on the caller's thread, then the job is queued or
    /// refused at once. The job runs on the engine thread between decode
    /// steps, one input per step, so generation keeps streaming meanwhile.
    /// Each input may have at most `min(n_ubatch, n_ctx_seq)` tokens.
    ///
    /// # Errors
    /// [`Rejected`]: embeddings are off ([`Rejected::RerankingOnly`] when
    /// the engine was started for reranking), the queue is full, the engine
    /// is shutting down, or an input is refused ([`Rejected::Input`] says
    /// which and why).
    pub fn embed(&self, inputs: Vec<Prompt>, normalize: bool) -> Result<Embeddings, Rejected> {
        let inner = &*self.inner;
        if !inner.config.embeddings {
            return Err(Rejected::EmbeddingsDisabled);
        }
        if inner.config.pooling == llama_core::Pooling::Rank {
            return Err(Rejected::RerankingOnly);
        }
        if inner.inbox.is_closed() {
            return Err(Rejected::ShuttingDown);
        }
        let limit = inner.config.n_ubatch.min(inner.n_ctx_seq);
        let mut tokenized: Vec<Vec<Token>> = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let tokens = inner.prompt_tokens(input).and_then(|tokens| {
                let n_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
                if n_tokens > limit { Err(Rejected::InputTooLong { n_tokens, limit }) } else { Ok(tokens) }
            });
            tokenized.push(tokens.map_err(|reason| Rejected::Input { index, reason: Box::new(reason) })?);
        }
        let (reply, rx) = oneshot::channel();
        if tokenized.is_empty() {
            // Nothing to do: answer at once.
            let _ = reply.send(Ok(Vec::new()));
            return Ok(Embeddings { rx });
        }
        match inner.inbox.push_embed(EmbedJob { inputs: tokenized, normalize, reply }) {
            Ok(()) => Ok(Embeddings { rx }),
            Err(PushError::Full(_)) => Err(Rejected::Overloaded { queue_capacity: inner.inbox.capacity() }),
            Err(PushError::Closed(_)) => Err(Rejected::ShuttingDown),
        }
    }

    /// Save slot `slot`'s KV cache: the tokens it holds and its cells, as
    /// one state signed with the engine's key
    /// ([`EngineConfig::state_key`]), for [`restore_slot`](Self::restore_slot)
    /// later (in this engine or, with the same key and model, another).
    /// Runs on the engine thread between decode steps. The slot must be
    /// idle: a finished request's cache is what is saved (llama.cpp's
    /// `POST /slots/{id}?action=save`).
    ///
    /// # Errors
    /// The future resolves to [`SlotError::NoSuchSlot`],
    /// [`SlotError::Busy`] when a request holds the slot,
    /// [`SlotError::Failed`] when the backend cannot write the state,
    /// [`SlotError::Overloaded`] or [`SlotError::ShuttingDown`].
    pub fn save_slot(&self, slot: u32) -> SlotOp<SavedSlot> {
        let (reply, op) = SlotOp::channel();
        self.inner.front.push_slot_job(slot, SlotJob::Save { slot, reply });
        op
    }

    /// Replace idle slot `slot`'s KV cache with a state from
    /// [`save_slot`](Self::save_slot) (of any slot) and resolve to the
    /// tokens it holds. The slot's cached tokens become these, so a request
    /// whose prompt starts with them reuses the restored cells. Only states
    /// that verify under the engine's key are handed to llama.cpp.
    ///
    /// # Errors
    /// The future resolves to [`SlotError::NoSuchSlot`], [`SlotError::Busy`],
    /// [`SlotError::InvalidState`] for a state that does not verify or does
    /// not fit (the slot is then empty), [`SlotError::Failed`],
    /// [`SlotError::Overloaded`] or [`SlotError::ShuttingDown`].
    pub fn restore_slot(&self, slot: u32, bytes: Vec<u8>) -> SlotOp<Vec<Token>> {
        let (reply, op) = SlotOp::channel();
        self.inner.front.push_slot_job(slot, SlotJob::Restore { slot, bytes, reply });
        op
    }

    /// Empty idle slot `slot`'s KV cache and cached tokens; resolves to the
    /// number of tokens it held.
    ///
    /// # Errors
    /// The future resolves to [`SlotError::NoSuchSlot`], [`SlotError::Busy`],
    /// [`SlotError::Overloaded`] or [`SlotError::ShuttingDown`].
    pub fn erase_slot(&self, slot: u32) -> SlotOp<usize> {
        let (reply, op) = SlotOp::channel();
        self.inner.front.push_slot_job(slot, SlotJob::Erase { slot, reply });
        op
    }

    /// A snapshot of the counters (a few atomic loads).
    pub fn metrics(&self) -> Metrics {
        let inner = &*self.inner;
        inner.metrics.snapshot(inner.config.queue_capacity, inner.config.n_seq_max, u64::from(inner.config.n_ctx))
    }

    /// What each slot is doing.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.inner.metrics.slots()
    }

    /// Whether the engine is making progress.
    pub fn health(&self) -> Health {
        self.inner.metrics.health(Instant::now(), self.inner.config.stall_timeout)
    }

    /// Stop gracefully: refuse new requests at once ([`Rejected::ShuttingDown`]),
    /// keep serving the requests already accepted (queued or running) for up
    /// to `drain`, end whatever is left then with [`EngineError::ShuttingDown`],
    /// free the context and wait for the engine thread to exit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown is started by the first poll and proceeds
    /// whether or not the future is polled to completion; dropping it only
    /// stops the waiting.
    pub async fn shutdown(&self, drain: Duration) {
        self.begin_shutdown(drain);
        self.inner.exit.wait().await;
        self.join();
    }

    /// [`shutdown`](Self::shutdown) for non-async callers: blocks the
    /// current thread until the engine thread has exited.
    pub fn shutdown_blocking(&self, drain: Duration) {
        self.begin_shutdown(drain);
        self.inner.exit.wait_blocking();
        self.join();
    }

    fn begin_shutdown(&self, drain: Duration) {
        let now = Instant::now();
        self.inner.inbox.close(now.checked_add(drain).unwrap_or(now + Duration::from_secs(86_400)));
    }

    fn join(&self) {
        let thread = self.inner.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        // The thread has signalled its exit, so this returns promptly. A
        // panic in it has already been reported by the panic hook and turned
        // into terminal events by its guard.
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl<M: ModelBackend> Front<M> {
    pub(crate) fn submit(&self, req: Request) -> Result<Handle, Rejected> {
        let result = self.try_submit(req);
        if result.is_err() {
            self.metrics.rejected_total.fetch_add(1, Relaxed);
        }
        result
    }

    /// Queue a slot operation, or answer it at once when it cannot be
    /// queued (no such slot, queue full, shutting down).
    pub(crate) fn push_slot_job(&self, slot: u32, job: SlotJob) {
        if slot >= self.config.n_seq_max {
            return job.fail(SlotError::NoSuchSlot { slot, n_slots: self.config.n_seq_max });
        }
        match self.inbox.push_slot_job(job) {
            Ok(()) => {}
            Err(PushError::Full(job)) => job.fail(SlotError::Overloaded { queue_capacity: self.inbox.capacity() }),
            Err(PushError::Closed(job)) => job.fail(SlotError::ShuttingDown),
        }
    }

    /// Tokenize a prompt and check its tokens (not empty, in the vocabulary).
    fn prompt_tokens(&self, prompt: Prompt) -> Result<Vec<Token>, Rejected> {
        let tokens = match prompt {
            Prompt::Text(text) => self.model.tokenize(&text, true, true).map_err(Rejected::Tokenize)?,
            Prompt::Tokens(tokens) => {
                let n_vocab = self.model.info().n_vocab;
                if let Some(&token) = tokens.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
                    return Err(Rejected::InvalidToken { token, n_vocab });
                }
                tokens
            }
        };
        if tokens.is_empty() {
            return Err(Rejected::EmptyPrompt);
        }
        Ok(tokens)
    }

    /// Every check of a request happens here, once: its fields, its
    /// sampler (built here, grammar parsed once), its prompt.
    fn try_submit(&self, req: Request) -> Result<Handle, Rejected> {
        if self.inbox.is_closed() {
            return Err(Rejected::ShuttingDown);
        }
        if self.model.info().encoder_only {
            return Err(Rejected::CannotGenerate);
        }
        let stop = check_stop(req.stop)?;
        if req.n_probs > MAX_N_PROBS {
            return Err(Rejected::param("n_probs", format!("must be at most {MAX_N_PROBS}, got {}", req.n_probs)));
        }
        if let Some(slot) = req.slot.filter(|&s| s >= self.config.n_seq_max) {
            return Err(Rejected::param(
                "id_slot",
                format!("slot {slot} does not exist; there are {} slots", self.config.n_seq_max),
            ));
        }
        let lora = self.lora.resolve(req.lora.as_deref()).map_err(|e| Rejected::param("lora", e.to_string()))?;
        let sampler = self.model.prepare_sampling(&req.sampling).map_err(Rejected::Invalid)?;
        let tokens = self.prompt_tokens(req.prompt)?;
        let n_prompt = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if n_prompt >= self.n_ctx_seq {
            return Err(Rejected::PromptTooLong { n_prompt, n_ctx: self.n_ctx_seq });
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let wake: Arc<dyn crate::inbox::Wake> = Arc::clone(&self.inbox) as _;
        let control = Arc::new(RequestControl::new(Arc::clone(&self.abort), wake));
        let (sink, handle) = channel(id, n_prompt, self.config.event_capacity, Arc::clone(&control));
        let adm = Admission {
            id,
            tokens,
            sampler,
            max_tokens: req.max_tokens,
            stop,
            deadline: req.deadline,
            ignore_eos: req.ignore_eos,
            n_probs: req.n_probs,
            cache_prompt: req.cache_prompt,
            deterministic: req.deterministic,
            context_shift: req.context_shift,
            slot: req.slot,
            lora,
            submitted: Instant::now(),
            control,
            sink,
        };
        match self.inbox.push(adm) {
            Ok(()) => Ok(handle),
            Err(PushError::Full(_)) => Err(Rejected::Overloaded { queue_capacity: self.inbox.capacity() }),
            Err(PushError::Closed(_)) => Err(Rejected::ShuttingDown),
        }
    }
}

/// Stop strings: empty ones are dropped (they could never match), at most
/// [`MAX_STOP_STRINGS`] of at most [`MAX_STOP_BYTES`] bytes each.
fn check_stop(stop: Vec<String>) -> Result<Vec<String>, Rejected> {
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(Rejected::param("stop", format!("at most {MAX_STOP_STRINGS} stop strings are allowed")));
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(Rejected::param(
            "stop",
            format!("stop strings may be at most {MAX_STOP_BYTES} bytes, one has {}", long.len()),
        ));
    }
    Ok(stop)
}

/// A queued embedding job ([`Engine::embed`]): resolves to one
/// [`Embedding`] per input, in order.
///
/// # Cancel safety
///
/// Dropping it abandons the job; the engine skips the inputs it has not
/// embedded yet. No state is left behind.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited; dropping it abandons the job"]
pub struct Embeddings {
    rx: oneshot::Receiver<Result<Vec<Embedding>, EngineError>>,
}

impl Embeddings {
    /// The job answered through `rx`.
    pub(crate) fn new(rx: oneshot::Receiver<Result<Vec<Embedding>, EngineError>>) -> Self {
        Embeddings { rx }
    }
}

impl Future for Embeddings {
    type Output = Result<Vec<Embedding>, EngineError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(EngineError::Internal("the engine stopped during the embedding".into()))))
    }
}

/// The engine thread.
fn run<I: Inference>(sched: Scheduler<I>, guard: ThreadGuard<SamplerOf<I>>) {
    // Declared before `sched`, so that on a panic `sched` (and with it every
    // request's channels and the context) is dropped first.
    let guard = guard;
    let mut sched = sched;
    let inbox = Arc::clone(&guard.inbox);
    loop {
        match sched.tick(Instant::now()) {
            Tick::Worked => {}
            Tick::Idle { wake_at } => inbox.wait(wake_at),
            Tick::Finished => break,
        }
    }
    // Free the context before signalling the exit, so that `shutdown`
    // returns only once llama.cpp's memory is released.
    drop(sched);
    drop(guard);
}
