//! Adversarial tokenizer and detokenizer input through llama-core, and
//! multi-byte text streamed token by token through llama-runtime.
//!
//! llama-core's own tests (`llama-core/tests/real_model.rs`) cover short
//! special-token strings, 200 000 newlines, a CJK/emoji round trip through
//! `TokenDecoder` and the decoder at every split point. This suite adds what
//! they do not: input sizes in the millions, pathological single-"word"
//! input (quadratic BPE merges are the classic hazard), text made only of
//! special-token strings, every vocabulary id through the detokenizer, and
//! multi-byte text forced out of the real sampler (by a grammar) and
//! streamed through the engine.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_core::{Model, ModelParams, Token, TokenDecoder};
use llama_e2e::figures::{self, knob};
use llama_e2e::paths::model_path;
use llama_runtime::{Engine, EngineConfig, Event, FinishReason, Request, SamplingParams};
use serde_json::json;

fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(Model::load(model_path(), &ModelParams::default()).expect("the default model loads")))
        .clone()
}

/// Tokenize, detokenize, and check the round trip; returns (tokens, seconds).
fn round_trip(text: &str, parse_special: bool) -> (usize, f64) {
    let m = model();
    let t0 = Instant::now();
    let toks = m.vocab().tokenize(text, false, parse_special).expect("tokenize");
    let back = m.vocab().detokenize(&toks, false, parse_special).expect("detokenize");
    let secs = t0.elapsed().as_secs_f64();
    assert!(!toks.is_empty());
    assert_eq!(back.len(), text.len(), "round trip changed the length");
    assert!(back == text, "round trip changed the text");
    (toks.len(), secs)
}

#[test]
fn millions_of_newlines_and_one_char_repeated() {
    let n_newlines = knob("newlines", 1_000_000, 4_000_000);
    let n_repeat = knob("repeat", 1_000_000, 4_000_000);
    let long = figures::long();
    let mut inputs = vec![("newlines", "\n".repeat(n_newlines)), ("char_a", "a".repeat(n_repeat))];
    if long {
        inputs.extend([
            ("space", " ".repeat(n_repeat)),
            ("cjk_char", "語".repeat(n_repeat / 3)),
            ("digits", "7".repeat(n_repeat)),
            ("crlf", "\r\n".repeat(n_newlines / 2)),
        ]);
    }
    let mut results = serde_json::Map::new();
    for (name, text) in inputs {
        let (n_tok, secs) = round_trip(&text, false);
        // A bound that catches a quadratic blow-up (10^6 squared is far
        // beyond it) while tolerating a slow shared CI core.
        assert!(secs < 60.0, "{name}: {} bytes took {secs:.1} s", text.len());
        results.insert(name.into(), json!({"bytes": text.len(), "tokens": n_tok, "seconds": secs}));
    }
    figures::record("tokenizer_sizes", serde_json::Value::Object(results));
}

#[test]
fn only_special_token_strings() {
    let m = model();
    let v = m.vocab();
    let specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"];
    // Tokenizing special strings is linear since finding 6 was fixed (500 000
    // took over 7 minutes of CPU before, 0.25 s after); the plain-text
    // tokenization of the same text below is the larger cost.
    let reps = knob("special_reps", 50_000, 1_000_000);
    let text: String = (0..reps).map(|i| specials[i % specials.len()]).collect();

    // parse_special: every occurrence is one control token.
    let parsed = v.tokenize(&text, false, true).unwrap();
    assert_eq!(parsed.len(), reps, "each special string should be one token");
    assert!(parsed.iter().all(|&t| v.is_control(t) || v.is_eog(t)), "non-special token in {:?}", &parsed[..8]);
    // Rendering them back: with unparse_special they are text again; without,
    // they render as nothing (control tokens have no plain-text piece).
    assert_eq!(v.detokenize(&parsed, false, true).unwrap(), text);
    let silent = v.detokenize(&parsed, false, false).unwrap();
    assert!(silent.is_empty(), "control tokens rendered as {:?}", &silent[..silent.len().min(40)]);
    // remove_special may drop leading BOS / trailing EOS only; never panics.
    assert!(v.detokenize(&parsed, true, true).is_ok());

    // Without parse_special the same text is plain text: no control token,
    // and it round-trips exactly.
    let plain = v.tokenize(&text, false, false).unwrap();
    assert!(plain.len() > reps, "plain text should need several tokens per special string");
    assert!(!plain.iter().any(|&t| v.is_control(t)), "plain tokenization produced a control token");
    assert_eq!(v.detokenize(&plain, false, false).unwrap(), text);

    // Half-open and broken special strings are plain text either way.
    for s in ["<|im_start", "|im_end|>", "<|im_end|", "<||>", "<|<|im_end|>|>", "<|IM_END|>"] {
        let toks = v.tokenize(&s.repeat(1000), false, true).unwrap();
        assert_eq!(v.detokenize(&toks, false, true).unwrap(), s.repeat(1000), "{s}");
    }
}

