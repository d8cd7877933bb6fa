//! In-process tests of the router with `tower::ServiceExt::oneshot`:
//! validation, error shapes, auth, Host check, CORS, limits, the OpenAPI
//! route list. Some run while "loading" (no model), some with the real
//! model loaded in this process.

mod common;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use llama_server::{AppState, Args, ROUTES, Ready, app};
use serde_json::{Value, json};
use tower::ServiceExt;

fn settings(extra: &[&str]) -> llama_server::Settings {
    let model = common::model_path();
    let mut argv = vec!["llama-server", "-m", model.to_str().unwrap(), "-c", "512", "-np", "2", "-t", "2"];
    argv.extend_from_slice(extra);
    Args::try_parse_argv(argv).expect("flags parse").validate().expect("flags valid")
}

/// A state that never leaves "Loading model".
fn loading(extra: &[&str]) -> AppState {
    AppState::new(settings(extra))
}

/// One state with the real model, shared by the tests of this binary.
fn ready() -> AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let s = settings(&[]);
            let state = AppState::new(s.clone());
            let r = Ready::load(&s, state.stats()).expect("model loads");
            state.set_ready(r);
            state
        })
        .clone()
}

async fn send(state: AppState, req: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
    let resp = app(state).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, body)
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header(header::HOST, "127.0.0.1:8080").body(body.into()).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).header(header::HOST, "127.0.0.1:8080").body(Body::empty()).unwrap()
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[track_caller]
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, ty: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], want.as_u16(), "{body}");
    assert_eq!(body["error"]["type"], ty, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    common::assert_schema("Error", body);
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc = common::openapi();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    routes.sort();
    documented.sort();
    assert_eq!(routes, documented);
    // The served document is the same file.
    assert_eq!(serde_json::from_str::<Value>(llama_server::OPENAPI_DOCUMENT).unwrap(), doc);
}

#[tokio::test]
async fn every_route_is_mounted() {
    for (method, path) in ROUTES {
        let req =
            Request::builder().method(*method).uri(*path).header(header::HOST, "localhost").body(Body::from("{}"));
        let (status, _, body) = send(loading(&[]), req.unwrap()).await;
        assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn health_while_loading_is_llama_cpp_shaped() {
    let (status, headers, body) = send(loading(&[]), get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}));
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (status, _, _) = send(loading(&[]), get("/v1/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn valid_requests_while_loading_get_503() {
    let (status, _, body) =
        send(loading(&[]), post_json("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}]})))
            .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable_error");
    assert_eq!(body["error"]["message"], "Loading model");
}

#[tokio::test]
async fn malformed_json_is_400() {
    for body in ["", "{", "not json", "{\"messages\": [}", "[1, 2]"] {
        let (status, _, v) = send(loading(&[]), post("/v1/chat/completions", body)).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let cases = [
        (json!({"messages": "hi"}), "messages"),
        (json!({}), "messages"),
        (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
        (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), "temperature"),
        (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}), "max_tokens"),
        (json!({"messages": [{"role": "user", "content": "x"}], "stop": 5}), "stop"),
        (json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}), "stream"),
        (json!({"messages": [{"role": "user", "content": "x"}], "n": 0}), "n"),
        (json!({"messages": [{"role": "user", "content": "x"}], "n": 100}), "n"),
        (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}), "max_tokens"),
        (json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}), "top_logprobs"),
        (json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}), "top_logprobs"),
        (json!({"messages": [{"role": "user", "content": "x"}], "stop": vec!["s"; 17]}), "stop"),
        (json!({"messages": [{"role": "user", "content": "x"}], "stop": "x".repeat(300)}), "stop"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a+"}}}}),
            "response_format",
        ),
        (json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}), "tools"),
    ];
    for (body, param) in cases {
        let (status, _, v) = send(loading(&[]), post_json("/v1/chat/completions", body.clone())).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{body} -> {v}");
    }
    let native = [
        (json!({"n_predict": 5}), "prompt"),
        (json!({"prompt": 5}), "prompt"),
        (json!({"prompt": [1, 2.5]}), "prompt"),
        (json!({"prompt": "x", "n_predict": -2}), "n_predict"),
        (json!({"prompt": "x", "n_probs": 50}), "n_probs"),
        (json!({"prompt": "x", "mirostat": "a"}), "mirostat"),
    ];
    for (body, param) in native {
        let (status, _, v) = send(loading(&[]), post_json("/completion", body.clone())).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{body} -> {v}");
    }
}

