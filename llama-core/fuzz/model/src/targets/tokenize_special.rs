//! Fuzz target `tokenize_special`: any text through the real model's
//! tokenizer with `parse_special` (as every server prompt is tokenized),
//! then back. Never a crash; every id in the vocabulary; the chunked path
//! (cut after every special-token string) gives the same tokens as one
//! call; detokenizing gives the text back when every byte of it has a
//! token; streaming the pieces through a `TokenDecoder` gives the same text
//! as `detokenize`.
//!
//! The default model's vocabulary has no token for some bytes (0x06, for
//! one: `tokenize("\x06")` is empty); llama.cpp's BPE drops them, so texts
//! with such bytes do not round-trip, by the model's design.
//!
//! Input: byte 0 holds flags (bit 0: `add_special`; bits 1–3: repeat the
//! text 2^n times, to reach the lengths where `tokenize` cuts long texts);
//! the rest is the text (lossy UTF-8).
//!
//! Compiled into the model fuzz crate and into llama-core's corpus-replay
//! test (it names only `llama_core`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use llama_core::{Model, ModelParams, TokenDecoder};

/// The default model, found above this crate's directory (`LLAMA_FUZZ_MODEL` overrides).
pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LLAMA_FUZZ_MODEL") {
        return PathBuf::from(p);
    }
    let rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(rel))
}

struct Fixture {
    model: Arc<Model>,
    /// Bytes that some token's piece is exactly.
    byte_tokens: [bool; 256],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let params = ModelParams { vocab_only: true, ..ModelParams::default() };
        let model = match Model::load(model_path(), &params) {
            Ok(m) => Arc::new(m),
            Err(e) => panic!("the default model does not load from {} (run `make setup`): {e}", model_path().display()),
        };
        let mut byte_tokens = [false; 256];
        for t in 0..model.vocab().n_tokens() {
            if let Ok(piece) = model.vocab().token_to_piece(t, false)
                && let [b] = piece[..]
            {
                byte_tokens[usize::from(b)] = true;
            }
        }
        Fixture { model, byte_tokens }
    })
}

/// Run one input.
pub fn tokenize_special(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let add_special = flags & 1 != 0;
    let text = String::from_utf8_lossy(rest).repeat(1 << ((flags >> 1) & 7));
    let f = fixture();
    let vocab = f.model.vocab();

    let tokens = match vocab.tokenize(&text, add_special, true) {
        Ok(t) => t,
        Err(e) => panic!("tokenizing {} bytes of valid UTF-8 failed: {e}", text.len()),
    };
    for &t in &tokens {
        assert!(vocab.check_token(t).is_ok(), "token {t} outside the vocabulary");
    }
    if text.len() <= 4096 {
        // Cut after every special-token string where that is safe: same tokens.
        match vocab.tokenize_chunked(&text, add_special, 1) {
            Ok(chunked) => assert!(chunked == tokens, "chunked tokenization differs"),
            Err(e) => panic!("chunked tokenization failed: {e}"),
        }
    }

    let detok = match vocab.detokenize(&tokens, false, true) {
        Ok(s) => s,
        Err(e) => panic!("detokenizing {} tokens failed: {e}", tokens.len()),
    };
    let representable = text.bytes().all(|b| f.byte_tokens[usize::from(b)]);
    if representable && (!add_special || !vocab.add_bos()) {
        assert!(detok == text, "round trip changed the text: {text:?} → {detok:?}");
    }

    let mut decoder = TokenDecoder::new();
    let mut streamed = String::new();
    for &t in &tokens {
        match vocab.token_to_piece(t, true) {
            Ok(piece) => streamed.push_str(&decoder.push(&piece)),
            Err(e) => panic!("token_to_piece({t}) failed: {e}"),
        }
    }
    streamed.push_str(&decoder.finish());
    assert!(streamed == detok, "pieces streamed through TokenDecoder differ from detokenize");
}