#[test]
fn every_vocabulary_id_detokenizes() {
    let m = model();
    let v = m.vocab();
    let n = v.n_tokens();
    let all: Vec<Token> = (0..n).collect();
    for (remove, unparse) in [(false, false), (false, true), (true, false), (true, true)] {
        let text = v.detokenize(&all, remove, unparse).expect("every id in range detokenizes");
        assert!(!text.is_empty());
    }
    // Piece by piece through the streaming decoder: it must emit the same
    // text as the whole-sequence detokenizer (lossy for invalid UTF-8).
    let mut dec = TokenDecoder::new();
    let mut streamed = String::new();
    let mut raw = Vec::new();
    for &t in &all {
        let piece = v.token_to_piece(t, false).unwrap();
        raw.extend_from_slice(&piece);
        streamed.push_str(&dec.push(&piece));
    }
    streamed.push_str(&dec.finish());
    assert_eq!(streamed, String::from_utf8_lossy(&raw));
    // Out-of-range ids anywhere in the sequence are typed errors.
    for bad in [n, n + 1, -1, i32::MIN, i32::MAX] {
        let mut seq = all[..100].to_vec();
        seq.push(bad);
        assert!(v.detokenize(&seq, false, false).is_err(), "{bad}");
        assert!(v.token_to_piece(bad, true).is_err(), "{bad}");
    }
}

/// Multi-byte output forced by a grammar and streamed through the engine:
/// every event's text is complete UTF-8 (no U+FFFD from a split character)
/// and their concatenation is exactly the grammar's string.
#[test]
fn cjk_and_emoji_stream_token_by_token_through_the_engine() {
    let engine = Engine::start(
        model(),
        EngineConfig { n_ctx: 1024, n_seq_max: 2, n_threads: 2, n_threads_batch: 2, ..Default::default() },
    )
    .expect("engine starts");
    let all = ["日本語です 👩\u{200d}👧 🦀", "한국어 ✓ Ελληνικά е\u{301}", "🇫🇷🇯🇵 👍🏽 emoji", "中文字符和表情符号 😀"];
    let targets = if figures::long() { &all[..] } else { &all[..1] };
    let mut n_events = 0;
    let mut n_split_pieces = 0;
    for &target in targets {
        let escaped = target.replace('\\', "\\\\").replace('"', "\\\"");
        let mut req = Request::new("Say something:");
        req.sampling = SamplingParams { grammar: Some(format!("root ::= \"{escaped}\"")), ..SamplingParams::greedy() };
        req.max_tokens = Some(128);
        let handle = engine.submit(req).expect("submitted");
        let mut text = String::new();
        let mut finish = None;
        for ev in handle.blocking_iter() {
            match ev {
                Event::Token(t) => {
                    assert!(!t.text.contains('\u{FFFD}'), "a split character leaked as U+FFFD: {:?}", t.text);
                    let piece = engine.llama_model().vocab().token_to_piece(t.token, false).unwrap();
                    if std::str::from_utf8(&piece).is_err() {
                        n_split_pieces += 1;
                    }
                    text.push_str(&t.text);
                    n_events += 1;
                }
                Event::Done(d) => finish = Some(d.finish_reason),
                Event::Error(e) => panic!("{target}: {e}"),
                other => panic!("{target}: unexpected {other:?}"),
            }
        }
        assert_eq!(text, target);
        assert!(matches!(finish, Some(FinishReason::Eos)), "{target}: {finish:?}");
    }
    figures::record(
        "tokenizer_stream",
        json!({"targets": targets.len(), "events": n_events, "split_pieces": n_split_pieces}),
    );
    engine.shutdown_blocking(Duration::from_secs(5));
}

/// Tokenizing with `parse_special` must scale linearly in the number of
/// special-token strings: every prompt is tokenized that way (a rendered
/// chat template needs it), so a quadratic cost lets one 8 MB request of
/// `<|im_end|>` strings burn about a quarter of an hour of CPU before the
/// context check refuses it.
#[test]
fn special_token_text_tokenizes_in_linear_time() {
    let m = model();
    let time = |n: usize| {
        let text = "<|im_end|>".repeat(n);
        let t0 = Instant::now();
        let toks = m.vocab().tokenize(&text, false, true).expect("tokenize");
        assert_eq!(toks.len(), n);
        t0.elapsed()
    };
    time(1000);
    let small = time(20_000);
    let big = time(80_000);
    let ratio = big.as_secs_f64() / small.as_secs_f64().max(1e-6);
    figures::record(
        "tokenizer_special_scaling",
        json!({"20000_s": small.as_secs_f64(), "80000_s": big.as_secs_f64(), "ratio": ratio}),
    );
    // Linear is 4x; quadratic is 16x.
    assert!(ratio < 8.0, "4x the special strings took {ratio:.1}x the time ({small:?} → {big:?}): superlinear");
}
