//! In-process router tests (`tower::ServiceExt::oneshot`) with the real
//! model loaded in this process: only what the fake engine cannot show.
//! Every handler's validation, error and success paths run on the fake
//! engine, without the model file, in `router_fake.rs`.
//!
//! Kept here, and why the real model is their point:
//! - `tokenize_pieces_and_round_trip`: byte-fallback tokens, whose pieces
//!   are not UTF-8 and come back as byte arrays (the fake's tokenizer has a
//!   token per ASCII byte and never produces one);
//! - `a_banned_token_never_appears` and `a_logit_bias_with_much_text_in_all_is_applied`:
//!   that a logit bias reaches llama.cpp's sampler and changes its choice
//!   (the fake's sampling ignores biases).

mod common;

use std::sync::OnceLock;

use axum::http::StatusCode;
use common::oneshot::{post_json, send, settings_for};
use llama_server::{AppState, Ready};
use serde_json::{Value, json};

/// One state with the real model, shared by the tests of this binary.
fn ready() -> AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let s = settings_for(common::model_path().to_str().unwrap(), &[]);
            let state = AppState::new(s.clone());
            let r = Ready::load(&s, state.stats()).expect("model loads");
            state.set_ready(r);
            state
        })
        .clone()
}

async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, v) = send(ready(), post_json(path, body)).await;
    (status, v)
}

#[tokio::test]
async fn tokenize_pieces_and_round_trip() {
    let text = "Hello 🦙 world";
    let (status, v) = post("/tokenize", json!({"content": text, "with_pieces": true})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    common::assert_schema("TokenizeResponse", &v);
    let mut bytes = Vec::new();
    let mut ids = Vec::new();
    let mut saw_bytes_piece = false;
    for t in v["tokens"].as_array().unwrap() {
        ids.push(t["id"].as_i64().unwrap());
        match &t["piece"] {
            Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
            Value::Array(b) => {
                saw_bytes_piece = true;
                bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8));
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
    assert!(saw_bytes_piece, "the llama emoji should split into byte tokens: {v}");
    let (_, plain) = post("/tokenize", json!({"content": text})).await;
    assert_eq!(plain["tokens"], json!(ids));
    let (status, d) = post("/detokenize", json!({"tokens": ids})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["content"], text);
}

/// Ban the greedy choice (in each logit-bias shape that names a token) and
/// it changes.
#[tokio::test]
async fn a_banned_token_never_appears() {
    let greedy = json!({"prompt": "The capital of France is", "n_predict": 1, "temperature": 0, "return_tokens": true});
    let (_, first) = post("/completion", greedy.clone()).await;
    let top = first["tokens"][0].as_i64().unwrap();
    for bias in [json!([[top, false]]), json!({top.to_string(): false}), json!({top.to_string(): -100})] {
        let mut banned = greedy.clone();
        banned["logit_bias"] = bias.clone();
        let (status, second) = post("/completion", banned).await;
        assert_eq!(status, StatusCode::OK, "{bias}: {second}");
        assert_ne!(second["tokens"][0].as_i64().unwrap(), top, "{bias}: {second}");
    }
}

#[tokio::test]
async fn a_logit_bias_with_much_text_in_all_is_applied() {
    // 24 keys of 4 KiB (96 KiB in all: parsed on a blocking thread): token
    // ids padded with spaces, which parse as ids. Banning the greedy choice
    // among them changes it.
    let greedy = json!({"prompt": "The capital of France is", "n_predict": 1, "temperature": 0, "return_tokens": true});
    let (_, first) = post("/completion", greedy.clone()).await;
    let top = first["tokens"][0].as_i64().unwrap();
    let width = llama_server::MAX_LOGIT_BIAS_TEXT_BYTES;
    let bias: serde_json::Map<String, Value> =
        (0..23).chain([top]).map(|id| (format!("{id:>width$}"), json!(false))).collect();
    let mut banned = greedy;
    banned["logit_bias"] = Value::Object(bias);
    let (status, second) = post("/completion", banned).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["tokens"][0].as_i64().unwrap(), top, "{second}");
}
