//! Sampling: one plain [`SamplingParams`] struct turned into llama.cpp's
//! sampler chain, plus an optional GBNF grammar.

use std::ffi::{CString, c_char};
use std::ptr::NonNull;
use std::sync::Arc;

use llama_sys as sys;

use crate::vocab::FirstBytes;
use crate::{Context, Error, Model, RANDOM_SEED, Result, SamplingParams, Token};

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

/// How many of the most likely tokens (by raw logit) a rejected grammar
/// check retries against, in turn, before masking the whole vocabulary.
/// The first is big enough that a grammar-valid token is usually among
/// them, and costs about 1 % of a full mask of a 49 152-token vocabulary;
/// the second catches grammars that force an unlikely token (a list of
/// words right after a colon) at about 8 %.
const GRAMMAR_SUBSETS: [usize; 2] = [512, 4096];

/// Masks over fewer candidates than this skip the first-byte prefilter
/// (its ≤ 127 probes would cost more than they save).
const PREFILTER_MIN: usize = 1024;

/// A configured sampler for one sequence. `Send`, so it can live in the
/// engine thread next to its context.
#[derive(Debug)]
pub struct Sampler {
    chain: RawSampler,
    grammar: Option<Grammar>,
    candidates: Vec<sys::llama_token_data>,
    /// Scratch for grammar masks of part of `candidates`.
    scratch: Vec<sys::llama_token_data>,
    /// Where each `scratch` entry sits in `candidates`.
    scratch_at: Vec<usize>,
    n_vocab: i32,
    /// Tokens with a positive logit bias, sorted: the chain can lift them
    /// above tokens of higher raw logit, so the grammar subsets include them.
    boosted: Vec<Token>,
    /// The chain is greedy.
    greedy: bool,
    /// No sampler of the chain raises a logit except by a positive bias
    /// (penalties with `repeat >= 1`, `frequency >= 0`, `presence >= 0`;
    /// DRY only subtracts).
    lowers_only: bool,
    /// Per-token verdicts of the last full mask (index = token id).
    allowed: Vec<bool>,
    stats: [u64; 3],
    /// The chain is llama.cpp's greedy sampler alone (no bias, penalties,
    /// DRY or grammar): sampling is an argmax over the logits, done here
    /// without building the vocabulary-sized candidate array.
    argmax_only: bool,
    /// Keeps the model, and so the `llama_vocab` that llama.cpp's grammar
    /// and DRY samplers point into and dereference on every apply, accept
    /// and reset, alive as long as this sampler. Declared last: fields drop
    /// in declaration order, so the samplers are freed before the model.
    _model: Arc<Model>,
}

/// llama.cpp's grammar sampler, plus what the first-byte prefilter needs.
#[derive(Debug)]
struct Grammar {
    sampler: RawSampler,
    /// `None` when the prefilter is not sound for this grammar.
    first_bytes: Option<Arc<FirstBytes>>,
}

// SAFETY: samplers are plain heap objects with no thread affinity; the
// Sampler exclusively owns them and all use goes through `&mut self`.
unsafe impl Send for Sampler {}

