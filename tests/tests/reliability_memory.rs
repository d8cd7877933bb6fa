//! Memory: loading and dropping the model many times in one process, and
//! many requests through one engine, must leave the resident set where it
//! started (within a stated tolerance).
//!
//! One test function on purpose: resident-set figures of this process are
//! only meaningful when nothing else runs in it at the same time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_core::{Context, ContextParams, Model, ModelParams};
use llama_e2e::figures::{self, knob};
use llama_e2e::paths::model_path;
use llama_e2e::server::rss_kib;
use llama_runtime::{Engine, EngineConfig, Event, Request, SamplingParams};
use serde_json::json;

fn rss() -> u64 {
    rss_kib(std::process::id()).expect("/proc/self/status has VmRSS")
}

/// Allowed growth over the baseline: 5 % of the baseline, and at least
/// 8 MiB, because the allocator keeps freed blocks of a few MiB in its
/// arenas (glibc trims only the top of each heap).
fn tolerance(baseline_kib: u64) -> u64 {
    (baseline_kib / 20).max(8 * 1024)
}

fn load() -> Arc<Model> {
    Arc::new(Model::load(model_path(), &ModelParams::default()).expect("the default model loads"))
}

fn small_ctx() -> ContextParams {
    ContextParams { n_ctx: 512, n_batch: 128, n_ubatch: 128, n_threads: 2, n_threads_batch: 2, ..Default::default() }
}

#[test]
fn rss_returns_to_baseline() {
    let cycles = knob("load_cycles", 10, 50);
    let requests = knob("memory_requests", 300, 5000);

    // --- model load / drop ------------------------------------------------
    // Warm-up cycle: the first load initializes the backend (thread pools,
    // CPU feature tables) once per process.
    drop(Context::new(load(), &small_ctx()).expect("context"));
    let base_load = rss();
    let mut peak_load = base_load;
    let t0 = Instant::now();
    for _ in 0..cycles {
        let m = load();
        let mut ctx = Context::new(Arc::clone(&m), &small_ctx()).expect("context");
        // Touch the weights and the KV cache with a real decode.
        let toks = m.vocab().tokenize("Hello there, how are you?", true, false).unwrap();
        let mut b = ctx.new_batch();
        b.add_sequence(&toks, 0, 0, true).unwrap();
        ctx.decode(&b).unwrap();
        peak_load = peak_load.max(rss());
        drop(ctx);
        drop(m);
    }
    let after_load = rss();
    let load_secs = t0.elapsed().as_secs_f64();

    // --- engine: thousands of tiny requests ----------------------------------
    let model = load();
    let engine = Engine::start(
        Arc::clone(&model),
        EngineConfig {
            n_ctx: 1024,
            n_seq_max: 4,
            n_batch: 128,
            n_ubatch: 128,
            n_threads: 2,
            n_threads_batch: 2,
            queue_capacity: 64,
            ..Default::default()
        },
    )
    .expect("engine starts");
    let run = |n: usize, salt: usize| -> (usize, usize) {
        let mut done = 0;
        let mut other = 0;
        // Four at a time: every slot busy, the queue never full.
        for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
            let handles: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let mut req = Request::new(format!("Item {} of the list {}:", i, salt + i % 7));
                    req.sampling = SamplingParams { seed: *i as u32, temperature: 0.7, ..Default::default() };
                    req.max_tokens = Some(4);
                    req.stop = vec!["\n\n".into()];
                    req.n_probs = (i % 3) as u32;
                    engine.submit(req).expect("queue has room")
                })
                .collect();
            for h in handles {
                match h.blocking_iter().last() {
                    Some(Event::Done(_)) => done += 1,
                    _ => other += 1,
                }
            }
        }
        (done, other)
    };
    let warm = run(40, 0);
    assert_eq!(warm.1, 0, "warm-up requests failed");
    let base_req = rss();
    let t1 = Instant::now();
    let (done, failed) = run(requests, 1000);
    let req_secs = t1.elapsed().as_secs_f64();
    let after_req = rss();
    let metrics = engine.metrics();
    engine.shutdown_blocking(Duration::from_secs(10));
    drop(engine);
    drop(model);
    let after_all = rss();

    figures::record(
        "memory",
        json!({
            "load_cycles": cycles,
            "load_rss_baseline_kib": base_load,
            "load_rss_peak_kib": peak_load,
            "load_rss_after_kib": after_load,
            "load_seconds": load_secs,
            "requests": requests,
            "requests_done": done,
            "requests_failed": failed,
            "request_rss_baseline_kib": base_req,
            "request_rss_after_kib": after_req,
            "request_seconds": req_secs,
            "rss_after_engine_and_model_dropped_kib": after_all,
            "tolerance_kib": tolerance(base_load),
            "engine_generated_tokens": metrics.generated_tokens_total,
        }),
    );
    assert_eq!(failed, 0, "requests did not end with Done");
    assert_eq!(done, requests);
    assert!(
        after_load <= base_load + tolerance(base_load),
        "{cycles} load/drop cycles grew RSS from {base_load} to {after_load} KiB"
    );
    assert!(
        after_req <= base_req + tolerance(base_req),
        "{requests} requests grew RSS from {base_req} to {after_req} KiB"
    );
    assert!(
        after_all <= base_load + tolerance(base_load),
        "after dropping the engine and model RSS is {after_all} KiB, baseline {base_load} KiB"
    );
}
