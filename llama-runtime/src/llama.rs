//! [`Inference`] over llama-core: one [`Context`] with a sequence per slot, a
//! [`Sampler`] per slot, the model's vocabulary, and (when embeddings are
//! enabled) a second, small context that only embeds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use llama_core::{
    Batch, ChatTemplate, Context, ContextParams, Error, LoraAdapter, Model, Pooling, Pos, Sampler, SamplingParams,
    SeqId, TemplateSpec, Token, log_softmax_of, log_softmax_top,
};

use crate::config::EngineConfig;
use crate::inference::{
    BatchEntry, DecodeError, Inference, ModelBackend, ModelFacade, ModelInfo, SampleError, Sampled,
};
use crate::lora::LoraAdapterInfo;
use crate::request::{CoreError, StartError};

/// The [`ModelFacade`] over a llama-core [`Model`]: what the server and the
/// CLI use for tokenization, token text, the chat template and model facts.
/// Usable alone (for example over a vocabulary-only model); an engine's is
/// [`Engine::model`](crate::Engine::model).
#[derive(Debug, Clone)]
pub struct LlamaModel {
    model: Arc<Model>,
    info: ModelInfo,
    /// What `-1` look-backs mean: the engine's per-sequence context (the
    /// model's training context when there is no engine).
    n_ctx_seq: u32,
}

impl LlamaModel {
    /// The facade over `model`.
    pub fn new(model: Arc<Model>) -> Self {
        let info = ModelInfo {
            path: model.path().to_path_buf(),
            description: model.description(),
            n_vocab: model.vocab().n_tokens(),
            n_ctx_train: model.n_ctx_train(),
            n_embd: model.n_embd(),
            n_params: model.n_params(),
            size_bytes: model.size_bytes(),
            fim: model.vocab().fim(),
            rerank: crate::RerankFormat::of(&model),
            encoder_only: model
                .architecture()
                .and_then(|arch| model.meta(&format!("{arch}.attention.causal")))
                .is_some_and(|causal| causal.trim() == "false"),
        };
        let n_ctx_seq = model.n_ctx_train().max(1);
        LlamaModel { model, info, n_ctx_seq }
    }

    /// The llama-core model, for what the facade does not cover (state
    /// files, metadata listings, benchmarks).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

/// The one rule for showing a token on its own: control tokens as their text.
fn token_piece(model: &Model, token: Token) -> Vec<u8> {
    model.vocab().token_to_piece(token, true).unwrap_or_default()
}

impl ModelFacade for LlamaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>, CoreError> {
        Ok(self.model.vocab().tokenize(text, add_special, parse_special)?)
    }

    fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String, CoreError> {
        Ok(self.model.vocab().detokenize(tokens, remove_special, unparse_special)?)
    }

    fn token_piece(&self, token: Token) -> Vec<u8> {
        token_piece(&self.model, token)
    }

    fn chat_template(&self, spec: TemplateSpec<'_>) -> Result<ChatTemplate, CoreError> {
        Ok(ChatTemplate::select(&self.model, spec)?)
    }
}

impl ModelBackend for LlamaModel {
    type Sampler = Sampler;

    fn prepare_sampling(&self, params: &SamplingParams) -> Result<Sampler, CoreError> {
        // -1 look-backs mean this sequence's context, as in llama.cpp's
        // server; a longer look-back sees no more tokens than that, but
        // llama.cpp would allocate a ring buffer of its length up front.
        let mut params = params.clone().with_context_size(self.n_ctx_seq);
        let cap = i32::try_from(self.n_ctx_seq).unwrap_or(i32::MAX);
        params.repeat_last_n = params.repeat_last_n.min(cap);
        params.dry_penalty_last_n = params.dry_penalty_last_n.min(cap);
        Ok(Sampler::new(&self.model, &params)?)
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
    /// The LoRA adapters of `EngineConfig::lora`, loaded for the model.
    lora: Vec<Arc<LoraAdapter>>,
    lora_info: Vec<LoraAdapterInfo>,
}

impl LlamaInference {
    /// Create the context for `config` (already validated). KV is never
    /// unified: each slot gets its own `n_ctx / n_seq_max` cells, so that one
    /// request's cache layout does not depend on the others'.
    ///
    /// The adapters of `config.lora` are loaded first (validated and
    /// checked against the model by llama-core), none applied yet.
    ///
    /// # Errors
    /// [`StartError::Adapter`] for an adapter that cannot be loaded;
    /// [`StartError::Context`] when llama.cpp cannot create the context(s).
    pub fn new(model: Arc<Model>, config: &EngineConfig) -> Result<(Self, LlamaModel), StartError> {
        let mut lora = Vec::with_capacity(config.lora.len());
        let mut lora_info = Vec::with_capacity(config.lora.len());
        for (id, spec) in config.lora.iter().enumerate() {
            let adapter = LoraAdapter::load(&model, &spec.path)
                .map_err(|source| StartError::Adapter { path: spec.path.clone(), source })?;
            let meta = |key| adapter.meta(key).unwrap_or_default();
            lora_info.push(
                LoraAdapterInfo::new(id, &spec.path, spec.scale)
                    .with_meta(meta("adapter.lora.task_name"), meta("adapter.lora.prompt_prefix")),
            );
            lora.push(Arc::new(adapter));
        }
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
        let mut ctx = Context::new(Arc::clone(&model), &params)?;
        if let Some(key) = &config.state_key {
            ctx.set_state_key(key.clone());
        }
        let embed_ctx = if config.embeddings {
            // Pooling needs a whole input in one micro-batch.
            let limit = config.n_ubatch.min(per_seq).max(llama_core::MIN_CTX);
            let params = ContextParams {
                n_ctx: limit,
                n_batch: limit,
                n_ubatch: limit,
                n_seq_max: 1,
                embeddings: true,
                pooling: match config.pooling {
                    Pooling::Unspecified => Pooling::for_embeddings(&model),
                    asked => asked,
                },
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
            lora,
            lora_info,
        };
        let mut facade = LlamaModel::new(model);
        facade.n_ctx_seq = n_ctx_seq;
        Ok((inference, facade))
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
        other => DecodeError::Failed(other.into()),
    }
}

impl Inference for LlamaInference {
    type Model = LlamaModel;

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

