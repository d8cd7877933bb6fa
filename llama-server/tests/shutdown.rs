//! SIGTERM: in-flight streams complete, new connections are refused, the
//! process exits 0. Also during model loading.

mod common;

use std::time::Duration;

use common::{Server, sse_data};
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn sigterm_drains_in_flight_streams_and_exits_zero() {
    let s = Server::start(&["-np", "2", "-c", "1024", "--drain-timeout", "120"]).await;
    const TOKENS: usize = 32;
    let mut streams = Vec::new();
    for i in 0..2 {
        let body = json!({"prompt": format!("Tale {i}:"), "max_tokens": TOKENS, "ignore_eos": true, "stream": true});
        let r = reqwest::Client::new().post(s.url("/v1/completions")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r.bytes_stream());
    }
    // Wait until both produce tokens, then ask the server to stop.
    let mut bodies = vec![String::new(), String::new()];
    for (stream, body) in streams.iter_mut().zip(bodies.iter_mut()) {
        while !body.contains("\"text\":") {
            let chunk = tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("tokens").unwrap();
            body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
    s.sigterm();

    // New connections are refused soon after the signal.
    let mut refused = false;
    for _ in 0..100 {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        if fresh.get(s.url("/health")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the listener should close on SIGTERM");

    // The in-flight streams run to their end.
    for (mut stream, mut body) in streams.into_iter().zip(bodies) {
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("progress") {
            body.push_str(&String::from_utf8_lossy(&chunk.expect("stream stays intact")));
        }
        let events = sse_data(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length", "{last}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = s.wait_exit(Duration::from_secs(60));
        (status, s.log())
    })
    .await
    .unwrap();
    let (status, log) = status;
    let status = status.unwrap_or_else(|| panic!("server did not exit; log:\n{log}"));
    assert_eq!(status.code(), Some(0), "log:\n{log}");
}

#[tokio::test]
async fn sigterm_while_loading_exits_zero() {
    let s = Server::spawn(&[]);
    s.sigterm();
    let status = tokio::task::spawn_blocking(move || s.wait_exit(Duration::from_secs(60))).await.unwrap();
    assert_eq!(status.expect("exited").code(), Some(0));
}
