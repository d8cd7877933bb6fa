//! The pp/tg measurement protocol, shared by `llama bench` and the
//! benchmark suite so that both measure exactly what `llama-sys`'s C
//! baseline measures in its `bench` mode:
//!
//! - the synthetic prompt `(i * 7919 + 13) % n_vocab`;
//! - a warm-up prefill of 8 tokens (llama.cpp allocates lazily on the first
//!   decode), not timed;
//! - **pp**: clear the KV cache, prefill the prompt from position 0 in
//!   chunks of `n_batch`, logits for the last token only;
//! - **tg**: clear the KV cache, decode `n_gen` single tokens, each asking
//!   for logits.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use crate::{Context, ContextParams, Model, Result, Token};

/// The synthetic prompt of `n` tokens: `(i * 7919 + 13) % n_vocab`.
pub fn synthetic_prompt(n: u32, n_vocab: i32) -> Vec<Token> {
    let n_vocab = i64::from(n_vocab.max(1));
    (0..i64::from(n)).map(|i| ((i * 7919 + 13) % n_vocab) as Token).collect()
}

/// Prefill `tokens` at position 0 of sequence 0 in chunks of `n_batch`,
/// logits for the last token only. Returns the batch index of that token's
/// output in the last chunk.
///
/// # Errors
/// [`crate::Error`] from building a batch or decoding.
pub fn prefill(ctx: &mut Context, tokens: &[Token]) -> Result<usize> {
    let mut batch = ctx.new_batch();
    let n_batch = ctx.n_batch() as usize;
    let mut last = 0;
    for (k, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        let start = k * n_batch;
        last = batch.add_sequence(chunk, start as i32, 0, start + chunk.len() == tokens.len())?;
        ctx.decode(&batch)?;
    }
    Ok(last)
}

/// One context set up for pp/tg rounds (warmed up).
#[derive(Debug)]
pub struct PpTg {
    ctx: Context,
    prompt: Vec<Token>,
    n_gen: u32,
    n_vocab: i32,
}

impl PpTg {
    /// A one-sequence context of `n_prompt + n_gen + 16` cells, batch and
    /// micro-batch `n_batch`, `threads` threads, warmed up.
    ///
    /// # Errors
    /// [`crate::Error`] when the context cannot be created or the warm-up
    /// decode fails.
    pub fn new(model: Arc<Model>, n_prompt: u32, n_gen: u32, n_batch: u32, threads: i32) -> Result<Self> {
        let n_vocab = model.vocab().n_tokens();
        let params = ContextParams {
            n_ctx: n_prompt + n_gen + 16,
            n_batch,
            n_ubatch: n_batch,
            n_seq_max: 1,
            n_threads: threads,
            n_threads_batch: threads,
            ..ContextParams::default()
        };
        let mut ctx = Context::new(model, &params)?;
        let prompt = synthetic_prompt(n_prompt, n_vocab);
        prefill(&mut ctx, &prompt[..prompt.len().min(8)])?;
        Ok(PpTg { ctx, prompt, n_gen, n_vocab })
    }

    /// One pp repetition: prompt tokens per second.
    ///
    /// # Errors
    /// [`crate::Error`] from decoding.
    pub fn pp(&mut self) -> Result<f64> {
        self.ctx.kv_clear();
        let t0 = Instant::now();
        prefill(&mut self.ctx, &self.prompt)?;
        Ok(self.prompt.len() as f64 / t0.elapsed().as_secs_f64())
    }

    /// One tg repetition: generated tokens per second.
    ///
    /// # Errors
    /// [`crate::Error`] from decoding.
    pub fn tg(&mut self) -> Result<f64> {
        self.ctx.kv_clear();
        let mut batch = self.ctx.new_batch();
        let mut token = self.prompt.first().copied().unwrap_or(0);
        let t0 = Instant::now();
        for pos in 0..self.n_gen as i32 {
            batch.clear();
            batch.add(token, pos, &[0], true)?;
            self.ctx.decode(&batch)?;
            token = (token + 1) % self.n_vocab;
        }
        Ok(f64::from(self.n_gen) / t0.elapsed().as_secs_f64())
    }
}
