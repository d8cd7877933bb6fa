//! Load against the real `llama-server` process, bounded and loopback-only:
//! 16 concurrent clients, each sending N requests one after another, mixing
//! streaming and non-streaming, short and long prompts. Every request must
//! end with a complete response or a designed 503; no other 5xx; the
//! server's resident set must not grow by more than 5 % after a warm-up.
//! p50/p99 latencies are reported.
//!
//! Also here, because it needs the same server idle and then loaded: the
//! same seeded request replayed solo gives a byte-identical stream (volatile
//! `id`/`created`/`timings` fields aside), and under load the rate at which
//! outputs differ from the solo run is measured and reported.
//!
//! One test function, so that the phases never overlap.

use std::time::Duration;

use llama_e2e::figures::{self, knob};
use llama_e2e::http::{self, Request};
use llama_e2e::load::{self, LoadSpec, Outcome};
use llama_e2e::server::{SMALL, ServerProcess};
use serde_json::{Value, json};

/// The SSE payloads of a stream with per-response volatile fields removed.
fn normalized_stream(resp: &http::Response) -> Vec<String> {
    resp.sse_data()
        .into_iter()
        .map(|d| match serde_json::from_str::<Value>(&d) {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    for k in ["id", "created", "timings", "system_fingerprint"] {
                        o.remove(k);
                    }
                }
                v.to_string()
            }
            Err(_) => d,
        })
        .collect()
}

fn seeded_request(k: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": format!("Write two sentences about the number {k}.")}],
        "max_tokens": 24, "stream": true, "seed": 1000 + k, "temperature": 0.9, "top_k": 40,
        "logprobs": true, "top_logprobs": 2, "cache_prompt": false,
    })
}

#[test]
fn load_loses_nothing_and_rss_stays_flat() {
    let s = ServerProcess::start(SMALL);
    let addr = s.addr();

    // --- determinism: solo replay ------------------------------------------
    let det_requests = knob("determinism_http", 4, 20);
    let mut solo = Vec::new();
    for k in 0..det_requests {
        let a = s.post("/v1/chat/completions", &seeded_request(k));
        let b = s.post("/v1/chat/completions", &seeded_request(k));
        assert_eq!(a.status(), 200, "{}", a.describe());
        let (na, nb) = (normalized_stream(&a), normalized_stream(&b));
        assert!(na.len() > 2, "{}", a.describe());
        assert_eq!(na, nb, "request {k}: a seeded stream replayed solo differs");
        solo.push(na);
    }

    // --- load ----------------------------------------------------------------
    let clients = knob("clients", 16, 16);
    let per_client = knob("requests_per_client", 10, 1000);
    let long_words = knob("long_prompt_words", 60, 300);
    let warm = LoadSpec {
        clients,
        requests_per_client: 1,
        max_tokens: 4,
        long_prompt_words: long_words,
        seed: 1,
        read_timeout: Duration::from_secs(600),
        ..LoadSpec::default()
    };
    let warm_report = load::run(addr, &warm);
    assert!(warm_report.lost().is_empty(), "warm-up lost requests: {:?}", warm_report.lost());
    let rss_base = s.rss_kib().expect("VmRSS");

    // While the load runs, replay the seeded requests and count how often
    // their output differs from the solo run (batch composition changes the
    // floating-point sums; reported, not asserted).
    let det_thread = std::thread::spawn(move || {
        let mut differ = 0;
        let mut compared = 0;
        for (k, solo) in solo.iter().enumerate() {
            if let Ok(r) = http::send(
                addr,
                &Request::post_json("/v1/chat/completions", &seeded_request(k)),
                Duration::from_secs(600),
            ) && r.status() == 200
            {
                compared += 1;
                if normalized_stream(&r) != *solo {
                    differ += 1;
                }
            }
        }
        (compared, differ)
    });
    let spec = LoadSpec {
        clients,
        requests_per_client: per_client,
        max_tokens: knob("max_tokens", 4, 8) as u32,
        long_prompt_every: 5,
        long_prompt_words: long_words,
        seed: 2,
        deadline: Duration::from_secs(knob("load_deadline_s", 900, 3600) as u64),
        // A non-streaming request sends nothing until it is done, and may
        // first wait in the queue behind 15 others on a slow shared machine.
        read_timeout: Duration::from_secs(600),
    };
    let report = load::run(addr, &spec);
    let (det_compared, det_differ) = det_thread.join().expect("determinism thread");
    let rss_after = s.rss_kib().expect("VmRSS");
    let growth = (rss_after as f64 - rss_base as f64) / rss_base as f64;

    let lost = report.lost();
    let streamed = report.records.iter().filter(|r| r.stream).count();
    let long = report.records.iter().filter(|r| r.long_prompt).count();
    let server_errors = report.count(|o| matches!(o, Outcome::ServerError(..)));
    figures::record(
        "load",
        json!({
            "clients": clients,
            "requests": report.records.len(),
            "not_sent_deadline": report.not_sent,
            "streaming": streamed,
            "long_prompts": long,
            "complete": report.complete(),
            "overloaded_503": report.overloaded(),
            "lost": lost.len(),
            "server_errors": server_errors,
            "p50_ms": report.latency_quantile(0.5).as_millis() as u64,
            "p99_ms": report.latency_quantile(0.99).as_millis() as u64,
            "max_ms": report.latency_quantile(1.0).as_millis() as u64,
            "wall_s": report.wall.as_secs_f64(),
            "throughput_rps": report.records.len() as f64 / report.wall.as_secs_f64(),
            "rss_base_kib": rss_base,
            "rss_after_kib": rss_after,
            "rss_growth_pct": growth * 100.0,
            "determinism_compared_under_load": det_compared,
            "determinism_differ_under_load": det_differ,
        }),
    );
    assert_eq!(report.not_sent, 0, "the load did not finish within its deadline");
    assert!(
        lost.is_empty(),
        "{} of {} requests lost:\n{:#?}\nlog tail:\n{}",
        lost.len(),
        report.records.len(),
        &lost[..lost.len().min(5)],
        s.log_tail(30)
    );
    assert_eq!(report.records.len(), clients * per_client);
    assert!(growth < 0.05, "server RSS grew {:.1} % under load ({rss_base} → {rss_after} KiB)", growth * 100.0);
    s.assert_healthy("load");
}
