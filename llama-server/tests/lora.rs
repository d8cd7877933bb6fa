//! LoRA adapters on a real process with the real model and adapters the
//! test builds (llama-e2e's `lora`: random low-rank deltas to `attn_q` and
//! `attn_v` of the first block): `--lora`, `--lora-scaled`,
//! `--lora-init-without-apply`, `GET`/`POST /lora-adapters`, the per-request
//! `lora` field on `/completion` and the OpenAI routes, concurrent requests
//! with different adapter sets, and hostile adapter files.

mod common;

use std::time::Duration;

use common::{Server, assert_schema};
use llama_e2e::lora;
use serde_json::{Value, json};

const PROMPT: &str = "The capital of France is";

async fn send(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, server.url(path)).timeout(Duration::from_secs(120));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    send(server, reqwest::Method::POST, path, Some(body)).await
}

/// A greedy `/completion` of [`PROMPT`] (no cached prefix: every run
/// prefills the whole prompt, as a solo run does), with `lora` when given.
fn completion(lora: Option<Value>) -> Value {
    let mut body = json!({"prompt": PROMPT, "n_predict": 12, "temperature": 0, "cache_prompt": false});
    if let Some(lora) = lora {
        body["lora"] = lora;
    }
    body
}

async fn text(server: &Server, lora: Option<Value>) -> String {
    let (status, body) = post(server, "/completion", completion(lora)).await;
    assert_eq!(status, 200, "{body}");
    body["content"].as_str().expect("content").to_owned()
}

async fn adapters(server: &Server) -> Value {
    let (status, body) = send(server, reqwest::Method::GET, "/lora-adapters", None).await;
    assert_eq!(status, 200, "{body}");
    for a in body.as_array().expect("an array") {
        assert_schema("LoraAdapter", a);
    }
    body
}

fn scales(list: &Value) -> Vec<f64> {
    list.as_array().unwrap().iter().map(|a| a["scale"].as_f64().unwrap()).collect()
}

