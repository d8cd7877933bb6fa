//! Clients that hang up must stop costing compute: streams dropped during
//! the prompt and during generation, and a non-streaming request whose
//! connection closes, all free their slots at once.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

async fn slots(s: &Server) -> Vec<Value> {
    reqwest::get(s.url("/slots")).await.unwrap().json::<Value>().await.unwrap().as_array().unwrap().clone()
}

async fn metric(s: &Server, name: &str) -> f64 {
    let text = reqwest::get(s.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_idle(s: &Server) -> bool {
    slots(s).await.iter().all(|x| x["state"] == "idle")
}

/// Open a chat stream and return the live response (the body not yet read).
async fn open_stream(client: &reqwest::Client, s: &Server, content: String, max_tokens: u32) -> reqwest::Response {
    let body = json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, "ignore_eos": true, "stream": true, "cache_prompt": false,
    });
    let r = client.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn dropped_clients_free_their_slots() {
    // Small batches make the prompts take many steps, so that the first
    // four clients really hang up while their prompts are being processed.
    let s =
        Server::start(&["-np", "4", "-c", "4096", "-b", "32", "-ub", "32", "--metrics", "--queue-size", "16"]).await;
    let cancelled_before = metric(&s, "llamars_requests_total{outcome=\"cancelled\"}").await;

    // Four streams with long prompts: drop them during prefill.
    let mut prefill = Vec::new();
    for i in 0..4 {
        let client = reqwest::Client::new(); // one connection each
        let long = format!("Request {i}. ") + &"The quick brown fox jumps over the lazy dog. ".repeat(60);
        prefill.push(open_stream(&client, &s, long, 400).await);
    }
    wait_until("a slot in prefill", Duration::from_secs(60), || async {
        slots(&s).await.iter().any(|x| x["state"] == "prefill")
    })
    .await;
    let in_prefill = slots(&s).await.iter().filter(|x| x["state"] == "prefill").count();
    assert!(in_prefill >= 1);
    drop(prefill);

    // Four streams with short prompts: drop them once tokens flow.
    let mut decoding = Vec::new();
    for i in 0..4 {
        let client = reqwest::Client::new();
        let r = open_stream(&client, &s, format!("Write a long story number {i}."), 400).await;
        decoding.push(r.bytes_stream());
    }
    for stream in decoding.iter_mut() {
        let mut seen = String::new();
        while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
            let chunk = tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("tokens flow");
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("open stream").unwrap()));
        }
    }
    assert!(slots(&s).await.iter().any(|x| x["state"] == "decode"));
    drop(decoding);

    // Every slot is free again within a few steps, nothing queued or running.
    wait_until("all slots idle", Duration::from_secs(20), || all_idle(&s)).await;
    assert_eq!(metric(&s, "llamacpp:requests_processing").await, 0.0);
    assert_eq!(metric(&s, "llamacpp:requests_deferred").await, 0.0);
    let cancelled = metric(&s, "llamars_requests_total{outcome=\"cancelled\"}").await - cancelled_before;
    assert_eq!(cancelled, 8.0, "each dropped stream counts as cancelled");
    // No request ran to its 400 tokens.
    assert_eq!(metric(&s, "llamars_requests_total{outcome=\"done\"}").await, 0.0);
    assert!(metric(&s, "llamacpp:tokens_predicted_total").await < 8.0 * 400.0 / 2.0);

    // A non-streaming request whose connection closes is cancelled too.
    let body = json!({"prompt": "Tell me everything.", "n_predict": 400, "ignore_eos": true}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let head = format!(
        "POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    wait_until("the request to start decoding", Duration::from_secs(60), || async {
        slots(&s).await.iter().any(|x| x["state"] == "decode")
    })
    .await;
    drop(tcp);
    wait_until("the slot to be freed", Duration::from_secs(20), || all_idle(&s)).await;
    let cancelled = metric(&s, "llamars_requests_total{outcome=\"cancelled\"}").await - cancelled_before;
    assert_eq!(cancelled, 9.0);

    // The server is immediately usable: a new request gets a slot at once.
    let started = Instant::now();
    let r: Value = reqwest::Client::new()
        .post(s.url("/completion"))
        .json(&json!({"prompt": "Hello", "n_predict": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tokens_predicted"], 2, "{r}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(metric(&s, "llamacpp:requests_deferred").await, 0.0);
}
