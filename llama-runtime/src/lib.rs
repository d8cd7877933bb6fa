//! The inference engine of llama.rs: one engine thread that owns the llama.cpp
//! context and runs continuous batching over every active request, fed by a
//! bounded admission queue, with cancellation, deadlines, streaming events and
//! prefix (prompt) caching.
//!
//! ```no_run
//! use std::sync::Arc;
//! use llama_core::{Model, ModelParams};
//! use llama_runtime::{Engine, EngineConfig, Request, SamplingParams};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Arc::new(Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", &ModelParams::default())?);
//! let engine = Engine::start(model, EngineConfig { n_ctx: 2048, n_seq_max: 4, ..Default::default() })?;
//!
//! let mut req = Request::new("The capital of France is");
//! req.sampling = SamplingParams::greedy();
//! req.max_tokens = Some(16);
//! let out = engine.submit(req)?.collect().await?;
//! println!("{} ({:?})", out.text, out.finish_reason);
//!
//! engine.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Exactly one terminal event.** Every request that [`Engine::submit`]
//!   accepted ends with exactly one [`Event::Done`] or [`Event::Error`], after
//!   all of its token events, whatever happens (cancel, deadline, decode
//!   failure, slow consumer, shutdown, even a panic of the engine thread). The
//!   terminal event travels outside the bounded token channel, so it never
//!   waits for capacity.
//! - **Bounded everything.** The admission queue holds at most
//!   [`EngineConfig::queue_capacity`] requests (a full queue is an immediate
//!   [`Rejected::Overloaded`]); each request's token channel holds at most
//!   [`EngineConfig::event_capacity`] events.
//! - **Slow consumers.** When a request's channel is full, that request is
//!   paused: it is left out of decode steps (nothing is lost: the sampled
//!   token waits), while the other requests go on. A read resumes it. If the
//!   channel stays full for [`EngineConfig::slow_consumer_timeout`] (or the
//!   request's deadline passes first), the request ends with
//!   [`EngineError::SlowConsumer`] (or `DeadlineExceeded`), delivered after the
//!   events already generated.
//! - **Determinism.** A request with [`Request::deterministic`] set is
//!   decoded alone (no other sequence in its batches) in a fixed batch shape
//!   (prompt chunks of `min(prefill_chunk, n_batch)` tokens from position 0,
//!   then one token per step), without reusing cached prefixes, in a slot
//!   whose KV cells are its own (KV is never unified across slots). Its tokens
//!   are therefore the same as those of the same request (same seed and
//!   sampling) run alone on an idle engine with the same model, context,
//!   batch, micro-batch, prefill-chunk and thread settings. Other requests
//!   are batched together; on CPU their output is usually, but not
//!   guaranteed to be, identical to a solo run.
//! - **Cancellation.** Dropping a [`Handle`], [`Handle::cancel`] or a passed
//!   deadline ends a request within one step; during a long prompt the
//!   running decode is aborted within one micro-batch, and the other requests
//!   of that step are rolled back and re-run.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod default_model;
mod dyn_engine;
mod engine;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod fim;
mod handle;
mod inbox;
mod inference;
mod llama;
mod lora;
mod metrics;
mod request;
mod rerank;
mod scheduler;
mod slot;
mod stop;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod props;

pub use config::{EngineConfig, MAX_SEQ, MIN_CTX_SEQ};
pub use default_model::{DEFAULT_MODEL, DefaultModelMissing, find_default_model, find_default_model_from};
pub use dyn_engine::DynEngine;
pub use engine::{Embeddings, Engine};
pub use fim::{Infill, InfillError};
pub use handle::{Canceller, Handle};
pub use inference::{BatchEntry, DecodeError, Inference, ModelBackend, ModelFacade, ModelInfo, SampleError, Sampled};
pub use llama::{LlamaInference, LlamaModel};
pub use llama_core::{SamplingParams, Token};
pub use lora::{LoraAdapterInfo, LoraError, LoraSpec, MAX_LORA_ADAPTERS};
pub use metrics::{Health, Metrics, SlotInfo, SlotState};
pub use request::{
    Collector, ContextShift, CoreError, Done, Embedding, EngineError, Event, FinishReason, MAX_N_PROBS, MAX_STOP_BYTES,
    MAX_STOP_STRINGS, Output, Prompt, Rejected, Request, StartError, Timings, TokenEvent, TopLogprob, Usage,
};
pub use rerank::{RerankFormat, RerankScore, Reranking};
pub use slot::{SavedSlot, SlotError, SlotOp};
