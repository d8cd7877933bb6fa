//! `llama embed`: one pooled embedding vector per input, as JSON lines.

use std::io::BufRead;

use llama_core::{Context, ContextParams, Pooling};
use serde_json::json;

use crate::cli::EmbedArgs;
use crate::{Outcome, load, output};

/// Run `llama embed`.
pub fn run(args: EmbedArgs) -> anyhow::Result<Outcome> {
    let texts = if args.texts.is_empty() { read_lines()? } else { args.texts };
    if texts.is_empty() {
        anyhow::bail!("nothing to embed: pass TEXT arguments or pipe lines on stdin");
    }
    let model = load::load(&args.model)?;
    let inputs = texts
        .iter()
        .enumerate()
        .map(|(i, t)| match model.vocab().tokenize(t, true, false) {
            Ok(toks) if toks.is_empty() => Err(anyhow::anyhow!("input {i} is empty")),
            Ok(toks) => Ok(toks),
            Err(e) => Err(anyhow::anyhow!("input {i}: {e}")),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let longest = inputs.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let n_ctx = if args.run.ctx_size == 0 { model.n_ctx_train() } else { args.run.ctx_size };
    if longest > n_ctx {
        anyhow::bail!("an input is {longest} tokens, longer than the context ({n_ctx}); pass a larger -c/--ctx-size");
    }
    let mut params = ContextParams {
        n_ctx,
        // Pooling needs a whole input in one micro-batch.
        n_batch: n_ctx,
        n_ubatch: n_ctx,
        n_seq_max: 1,
        embeddings: true,
        pooling: Pooling::for_embeddings(&model),
        flash_attn: args.run.flash_attn,
        type_k: args.run.cache_type_k,
        type_v: args.run.cache_type_v,
        ..ContextParams::default()
    };
    if let Some(t) = args.run.threads {
        params.n_threads = t;
        params.n_threads_batch = t;
    }
    let mut ctx = Context::new(model, &params)?;
    let vectors = llama_core::embed(&mut ctx, &inputs, !args.no_normalize)?;
    for (index, (vector, tokens)) in vectors.iter().zip(&inputs).enumerate() {
        output::print_json(&json!({ "index": index, "n_tokens": tokens.len(), "embedding": vector }))?;
    }
    Ok(Outcome::Done)
}

fn read_lines() -> anyhow::Result<Vec<String>> {
    if output::stdin_is_tty() {
        return Ok(Vec::new());
    }
    let mut texts = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?;
        if !line.trim().is_empty() {
            texts.push(line);
        }
    }
    Ok(texts)
}
