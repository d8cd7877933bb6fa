//! What `generate` and `chat` share: starting the engine, driving one
//! request's event stream to the end (or to Ctrl-C), and turning the
//! engine's refusals into one-line errors.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use llama_core::{ChatTemplate, Model};
use llama_runtime::{Done, Engine, EngineConfig, Event, Handle, LlamaModel, ModelFacade, Rejected, TokenEvent};

use crate::cli::RunArgs;
use crate::output::Flow;

/// How long to wait for the engine thread to wind down at exit. The request
/// is cancelled by then, so this is one micro-batch at most.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// The model's chat template, or ChatML when it has none (or its own does
/// not compile): the runtime's model facade, as the server uses it; the
/// fallback is logged as a warning.
pub fn chat_template(model: &Arc<Model>) -> anyhow::Result<ChatTemplate> {
    let template = LlamaModel::new(Arc::clone(model)).chat_template(llama_core::TemplateSpec::Model)?;
    if let Some(why) = template.fallback() {
        tracing::warn!("{why}; using ChatML");
    }
    Ok(template)
}

/// An engine for one interactive user: one sequence, the whole context.
pub fn start_engine(model: Arc<Model>, run: &RunArgs) -> anyhow::Result<Engine> {
    let n_ctx = if run.ctx_size == 0 { model.n_ctx_train() } else { run.ctx_size };
    let mut config = EngineConfig {
        n_ctx,
        n_seq_max: 1,
        flash_attn: run.flash_attn,
        type_k: run.cache_type_k,
        type_v: run.cache_type_v,
        ..EngineConfig::default()
    };
    // The batch can never usefully exceed the context.
    config.n_batch = config.n_batch.min(n_ctx);
    config.n_ubatch = config.n_ubatch.min(config.n_batch);
    if let Some(t) = run.threads {
        config.n_threads = t;
        config.n_threads_batch = t;
    }
    Engine::start(model, config).map_err(|e| anyhow::anyhow!("cannot start the engine: {e}"))
}

/// A seed for "random": the CLI picks it (rather than letting llama.cpp)
/// so that it can report it and the run can be repeated with `--seed`.
pub fn random_seed() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness per process.
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    // u32::MAX means "random" to llama-core; avoid handing it that value.
    (h.finish() as u32).min(u32::MAX - 1)
}

/// Why the engine refused a request, as a sentence for the user.
pub fn rejected(r: Rejected) -> anyhow::Error {
    match r {
        Rejected::PromptTooLong { n_prompt, n_ctx } => anyhow::anyhow!(
            "the prompt is {n_prompt} tokens, longer than the context ({n_ctx} tokens); pass a larger -c/--ctx-size \
             or a shorter prompt"
        ),
        Rejected::EmptyPrompt => anyhow::anyhow!("the prompt is empty"),
        other => anyhow::anyhow!("{other}"),
    }
}

/// How a request's stream ended, when it did not fail.
#[derive(Debug)]
pub enum End {
    /// The engine finished it.
    Finished(Done),
    /// Ctrl-C: the request was cancelled.
    Interrupted,
    /// stdout was closed: the request was cancelled.
    Closed,
}

/// Drive `handle` to its terminal event, calling `on_token` for each token
/// as it arrives. Ctrl-C cancels the request and returns [`End::Interrupted`];
/// `on_token` returning [`Flow::Closed`] cancels it and returns [`End::Closed`].
pub async fn drive(
    mut handle: Handle,
    mut on_token: impl FnMut(&TokenEvent) -> io::Result<Flow>,
) -> anyhow::Result<End> {
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            // Ctrl-C first: a fast stream must not starve the signal.
            biased;
            () = &mut interrupt => {
                handle.cancel();
                return Ok(End::Interrupted);
            }
            event = handle.next() => match event {
                Some(Event::Token(t)) => {
                    let flow = on_token(&t).map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?;
                    if flow == Flow::Closed {
                        handle.cancel();
                        return Ok(End::Closed);
                    }
                }
                Some(Event::Done(done)) => return Ok(End::Finished(done)),
                Some(Event::Error(e)) => return Err(anyhow::anyhow!("generation failed: {e}")),
                Some(other) => return Err(anyhow::anyhow!("unexpected engine event {other:?}")),
                None => return Err(anyhow::anyhow!("the engine stopped without finishing the request")),
            }
        }
    }
}

/// Resolves at the next Ctrl-C (SIGINT). The first call installs the
/// handler, after which SIGINT no longer kills the process. If the handler
/// cannot be installed, never resolves (Ctrl-C then keeps its default).
pub async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A single-threaded tokio runtime: the CLI has one request in flight at a
/// time, and the engine does its work on its own thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// Tokens per second, or 0 for an empty interval.
pub fn rate(n: u32, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { f64::from(n) / s } else { 0.0 }
}
