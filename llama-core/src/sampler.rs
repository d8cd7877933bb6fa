//! Sampling: one plain [`SamplingParams`] struct turned into llama.cpp's
//! sampler chain, plus an optional GBNF grammar.

use std::ffi::{CString, c_char};
use std::ptr::NonNull;

use llama_sys as sys;

use crate::{Context, Error, Model, Result, Token};

/// Seed value meaning "pick a random seed".
pub const RANDOM_SEED: u32 = u32::MAX;
/// Longest GBNF grammar accepted, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 256 << 10;
/// Deepest bracket nesting accepted in a grammar (llama.cpp's parser recurses).
pub const MAX_GRAMMAR_DEPTH: usize = 64;

/// Every sampling knob llama.cpp offers, with llama.cpp's defaults.
/// `temperature <= 0` means greedy.
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
    /// How many recent tokens the penalties look at (0 = off, -1 = context).
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
    /// DRY look-back (0 = off, -1 = context).
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

    /// Whether this samples greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 && self.mirostat == 0
    }

    /// Check every field; the first problem is a typed error naming it.
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

/// Refuse grammars that would make llama.cpp's recursive parser overflow
/// its stack or run for long, before it sees them.
fn check_grammar_shape(g: &str) -> Result<()> {
    if g.len() > MAX_GRAMMAR_BYTES {
        return Err(Error::Grammar(format!("grammar is {} bytes; at most {MAX_GRAMMAR_BYTES}", g.len())));
    }
    if g.contains('\0') {
        return Err(Error::Grammar("grammar contains a NUL byte".into()));
    }
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_str, mut in_class, mut escaped) = (false, false, false);
    for c in g.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_str || in_class => escaped = true,
            '"' if !in_class => in_str = !in_str,
            '[' if !in_str => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_str && !in_class => {
                depth += 1;
                max = max.max(depth);
            }
            ')' if !in_str && !in_class => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_GRAMMAR_DEPTH {
        return Err(Error::Grammar(format!("grammar nests {max} levels deep; at most {MAX_GRAMMAR_DEPTH}")));
    }
    Ok(())
}

/// An owned `llama_sampler`.
#[derive(Debug)]
struct RawSampler(NonNull<sys::llama_sampler>);

impl RawSampler {
    fn new(p: *mut sys::llama_sampler, what: &str) -> Result<RawSampler> {
        NonNull::new(p).map(RawSampler).ok_or_else(|| Error::InvalidParam {
            name: "sampling",
            reason: format!("llama.cpp refused the {what} sampler"),
        })
    }
}

impl Drop for RawSampler {
    fn drop(&mut self) {
        // SAFETY: owned pointer from a llama_sampler_init_* call, freed once.
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) };
    }
}

/// A configured sampler for one sequence. `Send`, so it can live in the
/// engine thread next to its context.
#[derive(Debug)]
pub struct Sampler {
    chain: RawSampler,
    grammar: Option<RawSampler>,
    candidates: Vec<sys::llama_token_data>,
    n_vocab: i32,
}

// SAFETY: samplers are plain heap objects with no thread affinity; the
// Sampler exclusively owns them and all use goes through `&mut self`.
unsafe impl Send for Sampler {}

