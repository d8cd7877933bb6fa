//! Fuzz target `server_request`: any body sent to any POST endpoint of the
//! server (and any query string to `GET /slots`), through the whole router
//! (`llama_server::app`: middleware, extractors, validation, the engine)
//! with the real model. Never a panic (the router turns a panicking handler
//! into a 500; libFuzzer's panic hook aborts first); the answer is a 2xx or
//! a 4xx, or a 503 with `Retry-After`; JSON bodies parse and errors have
//! the OpenAI error shape; streams are well-formed server-sent events.
//!
//! Input: byte 0 picks the endpoint (modulo the list below); bit 7 of it
//! sends `Content-Type: text/plain` instead of JSON; the rest is the body
//! (for `/slots`, the query string). The server runs with 2 slots of 128
//! tokens, `--n-predict 2` (generations stay short) and `--embeddings`.
//!
//! Compiled into the model fuzz crate and into llama-server's corpus-replay
//! test (it names only `llama_server`, `axum`, `tokio`, `tower`, `serde_json`).

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use llama_server::{AppState, Args, Ready, app};
use serde_json::Value;
use tower::ServiceExt;

/// The endpoints, in the order byte 0 picks them.
pub const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/completion",
    "/v1/embeddings",
    "/embedding",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/slots",
];

/// Longest a request may take before it counts as a hang.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

struct Fixture {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

fn model_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("LLAMA_FUZZ_MODEL") {
        return p.into();
    }
    let rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| rel.into())
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let model = model_path();
        let model = model.to_string_lossy();
        let argv = ["llama-server", "-m", &model, "-c", "256", "-np", "2", "-t", "1", "-tb", "1", "-n", "2"];
        let argv = argv.iter().copied().chain(["--timeout", "30", "--embeddings", "--log-disable"]);
        let settings = match Args::try_parse_argv(argv).map(|a| a.validate()) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("server settings: {e}"),
            Err(e) => panic!("server flags: {e}"),
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        let state = AppState::new(settings.clone());
        match Ready::load(&settings, state.stats()) {
            Ok(ready) => state.set_ready(ready),
            Err(e) => panic!("the default model does not load (run `make setup`): {e}"),
        }
        Fixture { runtime, state }
    })
}

/// Run one input.
pub fn server_request(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let path = ENDPOINTS[usize::from(flags & 0x7f) % ENDPOINTS.len()];
    let content_type = if flags & 0x80 != 0 { "text/plain" } else { "application/json" };
    let request = if path == "/slots" {
        let query: String =
            String::from_utf8_lossy(body).chars().filter(|c| c.is_ascii_graphic() && *c != '#').collect();
        Request::get(format!("{path}?{query}")).body(Body::empty())
    } else {
        Request::post(path).header(header::CONTENT_TYPE, content_type).body(Body::from(body.to_vec()))
    };
    let Ok(mut request) = request else {
        // The query did not make a URI: nothing reaches the server.
        return;
    };
    request.headers_mut().insert(header::HOST, header::HeaderValue::from_static("127.0.0.1:8080"));

    let f = fixture();
    let (status, headers, bytes) = f.runtime.block_on(async {
        let response = tokio::time::timeout(REQUEST_DEADLINE, app(f.state.clone()).oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{path}: no response in {REQUEST_DEADLINE:?}"))
            .unwrap_or_else(|e| match e {});
        let (parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(REQUEST_DEADLINE, axum::body::to_bytes(body, 64 << 20))
            .await
            .unwrap_or_else(|_| panic!("{path}: the body did not end in {REQUEST_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("{path}: reading the body failed: {e}"));
        (parts.status, parts.headers, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    let retry_after = headers.contains_key(header::RETRY_AFTER);
    assert!(
        status.is_success() || status.is_client_error() || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after),
        "{path}: {status}: {text}"
    );
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/json") {
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {status}: not JSON ({e}): {text}"));
        if !status.is_success() {
            assert!(value["error"]["code"] == status.as_u16(), "{path}: {status}: error shape: {text}");
            assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {text}");
        }
    } else if content_type.starts_with("text/event-stream") {
        assert!(status.is_success(), "{path}: {status} stream");
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                assert!(data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok(), "{path}: bad event {data:?}");
            }
        }
        assert!(text.ends_with("\n\n"), "{path}: the stream does not end with a whole event: {text:?}");
    } else {
        assert!(!status.is_client_error(), "{path}: {status} without a JSON error body ({content_type}): {text}");
    }
}
