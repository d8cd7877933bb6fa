//! What a [`Sampler`](crate::Sampler) is built from: [`SamplingParams`]
//! and the checks on them (grammars through the GBNF parser in [`gbnf`](crate::gbnf)).
#![forbid(unsafe_code)]

use crate::{Error, Result, Token};

/// Seed value meaning "pick a random seed".
pub const RANDOM_SEED: u32 = u32::MAX;
/// Longest GBNF grammar accepted, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 256 << 10;
/// Deepest group nesting accepted in a grammar (llama.cpp's parser
/// recurses): [`gbnf::MAX_NESTING`](crate::gbnf::MAX_NESTING).
pub const MAX_GRAMMAR_DEPTH: usize = crate::gbnf::MAX_NESTING;

/// Every sampling knob llama.cpp offers, with llama.cpp's defaults.
/// `temperature <= 0` means greedy.
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// RNG seed; [`RANDOM_SEED`] picks one.
    pub seed: u32,
    /// Temperature; `<= 0` selects the most likely token (greedy).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (`<= 0` = all).
    pub top_k: i32,
    /// Nucleus sampling threshold in `(0, 1]` (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the best one (0 = off).
    pub min_p: f32,
    /// Locally typical sampling in `(0, 1]` (1 = off).
    pub typical_p: f32,
    /// Repetition penalty (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0 = off, -1 = the
    /// context size: see [`with_context_size`](Self::with_context_size)).
    pub repeat_last_n: i32,
    /// Frequency penalty (0 = off).
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off).
    pub presence_penalty: f32,
    /// DRY multiplier (0 = off).
    pub dry_multiplier: f32,
    /// DRY base.
    pub dry_base: f32,
    /// DRY allowed repeat length.
    pub dry_allowed_length: i32,
    /// DRY look-back (0 = off, -1 = the context size: see
    /// [`with_context_size`](Self::with_context_size)).
    pub dry_penalty_last_n: i32,
    /// DRY sequence breakers.
    pub dry_sequence_breakers: Vec<String>,
    /// XTC probability (0 = off).
    pub xtc_probability: f32,
    /// XTC threshold.
    pub xtc_threshold: f32,
    /// Mirostat: 0 = off, 1 = v1, 2 = v2.
    pub mirostat: u8,
    /// Mirostat target entropy.
    pub mirostat_tau: f32,
    /// Mirostat learning rate.
    pub mirostat_eta: f32,
    /// Per-token additive logit bias (`f32::NEG_INFINITY` bans a token).
    pub logit_bias: Vec<(Token, f32)>,
    /// A GBNF grammar the output must match (root rule `root`).
    pub grammar: Option<String>,
    /// Keep at least this many candidates in the truncating samplers.
    pub min_keep: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            seed: RANDOM_SEED,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: vec!["\n".into(), ":".into(), "\"".into(), "*".into()],
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            logit_bias: Vec::new(),
            grammar: None,
            min_keep: 0,
        }
    }
}

impl SamplingParams {
    /// Always pick the most likely token.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// Resolve the look-backs given as `-1` ("the whole context") to
    /// `n_ctx`, as llama.cpp's server does per slot. llama.cpp's samplers
    /// themselves treat `-1` as 0 and switch the penalty off, so this must
    /// happen before [`Sampler::new`](crate::Sampler::new), which falls back to the model's
    /// training context for any `-1` left.
    pub fn with_context_size(mut self, n_ctx: u32) -> Self {
        let n = i32::try_from(n_ctx).unwrap_or(i32::MAX);
        if self.repeat_last_n == -1 {
            self.repeat_last_n = n;
        }
        if self.dry_penalty_last_n == -1 {
            self.dry_penalty_last_n = n;
        }
        self
    }

    /// Whether this samples greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 && self.mirostat == 0
    }

    /// Check every field; the first problem is a typed error naming it.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the first field out of range;
    /// [`Error::Grammar`] for a grammar the GBNF parser refuses.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, reason: impl Into<String>) -> Result<()> {
            Err(Error::InvalidParam { name, reason: reason.into() })
        }
        let finite = [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("typical_p", self.typical_p),
            ("repeat_penalty", self.repeat_penalty),
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
            ("dry_multiplier", self.dry_multiplier),
            ("dry_base", self.dry_base),
            ("xtc_probability", self.xtc_probability),
            ("xtc_threshold", self.xtc_threshold),
            ("mirostat_tau", self.mirostat_tau),
            ("mirostat_eta", self.mirostat_eta),
        ];
        for (name, v) in finite {
            if !v.is_finite() {
                return bad(name, format!("must be a finite number, got {v}"));
            }
        }
        if self.temperature < 0.0 {
            return bad("temperature", format!("must be >= 0, got {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", format!("must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("must be in [0, 1], got {}", self.min_p));
        }
        if !(0.0..=1.0).contains(&self.typical_p) || self.typical_p == 0.0 {
            return bad("typical_p", format!("must be in (0, 1], got {}", self.typical_p));
        }
        if self.repeat_penalty <= 0.0 {
            return bad("repeat_penalty", format!("must be > 0, got {}", self.repeat_penalty));
        }
        if self.repeat_last_n < -1 {
            return bad("repeat_last_n", format!("must be >= -1, got {}", self.repeat_last_n));
        }
        if self.dry_multiplier < 0.0 || (self.dry_multiplier > 0.0 && self.dry_base < 1.0) {
            return bad("dry_multiplier", "must be >= 0, and dry_base >= 1 when DRY is on");
        }
        if self.dry_allowed_length < 0 || self.dry_penalty_last_n < -1 {
            return bad("dry_allowed_length", "DRY lengths must be >= 0 (penalty_last_n >= -1)");
        }
        if self.dry_sequence_breakers.len() > 64
            || self.dry_sequence_breakers.iter().any(|b| b.len() > 64 || b.contains('\0'))
        {
            return bad("dry_sequence_breakers", "at most 64 breakers of at most 64 bytes, without NUL");
        }
        if !(0.0..=1.0).contains(&self.xtc_probability) || !(0.0..=1.0).contains(&self.xtc_threshold) {
            return bad("xtc_probability", "XTC probability and threshold must be in [0, 1]");
        }
        if self.mirostat > 2 {
            return bad("mirostat", format!("must be 0, 1 or 2, got {}", self.mirostat));
        }
        if self.logit_bias.iter().any(|(_, b)| b.is_nan() || *b == f32::INFINITY) {
            return bad("logit_bias", "biases must be numbers (or -infinity to ban a token)");
        }
        if self.min_keep > 1 << 20 {
            return bad("min_keep", "too large");
        }
        if let Some(g) = &self.grammar {
            check_grammar_shape(g)?;
        }
        Ok(())
    }
}

/// Refuse, before llama.cpp sees it, every grammar that llama.cpp would
/// refuse, and every grammar that could make it overflow its stack, loop
/// or exhaust memory: [`crate::gbnf::validate`] decides. A grammar of only
/// whitespace means "no grammar" (as in [`Sampler::new`](crate::Sampler::new)) and passes.
fn check_grammar_shape(g: &str) -> Result<()> {
    const _: () = assert!(MAX_GRAMMAR_BYTES == crate::gbnf::MAX_BYTES);
    if g.trim().is_empty() {
        return Ok(());
    }
    crate::gbnf::validate(g).map_err(|e| Error::Grammar(e.to_string()))
}