/// OpenAI's roles pass (to "Loading model" here); any other role is a 400
/// naming the message, on the chat route and on `/apply-template`.
#[tokio::test]
async fn unknown_chat_roles_are_400_naming_the_message() {
    for path in ["/v1/chat/completions", "/chat/completions", "/apply-template"] {
        for role in ["system", "developer", "user", "assistant", "tool", "function"] {
            let body = json!({"messages": [{"role": role, "content": "x"}]});
            let (status, _, v) = send(loading(&[]), post_json(path, body)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path} {role}: {v}");
        }
        for role in ["wizard", "", "User", " user", "user\u{0}", "ASSISTANT"] {
            let body = json!({"messages": [{"role": "user", "content": "a"}, {"role": role, "content": "b"}]});
            let (status, _, v) = send(loading(&[]), post_json(path, body)).await;
            assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
            assert_eq!(v["error"]["param"], "messages[1].role", "{path} {role:?}: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("unknown role")), "{v}");
        }
    }
}

#[tokio::test]
async fn unknown_model_is_404_known_names_pass() {
    let state = loading(&["--alias", "my-model,other"]);
    let body = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, v) = send(state.clone(), post_json("/v1/chat/completions", body("gpt-4"))).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "not_found_error");
    for known in ["my-model", "other", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1", ""] {
        let (status, _, v) = send(state.clone(), post_json("/v1/chat/completions", body(known))).await;
        // Past the model check, the next answer is "Loading model".
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{known}: {v}");
    }
    let (_, _, v) = send(state, get("/v1/models")).await;
    assert_eq!(v["data"][0]["id"], "my-model");
    common::assert_schema("ModelList", &v);
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_json() {
    let (status, _, v) = send(loading(&[]), get("/nope")).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "not_found_error");
    let (status, _, v) = send(loading(&[]), get("/v1/chat/completions")).await;
    assert_error(status, &v, StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error");
}

#[tokio::test]
async fn body_limit_is_413() {
    let state = loading(&["--max-body", "2048"]);
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]}).to_string();
    let (status, _, v) = send(state.clone(), post("/v1/chat/completions", big.clone())).await;
    assert_error(status, &v, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("2048"), "{v}");
    // Also without a Content-Length (streamed body).
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let req = Request::post("/v1/chat/completions").header(header::HOST, "localhost").body(Body::from_stream(stream));
    let (status, _, v) = send(state, req.unwrap()).await;
    assert_error(status, &v, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error");
}

