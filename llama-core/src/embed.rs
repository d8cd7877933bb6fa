//! Sentence embeddings over a context created with `embeddings: true`.
#![forbid(unsafe_code)]

use crate::{Context, Error, Result, SeqId, Token};

/// Embed each input (already tokenized) and return one pooled vector per
/// input, L2-normalised when `normalize`. Inputs run one per sequence,
/// several per decode when they fit; the KV cache is cleared before and after.
///
/// # Errors
/// Whatever tokenizing, building the batch or decoding refuses (see
/// [`Context::decode`]); [`Error::NoOutput`] when the context has
/// embeddings off.
pub fn embed(ctx: &mut Context, inputs: &[Vec<Token>], normalize: bool) -> Result<Vec<Vec<f32>>> {
    let n_batch = ctx.n_batch() as usize;
    let n_seq = ctx.n_seq_max() as usize;
    let mut out = Vec::with_capacity(inputs.len());
    let mut batch = ctx.new_batch();
    let mut pending: Vec<usize> = Vec::new();
    ctx.kv_clear();
    let flush = |ctx: &mut Context,
                 batch: &mut crate::Batch,
                 pending: &mut Vec<usize>,
                 out: &mut Vec<Vec<f32>>|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        ctx.decode(batch)?;
        for (seq, _) in pending.iter().enumerate() {
            let mut v = ctx.embeddings_seq(seq as SeqId)?.to_vec();
            if normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
            }
            out.push(v);
        }
        pending.clear();
        batch.clear();
        ctx.kv_clear();
        Ok(())
    };
    for (k, toks) in inputs.iter().enumerate() {
        if toks.is_empty() {
            return Err(Error::InvalidParam { name: "input", reason: format!("input {k} is empty") });
        }
        if toks.len() > n_batch || toks.len() as u32 > ctx.n_ctx_seq() {
            return Err(Error::ContextOverflow {
                pos: toks.len() as i32,
                n_ctx: (n_batch as u32).min(ctx.n_ctx_seq()),
            });
        }
        if batch.len() + toks.len() > n_batch || pending.len() == n_seq {
            flush(ctx, &mut batch, &mut pending, &mut out)?;
        }
        let seq = pending.len() as SeqId;
        for (p, &t) in toks.iter().enumerate() {
            batch.add(t, p as i32, &[seq], true)?;
        }
        pending.push(k);
    }
    flush(ctx, &mut batch, &mut pending, &mut out)?;
    Ok(out)
}
