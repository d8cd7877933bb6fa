//! Streaming UTF-8 decoding of token pieces: [`TokenDecoder`].
#![forbid(unsafe_code)]

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
