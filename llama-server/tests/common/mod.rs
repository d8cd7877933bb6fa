//! Shared helpers for the real-process tests: start the `llama-server`
//! binary on a free loopback port with the real model (through llama-e2e's
//! `ServerProcess`, the workspace's one server spawner), parse SSE (llama-e2e's
//! one parser), and validate JSON against the OpenAPI document's schemas.
//! [`oneshot`] sends requests through the router in process instead, on a
//! state without a model or over the fake engine.
#![allow(dead_code)] // each test binary uses a different subset

pub mod oneshot;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use llama_e2e::server::{ServerCommand, ServerProcess};
use serde_json::Value;

/// The default model, relative to this crate.
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The built server binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_llama-server")
}

/// A running server process (a [`ServerProcess`] of this crate's binary);
/// killed when dropped.
pub struct Server {
    process: ServerProcess,
    pub port: u16,
    pub base: String,
}

/// Flags every test server gets unless it overrides them: small context,
/// two slots, two threads. `ServerProcess` adds `--host 127.0.0.1`, a free
/// `--port` and `-m` (unless given).
const BASE_ARGS: &[&str] = &["-c", "1024", "-np", "2", "-t", "2", "-tb", "2"];

impl Server {
    /// Start with `args` (after the model and base flags) and wait until it
    /// listens; does not wait for the model.
    pub fn spawn(args: &[&str]) -> Server {
        Self::spawn_with_env(args, &[])
    }

    /// Same, with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let all: Vec<&str> = BASE_ARGS.iter().chain(args).copied().collect();
        let cmd = ServerCommand::new(&all).binary(binary()).model(model_path()).env("RUST_LOG", "info,llama_cpp=warn");
        let cmd = env.iter().fold(cmd, |c, (k, v)| c.env(k, v));
        let process = cmd.spawn().expect("spawn llama-server");
        // A server that already exited (a model that failed to load right
        // after it bound its port) is returned as it is: its test inspects
        // the exit status and the log.
        if let Err(e) = process.wait_listening(Duration::from_secs(60))
            && process.wait_exit(Duration::ZERO).is_none()
        {
            panic!("server did not start listening: {e}");
        }
        Server { port: process.port(), base: process.base_url(), process }
    }

    /// Start and wait for `/health` to answer 200.
    pub async fn start(args: &[&str]) -> Server {
        let s = Self::spawn(args);
        s.wait_healthy(Duration::from_secs(120)).await;
        s
    }

    /// Poll `/health` until 200 (blocking this test's runtime thread, which
    /// has nothing else to do meanwhile).
    pub async fn wait_healthy(&self, timeout: Duration) {
        if let Err(e) = self.process.wait_healthy(timeout) {
            panic!("server not healthy in time: {e}");
        }
    }

    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        self.process.sigterm();
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }
}

/// One server shared by the tests of a binary that run at the same time;
/// started on first use, killed when the last user drops it (so that no
/// process outlives the test binary).
pub async fn shared(slot: &'static Mutex<Weak<Server>>, args: &'static [&'static str]) -> Arc<Server> {
    let server = {
        let mut guard = slot.lock().unwrap();
        match guard.upgrade() {
            Some(existing) => existing,
            None => {
                let server = Arc::new(Server::spawn(args));
                *guard = Arc::downgrade(&server);
                server
            }
        }
    };
    // Every user waits: the first one may still be loading the model.
    server.wait_healthy(Duration::from_secs(120)).await;
    server
}

/// The `data:` payloads of an SSE body, in order (llama-e2e's parser).
pub fn sse_data(body: &str) -> Vec<String> {
    llama_e2e::sse::data(body)
}

/// The OpenAPI document of the server.
pub fn openapi() -> Value {
    openapi_doc().clone()
}

/// The document, read and parsed once per test binary (the in-process
/// tests check hundreds of bodies against it).
fn openapi_doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .expect("docs/openapi.json");
        serde_json::from_str(&text).expect("valid JSON")
    })
}

/// Validate `value` against the component schema `name` of the OpenAPI
/// document; returns the list of violations (empty = valid). Supports the
/// keywords the document uses: type, properties, required,
/// additionalProperties, items, enum, const, anyOf, oneOf, $ref.
pub fn validate(doc: &Value, name: &str, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let schema = serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
    check(doc, &schema, value, "$", &mut errors);
    errors
}

fn check(doc: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else { return };
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/components/schemas/").expect("local ref");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "unknown schema {name}");
        check(doc, target, value, path, errors);
        return;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let matching = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    check(doc, o, value, path, &mut e);
                    e.is_empty()
                })
                .count();
            if matching == 0 || (key == "oneOf" && matching > 1) {
                errors.push(format!("{path}: {key} matched {matching} options for {value}"));
            }
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        errors.push(format!("{path}: expected const {c}, got {value}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        errors.push(format!("{path}: {value} not in enum {e:?}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{path}: expected {types:?}, got {value}"));
            return;
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing required `{r}`"));
                }
            }
        }
        for (k, v) in obj {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &sub, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{sub}: not allowed")),
                    Some(s @ Value::Object(_)) => check(doc, s, v, &sub, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Assert that `value` matches schema `name`.
pub fn assert_schema(name: &str, value: &Value) {
    let errors = validate(openapi_doc(), name, value);
    assert!(errors.is_empty(), "{name} violations:\n{}\nvalue: {value:#}", errors.join("\n"));
}
