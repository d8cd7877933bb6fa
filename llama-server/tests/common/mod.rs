//! Shared helpers for the real-process tests: start the `llama-server`
//! binary on a free loopback port with the real model, parse SSE, and
//! validate JSON against the OpenAPI document's schemas.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The default model, relative to this crate.
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The built server binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_llama-server")
}

/// A running server process; killed when dropped.
pub struct Server {
    child: Mutex<Child>,
    pub port: u16,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// Flags every test server gets unless it overrides them: small context,
/// two slots, two threads.
const BASE_ARGS: &[&str] = &["--host", "127.0.0.1", "--port", "0", "-c", "1024", "-np", "2", "-t", "2", "-tb", "2"];

impl Server {
    /// Start with `args` (after the model and base flags) and wait until it
    /// listens; does not wait for the model.
    pub fn spawn(args: &[&str]) -> Server {
        Self::spawn_with_env(args, &[])
    }

    /// Same, with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(binary());
        cmd.arg("-m").arg(model_path()).args(BASE_ARGS).args(args);
        cmd.env("RUST_LOG", "info,llama_cpp=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn llama-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            // Keep draining so that the server never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start listening; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in listening line");
        Server { child: Mutex::new(child), port, base: format!("http://127.0.0.1:{port}"), log }
    }

    /// Start and wait for `/health` to answer 200.
    pub async fn start(args: &[&str]) -> Server {
        let s = Self::spawn(args);
        s.wait_healthy(Duration::from_secs(120)).await;
        s
    }

    /// Poll `/health` until 200.
    pub async fn wait_healthy(&self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(self.url("/health")).send().await
                && r.status() == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("server not healthy in time; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success());
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
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

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The OpenAPI document of the server.
pub fn openapi() -> Value {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("valid JSON")
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
    let doc = openapi();
    let errors = validate(&doc, name, value);
    assert!(errors.is_empty(), "{name} violations:\n{}\nvalue: {value:#}", errors.join("\n"));
}