#[tokio::test]
async fn api_keys() {
    let state = loading(&["--api-key", "sk-a,sk-b"]);
    let chat = || json!({"messages": [{"role": "user", "content": "x"}]});
    let (status, _, v) = send(state.clone(), post_json("/v1/chat/completions", chat())).await;
    assert_error(status, &v, StatusCode::UNAUTHORIZED, "authentication_error");
    for (name, value) in [("authorization", "Bearer sk-wrong"), ("authorization", "sk-a"), ("x-api-key", "sk-c")] {
        let mut req = post_json("/v1/chat/completions", chat());
        req.headers_mut().insert(name, value.parse().unwrap());
        let (status, _, v) = send(state.clone(), req).await;
        assert_error(status, &v, StatusCode::UNAUTHORIZED, "authentication_error");
    }
    for (name, value) in [("authorization", "Bearer sk-a"), ("authorization", "bearer sk-b"), ("x-api-key", "sk-b")] {
        let mut req = post_json("/v1/chat/completions", chat());
        req.headers_mut().insert(name, value.parse().unwrap());
        let (status, _, v) = send(state.clone(), req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {v}");
    }
    // Unknown routes need a key too; health does not.
    let (status, _, _) = send(state.clone(), get("/nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in ["/health", "/v1/health"] {
        let (status, _, v) = send(state.clone(), get(path)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {v}");
    }
}

#[tokio::test]
async fn host_check_blocks_dns_rebinding() {
    let req = |host: &str| Request::get("/v1/models").header(header::HOST, host).body(Body::empty()).unwrap();
    let (status, _, v) = send(loading(&[]), req("evil.example:8080")).await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "permission_error");
    for ok in ["localhost:8080", "127.0.0.1", "[::1]:8080"] {
        let (status, _, v) = send(loading(&[]), req(ok)).await;
        assert_eq!(status, StatusCode::OK, "{ok}: {v}");
    }
    let (status, _, _) = send(loading(&["--allowed-hosts", "box.lan"]), req("box.lan:8080")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(loading(&["--host", "0.0.0.0"]), req("evil.example")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let preflight = || {
        Request::options("/v1/chat/completions")
            .header(header::HOST, "localhost")
            .header(header::ORIGIN, "http://app.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
            .body(Body::empty())
            .unwrap()
    };
    let (_, headers, _) = send(loading(&[]), preflight()).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let (status, headers, _) =
        send(loading(&["--cors-origins", "http://app.example", "--api-key", "k"]), preflight()).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://app.example");
    let (_, headers, _) = send(loading(&["--cors-origins", "http://other.example"]), preflight()).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn disabled_endpoints_are_501() {
    let (status, _, v) = send(loading(&[]), get("/metrics")).await;
    assert_error(status, &v, StatusCode::NOT_IMPLEMENTED, "not_supported_error");
    let (status, _, v) = send(loading(&["--no-slots"]), get("/slots")).await;
    assert_error(status, &v, StatusCode::NOT_IMPLEMENTED, "not_supported_error");
    let (status, _, v) = send(loading(&[]), post_json("/v1/embeddings", json!({"input": "x"}))).await;
    assert_error(status, &v, StatusCode::NOT_IMPLEMENTED, "not_supported_error");
    let (status, _, v) = send(loading(&[]), post_json("/embedding", json!({"content": "x"}))).await;
    assert_error(status, &v, StatusCode::NOT_IMPLEMENTED, "not_supported_error");
}

#[tokio::test]
async fn openapi_document_is_served() {
    let (status, headers, v) = send(loading(&[]), get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(v["openapi"], "3.1.0");
}

// ---- with the real model ----

#[tokio::test]
async fn prompt_too_long_reports_sizes() {
    let long = "hello ".repeat(400);
    let (status, _, v) =
        send(ready(), post_json("/v1/chat/completions", json!({"messages": [{"role": "user", "content": long}]})))
            .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "exceed_context_size_error");
    assert_eq!(v["error"]["n_ctx"], 256, "{v}");
    assert!(v["error"]["n_prompt_tokens"].as_u64().unwrap() > 256, "{v}");
    let (status, _, v) = send(ready(), post_json("/completion", json!({"prompt": long}))).await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "exceed_context_size_error");
}

#[tokio::test]
async fn bad_values_that_need_the_model_are_400() {
    let chat = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, param) in [
        (json!({"logit_bias": {"999999": 1}}), Some("logit_bias")),
        (json!({"logit_bias": {"5": "x"}}), Some("logit_bias")),
        (json!({"logit_bias": [[1, 2, 3]]}), Some("logit_bias")),
        (json!({"temperature": -1}), Some("temperature")),
        (json!({"top_p": 7}), Some("top_p")),
        (json!({"grammar": "root ::= ( "}), None),
        (json!({"json_schema": {"type": "integer", "minimum": 3}}), Some("json_schema")),
        (json!({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}), None),
    ] {
        let (status, _, v) = send(ready(), post_json("/v1/chat/completions", chat(extra.clone()))).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{extra} -> {v}");
        }
    }
    let (status, _, v) = send(ready(), post_json("/completion", json!({"prompt": [1, 999999], "n_predict": 1}))).await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (status, _, v) = send(ready(), post_json("/detokenize", json!({"tokens": [1, -5]}))).await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert_eq!(v["error"]["param"], "tokens[1]");
}

#[tokio::test]
async fn tokenize_pieces_and_round_trip() {
    let text = "Hello 🦙 world";
    let (status, _, v) = send(ready(), post_json("/tokenize", json!({"content": text, "with_pieces": true}))).await;
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
    let (_, _, plain) = send(ready(), post_json("/tokenize", json!({"content": text}))).await;
    assert_eq!(plain["tokens"], json!(ids));
    let (status, _, d) = send(ready(), post_json("/detokenize", json!({"tokens": ids}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["content"], text);
}

#[tokio::test]
async fn chat_answer_conforms_to_the_schema() {
    let (status, _, v) = send(
        ready(),
        post_json(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    common::assert_schema("ChatCompletion", &v);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
}

#[tokio::test]
async fn every_logit_bias_shape_is_accepted() {
    for bias in
        [json!({"15": 2.5}), json!({"Hello": -1}), json!([[15, -1.0], [16, false]]), json!([["Hello world", -0.5]])]
    {
        let body = json!({"prompt": "Hi", "n_predict": 1, "logit_bias": bias});
        let (status, _, v) = send(ready(), post_json("/completion", body)).await;
        assert_eq!(status, StatusCode::OK, "{bias}: {v}");
    }
    // A banned token never appears: ban the greedy choice and it changes.
    let greedy = json!({"prompt": "The capital of France is", "n_predict": 1, "temperature": 0, "return_tokens": true});
    let (_, _, first) = send(ready(), post_json("/completion", greedy.clone())).await;
    let top = first["tokens"][0].as_i64().unwrap();
    let mut banned = greedy;
    banned["logit_bias"] = json!([[top, false]]);
    let (_, _, second) = send(ready(), post_json("/completion", banned)).await;
    assert_ne!(second["tokens"][0].as_i64().unwrap(), top, "{second}");
}

#[tokio::test]
async fn an_oversized_logit_bias_text_is_refused_before_tokenizing() {
    let limit = llama_server::MAX_LOGIT_BIAS_TEXT_BYTES;
    let long = "a".repeat(limit + 1);
    let cases = [
        ("/completion", json!({"prompt": "Hi", "n_predict": 1, "logit_bias": [[long, 1.0]]})),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 1, "logit_bias": {long.clone(): -1}})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "logit_bias": [[long, 1]]}),
        ),
    ];
    for (path, body) in cases {
        let (status, _, v) = send(ready(), post_json(path, body)).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert_eq!(v["error"]["param"], "logit_bias", "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(&limit.to_string()), "{path}: the message should name the limit: {v}");
    }
    // A key of exactly the limit is tokenized (and refused only for its token count).
    let at_limit = "a ".repeat(limit / 2);
    let (status, _, v) =
        send(ready(), post_json("/completion", json!({"prompt": "Hi", "n_predict": 1, "logit_bias": [[at_limit, 1]]})))
            .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 1024 tokens"), "{v}");
}

#[tokio::test]
async fn a_logit_bias_with_much_text_in_all_is_applied() {
    // 24 keys of 4 KiB (96 KiB in all: parsed on a blocking thread): token
    // ids padded with spaces, which parse as ids. Banning the greedy choice
    // among them changes it.
    let greedy = json!({"prompt": "The capital of France is", "n_predict": 1, "temperature": 0, "return_tokens": true});
    let (_, _, first) = send(ready(), post_json("/completion", greedy.clone())).await;
    let top = first["tokens"][0].as_i64().unwrap();
    let width = llama_server::MAX_LOGIT_BIAS_TEXT_BYTES;
    let bias: serde_json::Map<String, Value> =
        (0..23).chain([top]).map(|id| (format!("{id:>width$}"), json!(false))).collect();
    let mut banned = greedy;
    banned["logit_bias"] = Value::Object(bias);
    let (status, _, second) = send(ready(), post_json("/completion", banned)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["tokens"][0].as_i64().unwrap(), top, "{second}");
}

/// With `n` choices of one prompt, the prompt and its cached tokens count
/// once, streamed or not: both choices reuse the cached prefix, and the
/// usage must not report more cached tokens than the prompt has.
#[tokio::test]
async fn cached_tokens_count_once_per_prompt_streamed_or_not() {
    let prompt = "Cached prompts are counted once: one two three four five six seven eight";
    let body = |stream: bool| {
        json!({"prompt": prompt, "n": 2, "max_tokens": 2, "temperature": 0, "stream": stream,
               "stream_options": {"include_usage": true}})
    };
    // Its own server state: the shared one's slots are reused by the
    // other tests running beside this one.
    let state = {
        let s = settings(&[]);
        let state = AppState::new(s.clone());
        state.set_ready(Ready::load(&s, state.stats()).expect("model loads"));
        state
    };
    // Warm both slots with the prompt.
    for _ in 0..2 {
        let (status, _, v) = send(state.clone(), post_json("/v1/completions", body(false))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (_, _, plain) = send(state.clone(), post_json("/v1/completions", body(false))).await;
    let (status, _, streamed) = send(state.clone(), post_json("/v1/completions", body(true))).await;
    assert_eq!(status, StatusCode::OK);
    let text = streamed.as_str().expect("an SSE body");
    let usage = common::sse_data(text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .unwrap_or_else(|| panic!("no usage chunk in:\n{text}"));
    let cached = |u: &Value| u["prompt_tokens_details"]["cached_tokens"].as_u64().expect("cached_tokens");
    let plain = &plain["usage"];
    assert!(cached(plain) > 0, "the warmed prompt was not reused: {plain}");
    assert!(cached(plain) <= plain["prompt_tokens"].as_u64().unwrap(), "{plain}");
    assert_eq!(usage["prompt_tokens"], plain["prompt_tokens"], "{usage} vs {plain}");
    assert_eq!(cached(&usage), cached(plain), "{usage} vs {plain}");
    assert_eq!(usage["completion_tokens"], 4, "{usage}");
}
