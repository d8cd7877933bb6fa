//! [`Inference`] over llama-core: one [`Context`] with a sequence per slot, a
//! [`Sampler`] per slot, the model's vocabulary, and (when embeddings are
//! enabled) a second, small context that only embeds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use llama_core::{
    Batch, Context, ContextParams, Error, Model, Pooling, Pos, Sampler, SamplingParams, SeqId, Token, log_softmax_of,
    log_softmax_top,
};

use crate::config::EngineConfig;
use crate::inference::{BatchEntry, DecodeError, Inference, SampleError, Sampled, Tokenizer};
use crate::request::StartError;

/// The caller-side half of [`LlamaInference`]: tokenization and checks on
/// the shared model.
#[derive(Debug, Clone)]
pub struct LlamaTokenizer {
    model: Arc<Model>,
}

impl LlamaTokenizer {
    /// A tokenizer over `model`.
    ///
    /// # Errors
    /// [`StartError`] when llama.cpp cannot create the context(s).
    pub fn new(model: Arc<Model>) -> Self {
        LlamaTokenizer { model }
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

impl Tokenizer for LlamaTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<Token>, String> {
        self.model.vocab().tokenize(text, true, true).map_err(|e| e.to_string())
    }

    fn n_vocab(&self) -> i32 {
        self.model.vocab().n_tokens()
    }

    fn check_sampling(&self, params: &SamplingParams) -> Result<(), String> {
        params.validate().map_err(|e| e.to_string())?;
        if params.grammar.is_some() {
            // Building the sampler parses the grammar: a bad one is refused
            // at submit time rather than failing on the engine thread.
            Sampler::new(&self.model, params).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The engine's llama.cpp backend.
#[derive(Debug)]
pub struct LlamaInference {
    ctx: Context,
    model: Arc<Model>,
    batch: Batch,
    samplers: Vec<Option<Sampler>>,
    /// Batch index of each entry's output in the last decode.
    outputs: Vec<Option<usize>>,
    /// The embedding context. Separate from the generation context: pooled
    /// embeddings make every token an output and change the graph, and
    /// llama.cpp asserts on pooled contexts whose `n_ubatch` is not a
    /// multiple of `n_seq_max`; a one-sequence context avoids both.
    embed_ctx: Option<Context>,
    n_ctx_seq: u32,
}

impl LlamaInference {
    /// Create the context for `config` (already validated). KV is never
    /// unified: each slot gets its own `n_ctx / n_seq_max` cells, so that one
    /// request's cache layout does not depend on the others'.
    pub fn new(model: Arc<Model>, config: &EngineConfig) -> Result<(Self, LlamaTokenizer), StartError> {
        let per_seq = config.n_ctx_seq();
        let params = ContextParams {
            n_ctx: per_seq * config.n_seq_max,
            n_batch: config.n_batch,
            n_ubatch: config.n_ubatch,
            n_seq_max: config.n_seq_max,
            n_threads: config.n_threads,
            n_threads_batch: config.n_threads_batch,
            embeddings: false,
            pooling: Pooling::Unspecified,
            flash_attn: config.flash_attn,
            kv_unified: false,
            type_k: config.type_k,
            type_v: config.type_v,
        };
        let ctx = Context::new(Arc::clone(&model), &params)?;
        let embed_ctx = if config.embeddings {
            // Pooling needs a whole input in one micro-batch.
            let limit = config.n_ubatch.min(per_seq).max(llama_core::MIN_CTX);
            let params = ContextParams {
                n_ctx: limit,
                n_batch: limit,
                n_ubatch: limit,
                n_seq_max: 1,
                embeddings: true,
                pooling: Pooling::for_embeddings(&model),
                ..params
            };
            Some(Context::new(Arc::clone(&model), &params)?)
        } else {
            None
        };
        let n_ctx_seq = ctx.n_ctx_seq().min(per_seq);
        let batch = ctx.new_batch();
        let samplers = (0..config.n_seq_max).map(|_| None).collect();
        let inference = LlamaInference {
            ctx,
            model: Arc::clone(&model),
            batch,
            samplers,
            outputs: Vec::new(),
            embed_ctx,
            n_ctx_seq,
        };
        Ok((inference, LlamaTokenizer::new(model)))
    }

    fn fill_batch(&mut self, entries: &[BatchEntry<'_>]) -> Result<(), Error> {
        self.batch.clear();
        self.outputs.clear();
        for e in entries {
            let last = self.batch.add_sequence(e.tokens, e.pos, e.seq, e.logits)?;
            self.outputs.push(e.logits.then_some(last));
        }
        Ok(())
    }
}

fn decode_error(e: Error) -> DecodeError {
    match e {
        Error::Aborted => DecodeError::Aborted,
        Error::Decode { code: 1, .. } => DecodeError::NoKvSlot,
        other => DecodeError::Failed(other.to_string()),
    }
}

impl Inference for LlamaInference {
    type Tokenizer = LlamaTokenizer;

    fn n_ctx_seq(&self) -> u32 {
        self.n_ctx_seq
    }

    fn abort_flag(&self) -> Arc<AtomicBool> {
        self.ctx.abort_flag()
    }

    fn decode(&mut self, entries: &[BatchEntry<'_>]) -> Result<(), DecodeError> {
        self.fill_batch(entries).map_err(decode_error)?;
        self.ctx.decode(&self.batch).map_err(decode_error)
    }

    fn start_sequence(&mut self, seq: SeqId, params: &SamplingParams, prompt: &[Token]) -> Result<(), String> {
        let slot = self.samplers.get_mut(seq as usize).ok_or_else(|| format!("no sequence {seq}"))?;
        // -1 look-backs mean this sequence's context, as in llama.cpp's server.
        let params = params.clone().with_context_size(self.n_ctx_seq);
        let mut sampler = Sampler::new(&self.model, &params).map_err(|e| e.to_string())?;
        for &t in prompt {
            sampler.accept(t).map_err(|e| e.to_string())?;
        }
        *slot = Some(sampler);
        Ok(())
    }

    fn sample(&mut self, seq: SeqId, entry: usize, n_probs: u32) -> Result<Sampled, SampleError> {
        let index = self.outputs.get(entry).copied().flatten().ok_or_else(|| format!("entry {entry} has no output"))?;
        let sampler = self
            .samplers
            .get_mut(seq as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| format!("sequence {seq} has no sampler"))?;
        let logits = self.ctx.logits(index).map_err(|e| e.to_string())?;
        let top = if n_probs > 0 { log_softmax_top(logits, n_probs as usize) } else { Vec::new() };
        let token = sampler.sample_logits(logits).map_err(|e| match e {
            // The grammar allows no token here: the request's constraint, not a fault of ours.
            llama_core::Error::Grammar(reason) => SampleError::Constraint(reason),
            other => SampleError::Internal(other.to_string()),
        })?;
        let logprob = (n_probs > 0).then(|| log_softmax_of(logits, token));
        Ok(Sampled { token, logprob, top })
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        // Control tokens render as nothing (special = false), like llama-server.
        self.model.vocab().token_to_piece(token, false).unwrap_or_default()
    }

    fn is_eog(&self, token: Token) -> bool {
        self.model.vocab().is_eog(token)
    }

    fn kv_seq_rm(&mut self, seq: SeqId, from: Pos) -> bool {
        self.ctx.kv_seq_rm(seq, Some(from), None).unwrap_or(false)
    }

    fn kv_cells_used(&self) -> u64 {
        self.ctx.kv_cells_used()
    }

    fn embed(&mut self, tokens: &[Token]) -> Result<Vec<f32>, String> {
        let ctx = self.embed_ctx.as_mut().ok_or("embeddings are disabled")?;
        let mut out = llama_core::embed(ctx, &[tokens.to_vec()], false).map_err(|e| e.to_string())?;
        out.pop().ok_or_else(|| "no embedding returned".to_string())
    }
}