impl Sampler {
    /// Build the chain for `params` (validated first).
    pub fn new(model: &Model, params: &SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let vocab = model.vocab();
        let n_vocab = vocab.n_tokens();
        let vocab_ptr = vocab_raw(model);
        // SAFETY: plain struct by value.
        let mut cp = unsafe { sys::llama_sampler_chain_default_params() };
        cp.no_perf = true;
        // SAFETY: creates a new, empty chain.
        let chain = RawSampler::new(unsafe { sys::llama_sampler_chain_init(cp) }, "chain")?;
        let add = |s: *mut sys::llama_sampler, what: &str| -> Result<()> {
            let s = RawSampler::new(s, what)?;
            // SAFETY: the chain takes ownership of `s` (so we forget ours).
            unsafe { sys::llama_sampler_chain_add(chain.0.as_ptr(), s.0.as_ptr()) };
            std::mem::forget(s);
            Ok(())
        };
        let seed = if params.seed == RANDOM_SEED { rand_seed() } else { params.seed };
        let min_keep = params.min_keep;

        if !params.logit_bias.is_empty() {
            let mut biases = Vec::with_capacity(params.logit_bias.len());
            for &(token, bias) in &params.logit_bias {
                vocab.check_token(token)?;
                biases.push(sys::llama_logit_bias { token, bias });
            }
            // SAFETY: tokens range-checked; llama.cpp copies the array.
            let s = unsafe { sys::llama_sampler_init_logit_bias(n_vocab, biases.len() as i32, biases.as_ptr()) };
            add(s, "logit bias")?;
        }
        let penalties_on =
            params.repeat_penalty != 1.0 || params.frequency_penalty != 0.0 || params.presence_penalty != 0.0;
        if params.repeat_last_n != 0 && penalties_on {
            let (last_n, rep, freq, pres) =
                (params.repeat_last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty);
            // SAFETY: plain values, validated.
            let s = unsafe { sys::llama_sampler_init_penalties(n_vocab, last_n, rep, freq, pres) };
            add(s, "penalties")?;
        }
        if params.dry_multiplier > 0.0 {
            let breakers: Vec<CString> =
                params.dry_sequence_breakers.iter().filter_map(|b| CString::new(b.as_str()).ok()).collect();
            let ptrs: Vec<*const c_char> = breakers.iter().map(|b| b.as_ptr()).collect();
            let (mult, base, allowed, last_n) =
                (params.dry_multiplier, params.dry_base, params.dry_allowed_length, params.dry_penalty_last_n);
            // SAFETY: the vocab is live; the breaker strings outlive the call
            // and llama.cpp copies them.
            let s = unsafe {
                sys::llama_sampler_init_dry(
                    vocab_ptr,
                    mult,
                    base,
                    allowed,
                    last_n,
                    ptrs.as_ptr().cast_mut(),
                    ptrs.len(),
                )
            };
            add(s, "DRY")?;
        }
        // SAFETY (for every init call below): each takes plain, validated
        // values and returns a new sampler or null, which `add` checks.
        let (temp, tau, eta) = (params.temperature, params.mirostat_tau, params.mirostat_eta);
        if params.temperature <= 0.0 && params.mirostat == 0 {
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_greedy() }, "greedy")?;
        } else if params.mirostat == 1 {
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_temp(temp) }, "temperature")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_mirostat(n_vocab, seed, tau, eta, 100) }, "mirostat")?;
        } else if params.mirostat == 2 {
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_temp(temp) }, "temperature")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_mirostat_v2(seed, tau, eta) }, "mirostat v2")?;
        } else {
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_top_k(params.top_k) }, "top-k")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_typical(params.typical_p, min_keep) }, "typical")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_top_p(params.top_p, min_keep) }, "top-p")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_min_p(params.min_p, min_keep) }, "min-p")?;
            if params.xtc_probability > 0.0 {
                let (p, t) = (params.xtc_probability, params.xtc_threshold);
                // SAFETY: see above.
                add(unsafe { sys::llama_sampler_init_xtc(p, t, min_keep, seed) }, "XTC")?;
            }
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_temp(temp) }, "temperature")?;
            // SAFETY: see above.
            add(unsafe { sys::llama_sampler_init_dist(seed) }, "dist")?;
        }

        let grammar = match &params.grammar {
            Some(g) if !g.trim().is_empty() => {
                let src = CString::new(g.as_str()).map_err(|_| Error::Grammar("grammar contains a NUL byte".into()))?;
                // SAFETY: vocab is live; strings are valid C strings. The
                // shape was bounded by `validate`, so the recursive parser
                // cannot overflow the stack; parse errors return null.
                let p = unsafe { sys::llama_sampler_init_grammar(vocab_ptr, src.as_ptr(), c"root".as_ptr()) };
                Some(NonNull::new(p).map(RawSampler).ok_or_else(|| {
                    Error::Grammar("the grammar does not parse (see the llama_cpp log for the position)".into())
                })?)
            }
            _ => None,
        };
        Ok(Sampler { chain, grammar, candidates: Vec::with_capacity(n_vocab as usize), n_vocab })
    }

    /// Pick the next token from the logits at batch index `i` of `ctx`'s
    /// last decode, and record it (penalties, grammar state).
    pub fn sample(&mut self, ctx: &Context, i: usize) -> Result<Token> {
        let logits = ctx.logits(i)?;
        self.sample_logits(logits)
    }

    /// Like [`sample`](Self::sample), from a logits slice (one per vocabulary entry).
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<Token> {
        if logits.len() != self.n_vocab as usize {
            return Err(Error::InvalidParam { name: "logits", reason: format!("expected {} values", self.n_vocab) });
        }
        self.candidates.clear();
        self.candidates.extend(logits.iter().enumerate().map(|(id, &logit)| sys::llama_token_data {
            id: id as Token,
            logit,
            p: 0.0,
        }));
        let mut arr = sys::llama_token_data_array {
            data: self.candidates.as_mut_ptr(),
            size: self.candidates.len(),
            selected: -1,
            sorted: false,
        };
        if let Some(g) = &self.grammar {
            // SAFETY: `arr` points at our candidate vector for the call.
            unsafe { sys::llama_sampler_apply(g.0.as_ptr(), &mut arr) };
            // SAFETY: `arr.data`/`arr.size` still describe our vector.
            let cands = unsafe { std::slice::from_raw_parts(arr.data, arr.size) };
            if !cands.iter().any(|c| c.logit > f32::NEG_INFINITY) {
                return Err(Error::Grammar("the grammar allows no further token".into()));
            }
        }
        // SAFETY: `arr` is a non-empty candidate array we own.
        unsafe { sys::llama_sampler_apply(self.chain.0.as_ptr(), &mut arr) };
        if arr.selected < 0 || arr.selected as usize >= arr.size {
            return Err(Error::InvalidParam { name: "sampling", reason: "the sampler chain selected nothing".into() });
        }
        // SAFETY: `selected` is within `size` (checked above).
        let chosen = unsafe { *arr.data.add(arr.selected as usize) };
        if chosen.logit == f32::NEG_INFINITY {
            return Err(Error::Grammar("no allowed token left after sampling".into()));
        }
        let token = chosen.id;
        // SAFETY: the chain accepts any token id in range; `token` came
        // from the vocabulary-sized candidate array.
        unsafe { sys::llama_sampler_accept(self.chain.0.as_ptr(), token) };
        if let Some(g) = &self.grammar {
            // SAFETY: the token passed the grammar's own mask above (its
            // logit is finite), so accepting it cannot fail inside llama.cpp.
            unsafe { sys::llama_sampler_accept(g.0.as_ptr(), token) };
        }
        Ok(token)
    }

    /// Record a token that was not sampled here (e.g. a prompt token) for
    /// the penalties. The grammar is not fed: it only constrains output.
    pub fn accept(&mut self, token: Token) -> Result<()> {
        if !(0..self.n_vocab).contains(&token) {
            return Err(Error::TokenOutOfVocab { token, n_vocab: self.n_vocab });
        }
        // SAFETY: token in range; the chain (without the grammar) accepts any token.
        unsafe { sys::llama_sampler_accept(self.chain.0.as_ptr(), token) };
        Ok(())
    }

    /// Forget history (penalties, mirostat state, grammar progress).
    pub fn reset(&mut self) {
        // SAFETY: owned samplers.
        unsafe { sys::llama_sampler_reset(self.chain.0.as_ptr()) };
        if let Some(g) = &self.grammar {
            // SAFETY: owned sampler.
            unsafe { sys::llama_sampler_reset(g.0.as_ptr()) };
        }
    }
}

fn vocab_raw(model: &Model) -> *const sys::llama_vocab {
    // SAFETY: the model is live; the vocab pointer is owned by it.
    unsafe { sys::llama_model_get_vocab(model.as_ptr()) }
}

fn rand_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    (h.finish() as u32).min(RANDOM_SEED - 1)
}

/// The `n` most likely tokens with their log-probabilities, best first.
pub fn log_softmax_top(logits: &[f32], n: usize) -> Vec<(Token, f32)> {
    let lse = log_sum_exp(logits);
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.select_nth_unstable_by(n - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(n);
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter().map(|i| (i as Token, logits[i] - lse)).collect()
}

/// The log-probability of `token` under `logits`.
pub fn log_softmax_of(logits: &[f32], token: Token) -> f32 {
    match usize::try_from(token).ok().and_then(|i| logits.get(i)) {
        Some(&l) => l - log_sum_exp(logits),
        None => f32::NEG_INFINITY,
    }
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln()
}
