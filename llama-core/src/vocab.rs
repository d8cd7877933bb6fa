//! The tokenizer: text ↔ tokens and token pieces, over llama.cpp's
//! `llama_vocab`. The pure parts live next door: where long texts are cut
//! (`special_cuts.rs`) and the streaming UTF-8 decoder (`decoder.rs`).

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use llama_sys as sys;

use crate::special_cuts::Specials;
use crate::{Error, Result, Token};

/// A model's vocabulary. Borrowed from its [`Model`](crate::Model) and only
/// reachable through [`Model::vocab`](crate::Model::vocab), so it can never
/// outlive the model.
#[derive(Debug)]
pub struct Vocab {
    ptr: NonNull<sys::llama_vocab>,
    n_tokens: i32,
    first_bytes: OnceLock<Arc<FirstBytes>>,
    specials: OnceLock<Option<Specials>>,
    /// Longest piece of any token, in bytes (computed on first use).
    max_piece: OnceLock<usize>,
}

// SAFETY: the vocabulary is immutable after the model loads; every function
// we call on it takes a `const llama_vocab *` and only reads (llama.cpp's
// server tokenizes from many HTTP threads at once against one vocab).
unsafe impl Send for Vocab {}
// SAFETY: see `Send`.
unsafe impl Sync for Vocab {}

/// Longest text [`Vocab::tokenize`] accepts, in bytes. llama.cpp counts in
/// `int32_t`; this keeps every intermediate size far from overflow.
pub const MAX_TOKENIZE_BYTES: usize = 256 << 20;

/// [`Vocab::tokenize`] with `parse_special` cuts texts longer than this
/// into pieces at special-token strings; shorter ones (every ordinary
/// prompt) go to llama.cpp in one call.
const CHUNK_ABOVE_BYTES: usize = 16 << 10;

/// Special-token strings per piece when cutting: llama.cpp's special-token
/// partition costs grows with the square of their number in one call.
const SPECIALS_PER_CHUNK: usize = 256;

impl Vocab {
    /// # Safety
    /// `ptr` must be the vocab of a live model and the returned value must
    /// not outlive that model.
    pub(crate) unsafe fn from_raw(ptr: NonNull<sys::llama_vocab>) -> Vocab {
        // SAFETY: the caller guarantees `ptr` is a live vocab.
        let n_tokens = unsafe { sys::llama_vocab_n_tokens(ptr.as_ptr()) };
        Vocab { ptr, n_tokens, first_bytes: OnceLock::new(), specials: OnceLock::new(), max_piece: OnceLock::new() }
    }

