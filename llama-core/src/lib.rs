//! Safe Rust API over llama.cpp.
//!
//! Every `unsafe` line of llama.rs (besides the raw bindings in `llama-sys`)
//! lives in this crate, inside a few small types: [`Backend`], [`Model`],
//! [`LoraAdapter`], [`Vocab`], [`Context`], [`Batch`] and [`Sampler`]. Bad
//! input — a corrupt GGUF file, an out-of-vocabulary token, a position out
//! of order, a malformed grammar — is a typed [`Error`], never an abort.
//!
//! ```no_run
//! use std::sync::Arc;
//! use llama_core::{Context, ContextParams, Model, ModelParams, Sampler, SamplingParams, TokenDecoder};
//!
//! let model = Arc::new(Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", &ModelParams::default())?);
//! let mut ctx = Context::new(model.clone(), &ContextParams { n_ctx: 512, ..Default::default() })?;
//! let mut sampler = Sampler::new(&model, &SamplingParams::greedy())?;
//! let prompt = model.vocab().tokenize("The capital of France is", true, false)?;
//!
//! let mut batch = ctx.new_batch();
//! let mut last = batch.add_sequence(&prompt, 0, 0, true)?;
//! let mut pos = prompt.len() as i32;
//! let mut text = TokenDecoder::new();
//! for _ in 0..16 {
//!     ctx.decode(&batch)?;
//!     let token = sampler.sample(&ctx, last)?;
//!     if model.vocab().is_eog(token) {
//!         break;
//!     }
//!     print!("{}", text.push(&model.vocab().token_to_piece(token, false)?));
//!     batch.clear();
//!     last = batch.add(token, pos, &[0], true)?;
//!     pos += 1;
//! }
//! # Ok::<(), llama_core::Error>(())
//! ```
//!
//! # Where the unsafe is
//!
//! Seven files may contain `unsafe` (3 117 lines by `wc -l`, their unit
//! tests included): `ffi.rs` (the shim's error codes, C strings),
//! `backend.rs` (init, the log callback), and the files of the types that
//! own llama.cpp pointers: `model.rs`, `vocab.rs`, `context.rs`, `batch.rs`,
//! `sampler.rs`. Every other source file (22 files, 6 682 lines) says
//! `#![forbid(unsafe_code)]`, so the compiler proves it has none; `lib.rs`
//! holds only declarations and re-exports, and `tests/unsafe_audit.rs`
//! keeps the list true. Some pure modules are checks that the unsafe code
//! relies on (the GGUF validator, [`gbnf::validate`], the parameter
//! validators, the state HMAC): an audit reads them for what they let
//! through, not for undefined behaviour. README.md has the table.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod backend;
mod batch;
pub mod bench;
mod chat;
mod context;
mod context_params;
mod decoder;
mod embed;
mod error;
mod ffi;
pub mod gbnf;
pub mod gguf;
pub mod json_schema;
mod logprobs;
mod model;
mod sampler;
mod sampling_params;
mod special_cuts;
mod state;
mod vocab;

pub use backend::Backend;
pub use batch::{Batch, MAX_BATCH, MAX_SEQS_PER_TOKEN};
pub use chat::{CHATML_TEMPLATE, ChatMessage, ChatTemplate, RenderOptions, TemplateCaps, TemplateSpec};
pub use context::Context;
pub use context_params::{ContextParams, FlashAttn, KvCacheType, MAX_THREADS, MIN_CTX, Pooling, default_threads};
pub use decoder::TokenDecoder;
pub use embed::embed;
pub use error::{Error, Result};
pub use logprobs::{log_softmax_of, log_softmax_top};
pub use model::{LoraAdapter, Model, ModelParams, builtin_chat_templates};
pub use sampler::Sampler;
pub use sampling_params::{MAX_GRAMMAR_BYTES, MAX_GRAMMAR_DEPTH, RANDOM_SEED, SamplingParams};
pub use state::StateKey;
pub use vocab::{FimTokens, MAX_TOKENIZE_BYTES, Vocab};

/// A token id in the model's vocabulary.
pub type Token = i32;
/// A position in a sequence.
pub type Pos = i32;
/// A sequence id in a context (`0..n_seq_max`).
pub type SeqId = i32;
