//! The engine requests an HTTP request becomes: how many choices, how many
//! tokens, which stop strings, each choice's seed and the deadline.

use std::time::Instant;

use llama_core::{RANDOM_SEED, SamplingParams};
use llama_runtime::{ContextShift, Prompt, Request};
use serde::Deserialize;

use crate::error::AppError;
use crate::state::Ready;

/// Most choices per request (`n`, or prompts × `n`).
pub const MAX_CHOICES: usize = 8;
/// Most stop strings per request.
pub const MAX_STOP: usize = llama_runtime::MAX_STOP_STRINGS;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = llama_runtime::MAX_STOP_BYTES;

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The stop strings of a `stop` field (the engine checks them at submit).
pub(crate) fn stop_strings(stop: Option<&StopField>) -> Vec<String> {
    match stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    }
}

/// Validate `n`.
pub(crate) fn parse_n(n: Option<i64>) -> Result<usize, AppError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(AppError::invalid("n", format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"))),
    }
}

/// Validate an OpenAI `max_tokens`-style field (>= 1).
pub(crate) fn parse_max_tokens(field: &str, v: Option<i64>) -> Result<Option<u32>, AppError> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(n) => Err(AppError::invalid(field, format!("`{field}` must be at least 1, got {n}"))),
    }
}

/// The number of tokens to generate: the request's ask, capped by the
/// server's `--n-predict`.
pub(crate) fn effective_max_tokens(requested: Option<u32>, server_cap: Option<u32>) -> Option<u32> {
    match (requested, server_cap) {
        (Some(r), Some(s)) => Some(r.min(s)),
        (r, s) => r.or(s),
    }
}

/// The settings that every engine request made for one HTTP request shares:
/// [`RequestTemplate::request`] makes the request of each prompt or choice.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    /// Sampling; choice `i` moves its seed (see [`seed_for_choice`]).
    pub sampling: SamplingParams,
    /// Most tokens to generate, already capped by the server (see [`effective_max_tokens`]).
    pub max_tokens: Option<u32>,
    /// Validated stop strings.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation.
    pub ignore_eos: bool,
    /// Alternatives per token to report (0 = no log-probabilities).
    pub n_probs: u32,
    /// Reuse a cached prompt prefix.
    pub cache_prompt: bool,
    /// Shift the context when generation fills it (`--context-shift`).
    pub context_shift: Option<ContextShift>,
    /// The slot asked for (`id_slot`).
    pub slot: Option<u32>,
    /// The scale of every LoRA adapter, `(id, scale)` (see
    /// [`crate::lora::request_scales`]).
    pub lora: Vec<(usize, f32)>,
}

/// What a request does when it does not say: the server's flags.
#[derive(Debug, Clone, Default)]
pub struct RequestDefaults {
    /// `--ignore-eos`.
    pub ignore_eos: bool,
    /// `--cache-prompt` / `--no-cache-prompt`.
    pub cache_prompt: bool,
    /// `--context-shift`.
    pub context_shift: bool,
    /// `--keep`.
    pub n_keep: i32,
}

/// The context shift of a request: on with `--context-shift`, keeping the
/// request's `n_keep` (else `--keep`) prompt tokens and dropping its
/// `n_discard` (0 or absent: half of the rest) per shift.
pub(crate) fn context_shift(
    defaults: &RequestDefaults,
    n_keep: Option<i64>,
    n_discard: Option<i64>,
) -> Result<Option<ContextShift>, AppError> {
    let n_discard = match n_discard {
        None => 0,
        Some(n) => u32::try_from(n)
            .map_err(|_| AppError::invalid("n_discard", format!("`n_discard` must be >= 0, got {n}")))?,
    };
    let n_keep = match n_keep {
        None => defaults.n_keep,
        Some(n) => i32::try_from(n)
            .ok()
            .filter(|&n| n >= -1)
            .ok_or_else(|| AppError::invalid("n_keep", format!("`n_keep` must be -1 or >= 0, got {n}")))?,
    };
    Ok(defaults.context_shift.then_some(ContextShift { n_keep, n_discard }))
}

/// `id_slot`: -1 (or absent) for any free slot, else a slot number (the
/// engine refuses one that does not exist).
pub(crate) fn id_slot(id_slot: Option<i64>) -> Result<Option<u32>, AppError> {
    match id_slot {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| AppError::invalid("id_slot", format!("`id_slot` must be -1 or a slot number, got {n}"))),
    }
}

impl RequestTemplate {
    /// The engine request for `prompt` as choice `choice` of its prompt
    /// (choice 0 samples with the request's own seed), its deadline counted
    /// from now.
    pub(crate) fn request(&self, prompt: Prompt, choice: usize, ready: &Ready) -> Request {
        // The rest as the runtime's defaults: not deterministic, any free
        // slot, and a full context ends the request (`finish_reason: "length"`).
        let mut request = Request::new(prompt);
        request.sampling = seed_for_choice(&self.sampling, choice);
        request.max_tokens = self.max_tokens;
        request.stop = self.stop.clone();
        request.deadline = Instant::now().checked_add(ready.timeout);
        request.ignore_eos = self.ignore_eos;
        request.n_probs = self.n_probs;
        request.cache_prompt = self.cache_prompt;
        request.context_shift = self.context_shift;
        request.slot = self.slot;
        request.lora = Some(self.lora.clone());
        request
    }
}

/// The seed for choice `i` of a request with `n` choices: distinct choices
/// get distinct seeds when a seed was given.
fn seed_for_choice(p: &SamplingParams, i: usize) -> SamplingParams {
    let mut p = p.clone();
    if p.seed != RANDOM_SEED && i > 0 {
        p.seed = p.seed.wrapping_add(i as u32);
        if p.seed == RANDOM_SEED {
            p.seed = 0;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_get_distinct_seeds() {
        let p = SamplingParams { seed: 10, ..Default::default() };
        assert_eq!(seed_for_choice(&p, 0).seed, 10);
        assert_eq!(seed_for_choice(&p, 3).seed, 13);
        let r = SamplingParams::default();
        assert_eq!(seed_for_choice(&r, 3).seed, RANDOM_SEED);
    }

    #[test]
    fn stops() {
        assert!(stop_strings(None).is_empty());
        assert_eq!(stop_strings(Some(&StopField::One("\n".into()))), ["\n"]);
        assert_eq!(stop_strings(Some(&StopField::Many(vec!["a".into(), "".into()]))), ["a", ""]);
    }

    #[test]
    fn max_tokens_cap() {
        assert_eq!(effective_max_tokens(None, None), None);
        assert_eq!(effective_max_tokens(Some(5), None), Some(5));
        assert_eq!(effective_max_tokens(None, Some(7)), Some(7));
        assert_eq!(effective_max_tokens(Some(50), Some(7)), Some(7));
    }

    #[test]
    fn n_and_max_tokens_bounds() {
        assert_eq!(parse_n(None).unwrap(), 1);
        assert!(parse_n(Some(0)).is_err());
        assert!(parse_n(Some(MAX_CHOICES as i64 + 1)).is_err());
        assert_eq!(parse_max_tokens("max_tokens", Some(5)).unwrap(), Some(5));
        assert!(parse_max_tokens("max_tokens", Some(0)).is_err());
    }
}
