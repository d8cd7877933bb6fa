//! Every endpoint over real HTTP against the real `llama-server` binary and
//! the real model; responses are checked against the OpenAPI schemas.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::{Server, assert_schema, sse_data};
use reqwest::StatusCode;
use serde_json::{Value, json};

static SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());
const ARGS: &[&str] = &["--metrics", "--alias", "test-model", "--max-body", "65536"];

async fn server() -> Arc<Server> {
    common::shared(&SERVER, ARGS).await
}

async fn post(s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new().post(s.url(path)).json(&body).send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn get(s: &Server, path: &str) -> (StatusCode, Value) {
    let r = reqwest::get(s.url(path)).await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// POST and read an SSE body; returns the parsed `data:` payloads (`[DONE]` as a string).
async fn stream(s: &Server, path: &str, body: Value) -> Vec<Value> {
    let r = reqwest::Client::new().post(s.url(path)).json(&body).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    sse_data(&text).into_iter().map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d))).collect()
}

fn chat(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": "test-model", "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 8});
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

#[tokio::test]
async fn info_endpoints() {
    let s = server().await;
    assert_eq!(get(&s, "/health").await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(get(&s, "/v1/health").await.0, StatusCode::OK);
    for path in ["/v1/models", "/models"] {
        let (status, v) = get(&s, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_schema("ModelList", &v);
        assert_eq!(v["data"][0]["id"], "test-model");
        assert_eq!(v["data"][0]["meta"]["n_vocab"], 49152);
    }
    let (status, v) = get(&s, "/props").await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("Props", &v);
    assert_eq!(v["total_slots"], 2);
    assert_eq!(v["default_generation_settings"]["n_ctx"], 512);
    assert!(v["chat_template"].as_str().unwrap().contains("im_start"), "{v}");
    let (status, v) = get(&s, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("Index", &v);
    let (status, v) = get(&s, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, common::openapi());
    let (status, v) = get(&s, "/slots").await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("Slots", &v);
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn chat_completion() {
    let s = server().await;
    let (status, v) = post(&s, "/v1/chat/completions", chat("What is the capital of France?", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("ChatCompletion", &v);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "test-model");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{v}");
    let u = &v["usage"];
    assert_eq!(u["total_tokens"], u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap());
    assert!(u["completion_tokens"].as_u64().unwrap() <= 8);
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(u["completion_tokens"], 8);
    }
    // The alias without a v1 prefix works the same.
    let (status, v) = post(&s, "/chat/completions", chat("Hi", json!({"max_tokens": 2}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("ChatCompletion", &v);
}

#[tokio::test]
async fn chat_stream_follows_openai_framing() {
    let s = server().await;
    let events = stream(
        &s,
        "/v1/chat/completions",
        chat("Count to five.", json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
    let chunks = &events[..events.len() - 1];
    assert!(chunks.len() >= 3, "{chunks:?}");
    let id = &chunks[0]["id"];
    let created = &chunks[0]["created"];
    for c in chunks {
        assert_schema("ChatCompletionChunk", c);
        assert_eq!(&c["id"], id);
        assert_eq!(&c["created"], created);
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // The usage chunk: no choices, usage filled; the others carry usage: null.
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    let with_choices = &chunks[..chunks.len() - 1];
    for c in with_choices {
        assert!(c["usage"].is_null(), "{c}");
    }
    let (last, rest) = with_choices.split_last().unwrap();
    assert!(matches!(last["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")), "{last}");
    for c in rest {
        assert!(c["choices"][0]["finish_reason"].is_null(), "{c}");
    }
    let text: String = rest.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());

    // Without include_usage there is no usage anywhere.
    let events = stream(&s, "/v1/chat/completions", chat("Hi", json!({"stream": true, "max_tokens": 2}))).await;
    for c in &events[..events.len() - 1] {
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn chat_n_seed_logprobs_and_stop() {
    let s = server().await;
    let (status, v) =
        post(&s, "/v1/chat/completions", chat("Tell me a word.", json!({"n": 2, "seed": 7, "temperature": 1.0}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("ChatCompletion", &v);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);

    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        chat("Say yes.", json!({"logprobs": true, "top_logprobs": 2, "max_tokens": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("ChatCompletion", &v);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    for entry in content {
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2, "{entry}");
        // Greedy: the chosen token is the most likely one.
        let best = entry["top_logprobs"][0]["logprob"].as_f64().unwrap();
        assert!((entry["logprob"].as_f64().unwrap() - best).abs() < 1e-4, "{entry}");
    }

    // A stop string is removed from the output and ends with "stop".
    let body = json!({"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 12, "temperature": 0, "stop": [","]});
    let (status, v) = post(&s, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(!v["choices"][0]["text"].as_str().unwrap().contains(','), "{v}");
}

#[tokio::test]
async fn legacy_completions() {
    let s = server().await;
    let body = json!({"prompt": ["The sky is", "Water is"], "max_tokens": 4, "temperature": 0, "logprobs": 2});
    let (status, v) = post(&s, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("Completion", &v);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    let lp = &v["choices"][0]["logprobs"];
    let n = lp["tokens"].as_array().unwrap().len();
    assert!(n >= 1);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n);
    assert_eq!(lp["text_offset"][0], 0);

    // Token-id prompts and echo.
    let (_, toks) = post(&s, "/tokenize", json!({"content": "The sky is"})).await;
    let body = json!({"prompt": toks["tokens"], "max_tokens": 2, "temperature": 0, "echo": true});
    let (status, v) = post(&s, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["choices"][0]["text"].as_str().unwrap().starts_with("The sky is"), "{v}");

    let events = stream(
        &s,
        "/v1/completions",
        json!({"prompt": "Once upon a time", "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
    for c in &events[..events.len() - 1] {
        assert_schema("Completion", c);
    }
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn json_output_is_constrained() {
    let s = server().await;
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        chat(
            "Give me a JSON object describing a cat.",
            json!({"max_tokens": 48, "response_format": {"type": "json_object"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.trim_start().starts_with('{'), "{text}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(parsed.is_object());
    }

    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "confidence": {"type": "integer"}},
        "required": ["answer", "confidence"],
    });
    let rf = json!({"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": true}});
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        chat("Is the sky blue? Answer in JSON.", json!({"max_tokens": 64, "response_format": rf})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let parsed: Value = serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(parsed["answer"] == "yes" || parsed["answer"] == "no", "{parsed}");
    assert!(parsed["confidence"].is_i64(), "{parsed}");
    let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{parsed}");

    // Native: json_schema and grammar fields.
    let (status, v) = post(
        &s,
        "/completion",
        json!({"prompt": "Answer:", "n_predict": 8, "grammar": "root ::= \"yes\" | \"no\"", "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["content"] == "yes" || v["content"] == "no", "{v}");
    assert_eq!(v["stop_type"], "eos", "{v}");
}

#[tokio::test]
async fn native_completion() {
    let s = server().await;
    let body = json!({"prompt": "The capital of France is", "n_predict": 6, "temperature": 0, "n_probs": 2, "return_tokens": true});
    let (status, v) = post(&s, "/completion", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("NativeCompletion", &v);
    assert_eq!(v["stop"], true);
    assert_eq!(v["model"], "test-model");
    assert_eq!(v["tokens"].as_array().unwrap().len() as u64, v["tokens_predicted"].as_u64().unwrap());
    assert_eq!(v["completion_probabilities"].as_array().unwrap().len() as u64, v["tokens_predicted"].as_u64().unwrap());
    assert!(matches!(v["stop_type"].as_str(), Some("limit" | "eos")), "{v}");
    assert_eq!(v["generation_settings"]["n_predict"], 6);
    assert!(v["tokens_evaluated"].as_u64().unwrap() > 0);

    // Stop word.
    let (_, v) =
        post(&s, "/completion", json!({"prompt": "1, 2, 3, 4,", "n_predict": 10, "temperature": 0, "stop": [","]}))
            .await;
    assert_eq!(v["stop_type"], "word", "{v}");
    assert_eq!(v["stopping_word"], ",");

    // Token and mixed prompts; several prompts give an array.
    let (_, toks) = post(&s, "/tokenize", json!({"content": "Hello"})).await;
    let mut mixed = toks["tokens"].as_array().unwrap().clone();
    mixed.push(json!(" world"));
    let (status, v) = post(&s, "/completions", json!({"prompt": mixed, "n_predict": 2})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_schema("NativeCompletion", &v);
    let (status, v) = post(&s, "/completion", json!({"prompt": ["A", "B"], "n_predict": 2})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["index"], 1);

    // Streaming: chunks, then a final object with stop = true.
    let events = stream(&s, "/completion", json!({"prompt": "Once", "n_predict": 4, "stream": true})).await;
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(chunks.len(), 4);
    for c in chunks {
        assert_schema("NativeCompletionChunk", c);
    }
    assert_schema("NativeCompletion", last);
    assert_eq!(last["stop"], true);
    assert_eq!(last["tokens_predicted"], 4);
}

#[tokio::test]
async fn tokenizer_and_template_endpoints() {
    let s = server().await;
    let (status, v) = post(&s, "/tokenize", json!({"content": "Hello world", "add_special": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("TokenizeResponse", &v);
    let (status, d) = post(&s, "/detokenize", json!({"tokens": v["tokens"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("DetokenizeResponse", &d);
    assert_eq!(d["content"], "Hello world");
    let (status, v) = post(&s, "/apply-template", json!({"messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_schema("ApplyTemplateResponse", &v);
    let prompt = v["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("<|im_start|>user\nHi<|im_end|>") && prompt.ends_with("<|im_start|>assistant\n"),
        "{prompt}"
    );
}

#[tokio::test]
async fn errors_over_http() {
    let s = server().await;
    let client = reqwest::Client::new();
    let check = |status: StatusCode, v: &Value, want: u16, ty: &str| {
        assert_eq!(status.as_u16(), want, "{v}");
        assert_eq!(v["error"]["code"], want, "{v}");
        assert_eq!(v["error"]["type"], ty, "{v}");
        assert_schema("Error", v);
    };
    let r = client.post(s.url("/v1/chat/completions")).body("{not json").send().await.unwrap();
    let status = r.status();
    check(status, &r.json().await.unwrap(), 400, "invalid_request_error");
    // Any model name is served by the one model, as llama.cpp does.
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = post(&s, "/v1/chat/completions", chat(&"word ".repeat(700), json!({}))).await;
    check(status, &v, 400, "exceed_context_size_error");
    assert_eq!(v["error"]["n_ctx"], 512);
    assert!(v["error"]["n_prompt_tokens"].as_u64().unwrap() > 512);
    // Just over the limit, and far over it: the client gets the 413 (the body
    // is drained first), not a reset connection.
    for size in [70_000, 3_000_000] {
        let (status, v) = post(&s, "/v1/chat/completions", chat(&"x".repeat(size), json!({}))).await;
        check(status, &v, 413, "invalid_request_error");
    }
    let (status, v) = get(&s, "/no/such/route").await;
    check(status, &v, 404, "not_found_error");
    let (status, v) = get(&s, "/v1/completions").await;
    check(status, &v, 405, "invalid_request_error");
    let r = client.get(s.url("/v1/models")).header("host", "attacker.example").send().await.unwrap();
    let status = r.status();
    check(status, &r.json().await.unwrap(), 403, "permission_error");
    let (status, v) = post(&s, "/tokenize", json!({"content": 5})).await;
    check(status, &v, 400, "invalid_request_error");
    assert_eq!(v["error"]["param"], "content");
}

#[tokio::test]
async fn metrics_and_slots() {
    let s = server().await;
    let (status, _) = post(&s, "/completion", json!({"prompt": "Metrics", "n_predict": 3})).await;
    assert_eq!(status, StatusCode::OK);
    let r = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    for name in [
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_seconds_total",
        "llamacpp:tokens_predicted_seconds_total",
        "llamacpp:n_decode_total",
        "llamacpp:n_busy_slots_per_decode",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:kv_cache_usage_ratio",
        "llamacpp:kv_cache_tokens",
        "llamars_queue_depth",
        "llamars_rejected_total",
        "llamars_kv_cells_used",
        "llamars_time_to_first_token_seconds_count",
        "llamars_inter_token_latency_seconds_count",
        "llamars_requests_total{outcome=\"done\"}",
    ] {
        value(name);
    }
    assert!(value("llamacpp:tokens_predicted_total") >= 3.0);
    assert!(value("llamars_time_to_first_token_seconds_count") >= 1.0);
    assert!(value("llamars_inter_token_latency_seconds_count") >= 2.0);
    assert!(value("llamars_requests_total{outcome=\"done\"}") >= 1.0);
}
