//! What a [`Context`](crate::Context) is created with: [`ContextParams`]
//! and its enums, and the checks on them. No llama.cpp here except one
//! query (`max_parallel_sequences`, in `context.rs`).
#![forbid(unsafe_code)]

use crate::{Error, Model, Result};

/// When to use flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    /// Let llama.cpp decide per backend.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl FlashAttn {
    /// Every value, in the order llama.cpp's `--flash-attn` lists them.
    pub const ALL: [FlashAttn; 3] = [FlashAttn::On, FlashAttn::Off, FlashAttn::Auto];

    /// llama.cpp's name for it: `on`, `off` or `auto` (what `--flash-attn`
    /// takes in the CLI and the server).
    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::Auto => "auto",
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
        }
    }
}

impl std::fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FlashAttn {
    type Err = Error;

    /// Parse `on`, `off` or `auto` (as [`FlashAttn::name`] writes them).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for any other text.
    fn from_str(s: &str) -> Result<Self> {
        FlashAttn::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| Error::InvalidParam {
            name: "flash_attn",
            reason: format!("expected one of on, off, auto, got {s:?}"),
        })
    }
}

/// Element type of the KV cache (llama.cpp's `--cache-type-k/-v` values).
///
/// Quantized types shrink the cache (`q8_0` to about 53 % of `f16`, `q4_0`
/// to 28 %) at a small cost in accuracy; a quantized V cache needs flash
/// attention, which [`FlashAttn::Auto`] then turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    /// 32-bit float.
    F32,
    /// 16-bit float (llama.cpp's default).
    #[default]
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit blocks of 32 with a minimum.
    #[serde(rename = "q4_1")]
    Q4_1,
    /// 4-bit non-linear blocks of 32.
    #[serde(rename = "iq4_nl")]
    Iq4Nl,
    /// 5-bit blocks of 32.
    #[serde(rename = "q5_0")]
    Q5_0,
    /// 5-bit blocks of 32 with a minimum.
    #[serde(rename = "q5_1")]
    Q5_1,
}

impl KvCacheType {
    /// Every type, in llama.cpp's order.
    pub const ALL: [KvCacheType; 9] = [
        KvCacheType::F32,
        KvCacheType::F16,
        KvCacheType::Bf16,
        KvCacheType::Q8_0,
        KvCacheType::Q4_0,
        KvCacheType::Q4_1,
        KvCacheType::Iq4Nl,
        KvCacheType::Q5_0,
        KvCacheType::Q5_1,
    ];

    /// The name llama.cpp's flags use (`f16`, `q8_0`, …).
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::Bf16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Iq4Nl => "iq4_nl",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q5_1 => "q5_1",
        }
    }

    /// Whether the type is block-quantized (and so, for V, needs flash attention).
    pub fn is_quantized(self) -> bool {
        !matches!(self, KvCacheType::F32 | KvCacheType::F16 | KvCacheType::Bf16)
    }
}

impl std::fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvCacheType {
    type Err = Error;

    /// Parse a llama.cpp cache type name, case-insensitively.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a name not in [`KvCacheType::ALL`].
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        KvCacheType::ALL.into_iter().find(|t| t.name() == lower).ok_or_else(|| Error::InvalidParam {
            name: "cache_type",
            reason: format!(
                "unknown KV cache type {s:?}; one of {}",
                KvCacheType::ALL.map(KvCacheType::name).join(", ")
            ),
        })
    }
}

/// How embeddings are pooled per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The model's own choice.
    #[default]
    Unspecified,
    /// No pooling: one embedding per token.
    None,
    /// Mean over the sequence's tokens.
    Mean,
    /// The first (CLS) token.
    Cls,
    /// The last token.
    Last,
    /// Reranking score.
    Rank,
}

impl Pooling {
    /// The pooling to embed with on `model`: the one it declares
    /// (`<arch>.pooling_type`, as embedding models do), else the mean over
    /// the tokens — a generative model declares none, and a per-token output
    /// would not be one vector per input.
    pub fn for_embeddings(model: &Model) -> Pooling {
        let declared = model.architecture().and_then(|arch| model.meta(&format!("{arch}.pooling_type")));
        match declared.as_deref().map(str::trim) {
            Some("2") => Pooling::Cls,
            Some("3") => Pooling::Last,
            _ => Pooling::Mean,
        }
    }
}

