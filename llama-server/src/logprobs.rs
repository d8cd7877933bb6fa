//! Log-probabilities of generated tokens, in the three shapes the APIs use:
//! chat completions' `logprobs.content`, the legacy `logprobs` object of
//! text completions, and llama.cpp's `completion_probabilities`.
//!
//! The chosen token's text is its piece as the model renders it (see
//! [`token_text`]); the alternatives carry the engine's text for them.

use std::collections::BTreeMap;

use llama_core::Token;
use llama_runtime::TokenEvent;
use serde::Serialize;

use crate::error::AppError;
use crate::state::Ready;

/// Most alternatives per token (`top_logprobs`, `n_probs`, `logprobs`).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Validate a count of alternatives per token (0..=[`MAX_TOP_LOGPROBS`]).
pub(crate) fn parse_top(field: &str, v: Option<i64>) -> Result<u32, AppError> {
    match v {
        None => Ok(0),
        Some(n) if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) => Ok(n as u32),
        Some(n) => {
            Err(AppError::invalid(field, format!("`{field}` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}")))
        }
    }
}

/// The text of a token, for log-probability listings (lossy UTF-8), and its bytes.
pub(crate) fn token_text(ready: &Ready, token: Token) -> (String, Vec<u8>) {
    let bytes = ready.model().token_piece(token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// One generated token with its log-probability and up to `k` alternatives:
/// an entry of chat's `logprobs.content`, and (with ids) of llama.cpp's
/// `completion_probabilities`. Log-probabilities are written as f64, as the
/// server always has.
#[derive(Debug, Serialize)]
pub(crate) struct TokenLogprob<'a> {
    bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Token>,
    logprob: f64,
    token: String,
    top_logprobs: Vec<Alternative<'a>>,
}

/// An alternative to a generated token.
#[derive(Debug, Serialize)]
struct Alternative<'a> {
    bytes: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Token>,
    logprob: f64,
    token: &'a str,
}

impl<'a> TokenLogprob<'a> {
    /// The OpenAI chat shape: no token ids.
    pub(crate) fn chat(ready: &Ready, t: &'a TokenEvent, k: u32) -> Self {
        Self::new(ready, t, k, false)
    }

    /// llama.cpp's shape: the OpenAI one plus token ids.
    pub(crate) fn native(ready: &Ready, t: &'a TokenEvent, k: u32) -> Self {
        Self::new(ready, t, k, true)
    }

    fn new(ready: &Ready, t: &'a TokenEvent, k: u32, ids: bool) -> Self {
        let (token, bytes) = token_text(ready, t.token);
        let top_logprobs = t
            .top_logprobs
            .iter()
            .take(k as usize)
            .map(|a| Alternative {
                bytes: &a.bytes,
                id: ids.then_some(a.token),
                logprob: f64::from(a.logprob),
                token: &a.text,
            })
            .collect();
        TokenLogprob {
            bytes,
            id: ids.then_some(t.token),
            logprob: f64::from(t.logprob.unwrap_or(0.0)),
            token,
            top_logprobs,
        }
    }
}

/// The legacy `logprobs` object of text completions: parallel arrays, the
/// alternatives as `{text: logprob}` maps (sorted by text; of two
/// alternatives with the same text the later one stays).
#[derive(Debug, Serialize)]
pub(crate) struct TextLogprobs {
    text_offset: Vec<usize>,
    token_logprobs: Vec<f64>,
    tokens: Vec<String>,
    top_logprobs: Vec<BTreeMap<String, f64>>,
}

impl TextLogprobs {
    /// The object for `tokens`, with up to `k` alternatives each, whose text
    /// starts at character `start_offset` of the choice; and the offset
    /// after them.
    pub(crate) fn new(ready: &Ready, tokens: &[TokenEvent], k: u32, start_offset: usize) -> (Self, usize) {
        let mut offset = start_offset;
        let mut out = TextLogprobs {
            text_offset: Vec::with_capacity(tokens.len()),
            token_logprobs: Vec::with_capacity(tokens.len()),
            tokens: Vec::with_capacity(tokens.len()),
            top_logprobs: Vec::with_capacity(tokens.len()),
        };
        for t in tokens {
            let (text, _) = token_text(ready, t.token);
            out.text_offset.push(offset);
            offset += text.chars().count();
            out.tokens.push(text);
            out.token_logprobs.push(f64::from(t.logprob.unwrap_or(0.0)));
            out.top_logprobs
                .push(t.top_logprobs.iter().take(k as usize).map(|a| (a.text.clone(), f64::from(a.logprob))).collect());
        }
        (out, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_counts() {
        assert_eq!(parse_top("top_logprobs", None).unwrap(), 0);
        assert_eq!(parse_top("n_probs", Some(20)).unwrap(), 20);
        assert!(parse_top("top_logprobs", Some(21)).is_err());
        assert!(parse_top("n_probs", Some(-1)).is_err());
    }
}