    fn raw(&self) -> *const sys::llama_vocab {
        self.ptr.as_ptr()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> i32 {
        self.n_tokens
    }

    /// `Ok` when `token` is a valid id of this vocabulary.
    ///
    /// # Errors
    /// [`Error::TokenOutOfVocab`].
    pub fn check_token(&self, token: Token) -> Result<()> {
        if (0..self.n_tokens).contains(&token) {
            Ok(())
        } else {
            Err(Error::TokenOutOfVocab { token, n_vocab: self.n_tokens })
        }
    }

    /// Split `text` into tokens. `add_special` adds BOS/EOS as the model
    /// wants; `parse_special` turns special-token text (like `<|im_end|>`)
    /// into the special token instead of plain text.
    ///
    /// llama.cpp's special-token partition takes time quadratic in the
    /// number of special-token strings in one call, so with
    /// `parse_special`, texts over 16 KiB are cut after some of those
    /// strings (about every 256) and tokenized piece by piece, with the
    /// same result as one call (`special_cuts.rs` in the source says why).
    ///
    /// # Errors
    /// [`Error::Tokenize`] for text over [`MAX_TOKENIZE_BYTES`] or a count
    /// llama.cpp cannot report; [`Error::Exception`] if llama.cpp throws (a
    /// malformed tokenizer table).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        if parse_special && text.len() > CHUNK_ABOVE_BYTES {
            return self.tokenize_cut(text, add_special, SPECIALS_PER_CHUNK);
        }
        self.tokenize_once(text, add_special, parse_special)
    }

    /// [`tokenize`](Self::tokenize) with `parse_special`, cut after every
    /// `specials_per_chunk`-th special-token string where that is safe,
    /// whatever the length of `text`. A test hook (feature `testing`, not
    /// a stable API): tests compare it with the one-call path.
    ///
    /// # Errors
    /// As [`tokenize`](Self::tokenize).
    #[cfg(feature = "testing")]
    pub fn tokenize_chunked(&self, text: &str, add_special: bool, specials_per_chunk: usize) -> Result<Vec<Token>> {
        self.tokenize_cut(text, add_special, specials_per_chunk)
    }

    /// Where [`tokenize_chunked`](Self::tokenize_chunked) cuts `text`
    /// (byte offsets). A test hook (feature `testing`, not a stable API).
    #[cfg(feature = "testing")]
    pub fn special_cuts(&self, text: &str, specials_per_chunk: usize) -> Vec<usize> {
        self.cuts(text, specials_per_chunk)
    }

    /// `tokenize` with `parse_special`, in pieces cut after about every
    /// `specials_per_chunk`-th special-token string.
    fn tokenize_cut(&self, text: &str, add_special: bool, specials_per_chunk: usize) -> Result<Vec<Token>> {
        check_tokenize_len(text)?;
        let cuts = self.cuts(text, specials_per_chunk);
        if cuts.is_empty() {
            return self.tokenize_once(text, add_special, true);
        }
        // What llama.cpp adds around the whole text for the tokenizer types
        // `specials` admits (SPM, BPE, UGM): BOS first, EOS last.
        // SAFETY: read-only query on a live vocab.
        let add_bos = unsafe { sys::llama_vocab_get_add_bos(self.raw()) };
        // SAFETY: read-only query on a live vocab.
        let add_eos = unsafe { sys::llama_vocab_get_add_eos(self.raw()) };
        let mut out = Vec::with_capacity(text.len() / 4 + 2);
        if add_special && add_bos {
            out.push(self.bos().ok_or_else(|| Error::Tokenize("the model adds BOS but has none".into()))?);
        }
        let mut start = 0;
        for end in cuts.into_iter().chain([text.len()]) {
            // Cuts are increasing char boundaries (checked in `cuts`).
            let piece = text.get(start..end).ok_or_else(|| Error::Tokenize("bad cut".into()))?;
            out.extend(self.tokenize_once(piece, false, true)?);
            start = end;
        }
        if add_special && add_eos {
            out.push(self.eos().ok_or_else(|| Error::Tokenize("the model adds EOS but has none".into()))?);
        }
        Ok(out)
    }

    /// Where [`tokenize_cut`](Self::tokenize_cut) cuts `text` (byte offsets).
    fn cuts(&self, text: &str, specials_per_chunk: usize) -> Vec<usize> {
        match self.specials() {
            Some(sp) => sp.cuts(text, specials_per_chunk.max(1)),
            None => Vec::new(),
        }
    }

    /// One `llama_tokenize` call.
    fn tokenize_once(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        check_tokenize_len(text)?;
        // A token covers at least one byte, plus BOS/EOS/separators.
        let mut cap = text.len() + 8;
        for _ in 0..2 {
            let mut out: Vec<Token> = Vec::with_capacity(cap);
            let mut n = 0;
            // SAFETY: `text` is valid UTF-8 (llama.cpp throws on invalid
            // UTF-8, so the &str type is load-bearing) of the given length;
            // `out` has room for `cap` tokens, and llama.cpp writes at most
            // `n_tokens_max` = `cap` of them.
            // Through the shim: a malformed tokenizer table (UGM
            // charsmap) makes llama.cpp throw.
            let status = unsafe {
                sys::llrs_tokenize(
                    self.raw(),
                    text.as_ptr().cast(),
                    text.len() as i32,
                    out.as_mut_ptr(),
                    cap as i32,
                    add_special,
                    parse_special,
                    &mut n,
                )
            };
            crate::ffi::guard(status, "llama_tokenize")?;
            if n == i32::MIN {
                return Err(Error::Tokenize("token count overflows".into()));
            }
            if n >= 0 {
                // SAFETY: llama.cpp initialised the first `n` ≤ `cap` slots.
                unsafe { out.set_len(n as usize) };
                return Ok(out);
            }
            cap = n.unsigned_abs() as usize;
        }
        Err(Error::Tokenize("tokenizer reported inconsistent sizes".into()))
    }

    /// The special-token strings, built on first use and cached; `None`
    /// when cutting is not known to be exact for this tokenizer type or
    /// there are none.
    fn specials(&self) -> Option<&Specials> {
        self.specials.get_or_init(|| Specials::from_patterns(self.special_strings()?)).as_ref()
    }

    /// Each distinct text of a special token (attribute CONTROL,
    /// USER_DEFINED or UNKNOWN: exactly the ones llama.cpp's special-token
    /// partition looks for) and whether any token with that text has
    /// RSTRIP. `None` for tokenizer types where cutting is not known to be
    /// exact (see [`Specials`]).
    fn special_strings(&self) -> Option<BTreeMap<Vec<u8>, bool>> {
        // SAFETY: read-only query on a live vocab.
        let kind = unsafe { sys::llama_vocab_type(self.raw()) };
        if ![sys::LLAMA_VOCAB_TYPE_SPM, sys::LLAMA_VOCAB_TYPE_BPE, sys::LLAMA_VOCAB_TYPE_UGM].contains(&kind) {
            return None;
        }
        let special =
            sys::LLAMA_TOKEN_ATTR_CONTROL | sys::LLAMA_TOKEN_ATTR_USER_DEFINED | sys::LLAMA_TOKEN_ATTR_UNKNOWN;
        let mut by_text: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        for t in 0..self.n_tokens {
            // SAFETY: `t` is a valid id; the query only reads.
            let attr = unsafe { sys::llama_vocab_get_attr(self.raw(), t) };
            if attr & special == 0 {
                continue;
            }
            // For these attributes and tokenizer types, the piece (with
            // `special`) is the token's text verbatim, the very string the
            // partition searches for (llama_vocab_get_text would stop at a
            // NUL byte).
            let text = self.token_to_piece(t, true).ok()?;
            if text.is_empty() {
                continue;
            }
            *by_text.entry(text).or_default() |= attr & sys::LLAMA_TOKEN_ATTR_RSTRIP != 0;
        }
        Some(by_text)
    }

    /// The raw bytes of one token. Pieces may end in the middle of a UTF-8
    /// character; use [`TokenDecoder`](crate::TokenDecoder) to turn a
    /// stream of them into text.
    /// With `special`, control tokens render as their text (`<|im_end|>`).
    ///
    /// # Errors
    /// [`Error::TokenOutOfVocab`]; [`Error::Tokenize`] when llama.cpp reports
    /// inconsistent sizes; [`Error::Exception`] if it throws.
    pub fn token_to_piece(&self, token: Token, special: bool) -> Result<Vec<u8>> {
        self.check_token(token)?;
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            let mut n = 0;
            // SAFETY: token is in range (checked above, llama.cpp indexes a
            // vector with it); llama.cpp writes at most `buf.len()` bytes.
            let status = unsafe {
                sys::llrs_token_to_piece(
                    self.raw(),
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                    &mut n,
                )
            };
            crate::ffi::guard(status, "llama_token_to_piece")?;
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Err(Error::Tokenize(format!("token {token} has an unstable piece length")))
    }

    /// The longest piece of any token in bytes, with special tokens
    /// rendered as text (the larger of the two renderings). Computed once
    /// per vocabulary (one `token_to_piece` per token, a few milliseconds).
    pub fn max_piece_len(&self) -> usize {
        *self.max_piece.get_or_init(|| {
            (0..self.n_tokens).filter_map(|t| self.token_to_piece(t, true).ok().map(|p| p.len())).max().unwrap_or(0)
        })
    }

    /// Tokens back to text. Invalid UTF-8 (possible when the tokens are an
    /// arbitrary slice) is replaced with U+FFFD.
    ///
    /// # Errors
    /// [`Error::TokenOutOfVocab`] for an id the vocabulary does not have;
    /// [`Error::Tokenize`] when the text could exceed what llama.cpp can
    /// count: it sums the piece lengths in an `int32_t`, so the number of
    /// tokens times the longest piece (plus a byte per token for the space
    /// some tokenizers insert) must stay below `i32::MAX`.
    pub fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String> {
        for &t in tokens {
            self.check_token(t)?;
        }
        let per_token = self.max_piece_len() + 1;
        if tokens.len().saturating_mul(per_token) >= i32::MAX as usize / 2 {
            return Err(Error::Tokenize(format!(
                "{} tokens of up to {per_token} bytes each could overflow llama.cpp's 32-bit text length",
                tokens.len()
            )));
        }
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        for _ in 0..2 {
            let mut n = 0;
            // SAFETY: every token is in range (checked above); llama.cpp
            // reads `tokens.len()` tokens and writes at most `buf.len()` bytes.
            let status = unsafe {
                sys::llrs_detokenize(
                    self.raw(),
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len().min(i32::MAX as usize) as i32,
                    remove_special,
                    unparse_special,
                    &mut n,
                )
            };
            crate::ffi::guard(status, "llama_detokenize")?;
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Err(Error::Tokenize("detokenizer reported inconsistent sizes".into()))
    }

    fn special(&self, t: Token) -> Option<Token> {
        (0..self.n_tokens).contains(&t).then_some(t)
    }

    /// Beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: read-only query on a live vocab.
        self.special(unsafe { sys::llama_vocab_bos(self.raw()) })
    }

    /// End-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: read-only query on a live vocab.
        self.special(unsafe { sys::llama_vocab_eos(self.raw()) })
    }

    /// Separator token (BERT's `[SEP]`, XLM-R's `</s>`), if the model has one.
    pub fn sep(&self) -> Option<Token> {
        // SAFETY: read-only query on a live vocab.
        self.special(unsafe { sys::llama_vocab_sep(self.raw()) })
    }

    /// End-of-turn token, if the model has one.
    pub fn eot(&self) -> Option<Token> {
        // SAFETY: read-only query on a live vocab.
        self.special(unsafe { sys::llama_vocab_eot(self.raw()) })
    }

    /// Newline token, if the model has one.
    pub fn nl(&self) -> Option<Token> {
        // SAFETY: read-only query on a live vocab.
        self.special(unsafe { sys::llama_vocab_nl(self.raw()) })
    }

    /// Whether tokenizing with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        // SAFETY: read-only query on a live vocab.
        unsafe { sys::llama_vocab_get_add_bos(self.raw()) }
    }

    /// Whether the model's metadata asks for EOS after a text
    /// (`tokenizer.ggml.add_eos_token`); rerankers use it to lay out a
    /// query and a document.
    pub fn add_eos(&self) -> bool {
        // SAFETY: read-only query on a live vocab.
        unsafe { sys::llama_vocab_get_add_eos(self.raw()) }
    }

    /// Whether the model's metadata asks for a separator between two texts
    /// (`tokenizer.ggml.add_sep_token`; on by default for WordPiece).
    pub fn add_sep(&self) -> bool {
        // SAFETY: read-only query on a live vocab.
        unsafe { sys::llama_vocab_get_add_sep(self.raw()) }
    }

    /// The fill-in-the-middle tokens the model has (code models: prefix,
    /// suffix, middle, padding, repository and file separators).
    pub fn fim(&self) -> FimTokens {
        let query = |f: unsafe extern "C-unwind" fn(*const sys::llama_vocab) -> sys::llama_token| {
            // SAFETY: `f` is one of llama.cpp's read-only special-token
            // queries, called on a live vocab; they do not throw.
            self.special(unsafe { f(self.raw()) })
        };
        FimTokens {
            pre: query(sys::llama_vocab_fim_pre),
            suf: query(sys::llama_vocab_fim_suf),
            mid: query(sys::llama_vocab_fim_mid),
            pad: query(sys::llama_vocab_fim_pad),
            rep: query(sys::llama_vocab_fim_rep),
            sep: query(sys::llama_vocab_fim_sep),
        }
    }

    /// Whether `token` ends generation (EOS, EOT, …). Out-of-range ids are not.
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: the id is range-checked first; the query only reads.
        self.check_token(token).is_ok() && unsafe { sys::llama_vocab_is_eog(self.raw(), token) }
    }

    /// The first byte of every token's piece, as grammars see it; built on
    /// first use and cached (one `token_to_piece` per token).
    pub(crate) fn first_bytes(&self) -> Arc<FirstBytes> {
        self.first_bytes.get_or_init(|| Arc::new(FirstBytes::new(self))).clone()
    }

    /// Whether `token` is a control token. Out-of-range ids are not.
    pub fn is_control(&self, token: Token) -> bool {
        // SAFETY: the id is range-checked first; the query only reads.
        self.check_token(token).is_ok() && unsafe { sys::llama_vocab_is_control(self.raw(), token) }
    }
}

