//! A deterministic fake [`Inference`] for tests (feature `fake`).
//!
//! It keeps a per-sequence KV "cache" of tokens and checks every decode the
//! way llama.cpp would (positions continue the cache, window and batch
//! bounds), so scheduler bugs show up as decode failures. A sequence's
//! saved state is its tokens under a keyed checksum (a fake of llama-core's
//! HMAC: it refuses edited states and states saved under another key, not
//! a determined forger). The next token is
//! a pure function of the seed and the sequence's whole KV content, so a
//! request's output does not depend on how it was batched — and any KV
//! corruption changes it. Decodes run in micro-batches and honour the abort
//! flag between them; failures can be injected.
//!
//! LoRA adapters: the fake "loads" the adapters of
//! [`EngineConfig::lora`](crate::EngineConfig::lora) without reading them.
//! Each KV cell remembers the scales applied when it was decoded, and the
//! next token depends on them ([`fake_next_token_with_lora`]): a sequence
//! decoded under another set than its own, or reusing a prefix computed
//! under another set, generates other tokens.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llama_core::{CHATML_TEMPLATE, ChatTemplate, Pos, SamplingParams, SeqId, StateKey, TemplateSpec, Token};

use crate::inference::{
    BatchEntry, DecodeError, Inference, ModelBackend, ModelFacade, ModelInfo, SampleError, Sampled,
};
use crate::lora::LoraAdapterInfo;
use crate::request::CoreError;

/// Vocabulary size of the fake model.
pub const FAKE_VOCAB: i32 = 64;
/// The fake's beginning-of-sequence token (prepended by the tokenizer).
pub const FAKE_BOS: Token = 0;
/// The fake's end-of-generation token.
pub const FAKE_EOG: Token = 1;
/// Length of the fake's embedding vectors.
pub const FAKE_EMBD: usize = 4;

/// The text of a fake token, as bytes. Tokens 30 and 31 are the two halves
/// of "é", so streaming UTF-8 handling is exercised.
pub fn fake_piece(token: Token) -> Vec<u8> {
    match token {
        2..=27 => vec![b'a' + (token - 2) as u8],
        28 => b" ".to_vec(),
        29 => b"\n".to_vec(),
        30 => vec![0xC3],
        31 => vec![0xA9],
        32..=63 => vec![b'A' + (token - 32) as u8],
        _ => Vec::new(),
    }
}

/// The fake model's choice after `history` (the sequence's whole KV) for a
/// request with `seed`, without LoRA adapters.
pub fn fake_next_token(seed: u32, history: &[Token]) -> Token {
    next_token(seed, history.iter().map(|&t| (t, 0)))
}