/// Parameters of a [`Context`](crate::Context).
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
#[derive(Debug, Clone, PartialEq)]
pub struct ContextParams {
    /// KV cache size in tokens, shared by all sequences (0 = the model's training context).
    pub n_ctx: u32,
    /// Most tokens one [`Context::decode`](crate::Context::decode) call accepts.
    pub n_batch: u32,
    /// Physical micro-batch size (≤ `n_batch`); the abort flag is checked between micro-batches.
    pub n_ubatch: u32,
    /// Number of sequences (parallel streams) the context holds.
    pub n_seq_max: u32,
    /// Threads for single-token decoding.
    pub n_threads: i32,
    /// Threads for prompt (batch) processing.
    pub n_threads_batch: i32,
    /// Compute embeddings as well as logits.
    pub embeddings: bool,
    /// Embedding pooling.
    pub pooling: Pooling,
    /// Flash attention.
    pub flash_attn: FlashAttn,
    /// One KV buffer shared by all sequences (true) or `n_ctx / n_seq_max` cells each (false).
    pub kv_unified: bool,
    /// Element type of the K cache.
    pub type_k: KvCacheType,
    /// Element type of the V cache (a quantized V needs flash attention).
    pub type_v: KvCacheType,
}

/// Threads to use by default: the machine's available parallelism.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(4)
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_ubatch: 512,
            n_seq_max: 1,
            n_threads: default_threads(),
            n_threads_batch: default_threads(),
            embeddings: false,
            pooling: Pooling::Unspecified,
            flash_attn: FlashAttn::Auto,
            kv_unified: false,
            type_k: KvCacheType::F16,
            type_v: KvCacheType::F16,
        }
    }
}

/// Smallest context we create: llama.cpp pads tiny sizes and asserts on some.
pub const MIN_CTX: u32 = 16;
/// Most threads we pass to ggml.
pub const MAX_THREADS: i32 = 1024;

impl ContextParams {
    /// Check every field against what llama.cpp accepts without asserting.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParam { name, reason });
        if self.n_ctx != 0 && self.n_ctx < MIN_CTX {
            return bad("n_ctx", format!("must be 0 (model default) or at least {MIN_CTX}, got {}", self.n_ctx));
        }
        if self.n_batch == 0 || self.n_batch as usize > crate::batch::MAX_BATCH {
            return bad("n_batch", format!("must be in 1..={}, got {}", crate::batch::MAX_BATCH, self.n_batch));
        }
        if self.n_ubatch == 0 || self.n_ubatch > self.n_batch {
            return bad("n_ubatch", format!("must be in 1..=n_batch ({}), got {}", self.n_batch, self.n_ubatch));
        }
        let max_seq = crate::context::max_parallel_sequences();
        if self.n_seq_max == 0 || self.n_seq_max > max_seq {
            return bad("n_seq_max", format!("must be in 1..={max_seq}, got {}", self.n_seq_max));
        }
        if self.n_ctx != 0 && self.n_ctx / self.n_seq_max < MIN_CTX {
            return bad(
                "n_ctx",
                format!(
                    "{} cells split over {} sequences leaves fewer than {MIN_CTX} each",
                    self.n_ctx, self.n_seq_max
                ),
            );
        }
        for (name, t) in [("n_threads", self.n_threads), ("n_threads_batch", self.n_threads_batch)] {
            if !(1..=MAX_THREADS).contains(&t) {
                return bad(name, format!("must be in 1..={MAX_THREADS}, got {t}"));
            }
        }
        if self.type_v.is_quantized() && self.flash_attn == FlashAttn::Off {
            return bad("type_v", format!("a quantized V cache ({}) needs flash attention, which is off", self.type_v));
        }
        // With pooled embeddings llama.cpp splits each micro-batch evenly
        // across sequences while reserving its graphs, and GGML_ASSERTs when
        // n_ubatch is not a multiple of n_seq_max (seen with 3, 5, 6, 7 / 512).
        if self.embeddings && self.pooling != Pooling::None && !self.n_ubatch.is_multiple_of(self.n_seq_max) {
            return bad(
                "n_seq_max",
                format!(
                    "with embeddings on, n_ubatch ({}) must be a multiple of n_seq_max ({})",
                    self.n_ubatch, self.n_seq_max
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_attn_names_round_trip() {
        for v in FlashAttn::ALL {
            assert_eq!(v.name().parse::<FlashAttn>().unwrap(), v);
            assert_eq!(v.to_string(), v.name());
        }
        assert!(matches!("maybe".parse::<FlashAttn>(), Err(Error::InvalidParam { name: "flash_attn", .. })));
        assert!("ON".parse::<FlashAttn>().is_err());
    }
}