fn check_tokenize_len(text: &str) -> Result<()> {
    if text.len() > MAX_TOKENIZE_BYTES {
        return Err(Error::Tokenize(format!(
            "text is {} bytes; at most {MAX_TOKENIZE_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}

/// Which ASCII byte each token's piece starts with, and which tokens are
/// exactly one ASCII byte: what the grammar prefilter of
/// [`Sampler`](crate::Sampler) needs. Pieces are taken with `special` set,
/// as llama.cpp's grammar sampler reads them.
pub(crate) struct FirstBytes {
    /// Per token id: its piece's first byte when that is ASCII and not NUL,
    /// else 0. End-of-generation tokens are 0 too: grammars judge them by
    /// their state, not their text.
    pub(crate) first: Vec<u8>,
    /// Per ASCII byte: a token (not end-of-generation) whose whole piece is
    /// that byte.
    pub(crate) single: [Option<Token>; 128],
}

impl std::fmt::Debug for FirstBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstBytes").field("tokens", &self.first.len()).finish_non_exhaustive()
    }
}

impl FirstBytes {
    fn new(vocab: &Vocab) -> FirstBytes {
        let mut first = vec![0u8; vocab.n_tokens.max(0) as usize];
        let mut single = [None; 128];
        for (t, slot) in (0..vocab.n_tokens).zip(first.iter_mut()) {
            if vocab.is_eog(t) {
                continue;
            }
            let piece = vocab.token_to_piece(t, true).unwrap_or_default();
            match piece.first() {
                Some(&b) if (1..0x80).contains(&b) => {
                    *slot = b;
                    if piece.len() == 1 {
                        single[b as usize].get_or_insert(t);
                    }
                }
                _ => {}
            }
        }
        FirstBytes { first, single }
    }
}

/// A model's fill-in-the-middle tokens ([`Vocab::fim`]); `None` where the
/// model has no such token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FimTokens {
    /// Starts the code before the gap.
    pub pre: Option<Token>,
    /// Starts the code after the gap.
    pub suf: Option<Token>,
    /// Where the model writes the gap's content.
    pub mid: Option<Token>,
    /// Padding.
    pub pad: Option<Token>,
    /// Starts the repository name (repository-level prompts).
    pub rep: Option<Token>,
    /// Separates files (repository-level prompts).
    pub sep: Option<Token>,
}
