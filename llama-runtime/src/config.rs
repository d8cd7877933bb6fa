//! Engine configuration and its validation.

use std::time::Duration;

use llama_core::{FlashAttn, KvCacheType, MAX_THREADS, Pooling, StateKey};

use crate::lora::{LoraSpec, MAX_LORA_ADAPTERS};
use crate::request::StartError;

/// Smallest context window per sequence (`n_ctx_seq`, one slot's) that [`Engine::start`](crate::Engine::start) accepts.
pub const MIN_CTX_SEQ: u32 = 16;
/// Most parallel slots: llama.cpp allows 256 sequences and the engine keeps
/// one extra sequence for embeddings.
pub const MAX_SEQ: u32 = 255;

/// How an [`Engine`](crate::Engine) is sized. Every field is checked by
/// [`Engine::start`](crate::Engine::start); a bad value is a
/// [`StartError::InvalidConfig`], never an assertion inside llama.cpp.
///
/// # Construction and stability
///
/// Build it from [`Default`] and set what you need, with struct-update
/// syntax (`{ field: value, ..Default::default() }`) or by assigning
/// fields. New fields may be added in minor releases, always with a default
/// that keeps the old behaviour, so code written this way keeps compiling;
/// an exhaustive struct literal does not. The struct is not
/// `#[non_exhaustive]` on purpose: that would forbid the update syntax
/// outside this crate, and these are plain bags of settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Total KV cells, split evenly across the slots: each sequence may hold
    /// `n_ctx / n_seq_max` tokens (prompt plus generation).
    pub n_ctx: u32,
    /// Parallel slots: how many requests are decoded together.
    pub n_seq_max: u32,
    /// Most tokens in one decode step (all sequences together). Must be at
    /// least `n_seq_max`, so that every decoding sequence fits in a step.
    pub n_batch: u32,
    /// Physical micro-batch size (≤ `n_batch`). A cancelled request stops a
    /// running decode within one micro-batch.
    pub n_ubatch: u32,
    /// Threads for single-token decode steps.
    pub n_threads: i32,
    /// Threads for steps that carry prompt tokens.
    pub n_threads_batch: i32,
    /// Requests waiting for a slot; a submit beyond it is rejected with
    /// [`Rejected::Overloaded`](crate::Rejected::Overloaded).
    pub queue_capacity: usize,
    /// Most prompt tokens one step decodes, over all prefilling sequences
    /// (oldest request first), so that prompts never stall streaming
    /// sequences for more than one chunk. The default, 128, costs no prefill
    /// throughput on CPUs (llama.cpp's prompt speed is flat from 128 to
    /// 512-token batches on the benchmark machine) and halves the stall of
    /// 256.
    pub prefill_chunk: usize,
    /// Bound of each request's event channel (see the slow-consumer policy
    /// in the crate docs).
    pub event_capacity: usize,
    /// Enable [`Engine::embed`](crate::Engine::embed).
    pub embeddings: bool,
    /// [`Engine::health`](crate::Engine::health) reports `Stalled` when the
    /// engine has work but made no step progress for this long.
    pub stall_timeout: Duration,
    /// A request whose event channel stays full this long (the client stopped
    /// reading) is ended with [`EngineError::SlowConsumer`](crate::EngineError::SlowConsumer).
    pub slow_consumer_timeout: Duration,
    /// Flash attention for the generation context.
    pub flash_attn: FlashAttn,
    /// Element type of the K cache (`f16` as in llama.cpp; `q8_0` halves it).
    pub type_k: KvCacheType,
    /// Element type of the V cache; a quantized type needs `flash_attn` not `Off`.
    pub type_v: KvCacheType,
    /// How [`Engine::embed`](crate::Engine::embed) pools an input's tokens
    /// (llama.cpp's `--pooling`): `Unspecified` is the model's own choice,
    /// else the mean. `Mean`, `Cls` and `Last` give one vector per input.
    /// `Rank` (with `embeddings`) starts the engine for reranking: the
    /// embedding context runs the model's classification head and serves
    /// [`Engine::rerank`](crate::Engine::rerank) instead of
    /// [`Engine::embed`](crate::Engine::embed). `None` is refused
    /// (per-token embeddings are not served by this engine).
    pub pooling: Pooling,
    /// The key that signs the slot states [`Engine::save_slot`](crate::Engine::save_slot)
    /// returns, and that a state must verify under for
    /// [`Engine::restore_slot`](crate::Engine::restore_slot) to hand it to
    /// llama.cpp. `None`: llama-core's random per-process key, so only
    /// states saved by this process are restored. Set one (kept secret) to
    /// restore states across restarts.
    pub state_key: Option<StateKey>,
    /// LoRA adapters to load at start (llama.cpp's `--lora`,
    /// `--lora-scaled`), each with its initial global scale. Their ids are
    /// their indices here. At most [`MAX_LORA_ADAPTERS`].
    pub lora: Vec<LoraSpec>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).min(MAX_THREADS as usize) as i32;
        EngineConfig {
            n_ctx: 4096,
            n_seq_max: 4,
            n_batch: 512,
            n_ubatch: 512,
            n_threads: threads,
            n_threads_batch: threads,
            queue_capacity: 64,
            prefill_chunk: 128,
            event_capacity: 64,
            embeddings: false,
            stall_timeout: Duration::from_secs(30),
            slow_consumer_timeout: Duration::from_secs(60),
            flash_attn: FlashAttn::Auto,
            type_k: KvCacheType::F16,
            type_v: KvCacheType::F16,
            pooling: Pooling::Unspecified,
            state_key: None,
            lora: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// KV cells each slot may use.
    pub fn n_ctx_seq(&self) -> u32 {
        self.n_ctx / self.n_seq_max.max(1)
    }

    /// The prompt chunk a sequence gets when it runs alone: the fixed batch
    /// shape of deterministic requests.
    pub(crate) fn solo_chunk(&self) -> usize {
        self.prefill_chunk.min(self.n_batch as usize).max(1)
    }

    /// Check every field; the first problem found is returned.
    ///
    /// # Errors
    /// [`StartError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), StartError> {
        fn bad(field: &'static str, reason: String) -> Result<(), StartError> {
            Err(StartError::InvalidConfig { field, reason })
        }
        if self.pooling == Pooling::None {
            return bad("pooling", "None pooling is not supported: embeddings are one vector per input".into());
        }
        if self.pooling == Pooling::Rank && !self.embeddings {
            return bad("pooling", "Rank pooling (reranking) runs on the embedding context: set `embeddings`".into());
        }
        if self.n_seq_max == 0 || self.n_seq_max > MAX_SEQ {
            return bad("n_seq_max", format!("must be in 1..={MAX_SEQ}, got {}", self.n_seq_max));
        }
        if self.n_ctx_seq() < MIN_CTX_SEQ {
            return bad(
                "n_ctx",
                format!(
                    "n_ctx / n_seq_max must be at least {MIN_CTX_SEQ}, got {} / {} = {}",
                    self.n_ctx,
                    self.n_seq_max,
                    self.n_ctx_seq()
                ),
            );
        }
        if self.n_batch < self.n_seq_max || self.n_batch > 1 << 20 {
            return bad(
                "n_batch",
                format!("must be in n_seq_max ({})..=1048576, got {}", self.n_seq_max, self.n_batch),
            );
        }
        if self.n_ubatch == 0 || self.n_ubatch > self.n_batch {
            return bad("n_ubatch", format!("must be in 1..=n_batch ({}), got {}", self.n_batch, self.n_ubatch));
        }
        for (field, t) in [("n_threads", self.n_threads), ("n_threads_batch", self.n_threads_batch)] {
            if !(1..=MAX_THREADS).contains(&t) {
                return bad(field, format!("must be in 1..={MAX_THREADS}, got {t}"));
            }
        }
        for (field, v) in [
            ("queue_capacity", self.queue_capacity),
            ("prefill_chunk", self.prefill_chunk),
            ("event_capacity", self.event_capacity),
        ] {
            // tokio's bounded channel panics on capacity 0 or above this bound.
            if v == 0 || v > (usize::MAX >> 3) {
                return bad(field, format!("must be at least 1, got {v}"));
            }
        }
        if self.stall_timeout.is_zero() {
            return bad("stall_timeout", "must be positive".into());
        }
        if self.slow_consumer_timeout.is_zero() {
            return bad("slow_consumer_timeout", "must be positive".into());
        }
        if self.lora.len() > MAX_LORA_ADAPTERS {
            return bad("lora", format!("at most {MAX_LORA_ADAPTERS} adapters, got {}", self.lora.len()));
        }
        if let Some((id, spec)) = self.lora.iter().enumerate().find(|(_, l)| !l.scale.is_finite()) {
            return bad(
                "lora",
                format!("adapter {id} ({}): the scale must be finite, got {}", spec.path.display(), spec.scale),
            );
        }
        if self.type_v.is_quantized() && self.flash_attn == FlashAttn::Off {
            return bad("type_v", format!("a quantized V cache ({}) needs flash attention, which is off", self.type_v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        EngineConfig::default().validate().unwrap();
        for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Last] {
            EngineConfig { pooling, ..EngineConfig::default() }.validate().unwrap();
        }
        for embeddings in [false, true] {
            let err = EngineConfig { pooling: Pooling::None, embeddings, ..EngineConfig::default() }.validate();
            assert!(matches!(err, Err(StartError::InvalidConfig { field: "pooling", .. })), "{err:?}");
        }
        // Reranking runs on the embedding context.
        EngineConfig { pooling: Pooling::Rank, embeddings: true, ..EngineConfig::default() }.validate().unwrap();
        let err = EngineConfig { pooling: Pooling::Rank, ..EngineConfig::default() }.validate();
        assert!(matches!(err, Err(StartError::InvalidConfig { field: "pooling", .. })), "{err:?}");
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: Vec<(&str, EngineConfig)> = vec![
            ("n_seq_max", EngineConfig { n_seq_max: 0, ..Default::default() }),
            ("n_seq_max", EngineConfig { n_seq_max: 300, ..Default::default() }),
            ("n_ctx", EngineConfig { n_ctx: 64, n_seq_max: 8, ..Default::default() }),
            ("n_batch", EngineConfig { n_batch: 2, n_seq_max: 4, ..Default::default() }),
            ("n_ubatch", EngineConfig { n_ubatch: 1024, ..Default::default() }),
            ("n_ubatch", EngineConfig { n_ubatch: 0, ..Default::default() }),
            ("n_threads", EngineConfig { n_threads: 0, ..Default::default() }),
            ("type_v", EngineConfig { type_v: KvCacheType::Q8_0, flash_attn: FlashAttn::Off, ..Default::default() }),
            ("n_threads_batch", EngineConfig { n_threads_batch: -1, ..Default::default() }),
            ("queue_capacity", EngineConfig { queue_capacity: 0, ..Default::default() }),
            ("prefill_chunk", EngineConfig { prefill_chunk: 0, ..Default::default() }),
            ("event_capacity", EngineConfig { event_capacity: 0, ..Default::default() }),
            ("stall_timeout", EngineConfig { stall_timeout: Duration::ZERO, ..Default::default() }),
            ("lora", EngineConfig { lora: vec![LoraSpec::new("a.gguf", f32::NAN)], ..Default::default() }),
            (
                "lora",
                EngineConfig { lora: vec![LoraSpec::new("a.gguf", 1.0); MAX_LORA_ADAPTERS + 1], ..Default::default() },
            ),
        ];
        for (want, cfg) in cases {
            match cfg.validate() {
                Err(StartError::InvalidConfig { field, .. }) => assert_eq!(field, want, "{cfg:?}"),
                other => panic!("{want}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
