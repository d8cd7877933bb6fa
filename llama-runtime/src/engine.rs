//! The public [`Engine`]: the engine thread, and the caller-side checks of
//! `submit` and `embed`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_core::{Model, Token};
use tokio::sync::{oneshot, watch};

use crate::config::EngineConfig;
use crate::handle::{Handle, RequestControl, channel};
use crate::inbox::{Admission, EmbedJob, Inbox, PushError};
use crate::inference::{Inference, Tokenizer};
use crate::llama::LlamaInference;
use crate::metrics::{Health, Metrics, MetricsCell, SlotInfo};
use crate::request::{
    Embedding, EngineError, MAX_N_PROBS, MAX_STOP_BYTES, MAX_STOP_STRINGS, Prompt, Rejected, Request, StartError,
};
use crate::scheduler::{Scheduler, Tick};

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
    front: Front<I::Tokenizer>,
    thread: Mutex<Option<JoinHandle<()>>>,
    exit: Arc<ExitSignal>,
}

impl<I: Inference> std::ops::Deref for Inner<I> {
    type Target = Front<I::Tokenizer>;
    fn deref(&self) -> &Self::Target {
        &self.front
    }
}

/// The caller-side state: what `submit` and `embed` need.
pub(crate) struct Front<T: Tokenizer> {
    pub(crate) tokenizer: T,
    pub(crate) config: EngineConfig,
    pub(crate) n_ctx_seq: u32,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) metrics: Arc<MetricsCell>,
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) next_id: AtomicU64,
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
struct ThreadGuard {
    inbox: Arc<Inbox>,
    metrics: Arc<MetricsCell>,
    exit: Arc<ExitSignal>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.inbox.close(Instant::now());
        let (reqs, embeds) = self.inbox.take_all();
        for adm in reqs {
            adm.sink.finish(Default::default(), crate::Event::Error(EngineError::ShuttingDown));
        }
        for job in embeds {
            let _ = job.reply.send(Err(EngineError::ShuttingDown));
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
        let (inference, tokenizer) = LlamaInference::new(model, &config)?;
        Self::with_inference(inference, tokenizer, config)
    }

    /// The model this engine runs.
    pub fn model(&self) -> &Arc<Model> {
        self.inner.tokenizer.model()
    }
}

impl<I: Inference> Engine<I> {
    /// Start an engine over any [`Inference`] backend.
    ///
    /// # Errors
    /// [`StartError`] when the configuration does not validate or the engine
    /// thread cannot be spawned.
    pub fn with_inference(inference: I, tokenizer: I::Tokenizer, config: EngineConfig) -> Result<Self, StartError> {
        config.validate()?;
        let n_ctx_seq = config.n_ctx_seq().min(inference.n_ctx_seq());
        let metrics = Arc::new(MetricsCell::new(config.n_seq_max as usize));
        let inbox = Arc::new(Inbox::new(config.queue_capacity, Arc::clone(&metrics)));
        let exit = Arc::new(ExitSignal::new());
        let abort = inference.abort_flag();
        let sched = Scheduler::new(inference, config.clone(), n_ctx_seq, Arc::clone(&inbox), Arc::clone(&metrics));
        let guard = ThreadGuard { inbox: Arc::clone(&inbox), metrics: Arc::clone(&metrics), exit: Arc::clone(&exit) };
        metrics.mark_progress(Instant::now(), false);
        let thread = std::thread::Builder::new().name("llama-engine".into()).spawn(move || run(sched, guard))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                front: Front { tokenizer, config, n_ctx_seq, inbox, metrics, abort, next_id: AtomicU64::new(1) },
                thread: Mutex::new(Some(thread)),
                exit,
            }),
        })
    }

    /// The configuration the engine was started with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The context window of one request (prompt plus generated tokens).
    pub fn n_ctx_seq(&self) -> u32 {
        self.inner.n_ctx_seq
    }

    /// The caller-side backend (tokenizer and checks).
    pub fn tokenizer(&self) -> &I::Tokenizer {
        &self.inner.tokenizer
    }

    /// Queue a request. Never blocks: the prompt is tokenized and checked on
    /// the caller's thread, then the request goes into the bounded queue or
    /// is refused at once ([`Rejected::Overloaded`] when the queue is full).
    ///
    /// # Errors
    /// [`Rejected`]: the queue is full ([`Rejected::Overloaded`]), the engine
    /// is shutting down, or the request does not validate (prompt too long,
    /// bad sampling parameters or grammar, tokens outside the vocabulary).
    pub fn submit(&self, req: Request) -> Result<Handle, Rejected> {
        self.inner.front.submit(req)
    }

    /// Embed each input (pooled over its tokens; L2-normalized when
    /// `normalize`). Runs on the engine thread between decode steps, one
    /// input per step, so generation keeps streaming meanwhile. Each input
    /// may have at most `min(n_ubatch, n_ctx_seq)` tokens.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the job; the engine skips
    /// the inputs it has not embedded yet. No state is left behind.
    pub async fn embed(&self, inputs: Vec<Prompt>, normalize: bool) -> Result<Vec<Embedding>, EngineError> {
        let inner = &*self.inner;
        if !inner.config.embeddings {
            return Err(EngineError::EmbeddingsDisabled);
        }
        if inner.inbox.is_closed() {
            return Err(EngineError::ShuttingDown);
        }
        let limit = inner.config.n_ubatch.min(inner.n_ctx_seq) as usize;
        let n_vocab = inner.tokenizer.n_vocab();
        let mut tokenized: Vec<Vec<Token>> = Vec::with_capacity(inputs.len());
        for (k, input) in inputs.into_iter().enumerate() {
            let tokens = match input {
                Prompt::Text(text) => inner
                    .tokenizer
                    .tokenize(&text)
                    .map_err(|e| EngineError::InvalidInput(format!("input {k}: tokenization failed: {e}")))?,
                Prompt::Tokens(tokens) => tokens,
            };
            if let Some(t) = tokens.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
                return Err(EngineError::InvalidInput(format!("input {k}: token {t} is outside 0..{n_vocab}")));
            }
            if tokens.is_empty() {
                return Err(EngineError::InvalidInput(format!("input {k} is empty")));
            }
            if tokens.len() > limit {
                return Err(EngineError::InvalidInput(format!(
                    "input {k} has {} tokens; at most {limit} can be embedded",
                    tokens.len()
                )));
            }
            tokenized.push(tokens);
        }
        if tokenized.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        match inner.inbox.push_embed(EmbedJob { inputs: tokenized, normalize, reply }) {
            Ok(()) => {}
            Err(PushError::Full(_)) => return Err(EngineError::Overloaded { queue_capacity: inner.inbox.capacity() }),
            Err(PushError::Closed(_)) => return Err(EngineError::ShuttingDown),
        }
        rx.await.unwrap_or_else(|_| Err(EngineError::Internal("the engine stopped during the embedding".into())))
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

