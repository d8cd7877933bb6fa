//! The tokenizer: text ↔ tokens, special tokens, and a streaming UTF-8 decoder.

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, MatchKind};

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
    /// same result as one call (see `Specials` in the source for why).
    ///
    /// # Errors
    /// [`Error::Tokenize`] for text over [`MAX_TOKENIZE_BYTES`] or a count
    /// llama.cpp cannot report; [`Error::Exception`] if llama.cpp throws (a
    /// malformed tokenizer table).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        if parse_special && text.len() > CHUNK_ABOVE_BYTES {
            return self.tokenize_chunked(text, add_special, SPECIALS_PER_CHUNK);
        }
        self.tokenize_once(text, add_special, parse_special)
    }

    /// [`tokenize`](Self::tokenize) with `parse_special`, cut after every
    /// `specials_per_chunk`-th special-token string where that is safe,
    /// whatever the length of `text`. For tests that compare it with the
    /// one-call path.
    ///
    /// # Errors
    /// As [`tokenize`](Self::tokenize).
    #[doc(hidden)]
    pub fn tokenize_chunked(&self, text: &str, add_special: bool, specials_per_chunk: usize) -> Result<Vec<Token>> {
        check_tokenize_len(text)?;
        let cuts = self.special_cuts(text, specials_per_chunk);
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

    /// Where [`tokenize_chunked`](Self::tokenize_chunked) cuts `text`
    /// (byte offsets). For tests.
    #[doc(hidden)]
    pub fn special_cuts(&self, text: &str, specials_per_chunk: usize) -> Vec<usize> {
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
        self.specials.get_or_init(|| Specials::new(self)).as_ref()
    }

    /// The raw bytes of one token. Pieces may end in the middle of a UTF-8
    /// character; use [`TokenDecoder`] to turn a stream of them into text.
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

fn check_tokenize_len(text: &str) -> Result<()> {
    if text.len() > MAX_TOKENIZE_BYTES {
        return Err(Error::Tokenize(format!(
            "text is {} bytes; at most {MAX_TOKENIZE_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}

/// C's `isspace` in the "C" locale, which llama.cpp's lstrip/rstrip use.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The strings of a vocabulary's special tokens (attribute CONTROL,
/// USER_DEFINED or UNKNOWN: exactly the ones llama.cpp's special-token
/// partition looks for), to cut long texts where tokenizing the pieces
/// separately gives the same tokens as one call.
///
/// Why a cut at `p`, right after an occurrence `[s, p)` of special `S`,
/// is exact when (1) no other occurrence of any special overlaps `[s, p)`,
/// (2) `S` neither starts nor ends with whitespace, and (3) `S` has no
/// RSTRIP attribute or the byte at `p` is not whitespace:
///
/// llama.cpp (`tokenizer_st_partition` in `llama-vocab.cpp`) takes the
/// specials longest first; for each, it scans every remaining raw-text
/// fragment left to right for non-overlapping occurrences, replaces each
/// with the token and keeps the text on either side as raw fragments,
/// minus adjacent whitespace if the special has LSTRIP/RSTRIP.
/// - By (1), no occurrence of any special crosses `p`, so no special
///   matched before `S` splits text across `p`, and the scans of the part
///   before and after `p` find the same occurrences whether they run on the
///   whole text or on the two pieces; by (1) again `[s, p)` is never
///   consumed by another match, so `S` matches there in both.
/// - By (2), whitespace stripping of neighbouring specials stops at `S`'s
///   first and last bytes, so it never reaches across `p` either, and by
///   (3) `S`'s own RSTRIP strips nothing after `p`.
///
/// So the fragments of the whole text are the fragments of the left piece
/// followed by those of the right piece. Each fragment is then tokenized on
/// its own: BPE and UGM keep no state between fragments; SPM prefixes a
/// space to a raw fragment at the start or after a special token, and the
/// right piece starts right after the special `S`, so that is unchanged.
/// Other tokenizer types (WPM, RWKV, PLaMo-2) are not cut. BOS/EOS are
/// added once around the whole text, as llama.cpp does.
struct Specials {
    /// Every special string (deduplicated), standard semantics so that
    /// overlapping occurrences can be listed.
    matcher: AhoCorasick,
    /// Per pattern: condition (2) holds.
    edges_ok: Vec<bool>,
    /// Per pattern: some token with this text has RSTRIP.
    rstrip: Vec<bool>,
    /// The longest pattern, in bytes.
    max_len: usize,
}

impl std::fmt::Debug for Specials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Specials").field("patterns", &self.edges_ok.len()).finish_non_exhaustive()
    }
}

impl Specials {
    fn new(vocab: &Vocab) -> Option<Specials> {
        // SAFETY: read-only query on a live vocab.
        let kind = unsafe { sys::llama_vocab_type(vocab.raw()) };
        if ![sys::LLAMA_VOCAB_TYPE_SPM, sys::LLAMA_VOCAB_TYPE_BPE, sys::LLAMA_VOCAB_TYPE_UGM].contains(&kind) {
            return None;
        }
        let special =
            sys::LLAMA_TOKEN_ATTR_CONTROL | sys::LLAMA_TOKEN_ATTR_USER_DEFINED | sys::LLAMA_TOKEN_ATTR_UNKNOWN;
        let mut by_text: std::collections::BTreeMap<Vec<u8>, bool> = std::collections::BTreeMap::new();
        for t in 0..vocab.n_tokens {
            // SAFETY: `t` is a valid id; the query only reads.
            let attr = unsafe { sys::llama_vocab_get_attr(vocab.raw(), t) };
            if attr & special == 0 {
                continue;
            }
            // For these attributes and tokenizer types, the piece (with
            // `special`) is the token's text verbatim, the very string the
            // partition searches for (llama_vocab_get_text would stop at a
            // NUL byte).
            let text = vocab.token_to_piece(t, true).ok()?;
            if text.is_empty() {
                continue;
            }
            *by_text.entry(text).or_default() |= attr & sys::LLAMA_TOKEN_ATTR_RSTRIP != 0;
        }
        Specials::from_patterns(by_text)
    }

    /// From each distinct special string and whether any of its tokens has
    /// RSTRIP.
    fn from_patterns(by_text: std::collections::BTreeMap<Vec<u8>, bool>) -> Option<Specials> {
        if by_text.is_empty() {
            return None;
        }
        let max_len = by_text.keys().map(Vec::len).max().unwrap_or(0);
        let edges_ok = by_text
            .keys()
            .map(|t| !t.first().is_none_or(|&b| is_c_space(b)) && !t.last().is_none_or(|&b| is_c_space(b)))
            .collect();
        let rstrip = by_text.values().copied().collect();
        let matcher = AhoCorasick::builder().match_kind(MatchKind::Standard).build(by_text.keys()).ok()?;
        Some(Specials { matcher, edges_ok, rstrip, max_len })
    }

    /// Byte offsets (increasing, char boundaries, inside the text) where
    /// `text` can be cut, about every `per_chunk` special strings.
    fn cuts(&self, text: &str, per_chunk: usize) -> Vec<usize> {
        let bytes = text.as_bytes();
        let mut cuts = Vec::new();
        let mut since_cut = 0usize;
        for m in self.matcher.find_iter(bytes) {
            since_cut += 1;
            let (s, p, id) = (m.start(), m.end(), m.pattern().as_usize());
            if since_cut < per_chunk || p >= bytes.len() || !text.is_char_boundary(p) || !self.edges_ok[id] {
                continue;
            }
            if self.rstrip[id] && is_c_space(bytes[p]) {
                continue;
            }
            // Condition (1): every occurrence overlapping [s, p) lies in
            // this window; the only one allowed is [s, p) itself.
            let w0 = (s + 1).saturating_sub(self.max_len);
            let w1 = (p + self.max_len - 1).min(bytes.len());
            let isolated = self
                .matcher
                .find_overlapping_iter(&bytes[w0..w1])
                .map(|o| (o.start() + w0, o.end() + w0))
                .all(|(os, oe)| (os, oe) == (s, p) || oe <= s || os >= p);
            if isolated {
                cuts.push(p);
                since_cut = 0;
            }
        }
        cuts
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

#[cfg(test)]
mod tests {
    use super::*;

    fn specials(patterns: &[(&str, bool)]) -> Specials {
        Specials::from_patterns(patterns.iter().map(|(t, r)| (t.as_bytes().to_vec(), *r)).collect()).unwrap()
    }

    #[test]
    fn cuts_need_an_isolated_occurrence() {
        let sp = specials(&[("<a>", false), ("a>x", false), ("<b>", false)]);
        // "<a>" overlaps "a>x" in "<a>x": no cut after it; "<b>" is alone.
        assert_eq!(sp.cuts("<a>x<b>y", 1), vec![7]);
        assert_eq!(sp.cuts("<a>z<b>y", 1), vec![3, 7]);
        // One occurrence inside another (a longer special containing it).
        let sp = specials(&[("<s>", false), ("<s>!", false)]);
        assert_eq!(sp.cuts("<s>!.<s>.", 1), vec![8]);
        // Overlapping occurrences of the same special.
        let sp = specials(&[("aXa", false)]);
        assert_eq!(sp.cuts("aXaXa.", 1), Vec::<usize>::new());
        assert_eq!(sp.cuts("aXa.aXa.", 1), vec![3, 7]);
    }

    #[test]
    fn cuts_respect_whitespace_stripping() {
        // RSTRIP: a cut is fine only when no whitespace follows.
        let sp = specials(&[("<r>", true), ("<n>", false)]);
        assert_eq!(sp.cuts("<r> x<r>x<n> x", 1), vec![8, 12]);
        assert_eq!(sp.cuts("<r>\u{b}x<r>\tx", 1), Vec::<usize>::new());
        // Specials that start or end with whitespace are never cut after.
        let sp = specials(&[(" <w>", false), ("<w>\n", false), ("<k>", false)]);
        assert_eq!(sp.cuts("a <w>b<w>\nc<k>d", 1), vec![14]);
    }

    #[test]
    fn cuts_come_every_so_many_specials_and_only_at_char_boundaries() {
        let sp = specials(&[("<e>", false)]);
        let text = "<e>é".repeat(10);
        let cuts = sp.cuts(&text, 3);
        assert_eq!(cuts, vec![13, 28, 43]);
        assert!(cuts.iter().all(|&c| text.is_char_boundary(c)));
        // A special string that ends inside a character is not a cut point.
        let sp = Specials::from_patterns([(vec![b'<', 0xC3], false)].into_iter().collect()).unwrap();
        assert!(sp.cuts("<é<é", 1).is_empty());
    }
}
