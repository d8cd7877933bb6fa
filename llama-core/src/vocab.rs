//! The tokenizer: text ↔ tokens, special tokens, and a streaming UTF-8 decoder.

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use llama_sys as sys;

use crate::{Error, Result, Token};

/// A model's vocabulary. Borrowed from its [`Model`](crate::Model) and only
/// reachable through [`Model::vocab`](crate::Model::vocab), so it can never
/// outlive the model.
#[derive(Debug)]
pub struct Vocab {
    ptr: NonNull<sys::llama_vocab>,
    n_tokens: i32,
    first_bytes: OnceLock<Arc<FirstBytes>>,
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

impl Vocab {
    /// # Safety
    /// `ptr` must be the vocab of a live model and the returned value must
    /// not outlive that model.
    pub(crate) unsafe fn from_raw(ptr: NonNull<sys::llama_vocab>) -> Vocab {
        // SAFETY: the caller guarantees `ptr` is a live vocab.
        let n_tokens = unsafe { sys::llama_vocab_n_tokens(ptr.as_ptr()) };
        Vocab { ptr, n_tokens, first_bytes: OnceLock::new() }
    }

    fn raw(&self) -> *const sys::llama_vocab {
        self.ptr.as_ptr()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> i32 {
        self.n_tokens
    }

    /// `Ok` when `token` is a valid id of this vocabulary.
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
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        if text.len() > MAX_TOKENIZE_BYTES {
            return Err(Error::Tokenize(format!(
                "text is {} bytes; at most {MAX_TOKENIZE_BYTES} are accepted",
                text.len()
            )));
        }
        // A token covers at least one byte, plus BOS/EOS/separators.
        let mut cap = text.len() + 8;
        for _ in 0..2 {
            let mut out: Vec<Token> = Vec::with_capacity(cap);
            // SAFETY: `text` is valid UTF-8 (llama.cpp throws on invalid
            // UTF-8, so the &str type is load-bearing) of the given length;
            // `out` has room for `cap` tokens, and llama.cpp writes at most
            // `n_tokens_max` = `cap` of them.
            let n = unsafe {
                sys::llama_tokenize(
                    self.raw(),
                    text.as_ptr().cast(),
                    text.len() as i32,
                    out.as_mut_ptr(),
                    cap as i32,
                    add_special,
                    parse_special,
                )
            };
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

    /// The raw bytes of one token. Pieces may end in the middle of a UTF-8
    /// character; use [`TokenDecoder`] to turn a stream of them into text.
    /// With `special`, control tokens render as their text (`<|im_end|>`).
    pub fn token_to_piece(&self, token: Token, special: bool) -> Result<Vec<u8>> {
        self.check_token(token)?;
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            // SAFETY: token is in range (checked above, llama.cpp indexes a
            // vector with it); llama.cpp writes at most `buf.len()` bytes.
            let n = unsafe {
                sys::llama_token_to_piece(self.raw(), token, buf.as_mut_ptr().cast(), buf.len() as i32, 0, special)
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Err(Error::Tokenize(format!("token {token} has an unstable piece length")))
    }

    /// Tokens back to text. Invalid UTF-8 (possible when the tokens are an
    /// arbitrary slice) is replaced with U+FFFD.
    pub fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String> {
        for &t in tokens {
            self.check_token(t)?;
        }
        if tokens.len() > i32::MAX as usize / 64 {
            return Err(Error::Tokenize("too many tokens".into()));
        }
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        for _ in 0..2 {
            // SAFETY: every token is in range (checked above); llama.cpp
            // reads `tokens.len()` tokens and writes at most `buf.len()` bytes.
            let n = unsafe {
                sys::llama_detokenize(
                    self.raw(),
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len().min(i32::MAX as usize) as i32,
                    remove_special,
                    unparse_special,
                )
            };
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

/// Turns a stream of token pieces (raw bytes) into text, never emitting
/// half of a multi-byte character: bytes that may still be completed by the
/// next piece are held back. Bytes that can never be valid UTF-8 become
/// U+FFFD at once.
///
/// ```
/// use llama_core::TokenDecoder;
/// let mut d = TokenDecoder::new();
/// // "é" is 0xC3 0xA9, split across two tokens:
/// assert_eq!(d.push(b"caf\xC3"), "caf");
/// assert_eq!(d.push(b"\xA9!"), "\u{e9}!");
/// assert_eq!(d.finish(), "");
/// ```
#[derive(Debug, Default, Clone)]
pub struct TokenDecoder {
    pending: Vec<u8>,
}

impl TokenDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the next piece; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is exactly the prefix from_utf8 vouched for.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }

    /// Bytes still held back (an incomplete character).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// End of stream: anything still held back can never complete, so it is
    /// returned as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Forget any held-back bytes.
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}
