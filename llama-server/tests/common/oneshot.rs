//! In-process requests through `app(state)` and `tower::ServiceExt::oneshot`
//! (no socket), and the server states they run against: one that never
//! leaves "Loading model", one serving the fake engine
//! (`llama_runtime::fake`) without any model file, and what the fake
//! generates, so that tests can expect exact outputs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use llama_runtime::fake::{FAKE_EOG, FakeControl, FakeInference, FakeModel, fake_next_token, fake_piece};
use llama_runtime::{Engine, ModelFacade, SlotState, Token};
use llama_server::{AppState, Args, Ready, Settings, app};
use serde_json::Value;
use tower::ServiceExt;

/// The model path of the model-less states: no such file exists.
pub const NO_MODEL: &str = "/nonexistent/model.gguf";

/// Settings for `model` with the base flags (512 tokens of context in two
/// slots of 256, two threads) and `extra`.
pub fn settings_for(model: &str, extra: &[&str]) -> Settings {
    let mut argv = vec!["llama-server", "-m", model, "-c", "512", "-np", "2", "-t", "2"];
    argv.extend_from_slice(extra);
    Args::try_parse_argv(argv).expect("flags parse").validate().expect("flags valid")
}

/// A state that never leaves "Loading model" (and has no model file).
pub fn loading(extra: &[&str]) -> AppState {
    AppState::new(settings_for(NO_MODEL, extra))
}

/// A server state over the fake engine, with the model file absent.
#[derive(Clone)]
pub struct Fake {
    /// What the router serves.
    pub state: AppState,
    /// The engine itself (slots, shutdown).
    pub engine: Arc<Engine<FakeInference>>,
    /// The fake's knobs (injected failures, simulated compute time).
    pub control: Arc<Mutex<FakeControl>>,
}

/// Serve the fake engine with the base flags and `extra`.
pub fn fake(extra: &[&str]) -> Fake {
    fake_with(settings_for(NO_MODEL, extra))
}

/// Serve the fake engine with `settings`.
pub fn fake_with(settings: Settings) -> Fake {
    fake_with_model(settings, FakeModel::default())
}

/// Serve the fake engine over `model` (a fake with other facts, e.g. FIM tokens).
pub fn fake_with_model(settings: Settings, model: FakeModel) -> Fake {
    let config = settings.engine_config(model.info().n_ctx_train);
    let inference = FakeInference::for_config(&config);
    let control = inference.control();
    let engine = Arc::new(Engine::with_inference(inference, model, config).expect("fake engine starts"));
    let state = AppState::new(settings.clone());
    let ready = Ready::with_engine(engine.clone(), &settings, state.stats()).expect("ready");
    state.set_ready(ready);
    Fake { state, engine, control }
}

impl Fake {
    /// Send `req`.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        send(self.state.clone(), req).await
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, v) = self.send(post_json(path, body)).await;
        (status, v)
    }

    /// Send `req` and keep the response unread (a stream that holds its
    /// request open until dropped).
    pub async fn open(&self, req: Request<Body>) -> Response {
        app(self.state.clone()).oneshot(req).await.expect("infallible")
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, v) = self.send(get(path)).await;
        (status, v)
    }

    /// Simulate `delay` of compute per token (prompt and generated).
    pub fn slow(&self, delay: Duration) {
        self.control.lock().unwrap().delay_per_token = delay;
    }

    /// Wait until every slot is busy (a request is running in each).
    pub async fn wait_all_busy(&self) {
        self.wait_until("every slot busy", |e| e.slots().iter().all(|s| s.state != SlotState::Idle)).await;
    }

    /// Wait (at most 10 s) until `done` holds for the engine.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&Engine<FakeInference>) -> bool) {
        let start = Instant::now();
        while !done(&self.engine) {
            assert!(start.elapsed() < Duration::from_secs(10), "never {what}: {:?}", self.engine.slots());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Send `req` through the whole router; a body that is not JSON (an event
/// stream, Prometheus text) comes back as a JSON string.
pub async fn send(state: AppState, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app(state).oneshot(req).await.expect("infallible");
    let headers = resp.headers().clone();
    let (status, body) = read(resp).await;
    (status, headers, body)
}

/// The status and body of a response (read to its end).
pub async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

/// A POST of raw bytes (no Content-Type).
pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header(header::HOST, "127.0.0.1:8080").body(body.into()).unwrap()
}

/// A GET.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path).header(header::HOST, "127.0.0.1:8080").body(Body::empty()).unwrap()
}

/// A POST of JSON.
pub fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The error shape: status, numeric code, llama.cpp's type, a message, and
/// the OpenAPI `Error` schema.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, ty: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], want.as_u16(), "{body}");
    assert_eq!(body["error"]["type"], ty, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    super::assert_schema("Error", body);
}

/// A 400 `invalid_request_error` naming `param` (`None`: no `param` field).
#[track_caller]
pub fn assert_invalid(status: StatusCode, body: &Value, param: Option<&str>) {
    assert_error(status, body, StatusCode::BAD_REQUEST, "invalid_request_error");
    match param {
        Some(p) => assert_eq!(body["error"]["param"], p, "{body}"),
        None => assert!(body["error"].get("param").is_none(), "{body}"),
    }
}

/// The payloads of an event-stream body: JSON values, and `[DONE]` as a string.
#[track_caller]
pub fn sse_events(body: &Value) -> Vec<Value> {
    let text = body.as_str().unwrap_or_else(|| panic!("not an event stream: {body}"));
    super::sse_data(text).into_iter().map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d))).collect()
}

/// The tokens the engine makes of a text prompt (BOS first, one per byte).
pub fn prompt_tokens(text: &str) -> Vec<Token> {
    FakeModel::default().tokenize(text, true, true).expect("the fake tokenizes")
}

/// What the fake generates after `prompt` with `seed`, at most `max`
/// tokens: the tokens (the end-of-generation token included when it came)
/// and whether it stopped on that token.
pub fn generate(seed: u32, prompt: &[Token], max: usize) -> (Vec<Token>, bool) {
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let t = fake_next_token(seed, &history);
        out.push(t);
        if t == FAKE_EOG {
            return (out, true);
        }
        history.push(t);
    }
    (out, false)
}

/// The text of generated tokens, as the engine streams it (the
/// end-of-generation token has none; half a character is U+FFFD).
pub fn text_of(tokens: &[Token]) -> String {
    let bytes: Vec<u8> = tokens.iter().filter(|&&t| t != FAKE_EOG).flat_map(|&t| fake_piece(t)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The text of one token in a log-probability listing (special tokens by name).
pub fn piece(token: Token) -> String {
    String::from_utf8_lossy(&FakeModel::default().token_piece(token)).into_owned()
}
