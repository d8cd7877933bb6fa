//! Wire compatibility: a fixed list of requests against one real
//! `llama-server`, every response (status, headers, body) recorded as text
//! and compared with the golden file `tests/wire/golden.txt`.
//!
//! It exists so that the server's internals can be rewritten (modules split,
//! typed response structs instead of `json!` trees, typed errors) with proof
//! that nothing changed on the wire: bodies are compared byte for byte,
//! key order and number formatting included.
//!
//! Only what varies from run to run is normalized, on the raw text (the JSON
//! is never re-serialized):
//!
//! - `id` values `chatcmpl-…` / `cmpl-…` (random) → `chatcmpl-<id>`;
//! - `created` (wall clock; on `/v1/models` the server's start time) → `<created>`;
//! - the durations and rates in `timings` (`prompt_ms`, `predicted_ms`,
//!   `*_per_token_ms`, `*_per_second`) → `<time>`; the token counts in it stay;
//! - the workspace path (in `/props` `model_path`) → `<workspace>`;
//! - `id_slot` values of a slot that ran a request → `<slot>` (which slot
//!   a choice lands in depends on what the other slots cache; `-1` stays);
//! - the per-slot token counts of `/slots` (`n_prompt_tokens`, `n_cached`,
//!   `n_decoded`) → `<n>`: which slot a choice of a several-choice request
//!   lands in varies between runs;
//! - every sample value of `/metrics` (latencies, throughputs, counters
//!   that depend on timing) → `<value>`; names, labels, HELP and TYPE stay;
//! - the `date` response header is dropped, and `content-length` becomes
//!   `<len>` when the body had something normalized (its length then
//!   depends on the digits of a duration);
//! - SSE keep-alive comments (sent only when a stream stalls for 15 s).
//!
//! Requests are sent one at a time, each only once every slot is idle, so
//! that prompt-cache hits (`cached_tokens`, `cache_n`) are the same on
//! every run. Streams with several choices interleave the
//! choices as the engine happens to deliver them, and the `timings` ride on
//! whichever choice finishes last: for those (marked "events regrouped by
//! choice" in the golden) the events are put in choice order, each kept
//! byte for byte, and the `timings` member is moved to the last finish chunk
//! with its token counts → `<n>` (they are the last finisher's).
//!
//! `WIRE_BLESS=1 cargo test -p llama-e2e --test wire_compat` rewrites the
//! golden. The last actual recording is always written to
//! `target/wire/actual.txt`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use llama_e2e::http::{self, Request, Response};
use llama_e2e::paths;
use llama_e2e::server::{SMALL, ServerProcess};
use llama_e2e::sse;
use serde_json::Value;

/// The API key the server is started with; every request carries it unless
/// its block in the golden says `(without the wire-key Authorization header)`.
const API_KEY: &str = "wire-key";
/// `--max-body`, small so that 413 is cheap to reach.
const MAX_BODY: usize = 65536;
/// The one origin `--cors-origins` allows.
const ORIGIN: &str = "http://wire.test";
/// Per-read timeout of every request.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wire").join("golden.txt")
}

fn actual_path() -> PathBuf {
    let profile = paths::profile_dir();
    profile.parent().map_or(profile.clone(), |p| p.to_path_buf()).join("wire").join("actual.txt")
}

// ---------------------------------------------------------------- the cases

/// One request of the fixed list.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    /// Headers sent and shown (besides Host, Content-Length, Connection and the API key).
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// What the golden shows instead of the body (for a large one).
    shown_body: Option<String>,
    /// Send `Authorization: Bearer <API_KEY>`.
    auth: bool,
    /// A stream of several choices: regroup its events by choice.
    regroup: bool,
}