impl<T: Tokenizer> Front<T> {
    pub(crate) fn submit(&self, req: Request) -> Result<Handle, Rejected> {
        let result = self.try_submit(req);
        if result.is_err() {
            self.metrics.rejected_total.fetch_add(1, Relaxed);
        }
        result
    }

    fn try_submit(&self, req: Request) -> Result<Handle, Rejected> {
        let inner = self;
        if inner.inbox.is_closed() {
            return Err(Rejected::ShuttingDown);
        }
        check_request(&req)?;
        inner.tokenizer.check_sampling(&req.sampling).map_err(Rejected::InvalidParams)?;
        let tokens = match req.prompt {
            Prompt::Text(text) => inner.tokenizer.tokenize(&text).map_err(Rejected::Tokenize)?,
            Prompt::Tokens(tokens) => {
                let n_vocab = inner.tokenizer.n_vocab();
                if let Some(&token) = tokens.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
                    return Err(Rejected::InvalidToken { token, n_vocab });
                }
                tokens
            }
        };
        if tokens.is_empty() {
            return Err(Rejected::EmptyPrompt);
        }
        let n_prompt = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if n_prompt >= inner.n_ctx_seq {
            return Err(Rejected::PromptTooLong { n_prompt, n_ctx: inner.n_ctx_seq });
        }
        let id = inner.next_id.fetch_add(1, Relaxed);
        let control = Arc::new(RequestControl::new(Arc::clone(&inner.abort), Arc::clone(&inner.inbox)));
        let (sink, handle) = channel(id, n_prompt, inner.config.event_capacity, Arc::clone(&control));
        let adm = Admission {
            id,
            tokens,
            sampling: req.sampling,
            max_tokens: req.max_tokens,
            stop: req.stop,
            deadline: req.deadline,
            ignore_eos: req.ignore_eos,
            n_probs: req.n_probs,
            cache_prompt: req.cache_prompt,
            deterministic: req.deterministic,
            submitted: Instant::now(),
            control,
            sink,
        };
        match inner.inbox.push(adm) {
            Ok(()) => Ok(handle),
            Err(PushError::Full(_)) => Err(Rejected::Overloaded { queue_capacity: inner.inbox.capacity() }),
            Err(PushError::Closed(_)) => Err(Rejected::ShuttingDown),
        }
    }
}

fn check_request(req: &Request) -> Result<(), Rejected> {
    if req.stop.len() > MAX_STOP_STRINGS {
        return Err(Rejected::InvalidParams(format!(
            "at most {MAX_STOP_STRINGS} stop strings, got {}",
            req.stop.len()
        )));
    }
    if let Some(s) = req.stop.iter().find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(Rejected::InvalidParams(format!(
            "stop strings must have 1..={MAX_STOP_BYTES} bytes, got {}",
            s.len()
        )));
    }
    if req.n_probs > MAX_N_PROBS {
        return Err(Rejected::InvalidParams(format!("n_probs must be at most {MAX_N_PROBS}, got {}", req.n_probs)));
    }
    Ok(())
}

/// The engine thread.
fn run<I: Inference>(sched: Scheduler<I>, guard: ThreadGuard) {
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