impl Sampler {
    /// Build the chain for `params` (validated first).
    ///
    /// The sampler keeps a clone of `model`: llama.cpp's grammar and DRY
    /// samplers hold a pointer into the model's vocabulary, so the model
    /// must outlive them.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] or [`Error::Grammar`] for parameters that do
    /// not validate (see [`SamplingParams::validate`]);
    /// [`Error::TokenOutOfVocab`] for a logit bias on a token the model
    /// does not have; [`Error::Grammar`] when llama.cpp refuses the grammar
    /// or its parser thread cannot start; [`Error::InvalidParam`] when
    /// llama.cpp returns no sampler; [`Error::Exception`] if it throws
    /// while building the grammar.
    pub fn new(model: &Arc<Model>, params: &SamplingParams) -> Result<Sampler> {
        params.validate()?;
        // llama.cpp allocates (and zeroes) a ring buffer of `last_n` tokens
        // for the penalties and for DRY: 2^31 of them is 8 GiB, or a
        // `bad_alloc` thrown out of the sampler's constructor. A look-back
        // longer than the model's context cannot see more tokens than it,
        // so both are capped there (and -1, "the context", resolves to it).
        let n_ctx = model.n_ctx_train().max(1);
        let cap = i32::try_from(n_ctx).unwrap_or(i32::MAX);
        let resolved;
        let params = if params.repeat_last_n == -1
            || params.dry_penalty_last_n == -1
            || params.repeat_last_n > cap
            || params.dry_penalty_last_n > cap
        {
            let mut p = params.clone().with_context_size(n_ctx);
            p.repeat_last_n = p.repeat_last_n.min(cap);
            p.dry_penalty_last_n = p.dry_penalty_last_n.min(cap);
            resolved = p;
            &resolved
        } else {
            params
        };
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
        let penalties_on = params.repeat_last_n != 0
            && (params.repeat_penalty != 1.0 || params.frequency_penalty != 0.0 || params.presence_penalty != 0.0);
        if penalties_on {
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
                // `validate` (above) bounded what llama.cpp's recursive
                // parser and left-recursion check can do with this grammar
                // to a few hundred KiB of stack (llama-core's
                // grammar_differential test runs the worst cases on 512 KiB).
                // They still run on a thread of their own with a known,
                // generous stack, so that a case the Rust check misses is
                // an error here, not a stack overflow of the caller's
                // thread (which may be small: async runtimes use 2 MiB).
                const PARSE_STACK: usize = 8 << 20;
                /// Raw pointers moved to the parsing thread and back.
                struct SendPtr<T>(T);
                impl<T> SendPtr<T> {
                    fn into_inner(self) -> T {
                        self.0
                    }
                }
                // SAFETY: the vocab pointer is only read, by llama.cpp's
                // grammar parser, while this thread waits in `join` below,
                // and the model that owns the vocab is borrowed for all of
                // `Sampler::new`; the sampler that comes back is a fresh
                // heap object that nothing else points to, now owned here.
                unsafe impl<T> Send for SendPtr<T> {}
                let vocab_send = SendPtr(vocab_ptr);
                let parse = move || -> Result<SendPtr<*mut sys::llama_sampler>> {
                    let vocab = vocab_send.into_inner();
                    let mut out = std::ptr::null_mut();
                    // SAFETY: vocab is live (see `SendPtr`); both strings
                    // are valid C strings, `src` owned by this closure; `out`
                    // is written on success. Parse errors return null; the
                    // shim turns a thrown exception (out of memory while
                    // building the stacks) into an error, read on this
                    // same thread as its message is thread-local.
                    let status =
                        unsafe { sys::llrs_sampler_init_grammar(vocab, src.as_ptr(), c"root".as_ptr(), &mut out) };
                    crate::ffi::guard(status, "llama_sampler_init_grammar")?;
                    Ok(SendPtr(out))
                };
                let p = std::thread::Builder::new()
                    .name("llama-grammar".into())
                    .stack_size(PARSE_STACK)
                    .spawn(parse)
                    .map_err(|e| Error::Grammar(format!("could not start the grammar parser thread: {e}")))?
                    .join()
                    .map_err(|_| Error::Grammar("the grammar parser thread panicked".into()))??
                    .into_inner();
                let sampler = NonNull::new(p).map(RawSampler).ok_or_else(|| {
                    Error::Grammar("llama.cpp refused the grammar (see the llama.cpp log for why)".into())
                })?;
                // Token elements (`<[id]>`, `<text>`, `!<…>`) match by id,
                // not by text, so the prefilter's reasoning does not hold
                // for them: any `<` or `!` anywhere turns it off.
                let first_bytes = (!g.contains(['<', '!'])).then(|| vocab.first_bytes());
                Some(Grammar { sampler, first_bytes })
            }
            _ => None,
        };
        let mut boosted: Vec<Token> = params.logit_bias.iter().filter(|(_, b)| *b > 0.0).map(|(t, _)| *t).collect();
        boosted.sort_unstable();
        boosted.dedup();
        Ok(Sampler {
            chain,
            grammar,
            candidates: Vec::with_capacity(n_vocab as usize),
            scratch: Vec::new(),
            scratch_at: Vec::new(),
            n_vocab,
            boosted,
            greedy: params.is_greedy(),
            lowers_only: params.repeat_penalty >= 1.0
                && params.frequency_penalty >= 0.0
                && params.presence_penalty >= 0.0,
            allowed: Vec::new(),
            stats: [0; 3],
            argmax_only: params.is_greedy()
                && params.logit_bias.is_empty()
                && !penalties_on
                && params.dry_multiplier <= 0.0
                && params.grammar.is_none(),
            _model: Arc::clone(model),
        })
    }

    /// Pick the next token from the logits at batch index `i` of `ctx`'s
    /// last decode, and record it (penalties, grammar state).
    ///
    /// # Errors
    /// [`Error::NoOutput`] when index `i` has no logits, and what
    /// [`sample_logits`](Self::sample_logits) returns.
    pub fn sample(&mut self, ctx: &Context, i: usize) -> Result<Token> {
        let logits = ctx.logits(i)?;
        self.sample_logits(logits)
    }

    /// Like [`sample`](Self::sample), from a logits slice (one per vocabulary entry).
    ///
    /// Without a grammar this runs the chain over every candidate. With a
    /// grammar, checking all candidates against it at every token costs
    /// `n_vocab` × (grammar alternatives) — seconds per token for a grammar
    /// of a few thousand alternatives — so the grammar is applied lazily, in
    /// three steps that stop at the first one that yields a token:
    ///
    /// 1. Run the chain over all candidates and check only the chosen token
    ///    against the grammar (what llama.cpp's `common_sampler` does).
    /// 2. If the grammar rejects it: keep the 512 most likely candidates by
    ///    raw logit plus every token with a positive logit bias, mask them
    ///    with the grammar and run the chain over the allowed ones; if none
    ///    is allowed, the same with the 4096 most likely.
    /// 3. If none of those is allowed (or, when greedy, when step 2 cannot
    ///    prove its choice is the one of step 3): mask the whole vocabulary
    ///    and run the chain over it, as a sampler that always masks first
    ///    would.
    ///
    /// Large masks (steps 2 and 3) first check the single-byte tokens: a
    /// token whose piece starts with an ASCII byte that the grammar rejects
    /// on its own is rejected without being checked, which gives the same
    /// mask (the reasoning is at `grammar_mask` in the source).
    ///
    /// For greedy sampling the result is exactly the full-mask result: the
    /// chain's argmax, if allowed, is the argmax among allowed tokens; and
    /// a token left out of step 2 (not positively biased) ends at most at
    /// its raw logit when the penalties only lower logits, so step 2's
    /// choice is kept only when it beats the best raw logit left out.
    /// For stochastic sampling the distribution differs from masking first:
    /// step 1 is rejection sampling as in llama.cpp's `common_sampler`, and
    /// step 2 never picks a grammar-valid token ranked below the 512th (or
    /// 4096th) raw logit when one ranked above is allowed (tokens ranked
    /// that low carry little probability except at high temperatures).
    ///
    /// A rejected first choice means the chain runs again (once more, at
    /// most three more times), which advances the RNG of `dist`/XTC and
    /// updates the mirostat state once per run. Sampling stays
    /// deterministic for a fixed seed (same logits → same tokens), but
    /// seeded outputs differ from a sampler that masks before sampling.
    ///
    /// # Errors
    /// [`Error::Grammar`] when the grammar allows no further token;
    /// [`Error::InvalidParam`] when `logits` has the wrong length, or a
    /// llama.cpp sampler misbehaves (selects nothing, moves or drops
    /// candidates); [`Error::Exception`] if llama.cpp throws.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<Token> {
        self.check_logits(logits)?;
        if self.argmax_only {
            return self.accept_sampled(argmax(logits));
        }
        self.fill_candidates(logits);
        let chosen = self.apply_chain()?;
        let Some(g) = self.grammar.as_ref().map(|g| g.sampler.0) else {
            return self.accept_sampled(chosen.id);
        };
        // Step 1: the chain's own choice, checked alone.
        if chosen.logit > f32::NEG_INFINITY && self.grammar_allows(g, chosen.id)? {
            self.stats[0] += 1;
            return self.accept_sampled(chosen.id);
        }
        // Step 2: the most likely candidates, masked.
        for m in GRAMMAR_SUBSETS {
            if let Some(token) = self.sample_subset(logits, m)? {
                self.stats[1] += 1;
                return self.accept_sampled(token);
            }
            if m >= logits.len() {
                break;
            }
        }
        // Step 3: the whole vocabulary, masked.
        self.stats[2] += 1;
        let token = self.sample_masked(logits, true)?;
        self.accept_sampled(token)
    }

    /// The old, always-exact grammar path: mask the whole vocabulary with
    /// the grammar (every token checked), then run the chain. A test hook
    /// (feature `testing`, not a stable API) for tests and measurements
    /// that compare against [`sample_logits`](Self::sample_logits).
    ///
    /// # Errors
    /// As [`sample_logits`](Self::sample_logits).
    #[cfg(feature = "testing")]
    pub fn sample_logits_full_mask(&mut self, logits: &[f32]) -> Result<Token> {
        self.check_logits(logits)?;
        let token = self.sample_masked(logits, false)?;
        self.accept_sampled(token)
    }

    /// The tokens the grammar allows next, in id order, computed with or
    /// without the first-byte prefilter. Empty without a grammar. A test
    /// hook (feature `testing`, not a stable API).
    ///
    /// # Errors
    /// [`Error::Exception`] if llama.cpp's grammar sampler throws;
    /// [`Error::InvalidParam`] if it moves or drops candidates instead of
    /// masking them.
    #[cfg(feature = "testing")]
    pub fn grammar_allowed_tokens(&mut self, prefilter: bool) -> Result<Vec<Token>> {
        if self.grammar.is_none() {
            return Ok(Vec::new());
        }
        self.fill_candidates(&vec![0.0; self.n_vocab as usize]);
        self.grammar_mask(prefilter)?;
        Ok(self.candidates.iter().filter(|c| c.logit > f32::NEG_INFINITY).map(|c| c.id).collect())
    }

    /// How many grammar-constrained tokens were decided by each step of
    /// [`sample_logits`](Self::sample_logits): `[chain's first choice
    /// allowed, subset mask, full mask]`. A test hook (feature `testing`,
    /// not a stable API).
    #[cfg(feature = "testing")]
    pub fn grammar_steps(&self) -> [u64; 3] {
        self.stats
    }

    fn check_logits(&self, logits: &[f32]) -> Result<()> {
        if logits.len() != self.n_vocab as usize {
            return Err(Error::InvalidParam { name: "logits", reason: format!("expected {} values", self.n_vocab) });
        }
        Ok(())
    }

    /// Every token with its raw logit, in id order.
    fn fill_candidates(&mut self, logits: &[f32]) {
        self.candidates.clear();
        self.candidates.extend(logits.iter().enumerate().map(|(id, &logit)| sys::llama_token_data {
            id: id as Token,
            logit,
            p: 0.0,
        }));
    }

    /// Run the chain over the current candidates; the entry it selected.
    fn apply_chain(&mut self) -> Result<sys::llama_token_data> {
        match apply(self.chain.0, &mut self.candidates)? {
            Some(i) => Ok(self.candidates[i]),
            None => Err(Error::InvalidParam { name: "sampling", reason: "the sampler chain selected nothing".into() }),
        }
    }

    /// Whether grammar `g` allows `token` next: it masks a one-element
    /// candidate array (a finite logit survives).
    fn grammar_allows(&mut self, g: NonNull<sys::llama_sampler>, token: Token) -> Result<bool> {
        self.scratch.clear();
        self.scratch.push(sys::llama_token_data { id: token, logit: 0.0, p: 0.0 });
        apply(g, &mut self.scratch)?;
        Ok(self.scratch.len() == 1 && self.scratch[0].logit > f32::NEG_INFINITY)
    }

    /// Set the logit of every current candidate the grammar rejects to
    /// -inf (in place: order and length are kept).
    ///
    /// With `prefilter` (and enough candidates), single-byte tokens are
    /// checked first, and a candidate whose piece starts with an ASCII byte
    /// whose single-byte token was rejected is rejected unchecked. That is
    /// exact: llama.cpp accepts a token when some grammar stack consumes
    /// its code points in order (the last one may be incomplete); the
    /// byte is a whole code point, and a stack that consumes the longer
    /// piece consumes its first code point, which alone is the probe's
    /// piece — so the probe would have been accepted. It holds with a
    /// pending partial character too (both pieces then start with a byte
    /// that cannot continue it and are rejected alike), and when the
    /// grammar is complete (every non-empty piece is rejected). It does not
    /// hold for grammar token elements, which match ids, not text: the
    /// prefilter is off for grammars that could contain them. End-of-
    /// generation tokens are judged by grammar state and always checked.
    fn grammar_mask(&mut self, prefilter: bool) -> Result<()> {
        let Some(grammar) = &self.grammar else { return Ok(()) };
        let g = grammar.sampler.0;
        let fb = grammar.first_bytes.clone().filter(|_| prefilter && self.candidates.len() >= PREFILTER_MIN);
        let Some(fb) = fb else {
            apply(g, &mut self.candidates)?;
            return Ok(());
        };
        // The probes: one single-byte token per ASCII byte that has one.
        self.scratch.clear();
        self.scratch.extend(fb.single.iter().flatten().map(|&id| sys::llama_token_data { id, logit: 0.0, p: 0.0 }));
        apply(g, &mut self.scratch)?;
        let mut byte_ok = [true; 128];
        for c in &self.scratch {
            // A probe's first byte is its whole piece.
            let b = fb.first.get(c.id as usize).copied().unwrap_or(0);
            byte_ok[b as usize] = c.logit > f32::NEG_INFINITY;
        }
        // Everything not ruled out by its first byte is checked for real.
        self.scratch.clear();
        self.scratch_at.clear();
        for (i, c) in self.candidates.iter_mut().enumerate() {
            let b = fb.first.get(c.id as usize).copied().unwrap_or(0);
            if byte_ok[b as usize] {
                self.scratch.push(*c);
                self.scratch_at.push(i);
            } else {
                c.logit = f32::NEG_INFINITY;
            }
        }
        apply(g, &mut self.scratch)?;
        if self.scratch.len() != self.scratch_at.len() {
            return Err(Error::InvalidParam {
                name: "grammar",
                reason: "the grammar sampler dropped candidates".into(),
            });
        }
        for (c, &i) in self.scratch.iter().zip(&self.scratch_at) {
            if c.logit == f32::NEG_INFINITY {
                self.candidates[i].logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Step 2 of [`sample_logits`](Self::sample_logits): mask the `m` most
    /// likely candidates (plus positively biased ones) and run the chain on
    /// those the grammar allows. `None` means "try a bigger subset".
    fn sample_subset(&mut self, logits: &[f32], m: usize) -> Result<Option<Token>> {
        let n = logits.len();
        let m = m.clamp(1, n.max(1));
        let mut ids: Vec<u32> = (0..n as u32).collect();
        if m < n {
            ids.select_nth_unstable_by(m - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        }
        // The best raw logit of a token left out (and not boosted): no
        // chain that only lowers logits can end it above that.
        let mut cutoff = f32::NEG_INFINITY;
        let mut subset: Vec<u32> = ids[..m].to_vec();
        for &id in &ids[m..] {
            if self.boosted.binary_search(&(id as Token)).is_ok() {
                subset.push(id);
            } else {
                cutoff = cutoff.max(logits[id as usize]);
            }
        }
        let complete = subset.len() == n;
        // Id order, as in the full array: greedy ties resolve the same way.
        subset.sort_unstable();
        self.candidates.clear();
        self.candidates.extend(subset.iter().map(|&id| sys::llama_token_data {
            id: id as Token,
            logit: logits[id as usize],
            p: 0.0,
        }));
        self.grammar_mask(true)?;
        // The grammar only writes -inf, so survivors keep their raw logits
        // (a raw -inf token could never be chosen anyway).
        self.candidates.retain(|c| c.logit > f32::NEG_INFINITY);
        if self.candidates.is_empty() {
            return if complete { Err(Error::Grammar("the grammar allows no further token".into())) } else { Ok(None) };
        }
        let chosen = self.apply_chain()?;
        if chosen.logit == f32::NEG_INFINITY {
            // Every allowed token of the subset is banned by a -inf bias.
            return if complete {
                Err(Error::Grammar("no allowed token left after sampling".into()))
            } else {
                Ok(None)
            };
        }
        if self.greedy && !complete && !(self.lowers_only && chosen.logit > cutoff) {
            // A token left out might end above the one chosen here.
            return Ok(None);
        }
        Ok(Some(chosen.id))
    }

    /// Mask every candidate with the grammar, then run the chain over the
    /// whole vocabulary (rejected tokens at -inf), as llama.cpp would.
    fn sample_masked(&mut self, logits: &[f32], prefilter: bool) -> Result<Token> {
        self.fill_candidates(logits);
        if self.grammar.is_some() {
            self.grammar_mask(prefilter)?;
            self.allowed.clear();
            self.allowed.resize(logits.len(), false);
            let mut any = false;
            for c in &self.candidates {
                if c.logit > f32::NEG_INFINITY {
                    self.allowed[c.id as usize] = true;
                    any = true;
                }
            }
            if !any {
                return Err(Error::Grammar("the grammar allows no further token".into()));
            }
        }
        let chosen = self.apply_chain()?;
        if chosen.logit == f32::NEG_INFINITY {
            return Err(Error::Grammar("no allowed token left after sampling".into()));
        }
        if self.grammar.is_some() && !self.allowed.get(chosen.id as usize).copied().unwrap_or(false) {
            // Unreachable with llama.cpp's samplers (none lifts a -inf
            // logit); checked because accepting a token the grammar
            // rejects aborts inside llama.cpp.
            return Err(Error::Grammar("the sampler chain chose a token the grammar rejects".into()));
        }
        Ok(chosen.id)
    }

    /// Record a sampled token in the chain and the grammar. Callers pass
    /// only tokens that the grammar allows (checked by the step that chose
    /// them).
    fn accept_sampled(&mut self, token: Token) -> Result<Token> {
        if !(0..self.n_vocab).contains(&token) {
            return Err(Error::TokenOutOfVocab { token, n_vocab: self.n_vocab });
        }
        // SAFETY: the chain accepts any token id in range (checked above);
        // the shim catches any exception.
        crate::ffi::guard(unsafe { sys::llrs_sampler_accept(self.chain.0.as_ptr(), token) }, "llama_sampler_accept")?;
        if let Some(g) = &self.grammar {
            // SAFETY: every caller passes a token the grammar allowed in its
            // current state (step 1: the one-token mask; step 2: only
            // allowed tokens were in the array; step 3: the `allowed`
            // check). Should that ever fail, llama.cpp throws and the shim
            // turns it into an error.
            let status = unsafe { sys::llrs_sampler_accept(g.sampler.0.as_ptr(), token) };
            crate::ffi::guard(status, "llama_sampler_accept")?;
        }
        Ok(token)
    }

    /// Record a token that was not sampled here (e.g. a prompt token) for
    /// the penalties. The grammar is not fed: it only constrains output.
    ///
    /// # Errors
    /// [`Error::TokenOutOfVocab`]; [`Error::Exception`] if llama.cpp throws.
    pub fn accept(&mut self, token: Token) -> Result<()> {
        if !(0..self.n_vocab).contains(&token) {
            return Err(Error::TokenOutOfVocab { token, n_vocab: self.n_vocab });
        }
        // SAFETY: token in range; the chain (without the grammar) accepts
        // any token; the shim catches any exception.
        crate::ffi::guard(unsafe { sys::llrs_sampler_accept(self.chain.0.as_ptr(), token) }, "llama_sampler_accept")
    }

    /// Forget history (penalties, mirostat state, grammar progress).
    ///
    /// # Errors
    /// [`Error::Exception`] if llama.cpp throws (out of memory while
    /// rebuilding the grammar's stacks).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: owned samplers; the shim catches any exception.
        crate::ffi::guard(unsafe { sys::llrs_sampler_reset(self.chain.0.as_ptr()) }, "llama_sampler_reset")?;
        if let Some(g) = &self.grammar {
            // SAFETY: owned sampler; the shim catches any exception.
            crate::ffi::guard(unsafe { sys::llrs_sampler_reset(g.sampler.0.as_ptr()) }, "llama_sampler_reset")?;
        }
        Ok(())
    }
}

/// Run `sampler` over `candidates`, which it may reorder, shrink or
/// rewrite in place. Returns the index it selected, if any; `candidates`
/// is cut down to what it kept.
fn apply(sampler: NonNull<sys::llama_sampler>, candidates: &mut Vec<sys::llama_token_data>) -> Result<Option<usize>> {
    let data = candidates.as_mut_ptr();
    let mut arr = sys::llama_token_data_array { data, size: candidates.len(), selected: -1, sorted: false };
    // SAFETY: `sampler` is a live sampler owned by the calling Sampler;
    // `arr` describes `candidates`, which nothing else touches during the
    // call; llama.cpp's samplers work in place and never grow the array.
    // The shim catches any exception (the grammar sampler throws on
    // internal inconsistencies).
    crate::ffi::guard(unsafe { sys::llrs_sampler_apply(sampler.as_ptr(), &mut arr) }, "llama_sampler_apply")?;
    // XTC drops the most likely entries by moving `data` forward inside
    // the same buffer; anything else would be a llama.cpp bug.
    let moved = (arr.data as usize).wrapping_sub(data as usize);
    let width = std::mem::size_of::<sys::llama_token_data>();
    let start = moved / width;
    if !moved.is_multiple_of(width) || start > candidates.len() || arr.size > candidates.len() - start {
        return Err(Error::InvalidParam { name: "sampling", reason: "a sampler moved the candidates".into() });
    }
    candidates.truncate(start + arr.size);
    candidates.drain(..start);
    Ok(usize::try_from(arr.selected).ok().filter(|&i| i < arr.size))
}

/// The index of the first largest logit, exactly as llama.cpp's greedy
/// sampler picks it (strict `>` from index 0, so ties and NaNs resolve the
/// same way).
fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > logits[best] {
            best = i;
        }
    }
    best as Token
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