    fn start_sequence(&mut self, seq: SeqId, mut sampler: Sampler, prompt: &[Token]) -> Result<(), CoreError> {
        let n_seq_max = self.samplers.len() as u32;
        let slot = self.samplers.get_mut(seq as usize).ok_or(Error::SeqIdOutOfRange { seq_id: seq, n_seq_max })?;
        for &t in prompt {
            sampler.accept(t)?;
        }
        *slot = Some(sampler);
        Ok(())
    }

    fn sample(&mut self, seq: SeqId, entry: usize, n_probs: u32) -> Result<Sampled, SampleError> {
        let index = self
            .outputs
            .get(entry)
            .copied()
            .flatten()
            .ok_or_else(|| SampleError::Internal(format!("entry {entry} has no output")))?;
        let sampler = self
            .samplers
            .get_mut(seq as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| SampleError::Internal(format!("sequence {seq} has no sampler")))?;
        let logits = self.ctx.logits(index)?;
        let top = if n_probs > 0 { log_softmax_top(logits, n_probs as usize) } else { Vec::new() };
        let token = sampler.sample_logits(logits)?;
        let logprob = (n_probs > 0).then(|| log_softmax_of(logits, token));
        Ok(Sampled { token, logprob, top })
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        // Control tokens render as nothing (special = false), like llama-server.
        self.model.vocab().token_to_piece(token, false).unwrap_or_default()
    }

    fn token_piece(&self, token: Token) -> Vec<u8> {
        token_piece(&self.model, token)
    }

    fn is_eog(&self, token: Token) -> bool {
        self.model.vocab().is_eog(token)
    }

    fn kv_seq_rm(&mut self, seq: SeqId, from: Pos) -> bool {
        self.ctx.kv_seq_rm(seq, Some(from), None).unwrap_or(false)
    }

    fn kv_shift(&mut self, seq: SeqId, keep: Pos, discard: Pos, end: Pos) -> bool {
        if !self.ctx.can_shift() {
            return false;
        }
        // Removing a range and shifting the rest down stays inside the
        // sequence's window; a failure leaves it for the caller to clear.
        self.ctx.kv_seq_rm(seq, Some(keep), Some(keep + discard)).unwrap_or(false)
            && self.ctx.kv_seq_add(seq, Some(keep + discard), Some(end), -discard).is_ok()
    }

    fn kv_cells_used(&self) -> u64 {
        self.ctx.kv_cells_used()
    }

    fn seq_state(&mut self, seq: SeqId, tokens: &[Token]) -> Result<Vec<u8>, CoreError> {
        Ok(self.ctx.seq_state_with_tokens(seq, tokens)?)
    }

    fn set_seq_state(&mut self, seq: SeqId, bytes: &[u8]) -> Result<Vec<Token>, CoreError> {
        Ok(self.ctx.set_seq_state_with_tokens(bytes, seq)?)
    }

    fn lora_adapters(&self) -> Vec<LoraAdapterInfo> {
        self.lora_info.clone()
    }

    fn set_lora(&mut self, scales: &[f32]) -> Result<(), CoreError> {
        if scales.len() != self.lora.len() {
            let reason = format!("{} scales for {} adapters", scales.len(), self.lora.len());
            return Err(Error::InvalidParam { name: "lora", reason }.into());
        }
        let set: Vec<(Arc<LoraAdapter>, f32)> =
            self.lora.iter().zip(scales).map(|(a, &s)| (Arc::clone(a), s)).collect();
        Ok(self.ctx.set_lora_adapters(&set)?)
    }

    fn embed(&mut self, tokens: &[Token]) -> Result<Vec<f32>, CoreError> {
        let ctx = self.embed_ctx.as_mut().ok_or(Error::InvalidParam {
            name: "embeddings",
            reason: "the engine was started without embeddings".into(),
        })?;
        let mut out = llama_core::embed(ctx, &[tokens.to_vec()], false)?;
        Ok(out.pop().ok_or(Error::NoOutput(0))?)
    }
}
