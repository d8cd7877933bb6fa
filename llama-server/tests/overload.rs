//! More concurrent requests than slots plus queue: the excess is refused at
//! once with 503 and `Retry-After`; everything admitted completes.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn excess_requests_get_503_at_once_and_the_rest_complete() {
    // One slot and room for two waiting requests: three are admitted.
    let s = Server::start(&["-np", "1", "-c", "512", "--queue-size", "2", "--metrics"]).await;
    const N: usize = 8;
    const TOKENS: u64 = 64;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..N {
        let client = client.clone();
        let url = s.url("/v1/completions");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let body = json!({"prompt": format!("Story {i}:"), "max_tokens": TOKENS, "ignore_eos": true});
            let r = client.post(url).json(&body).send().await.expect("request");
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let v: Value = r.json().await.expect("json body");
            (status, retry_after, v, started.elapsed())
        }));
    }
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        let (status, retry_after, v, took) = t.await.unwrap();
        match status {
            200 => ok.push((v, took)),
            503 => refused.push((v, retry_after, took)),
            other => panic!("unexpected status {other}: {v}"),
        }
    }
    // The queue's two places are always there; the slot adds a third once
    // the engine has picked the first request up, which a loaded machine may
    // not have done before the others arrive.
    assert!(ok.len() >= 2, "the queue admits at least two, got {}", ok.len());
    assert!(!refused.is_empty(), "the excess must be refused");
    for (v, _) in &ok {
        assert_eq!(v["usage"]["completion_tokens"], TOKENS, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    let slowest_ok = ok.iter().map(|(_, t)| *t).max().unwrap();
    for (v, retry_after, took) in &refused {
        assert_eq!(v["error"]["type"], "unavailable_error", "{v}");
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
        // Refused at once, not after waiting for the others.
        assert!(*took < slowest_ok, "refused after {took:?}, slowest admitted took {slowest_ok:?}");
        assert!(*took < Duration::from_secs(5), "{took:?}");
    }
    let text = reqwest::get(s.url("/metrics")).await.unwrap().text().await.unwrap();
    let rejected: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("llamars_rejected_total "))
        .expect("llamars_rejected_total")
        .parse()
        .unwrap();
    assert_eq!(rejected as usize, refused.len());
}

#[tokio::test]
async fn requests_past_the_timeout_end_with_408_and_free_the_slot() {
    let s = Server::start(&["-np", "1", "-c", "2048", "--timeout", "2"]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let r = client
        .post(s.url("/completion"))
        .json(&json!({"prompt": "Go on forever:", "n_predict": 2000, "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "timeout_error", "{v}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // A stream past its deadline ends with an error event.
    let r = client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "Talk."}], "max_tokens": 2000, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let events = common::sse_data(&body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "timeout_error", "{body}");

    // The slot is free again: the engine stopped both generations.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots: Value = reqwest::get(s.url("/slots")).await.unwrap().json().await.unwrap();
        if slots.as_array().unwrap().iter().all(|x| x["state"] == "idle") {
            break;
        }
        assert!(Instant::now() < deadline, "slot still busy: {slots}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