impl Case {
    fn new(name: &'static str, method: &'static str, path: &'static str) -> Self {
        Case { name, method, path, headers: Vec::new(), body: Vec::new(), shown_body: None, auth: true, regroup: false }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn no_auth(mut self) -> Self {
        self.auth = false;
        self
    }

    fn regroup(mut self) -> Self {
        self.regroup = true;
        self
    }

    fn request(&self) -> Request {
        let mut req = Request::new(self.method, self.path).body(self.body.clone());
        if self.auth {
            req = req.header("Authorization", &format!("Bearer {API_KEY}"));
        }
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        req
    }
}

fn get(name: &'static str, path: &'static str) -> Case {
    Case::new(name, "GET", path)
}

/// `POST path` with a JSON body, written out exactly as it is sent.
fn post(name: &'static str, path: &'static str, json: &str) -> Case {
    Case::new(name, "POST", path).header("Content-Type", "application/json").raw_body(json)
}

const CHAT: &str = "/v1/chat/completions";
const V1_COMPLETIONS: &str = "/v1/completions";
const COMPLETION: &str = "/completion";

/// The fixed list. Append new cases at the end of a group; renaming or
/// reordering shows up as a golden difference (bless it on purpose).
fn cases() -> Vec<Case> {
    let big_prompt = "a".repeat(MAX_BODY + 1000);
    let oversized = format!(r#"{{"prompt":"{big_prompt}","max_tokens":1}}"#);
    let oversized_shown = format!(r#"<{} bytes: {{"prompt":"aaa…","max_tokens":1}}>"#, oversized.len());
    let mut oversized_case = post("413 body over --max-body", V1_COMPLETIONS, &oversized);
    oversized_case.shown_body = Some(oversized_shown);

    vec![
        // ---- health, info
        get("health", "/health"),
        get("health (v1)", "/v1/health"),
        get("health without a key (public path)", "/health").no_auth(),
        get("index", "/"),
        get("props", "/props"),
        get("models (v1)", "/v1/models"),
        get("models", "/models"),
        get("slots before any request", "/slots"),
        get("openapi document", "/openapi.json"),
        // ---- /v1/chat/completions
        post(
            "chat: basic",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"seed":42}"#,
        ),
        post(
            "chat: same request again (prompt cache hit)",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"seed":42}"#,
        ),
        post(
            "chat: system, assistant and user turns",
            CHAT,
            r#"{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Name a color."},{"role":"assistant","content":"Blue."},{"role":"user","content":"Another."}],"max_tokens":3,"temperature":0,"seed":42}"#,
        ),
        post(
            "chat: content as parts",
            CHAT,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":2,"temperature":0}"#,
        ),
        post(
            "chat: stream",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hello there"}],"max_tokens":3,"temperature":0,"seed":42,"stream":true}"#,
        ),
        post(
            "chat: stream with include_usage",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hello there"}],"max_tokens":3,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        post(
            "chat: n=2",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Count to three"}],"max_tokens":3,"temperature":0,"seed":42,"n":2}"#,
        ),
        post(
            "chat: n=2 stream",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Count to three"}],"max_tokens":3,"temperature":0,"seed":42,"n":2,"stream":true}"#,
        )
        .regroup(),
        post(
            "chat: logprobs with top_logprobs",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"temperature":0,"logprobs":true,"top_logprobs":2}"#,
        ),
        post(
            "chat: logprobs stream",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"temperature":0,"logprobs":true,"top_logprobs":2,"stream":true}"#,
        ),
        post(
            "chat: stop string",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"stop":["!"]}"#,
        ),
        post(
            "chat: stop string, stream",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"stop":"!","stream":true}"#,
        ),
        post(
            "chat: max_completion_tokens 1",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":1,"temperature":0}"#,
        ),
        post(
            "chat: response_format json_object",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Give me JSON."}],"max_tokens":6,"temperature":0,"response_format":{"type":"json_object"}}"#,
        ),
        post(
            "chat: response_format json_schema",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Give me JSON."}],"max_tokens":8,"temperature":0,"response_format":{"type":"json_schema","json_schema":{"name":"thing","schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}}}"#,
        ),
        post(
            "chat: seeded sampling (temperature 0.9, seed 7)",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Tell me a word."}],"max_tokens":4,"temperature":0.9,"seed":7}"#,
        ),
        post(
            "chat: the model's own name",
            CHAT,
            r#"{"model":"SmolLM2-135M-Instruct.Q4_1.gguf","messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"temperature":0}"#,
        ),
        post(
            "chat: unknown model",
            CHAT,
            r#"{"model":"gpt-nope","messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"temperature":0}"#,
        ),
        post("chat: empty messages", CHAT, r#"{"messages":[],"max_tokens":1}"#),
        post("chat: missing messages", CHAT, r#"{"max_tokens":1}"#),
        post(
            "chat: max_tokens of the wrong type",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":"four"}"#,
        ),
        post("chat: n=0", CHAT, r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"n":0}"#),
        post(
            "chat: top_logprobs out of range",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"logprobs":true,"top_logprobs":99}"#,
        ),
        post(
            "chat: unknown response_format",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"response_format":{"type":"yaml"}}"#,
        ),
        post(
            "chat: unknown field (ignored)",
            CHAT,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"temperature":0,"bogus_field":1}"#,
        ),
        post(
            "chat: /chat/completions alias",
            "/chat/completions",
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"temperature":0}"#,
        ),
        // ---- /v1/completions
        post("completions: basic", V1_COMPLETIONS, r#"{"prompt":"The capital of France is","max_tokens":3,"temperature":0}"#),
        post(
            "completions: stream",
            V1_COMPLETIONS,
            r#"{"prompt":"The capital of France is","max_tokens":3,"temperature":0,"stream":true}"#,
        ),
        post(
            "completions: stream with include_usage",
            V1_COMPLETIONS,
            r#"{"prompt":"One, two,","max_tokens":2,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        post("completions: echo", V1_COMPLETIONS, r#"{"prompt":"One, two,","max_tokens":2,"temperature":0,"echo":true}"#),
        post(
            "completions: echo, stream",
            V1_COMPLETIONS,
            r#"{"prompt":"One, two,","max_tokens":2,"temperature":0,"echo":true,"stream":true}"#,
        ),
        post("completions: logprobs 2", V1_COMPLETIONS, r#"{"prompt":"One, two,","max_tokens":3,"temperature":0,"logprobs":2}"#),
        post(
            "completions: logprobs 2, stream",
            V1_COMPLETIONS,
            r#"{"prompt":"One, two,","max_tokens":2,"temperature":0,"logprobs":2,"stream":true}"#,
        ),
        post(
            "completions: prompt as an array of strings",
            V1_COMPLETIONS,
            r#"{"prompt":["Red, green,","Monday, Tuesday,"],"max_tokens":2,"temperature":0}"#,
        ),
        post(
            "completions: prompt as an array of strings, stream",
            V1_COMPLETIONS,
            r#"{"prompt":["Red, green,","Monday, Tuesday,"],"max_tokens":2,"temperature":0,"stream":true}"#,
        )
        .regroup(),
        post("completions: prompt as tokens", V1_COMPLETIONS, r#"{"prompt":[19556,905],"max_tokens":2,"temperature":0}"#),
        post(
            "completions: prompt as arrays of tokens",
            V1_COMPLETIONS,
            r#"{"prompt":[[19556],[905,314]],"max_tokens":2,"temperature":0}"#,
        ),
        post("completions: n=2", V1_COMPLETIONS, r#"{"prompt":"Red, green,","max_tokens":2,"temperature":0,"n":2}"#),
        post(
            "completions: stop string",
            V1_COMPLETIONS,
            r#"{"prompt":"One, two, three,","max_tokens":8,"temperature":0,"stop":[","]}"#,
        ),
        post("completions: missing prompt", V1_COMPLETIONS, r#"{"max_tokens":2}"#),
        post("completions: suffix (unsupported)", V1_COMPLETIONS, r#"{"prompt":"a","suffix":"b","max_tokens":1}"#),
        post(
            "completions: echo with logprobs (unsupported)",
            V1_COMPLETIONS,
            r#"{"prompt":"a","echo":true,"logprobs":1,"max_tokens":1}"#,
        ),
        post("completions: negative max_tokens", V1_COMPLETIONS, r#"{"prompt":"a","max_tokens":-5}"#),
        post("completions: token outside the vocabulary", V1_COMPLETIONS, r#"{"prompt":[99999999],"max_tokens":1}"#),
        // ---- /completion, /completions (llama.cpp native)
        post("native: basic", COMPLETION, r#"{"prompt":"The capital of France is","n_predict":3,"temperature":0}"#),
        post(
            "native: n_probs 2",
            COMPLETION,
            r#"{"prompt":"One, two,","n_predict":2,"temperature":0,"n_probs":2}"#,
        ),
        post("native: stream", COMPLETION, r#"{"prompt":"One, two,","n_predict":3,"temperature":0,"stream":true}"#),
        post(
            "native: stream with n_probs",
            COMPLETION,
            r#"{"prompt":"One, two,","n_predict":2,"temperature":0,"n_probs":2,"stream":true}"#,
        ),
        post("native: prompt as tokens", COMPLETION, r#"{"prompt":[19556,905],"n_predict":2,"temperature":0}"#),
        post(
            "native: prompt of tokens and text",
            COMPLETION,
            r#"{"prompt":[19556," world"],"n_predict":2,"temperature":0}"#,
        ),
        post(
            "native: return_tokens",
            COMPLETION,
            r#"{"prompt":"One, two,","n_predict":2,"temperature":0,"return_tokens":true}"#,
        ),
        post(
            "native: grammar",
            COMPLETION,
            r#"{"prompt":"Is the sky blue? Answer:","n_predict":4,"temperature":0,"grammar":"root ::= \" yes\" | \" no\""}"#,
        ),
        post(
            "native: stop word",
            COMPLETION,
            r#"{"prompt":"One, two, three,","n_predict":8,"temperature":0,"stop":[","]}"#,
        ),
        post(
            "native: several prompts",
            COMPLETION,
            r#"{"prompt":["Red, green,","Monday, Tuesday,"],"n_predict":2,"temperature":0}"#,
        ),
        post(
            "native: several prompts, stream",
            COMPLETION,
            r#"{"prompt":["Red, green,","Monday, Tuesday,"],"n_predict":2,"temperature":0,"stream":true}"#,
        )
        .regroup(),
        post(
            "native: sampling settings echoed",
            COMPLETION,
            r#"{"prompt":"Hello","n_predict":1,"temperature":0,"top_k":5,"top_p":0.5,"min_p":0.1,"repeat_penalty":1.1,"seed":9}"#,
        ),
        post("native: /completions alias", "/completions", r#"{"prompt":"Hello","n_predict":1,"temperature":0}"#),
        post("native: missing prompt", COMPLETION, r#"{"n_predict":1}"#),
        post("native: n_probs out of range", COMPLETION, r#"{"prompt":"a","n_predict":1,"n_probs":99}"#),
        post("native: n_predict -2", COMPLETION, r#"{"prompt":"a","n_predict":-2}"#),
        post(
            "native: grammar that does not parse",
            COMPLETION,
            r#"{"prompt":"a","n_predict":1,"grammar":"root ::= ("}"#,
        ),
        // ---- embeddings
        post("embeddings (v1): string", "/v1/embeddings", r#"{"input":"hello"}"#),
        post("embeddings (v1): array of strings", "/v1/embeddings", r#"{"input":["hello","world"]}"#),
        post("embeddings (v1): tokens", "/v1/embeddings", r#"{"input":[19556,905]}"#),
        post("embeddings (v1): base64", "/v1/embeddings", r#"{"input":["hello","world"],"encoding_format":"base64"}"#),
        post("embeddings (v1): unknown encoding_format", "/v1/embeddings", r#"{"input":"hello","encoding_format":"hex"}"#),
        post("embeddings (v1): wrong dimensions", "/v1/embeddings", r#"{"input":"hello","dimensions":3}"#),
        post("embeddings (v1): missing input", "/v1/embeddings", r#"{}"#),
        post("embedding (native): content string", "/embedding", r#"{"content":"hello"}"#),
        post("embeddings (native): content array", "/embeddings", r#"{"content":["hello","world"]}"#),
        post("embedding (native): tokens, not normalized", "/embedding", r#"{"content":[19556],"embd_normalize":-1}"#),
        post("embedding (native): unsupported norm", "/embedding", r#"{"content":"hello","embd_normalize":1}"#),
        // ---- tokenize, detokenize, apply-template
        post("tokenize", "/tokenize", r#"{"content":"Hello world"}"#),
        post("tokenize: with_pieces", "/tokenize", r#"{"content":"Hello wörld ✓","with_pieces":true}"#),
        post("tokenize: add_special", "/tokenize", r#"{"content":"Hello","add_special":true}"#),
        post(
            "tokenize: special text, parse_special false",
            "/tokenize",
            r#"{"content":"<|im_start|>user","parse_special":false}"#,
        ),
        post("tokenize: special text parsed", "/tokenize", r#"{"content":"<|im_start|>user"}"#),
        post("tokenize: missing content", "/tokenize", r#"{}"#),
        post("detokenize", "/detokenize", r#"{"tokens":[19556,905]}"#),
        post("detokenize: empty", "/detokenize", r#"{"tokens":[]}"#),
        post("detokenize: token outside the vocabulary", "/detokenize", r#"{"tokens":[1,99999999]}"#),
        post("apply-template", "/apply-template", r#"{"messages":[{"role":"user","content":"Hi"}]}"#),
        post(
            "apply-template: system and assistant",
            "/apply-template",
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}"#,
        ),
        post("apply-template: empty messages", "/apply-template", r#"{"messages":[]}"#),
        // ---- HTTP level: routing, bodies, auth, hosts, CORS
        get("404: unknown path", "/nope"),
        post("404: unknown POST path", "/v1/nope", r#"{}"#),
        Case::new("405: DELETE /health", "DELETE", "/health"),
        get("405: GET on a POST route", CHAT),
        post("400: bad JSON", CHAT, r#"{"messages":[{"role":"user","content":"Hi"}"#),
        post("400: empty body", CHAT, ""),
        post("400: a JSON array instead of an object", CHAT, r#"[1,2]"#),
        post("400: invalid UTF-8", "/tokenize", "").raw_body(b"{\"content\":\"\xff\xfe\"}".to_vec()),
        Case::new("wrong content-type (text/plain)", "POST", V1_COMPLETIONS)
            .header("Content-Type", "text/plain")
            .raw_body(r#"{"prompt":"Hello","max_tokens":2,"temperature":0}"#),
        Case::new("no content-type", "POST", V1_COMPLETIONS)
            .raw_body(r#"{"prompt":"Hello","max_tokens":2,"temperature":0}"#),
        oversized_case,
        get("401: no API key", "/props").no_auth(),
        get("401: wrong API key", "/props").no_auth().header("Authorization", "Bearer wrong-key"),
        get("x-api-key header", "/health").no_auth().header("x-api-key", API_KEY),
        get("x-api-key header on a private path", "/v1/models").no_auth().header("x-api-key", API_KEY),
        get("403: Host not allowed", "/v1/models").header("Host", "evil.example"),
        Case::new("CORS preflight, allowed origin", "OPTIONS", CHAT)
            .no_auth()
            .header("Origin", ORIGIN)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type,authorization"),
        Case::new("CORS preflight, other origin", "OPTIONS", CHAT)
            .no_auth()
            .header("Origin", "http://other.test")
            .header("Access-Control-Request-Method", "POST"),
        get("CORS GET, allowed origin", "/v1/models").header("Origin", ORIGIN),
        get("CORS GET, other origin", "/v1/models").header("Origin", "http://other.test"),
        post(
            "CORS POST error, allowed origin",
            CHAT,
            r#"{"messages":[]}"#,
        )
        .header("Origin", ORIGIN),
        // ---- state after all of the above
        get("slots after the requests", "/slots"),
        get("slots: fail_on_no_slot=1 (one is free)", "/slots?fail_on_no_slot=1"),
        get("metrics", "/metrics"),
    ]
}

// ----------------------------------------------------------- normalization

/// Durations and rates in `timings` (and anywhere else they appear).
const TIME_KEYS: &[&str] = &[
    "prompt_ms",
    "predicted_ms",
    "prompt_per_token_ms",
    "predicted_per_token_ms",
    "prompt_per_second",
    "predicted_per_second",
];

/// Per-slot token counts in `/slots`.
const SLOT_COUNT_KEYS: &[&str] = &["n_prompt_tokens", "n_cached", "n_decoded"];

/// The end of the JSON scalar that starts at `start` (a string or a bare
/// number/literal); `None` for an object or array.
fn scalar_end(text: &[u8], start: usize) -> Option<usize> {
    match text.get(start)? {
        b'{' | b'[' => None,
        b'"' => {
            let mut i = start + 1;
            while i < text.len() {
                match text[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        _ => {
            let mut i = start;
            while i < text.len() && !matches!(text[i], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                i += 1;
            }
            Some(i)
        }
    }
}

/// Replace the scalar value of every member named `key` (a `"key":` right
/// after `{` or `,`, which cannot occur inside a JSON string) with what
/// `replace` makes of it, when it makes something. Everything else is kept
/// byte for byte.
fn replace_member(text: &str, key: &str, replace: impl Fn(&str) -> Option<String>) -> (String, bool) {
    let pattern = format!("\"{key}\":");
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut changed = false;
    let mut from = 0;
    while let Some(pos) = text[from..].find(&pattern).map(|p| p + from) {
        from = pos + pattern.len();
        if pos == 0 || !matches!(bytes[pos - 1], b'{' | b',') {
            continue;
        }
        let start = pos + pattern.len();
        let Some(end) = scalar_end(bytes, start) else { continue };
        if let Some(new) = replace(&text[start..end]) {
            out.push_str(&text[last..start]);
            out.push_str(&new);
            last = end;
            changed = true;
        }
        from = end;
    }
    out.push_str(&text[last..]);
    (out, changed)
}

/// Normalize the volatile parts of a JSON (or SSE) body; `true` when
/// something was replaced.
fn normalize_json_text(text: &str, workspace: &str) -> (String, bool) {
    let mut any = false;
    let mut text = text.to_string();
    let mut apply = |text: &mut String, key: &str, f: &dyn Fn(&str) -> Option<String>| {
        let (t, c) = replace_member(text, key, f);
        *text = t;
        any |= c;
    };
    apply(&mut text, "id", &|v| {
        let inner = v.strip_prefix('"')?.strip_suffix('"')?;
        ["chatcmpl-", "cmpl-"].iter().find(|p| inner.starts_with(**p)).map(|p| format!("\"{p}<id>\""))
    });
    apply(&mut text, "created", &|v| v.bytes().all(|b| b.is_ascii_digit()).then(|| "<created>".to_string()));
    apply(&mut text, "id_slot", &|v| v.bytes().all(|b| b.is_ascii_digit()).then(|| "<slot>".to_string()));
    for key in TIME_KEYS {
        apply(&mut text, key, &|v| v.starts_with(|c: char| c == '-' || c.is_ascii_digit()).then(|| "<time>".into()));
    }
    if !workspace.is_empty() && text.contains(workspace) {
        text = text.replace(workspace, "<workspace>");
        any = true;
    }
    (text, any)
}

/// Every sample value of a Prometheus exposition → `<value>`.
fn normalize_metrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (content, nl) = match line.strip_suffix('\n') {
            Some(c) => (c, "\n"),
            None => (line, ""),
        };
        match content.rsplit_once(' ') {
            Some((name, _value)) if !content.starts_with('#') && !content.is_empty() => {
                out.push_str(name);
                out.push_str(" <value>");
            }
            _ => out.push_str(content),
        }
        out.push_str(nl);
    }
    out
}

/// Drop keep-alive comments (events made only of `:` lines).
fn drop_sse_comments(text: &str) -> String {
    let (events, rest) = sse::split_events(text);
    let mut out: String = events.into_iter().filter(|e| !e.trim_end().lines().all(|l| l.starts_with(':'))).collect();
    out.push_str(rest);
    out
}

/// The choice an SSE event belongs to: `choices[0].index` (OpenAI) or
/// `index` (llama.cpp); `None` for the usage chunk, errors and `[DONE]`.
fn event_choice(event: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(&sse::event_data(event)?).ok()?;
    match v.get("choices") {
        Some(choices) => choices.get(0)?.get("index")?.as_u64(),
        None => v.get("index")?.as_u64(),
    }
}

/// The `,"timings":{…}` member of an event, as a byte range (a flat object).
fn timings_member(event: &str) -> Option<(usize, usize)> {
    let start = event.find(",\"timings\":{")?;
    let close = event[start..].find('}')? + start + 1;
    Some((start, close))
}

/// Token counts in a `timings` object.
const TIMING_COUNT_KEYS: &[&str] = &["cache_n", "prompt_n", "predicted_n"];

/// Put the events of a several-choice stream in choice order (stable; the
/// events of no choice last). When a single chunk carries `timings` (the
/// OpenAI routes put them on whichever choice finishes last, so they are
/// that choice's), move the member to the last finish chunk of that order,
/// at the same distance from the end of the event, with its token counts
/// → `<n>`.
fn regroup_sse(text: &str) -> String {
    let (events, rest) = sse::split_events(text);
    let mut keyed: Vec<(u64, usize, String)> =
        events.iter().enumerate().map(|(i, e)| (event_choice(e).unwrap_or(u64::MAX), i, e.to_string())).collect();
    keyed.sort_by_key(|(choice, i, _)| (*choice, *i));
    let mut events: Vec<String> = keyed.into_iter().map(|(_, _, e)| e).collect();
    let with_timings: Vec<usize> = (0..events.len()).filter(|&i| timings_member(&events[i]).is_some()).collect();
    let is_finish = |e: &str| e.contains("\"finish_reason\":\"");
    if let ([from], Some(to)) = (with_timings.as_slice(), (0..events.len()).rev().find(|&i| is_finish(&events[i])))
        && is_finish(&events[*from])
        && let Some((s, e)) = timings_member(&events[*from])
    {
        let mut member = events[*from][s..e].to_string();
        for key in TIMING_COUNT_KEYS {
            member = replace_member(&member, key, |v| v.parse::<i64>().is_ok().then(|| "<n>".into())).0;
        }
        let tail = events[*from][e..].to_string();
        events[*from].replace_range(s..e, "");
        if events[to].ends_with(&tail) {
            let at = events[to].len() - tail.len();
            events[to].insert_str(at, &member);
        } else {
            // Not the same shape: leave it where it was (the golden shows the difference).
            events[*from].insert_str(s, &member);
        }
    }
    let mut out: String = events.concat();
    out.push_str(rest);
    out
}

// --------------------------------------------------------------- recording

/// Poll `/slots` (not recorded) until no slot is busy, so that the next
/// request finds the same slots free on every run.
fn wait_idle(server: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let req = Request::get("/slots").header("Authorization", &format!("Bearer {API_KEY}"));
    while Instant::now() < deadline {
        if let Ok(resp) = http::send(server.addr(), &req, Duration::from_secs(10))
            && let Some(Value::Array(slots)) = resp.json()
            && slots.iter().all(|s| s["is_processing"] == Value::Bool(false))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Text for the golden: valid UTF-8 as is, invalid bytes as `\xNN`.
fn shown_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn record_case(index: usize, case: &Case, result: &std::io::Result<Response>, workspace: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "=== {index:03} {}", case.name);
    let _ = writeln!(out, "{} {}", case.method, case.path);
    for (n, v) in &case.headers {
        let _ = writeln!(out, "{}: {v}", n.to_ascii_lowercase());
    }
    if !case.auth {
        let _ = writeln!(out, "(without the wire-key Authorization header)");
    }
    if case.regroup {
        let _ = writeln!(out, "(events regrouped by choice)");
    }
    match &case.shown_body {
        Some(shown) => {
            let _ = writeln!(out, "{shown}");
        }
        None if !case.body.is_empty() => {
            let _ = writeln!(out, "{}", shown_bytes(&case.body));
        }
        None => {}
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let _ = writeln!(out, "--- transport error: {:?}\n", e.kind());
            return out;
        }
    };
    let _ = writeln!(out, "--- {}", resp.status());
    let content_type = resp.head.header("content-type").unwrap_or("").to_string();
    let raw = String::from_utf8_lossy(&resp.body).into_owned();
    let (body, normalized) = if case.path == "/metrics" && content_type.starts_with("text/plain") {
        (normalize_metrics(&raw), true)
    } else if content_type.starts_with("text/event-stream") {
        let mut text = drop_sse_comments(&raw);
        if case.regroup {
            text = regroup_sse(&text);
        }
        normalize_json_text(&text, workspace)
    } else if case.path == "/openapi.json" && resp.status() == 200 {
        let on_disk = std::fs::read(paths::workspace_root().join("docs/openapi.json")).unwrap_or_default();
        let verdict = if on_disk == resp.body { "byte-identical to" } else { "DIFFERENT from" };
        (format!("<the OpenAPI document, {verdict} docs/openapi.json>\n"), true)
    } else if case.path.starts_with("/slots") {
        // Which slot a choice lands in varies (slots 2 and 3 trade places
        // between runs); the slot list's shape, ids and states do not.
        let (mut text, mut any) = normalize_json_text(&raw, workspace);
        for key in SLOT_COUNT_KEYS {
            let (t, c) = replace_member(&text, key, |v| v.parse::<i64>().is_ok().then(|| "<n>".into()));
            text = t;
            any |= c;
        }
        (text, any)
    } else {
        normalize_json_text(&raw, workspace)
    };
    for (name, value) in &resp.head.headers {
        match name.as_str() {
            "date" => {}
            "content-length" if normalized => {
                let _ = writeln!(out, "content-length: <len>");
            }
            _ => {
                let _ = writeln!(out, "{name}: {value}");
            }
        }
    }
    if !resp.complete {
        let _ = writeln!(out, "(body cut off)");
    }
    out.push('\n');
    out.push_str(&body);
    if !body.ends_with('\n') {
        out.push_str("\n\\ no newline at end of body\n");
    }
    out.push('\n');
    out
}

const PREAMBLE: &str = "\
# Wire-compatibility golden of llama-server: one block per request.
# Written by tests/tests/wire_compat.rs; rewrite with
#   WIRE_BLESS=1 cargo test -p llama-e2e --test wire_compat
# Server: the default model, -c 2048 -np 4 -t 2 -tb 2 -b 256 -ub 256 --metrics
#   --embeddings --api-key wire-key --cors-origins http://wire.test --max-body 65536
# Block: `=== n name`, the request (method, path, headers sent besides Host,
#   Content-Length, Connection: close and `Authorization: Bearer wire-key`,
#   body), `--- status`, the response headers (no `date`), a blank line, the body.
# Placeholders: chatcmpl-<id>/cmpl-<id>, <created>, <time> (durations and rates),
#   <workspace> (the checkout's path), <value> (/metrics samples),
#   <n> (/slots token counts; timings token counts of regrouped streams),
#   content-length <len> (when the body has placeholders).

";

fn run_all(server: &ServerProcess) -> String {
    let workspace = paths::workspace_root().display().to_string();
    let mut out = String::from(PREAMBLE);
    for (i, case) in cases().iter().enumerate() {
        wait_idle(server);
        let result = http::send(server.addr(), &case.request(), READ_TIMEOUT);
        out.push_str(&record_case(i + 1, case, &result, &workspace));
    }
    out
}

// ------------------------------------------------------------------ diffing

/// The blocks of a recording: (title line, text), the preamble first.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![("(preamble)".into(), String::new())];
    for line in text.split_inclusive('\n') {
        if line.starts_with("=== ") {
            out.push((line.trim_end().to_string(), String::new()));
        }
        if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    out
}

fn clip(line: &str) -> String {
    const MAX: usize = 240;
    let n = line.chars().count();
    if n <= MAX {
        line.to_string()
    } else {
        let head: String = line.chars().take(MAX).collect();
        format!("{head}… ({} more chars)", n - MAX)
    }
}

/// A unified-diff-like listing of `old` → `new` (line LCS), with 2 lines
/// of context; changed lines also say where they first differ.
fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // LCS table: blocks are at most a few hundred lines.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    // (tag, line): ' ' same, '-' only in old, '+' only in new.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(ops.len().saturating_sub(1));
        (lo..=hi).any(|m| ops[m].0 != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if !near_change(k) {
            if !skipped {
                out.push_str("   …\n");
                skipped = true;
            }
            continue;
        }
        skipped = false;
        let _ = writeln!(out, " {tag} {}", clip(line));
        // For a changed pair, say where the lines part.
        if *tag == '-'
            && let Some(('+', other)) = ops.get(k + 1)
        {
            let col = line.chars().zip(other.chars()).take_while(|(x, y)| x == y).count();
            let ctx: String = line.chars().skip(col.saturating_sub(20)).take(60).collect();
            let _ = writeln!(out, "     (first difference at column {}, near {ctx:?})", col + 1);
        }
    }
    out
}

/// `None` when equal; otherwise a report of the first differing blocks.
fn compare(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let exp = blocks(expected);
    let act = blocks(actual);
    let exp_map: HashMap<&str, &str> = exp.iter().map(|(t, b)| (t.as_str(), b.as_str())).collect();
    let act_titles: Vec<&str> = act.iter().map(|(t, _)| t.as_str()).collect();
    let mut report = String::new();
    let mut differing = 0;
    const SHOWN: usize = 6;
    for (title, text) in &act {
        let old = exp_map.get(title.as_str()).copied();
        if old == Some(text.as_str()) {
            continue;
        }
        differing += 1;
        if differing <= SHOWN {
            match old {
                Some(old) => {
                    let _ = writeln!(report, "--- golden {title}\n+++ actual {title}\n{}", line_diff(old, text));
                }
                None => {
                    let _ = writeln!(report, "+++ actual {title}: a block the golden does not have\n");
                }
            }
        }
    }
    for (title, _) in &exp {
        if !act_titles.contains(&title.as_str()) {
            differing += 1;
            if differing <= SHOWN {
                let _ = writeln!(report, "--- golden {title}: missing from the actual recording\n");
            }
        }
    }
    if differing > SHOWN {
        let _ = writeln!(report, "… and {} more differing block(s)", differing - SHOWN);
    }
    Some(format!("{differing} block(s) differ from the golden:\n\n{report}"))
}

// -------------------------------------------------------------------- test

#[test]
fn wire_output_matches_the_golden() {
    let started = Instant::now();
    let mut args = SMALL.to_vec();
    let max_body = MAX_BODY.to_string();
    args.extend(["--embeddings", "--api-key", API_KEY, "--cors-origins", ORIGIN, "--max-body", max_body.as_str()]);
    let server = ServerProcess::start(&args);
    let ready = started.elapsed();
    let actual = run_all(&server);
    server.assert_healthy("the wire-compatibility requests");
    eprintln!(
        "wire_compat: {} requests in {:.1} s (server start {:.1} s)",
        cases().len(),
        started.elapsed().as_secs_f64() - ready.as_secs_f64(),
        ready.as_secs_f64()
    );

    let actual_file = actual_path();
    if let Some(dir) = actual_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&actual_file, &actual);

    let golden = golden_path();
    if std::env::var("WIRE_BLESS").is_ok_and(|v| v == "1") {
        if let Some(dir) = golden.parent() {
            std::fs::create_dir_all(dir).expect("creating tests/wire");
        }
        std::fs::write(&golden, &actual).expect("writing the golden file");
        eprintln!("wire_compat: blessed {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "cannot read the golden {}: {e}; create it with \
             `WIRE_BLESS=1 cargo test -p llama-e2e --test wire_compat`",
            golden.display()
        )
    });
    if let Some(report) = compare(&expected, &actual) {
        panic!(
            "the server's wire output changed.\n\n{report}\nThe whole recording is in {}.\n\
             If the change is intended, rewrite the golden with \
             `WIRE_BLESS=1 cargo test -p llama-e2e --test wire_compat` and review its diff.",
            actual_file.display()
        );
    }
}

#[test]
fn normalization_keeps_everything_else() {
    let body = r#"{"choices":[{"text":"{\"id\":\"cmpl-x\",\"created\":1}"}],"created":1796315506,"id":"chatcmpl-zZNRIMfX","timings":{"cache_n":3,"predicted_ms":104.5,"prompt_per_second":27.4},"x":{"id":7}}"#;
    let (text, changed) = normalize_json_text(body, "/ws");
    assert!(changed);
    assert_eq!(
        text,
        r#"{"choices":[{"text":"{\"id\":\"cmpl-x\",\"created\":1}"}],"created":<created>,"id":"chatcmpl-<id>","timings":{"cache_n":3,"predicted_ms":<time>,"prompt_per_second":<time>},"x":{"id":7}}"#
    );
    let (same, changed) = normalize_json_text(r#"{"tokens":[1,2],"id":3}"#, "/ws");
    assert!(!changed);
    assert_eq!(same, r#"{"tokens":[1,2],"id":3}"#);
    assert_eq!(
        normalize_metrics("# HELP a b\na_total 3\nb{le=\"0.1\"} 0.5\n"),
        "# HELP a b\na_total <value>\nb{le=\"0.1\"} <value>\n"
    );
}

#[test]
fn regrouping_orders_choices_and_moves_timings() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null,\"index\":1}],\"id\":\"x\"}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null,\"index\":0}],\"id\":\"x\"}\n\n",
        ":keep-alive\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\",\"index\":1}],\"id\":\"x\"}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\",\"index\":0}],\"id\":\"x\",\"timings\":{\"cache_n\":3,\"a_ms\":1.5}}\n\n",
        "data: [DONE]\n\n",
    );
    let out = regroup_sse(&drop_sse_comments(stream));
    assert_eq!(
        out,
        concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null,\"index\":0}],\"id\":\"x\"}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\",\"index\":0}],\"id\":\"x\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null,\"index\":1}],\"id\":\"x\"}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\",\"index\":1}],\"id\":\"x\",\"timings\":{\"cache_n\":<n>,\"a_ms\":1.5}}\n\n",
            "data: [DONE]\n\n",
        )
    );
    assert!(compare("a\n=== 1 x\nb\n", "a\n=== 1 x\nb\n").is_none());
    let report = compare("a\n=== 1 x\nb\nc\n", "a\n=== 1 x\nb\nd\n").unwrap_or_default();
    assert!(report.contains(" - c") && report.contains(" + d"), "{report}");
}