#[tokio::test]
async fn scales_global_and_per_request_and_sets_that_never_share_a_step() {
    let a = lora::adapter(1).unwrap();
    let b = lora::adapter(2).unwrap();
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    // The base model's greedy output, from a server without adapters.
    let base_text = {
        let base = Server::start(&[]).await;
        let (status, list) = send(&base, reqwest::Method::GET, "/lora-adapters", None).await;
        assert_eq!((status, list), (200, json!([])));
        text(&base, None).await
    };

    let b_scaled = format!("{b_s}:0.5");
    let s = Server::start(&["--lora", a_s, "--lora-scaled", &b_scaled, "--lora-init-without-apply"]).await;
    let list = adapters(&s).await;
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["path"], a_s);
    assert_eq!(list[0]["task_name"], "test-1");
    assert_eq!(list[0]["prompt_prefix"], "");
    assert_eq!(list[1]["path"], b_s);
    assert_eq!(scales(&list), [0.0, 0.0], "--lora-init-without-apply loads with scale 0");

    // Scale 0 is the base model exactly; a non-zero scale changes it.
    assert_eq!(text(&s, None).await, base_text);
    let (status, body) = post(&s, "/completion", completion(Some(json!([{"id": 0, "scale": 1.0}])))).await;
    assert_eq!(status, 200, "{body}");
    let with_a = body["content"].as_str().unwrap().to_owned();
    assert_ne!(with_a, base_text, "adapter 0 at scale 1 changes the greedy output");
    assert_eq!(body["generation_settings"]["lora"], json!([{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]));
    let with_b = text(&s, Some(json!([{"id": 1, "scale": 1.0}]))).await;
    assert_ne!(with_b, with_a);

    // POST sets the global scales (unlisted adapters 0); requests without
    // `lora` follow them, a request's own list overrides them.
    let (status, body) = post(&s, "/lora-adapters", json!([{"id": 0, "scale": 1.0}])).await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(scales(&adapters(&s).await), [1.0, 0.0]);
    assert_eq!(text(&s, None).await, with_a);
    assert_eq!(text(&s, Some(json!([]))).await, base_text, "an empty list turns every adapter off");
    let (_, body) = post(&s, "/completion", completion(None)).await;
    assert_eq!(body["generation_settings"]["lora"], json!([{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]));
    let (_, props) = send(&s, reqwest::Method::GET, "/props", None).await;
    assert_eq!(props["default_generation_settings"]["params"]["lora"][0]["scale"], 1.0);

    // Concurrent requests with three different sets (two slots): each gets
    // what it gets alone, twice over.
    for _ in 0..2 {
        let (x, y, z) =
            tokio::join!(text(&s, Some(json!([{"id": 1, "scale": 1.0}]))), text(&s, Some(json!([]))), text(&s, None),);
        assert_eq!((x.as_str(), y.as_str(), z.as_str()), (with_b.as_str(), base_text.as_str(), with_a.as_str()));
    }

    // The OpenAI routes take `lora` too.
    let chat = |lora: Value| json!({"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 8, "temperature": 0, "lora": lora});
    let (status, off) = post(&s, "/v1/chat/completions", chat(json!([]))).await;
    assert_eq!(status, 200, "{off}");
    let (_, on) = post(&s, "/v1/chat/completions", chat(json!([{"id": 0, "scale": 1.0}]))).await;
    assert_ne!(off["choices"][0]["message"]["content"], on["choices"][0]["message"]["content"]);
    let (status, body) =
        post(&s, "/v1/completions", json!({"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "lora": []})).await;
    assert_eq!(status, 200, "{body}");

    // Unknown ids and malformed lists are 400s that name the field; nothing changes.
    for (path, body, param) in [
        ("/completion", completion(Some(json!([{"id": 2, "scale": 1.0}]))), "lora[0].id"),
        ("/completion", completion(Some(json!([{"id": -1, "scale": 1.0}]))), "lora[0].id"),
        ("/completion", completion(Some(json!({"id": 0}))), "lora"),
        ("/v1/chat/completions", chat(json!([{"id": 0}, {"id": 7}])), "lora[1].id"),
        ("/lora-adapters", json!([{"id": 2, "scale": 1.0}]), "[0].id"),
        ("/lora-adapters", json!([{"id": 0, "scale": "high"}]), "[0].scale"),
        ("/lora-adapters", json!({"id": 0, "scale": 1.0}), ""),
    ] {
        let (status, err) = post(&s, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {err}");
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{path} {body}: {err}");
        }
    }
    assert_eq!(scales(&adapters(&s).await), [1.0, 0.0]);
}

#[tokio::test]
async fn hostile_adapter_files_stop_the_server_with_one_line() {
    let model = lora::writer(&common::model_path(), 3).unwrap();
    let good = model.to_bytes();
    let truncated = lora::write("truncated.gguf", &good[..good.len() / 2]).unwrap();
    let mut other_arch = model.clone();
    other_arch.meta("general.architecture", llama_e2e::gguf_edit::Value::Str("gemma".into()));
    let other_arch = lora::write("gemma.gguf", &other_arch.to_bytes()).unwrap();
    let mut shapes = model.clone();
    shapes.tensor_f32("blk.1.attn_q.weight.lora_a", &[100, lora::RANK], vec![0.0; 100 * lora::RANK as usize]);
    shapes.tensor_f32("blk.1.attn_q.weight.lora_b", &[lora::RANK, 576], vec![0.0; 576 * lora::RANK as usize]);
    let shapes = lora::write("shapes.gguf", &shapes.to_bytes()).unwrap();
    let missing = truncated.with_file_name("missing.gguf");
    let model_file = common::model_path();

    for (path, needle) in [
        (&truncated, "invalid LoRA adapter"),
        (&other_arch, "`gemma` models"),
        (&shapes, "blk.1.attn_q.weight"),
        (&missing, "no such file"),
        (&model_file, "general.type"),
    ] {
        let s = Server::spawn(&["--lora", path.to_str().unwrap()]);
        let status = s.wait_exit(Duration::from_secs(60)).expect("the server exits");
        let log = s.log();
        assert_eq!(status.code(), Some(1), "{}: {log}", path.display());
        let line = log.lines().find(|l| l.starts_with("llama-server: error:")).unwrap_or_default();
        assert!(line.contains("LoRA adapter") && line.contains(needle), "{}: {log}", path.display());
    }

    // Bad flag values stop it before anything loads.
    for bad in ["a.gguf", "a.gguf:x", "a:b.gguf:1"] {
        let s = Server::spawn(&["--lora-scaled", bad]);
        let status = s.wait_exit(Duration::from_secs(30)).expect("the server exits");
        assert_eq!(status.code(), Some(1), "{bad}: {}", s.log());
        assert!(s.log().contains("--lora-scaled"), "{bad}: {}", s.log());
    }
}