/// What the fake's KV cells remember of the LoRA scales they were decoded
/// with: 0 without adapters (every scale 0), else a hash of the scales.
pub fn fake_lora_hash(scales: &[f32]) -> u64 {
    if scales.iter().all(|&s| s == 0.0) {
        return 0;
    }
    let mut h: u64 = 0x8422_2325_cbf2_9ce4;
    for s in scales {
        h ^= u64::from(s.to_bits());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

/// The fake model's choice after `history`, every cell decoded with the
/// LoRA scales whose [`fake_lora_hash`] is `lora`: what a request with
/// that set generates when it runs alone.
pub fn fake_next_token_with_lora(seed: u32, history: &[Token], lora: u64) -> Token {
    next_token(seed, history.iter().map(|&t| (t, lora)))
}

/// The next token after `cells`: `(token, LoRA hash)` per KV cell.
fn next_token(seed: u32, cells: impl Iterator<Item = (Token, u64)>) -> Token {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(seed);
    for (t, lora) in cells {
        h ^= t as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        if lora != 0 {
            h ^= lora;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    if h.is_multiple_of(40) { FAKE_EOG } else { 2 + (h % (FAKE_VOCAB as u64 - 2)) as Token }
}

/// Knobs a test turns while the fake runs.
#[derive(Default)]
pub struct FakeControl {
    /// The next decode fails with this error (after writing its first
    /// micro-batch, like a real partial failure).
    pub fail_next: Option<DecodeError>,
    /// Called before each micro-batch with a running count (a test may
    /// cancel a request here to exercise abort-in-decode).
    pub on_ubatch: Option<Box<dyn FnMut(u64) + Send>>,
    /// Simulated compute time per token.
    pub delay_per_token: Duration,
    /// Every decode so far: `(seq, pos, n_tokens)` per entry.
    pub log: Vec<Vec<(SeqId, Pos, usize)>>,
    /// Keep `log` (off by default, to bound memory in long runs).
    pub record: bool,
    /// The LoRA scales applied in each decode of `log` (kept with it).
    pub lora_log: Vec<Vec<f32>>,
    /// The next [`Inference::set_lora`] fails (and leaves the applied set
    /// unknown: the fake then applies none).
    pub fail_set_lora: bool,
}

impl std::fmt::Debug for FakeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeControl")
            .field("fail_next", &self.fail_next)
            .field("delay_per_token", &self.delay_per_token)
            .field("log_len", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// The fake's [`ModelFacade`]: one token per byte (`a`–`z`, space, newline,
/// `A`–`Z`; anything else becomes a space), after a BOS. Text containing a
/// NUL byte fails to tokenize. Its "sampler" is the validated parameters.
#[derive(Debug, Clone)]
pub struct FakeModel {
    info: ModelInfo,
}

impl Default for FakeModel {
    fn default() -> Self {
        let info = ModelInfo {
            path: "fake.gguf".into(),
            description: "fake model (llama_runtime::fake)".into(),
            n_vocab: FAKE_VOCAB,
            n_ctx_train: 4096,
            n_embd: FAKE_EMBD as u32,
            n_params: 0,
            size_bytes: 0,
            fim: Default::default(),
            // BOS query EOS document EOS, as a model with add_eos and no separator.
            rerank: crate::RerankFormat {
                bos: Some(FAKE_BOS),
                eos: Some(FAKE_EOG),
                add_bos: true,
                add_eos: true,
                ..Default::default()
            },
            encoder_only: false,
        };
        FakeModel { info }
    }
}

impl FakeModel {
    /// The fake with its facts changed (for example FIM tokens, to test
    /// `/infill` layouts).
    pub fn with_info(mut self, change: impl FnOnce(&mut ModelInfo)) -> Self {
        change(&mut self.info);
        self
    }
}

/// The name the fake's BOS token renders as (with `unparse_special`).
pub const FAKE_BOS_TEXT: &str = "<s>";
/// The name the fake's end-of-generation token renders as.
pub const FAKE_EOG_TEXT: &str = "</s>";

impl ModelFacade for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_special: bool, _parse_special: bool) -> Result<Vec<Token>, CoreError> {
        if text.contains('\0') {
            return Err(llama_core::Error::Tokenize("NUL byte in text".into()).into());
        }
        let mut out = if add_special { vec![FAKE_BOS] } else { Vec::new() };
        out.extend(text.bytes().map(|b| match b {
            b'a'..=b'z' => 2 + Token::from(b - b'a'),
            b'\n' => 29,
            b'A'..=b'Z' => 32 + Token::from(b - b'A'),
            _ => 28,
        }));
        Ok(out)
    }

    fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String, CoreError> {
        let mut bytes = Vec::new();
        for &t in tokens {
            if !(0..FAKE_VOCAB).contains(&t) {
                return Err(llama_core::Error::TokenOutOfVocab { token: t, n_vocab: FAKE_VOCAB }.into());
            }
            match t {
                FAKE_BOS | FAKE_EOG if remove_special => {}
                FAKE_BOS | FAKE_EOG if unparse_special => bytes.extend_from_slice(&self.token_piece(t)),
                _ => bytes.extend(fake_piece(t)),
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token_piece(&self, token: Token) -> Vec<u8> {
        match token {
            FAKE_BOS => FAKE_BOS_TEXT.into(),
            FAKE_EOG => FAKE_EOG_TEXT.into(),
            t => fake_piece(t),
        }
    }

    fn chat_template(&self, spec: TemplateSpec<'_>) -> Result<ChatTemplate, CoreError> {
        // The fake has no template of its own: ChatML, as for a model without one.
        Ok(match spec {
            TemplateSpec::Model => ChatTemplate::new(CHATML_TEMPLATE, FAKE_BOS_TEXT, FAKE_EOG_TEXT)?,
            TemplateSpec::Jinja(source) => ChatTemplate::new(source, FAKE_BOS_TEXT, FAKE_EOG_TEXT)?,
            TemplateSpec::Builtin(name) => {
                ChatTemplate::builtin(name.unwrap_or("chatml"), FAKE_BOS_TEXT, FAKE_EOG_TEXT)?
            }
        })
    }
}

impl ModelBackend for FakeModel {
    type Sampler = SamplingParams;

    fn prepare_sampling(&self, params: &SamplingParams) -> Result<SamplingParams, CoreError> {
        params.validate()?;
        Ok(params.clone())
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct FakeInference {
    kv: Vec<Vec<Token>>,
    seeds: Vec<Option<u32>>,
    outputs: Vec<Option<SeqId>>,
    n_ctx_seq: u32,
    n_batch: usize,
    n_ubatch: usize,
    abort: Arc<AtomicBool>,
    control: Arc<Mutex<FakeControl>>,
    ubatches: u64,
    /// Keys the checksum of saved states.
    state_key: [u8; 32],
    /// The "loaded" adapters.
    lora: Vec<LoraAdapterInfo>,
    /// The scales applied now, and their hash.
    active_lora: (Vec<f32>, u64),
    /// Per sequence, the LoRA hash of each KV cell (parallel to `kv`).
    kv_lora: Vec<Vec<u64>>,
}

/// The magic of the fake's saved states.
const FAKE_STATE_MAGIC: &[u8; 8] = b"LLRSFAKE";

/// The fake's keyed checksum of a saved state's tokens.
fn fake_state_tag(key: &[u8; 32], tokens: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.iter().chain(tokens) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl FakeInference {
    /// A fake with `n_seq` sequences of `n_ctx_seq` cells each.
    pub fn new(n_seq: u32, n_ctx_seq: u32, n_batch: u32, n_ubatch: u32) -> Self {
        FakeInference {
            kv: vec![Vec::new(); n_seq as usize],
            seeds: vec![None; n_seq as usize],
            outputs: Vec::new(),
            n_ctx_seq,
            n_batch: n_batch as usize,
            n_ubatch: n_ubatch.max(1) as usize,
            abort: Arc::new(AtomicBool::new(false)),
            control: Arc::new(Mutex::new(FakeControl::default())),
            ubatches: 0,
            state_key: [0; 32],
            lora: Vec::new(),
            active_lora: (Vec::new(), 0),
            kv_lora: vec![Vec::new(); n_seq as usize],
        }
    }

    /// A fake sized like `config`, its saved states keyed with
    /// `config.state_key` (all zeros without one).
    pub fn for_config(config: &crate::EngineConfig) -> Self {
        let mut fake = Self::new(config.n_seq_max, config.n_ctx_seq(), config.n_batch, config.n_ubatch);
        if let Some(key) = &config.state_key {
            fake.state_key = *key.as_bytes();
        }
        fake.lora = config.lora.iter().enumerate().map(|(id, l)| LoraAdapterInfo::new(id, &l.path, l.scale)).collect();
        fake.active_lora = (vec![0.0; fake.lora.len()], 0);
        fake
    }

    /// The same fake, its saved states keyed with `key`.
    pub fn with_state_key(mut self, key: &StateKey) -> Self {
        self.state_key = *key.as_bytes();
        self
    }

    /// The knobs, shared with the test.
    pub fn control(&self) -> Arc<Mutex<FakeControl>> {
        Arc::clone(&self.control)
    }

    /// What sequence `seq`'s KV holds.
    pub fn kv(&self, seq: SeqId) -> &[Token] {
        self.kv.get(seq as usize).map_or(&[], Vec::as_slice)
    }

    fn run_ubatches(
        &mut self,
        batch: &[BatchEntry<'_>],
        fail: Option<DecodeError>,
        delay: Duration,
        mut hook: Option<&mut Box<dyn FnMut(u64) + Send>>,
    ) -> Result<(), DecodeError> {
        let flat: Vec<(usize, Token)> =
            batch.iter().flat_map(|e| e.tokens.iter().map(move |&t| (e.seq as usize, t))).collect();
        for (k, ub) in flat.chunks(self.n_ubatch).enumerate() {
            self.ubatches += 1;
            if let Some(h) = hook.as_mut() {
                h(self.ubatches);
            }
            if self.abort.load(SeqCst) {
                return Err(DecodeError::Aborted);
            }
            // An injected failure strikes after the first micro-batch was
            // written, like a real partial failure.
            if k == 1
                && let Some(err) = fail.clone()
            {
                return Err(err);
            }
            if !delay.is_zero() {
                std::thread::sleep(delay * ub.len() as u32);
            }
            for &(s, t) in ub {
                self.kv[s].push(t);
                self.kv_lora[s].push(self.active_lora.1);
            }
        }
        match fail {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn check(&self, batch: &[BatchEntry<'_>]) -> Result<(), String> {
        let total: usize = batch.iter().map(|e| e.tokens.len()).sum();
        if total == 0 || total > self.n_batch {
            return Err(format!("fake: batch of {total} tokens (n_batch {})", self.n_batch));
        }
        let mut seen = vec![false; self.kv.len()];
        for e in batch {
            let s = usize::try_from(e.seq).ok().filter(|&s| s < self.kv.len()).ok_or("fake: bad seq id")?;
            if std::mem::replace(&mut seen[s], true) {
                return Err(format!("fake: seq {s} twice in one batch"));
            }
            if e.tokens.is_empty() {
                return Err("fake: empty entry".into());
            }
            if e.pos as usize != self.kv[s].len() {
                return Err(format!("fake: seq {s} pos {} but KV holds {}", e.pos, self.kv[s].len()));
            }
            if e.pos as usize + e.tokens.len() > self.n_ctx_seq as usize {
                return Err(format!("fake: seq {s} overflows its {} cells", self.n_ctx_seq));
            }
            if e.tokens.iter().any(|t| !(0..FAKE_VOCAB).contains(t)) {
                return Err("fake: token out of vocabulary".into());
            }
        }
        Ok(())
    }
}

impl Inference for FakeInference {
    type Model = FakeModel;

    fn n_ctx_seq(&self) -> u32 {
        self.n_ctx_seq
    }

    fn abort_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.abort)
    }

    fn decode(&mut self, batch: &[BatchEntry<'_>]) -> Result<(), DecodeError> {
        self.outputs.clear();
        self.check(batch)
            .map_err(|e| DecodeError::Failed(llama_core::Error::InvalidParam { name: "batch", reason: e }.into()))?;
        let (fail, delay, mut hook) = {
            let mut ctl = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            if ctl.record {
                ctl.log.push(batch.iter().map(|e| (e.seq, e.pos, e.tokens.len())).collect());
                ctl.lora_log.push(self.active_lora.0.clone());
            }
            (ctl.fail_next.take(), ctl.delay_per_token, ctl.on_ubatch.take())
        };
        // The hook runs without the lock held: it may use the control itself.
        let result = self.run_ubatches(batch, fail, delay, hook.as_mut());
        if let Some(h) = hook {
            self.control.lock().unwrap_or_else(PoisonError::into_inner).on_ubatch.get_or_insert(h);
        }
        if result.is_ok() {
            self.outputs = batch.iter().map(|e| e.logits.then_some(e.seq)).collect();
        }
        result
    }

    fn start_sequence(&mut self, seq: SeqId, params: SamplingParams, _prompt: &[Token]) -> Result<(), CoreError> {
        let n_seq_max = self.seeds.len() as u32;
        let slot =
            self.seeds.get_mut(seq as usize).ok_or(llama_core::Error::SeqIdOutOfRange { seq_id: seq, n_seq_max })?;
        *slot = Some(params.seed);
        Ok(())
    }

    fn sample(&mut self, seq: SeqId, entry: usize, n_probs: u32) -> Result<Sampled, SampleError> {
        if self.outputs.get(entry).copied().flatten() != Some(seq) {
            return Err(SampleError::Internal(format!("fake: entry {entry} is no output of seq {seq}")));
        }
        let seed = self.seeds[seq as usize].ok_or_else(|| SampleError::Internal("fake: no sampler".into()))?;
        let s = seq as usize;
        let token = next_token(seed, self.kv[s].iter().copied().zip(self.kv_lora[s].iter().copied()));
        let top = (0..n_probs.min(3) as Token).map(|k| ((token + k) % FAKE_VOCAB, -(k as f32) - 0.5)).collect();
        Ok(Sampled { token, logprob: (n_probs > 0).then_some(-0.5), top })
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        fake_piece(token)
    }

    fn token_piece(&self, token: Token) -> Vec<u8> {
        FakeModel::default().token_piece(token)
    }

    fn is_eog(&self, token: Token) -> bool {
        token == FAKE_EOG
    }

    fn kv_seq_rm(&mut self, seq: SeqId, from: Pos) -> bool {
        if let Some(kv) = self.kv.get_mut(seq as usize) {
            kv.truncate(from.max(0) as usize);
            self.kv_lora[seq as usize].truncate(from.max(0) as usize);
        }
        true
    }

    fn kv_shift(&mut self, seq: SeqId, keep: Pos, discard: Pos, end: Pos) -> bool {
        let Some(kv) = self.kv.get_mut(seq as usize) else { return false };
        let (keep, discard, end) = (keep as usize, discard as usize, end as usize);
        if keep + discard > end || end != kv.len() {
            return false;
        }
        kv.drain(keep..keep + discard);
        self.kv_lora[seq as usize].drain(keep..keep + discard);
        true
    }

    fn kv_cells_used(&self) -> u64 {
        self.kv.iter().map(|k| k.len() as u64).sum()
    }

    fn seq_state(&mut self, seq: SeqId, tokens: &[Token]) -> Result<Vec<u8>, CoreError> {
        let n_seq_max = self.kv.len() as u32;
        let kv = self.kv.get(seq as usize).ok_or(llama_core::Error::SeqIdOutOfRange { seq_id: seq, n_seq_max })?;
        if kv.as_slice() != tokens {
            // What llama-core refuses too: tokens that are not the sequence's.
            let reason = format!("fake: {} tokens given, sequence {seq} holds {}", tokens.len(), kv.len());
            return Err(llama_core::Error::InvalidParam { name: "tokens", reason }.into());
        }
        let body: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        let mut out = FAKE_STATE_MAGIC.to_vec();
        out.extend_from_slice(&fake_state_tag(&self.state_key, &body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn set_seq_state(&mut self, seq: SeqId, bytes: &[u8]) -> Result<Vec<Token>, CoreError> {
        let n_seq_max = self.kv.len() as u32;
        if seq < 0 || seq as u32 >= n_seq_max {
            return Err(llama_core::Error::SeqIdOutOfRange { seq_id: seq, n_seq_max }.into());
        }
        let refuse = |why: &str| CoreError::from(llama_core::Error::State(format!("fake: {why}")));
        if bytes.len() < 16 || &bytes[..8] != FAKE_STATE_MAGIC || !(bytes.len() - 16).is_multiple_of(4) {
            return Err(refuse("not a fake state"));
        }
        let body = &bytes[16..];
        if bytes[8..16] != fake_state_tag(&self.state_key, body).to_le_bytes() {
            return Err(refuse("state authentication failed"));
        }
        let tokens: Vec<Token> = body.chunks_exact(4).map(|b| Token::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if tokens.len() > self.n_ctx_seq as usize || tokens.iter().any(|t| !(0..FAKE_VOCAB).contains(t)) {
            return Err(refuse("the state does not fit this fake"));
        }
        self.kv[seq as usize].clone_from(&tokens);
        // A state does not say which adapters computed it.
        self.kv_lora[seq as usize] = vec![0; tokens.len()];
        Ok(tokens)
    }

    fn lora_adapters(&self) -> Vec<LoraAdapterInfo> {
        self.lora.clone()
    }

    fn set_lora(&mut self, scales: &[f32]) -> Result<(), CoreError> {
        let fail = std::mem::take(&mut self.control.lock().unwrap_or_else(PoisonError::into_inner).fail_set_lora);
        if fail {
            self.active_lora = (vec![0.0; self.lora.len()], 0);
            let reason = "fake: injected failure".into();
            return Err(llama_core::Error::InvalidParam { name: "lora", reason }.into());
        }
        if scales.len() != self.lora.len() || scales.iter().any(|s| !s.is_finite()) {
            let reason = format!("fake: scales {scales:?} for {} adapters", self.lora.len());
            return Err(llama_core::Error::InvalidParam { name: "lora", reason }.into());
        }
        self.active_lora = (scales.to_vec(), fake_lora_hash(scales));
        Ok(())
    }

    fn embed(&mut self, tokens: &[Token]) -> Result<Vec<f32>, CoreError> {
        Ok((0..FAKE_EMBD as u32).map(|k| fake_next_token(k, tokens) as f32).collect())
    }
}
