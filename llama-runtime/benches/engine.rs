//! Engine throughput and latency: aggregate generated tokens per second and
//! time to first token (p50/p99) at 1, 4 and 8 concurrent requests, printed
//! as one JSON object on stdout. A benchmark, not a test.
//!
//! ```text
//! cargo bench -p llama-runtime --bench engine
//! ```
//!
//! Environment: `LLAMA_MODEL` (default: the repository's default model),
//! `BENCH_THREADS` (default: available cores), `BENCH_TOKENS` (tokens per
//! request, default 64), `BENCH_ROUNDS` (rounds per concurrency level,
//! default 3), `BENCH_CONCURRENCY` (comma-separated, default `1,4,8`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_core::{Model, ModelParams};
use llama_runtime::{Engine, EngineConfig, Request, SamplingParams};
use serde_json::json;

const PROMPTS: [&str; 8] = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "List some facts about the moon.",
    "Describe the water cycle in simple terms.",
    "What makes a good cup of tea?",
    "Give advice to a new programmer.",
    "Summarize the rules of chess.",
    "Why is the sky blue?",
];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model_path = std::env::var("LLAMA_MODEL").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let threads: i32 = env("BENCH_THREADS", std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    let tokens: u32 = env("BENCH_TOKENS", 64);
    let rounds: usize = env("BENCH_ROUNDS", 3);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,8".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    let max_level = levels.iter().copied().max().unwrap_or(1) as u32;

    let model = Arc::new(Model::load(&model_path, &ModelParams::default())?);
    let config = EngineConfig {
        n_ctx: 512 * max_level,
        n_seq_max: max_level,
        n_batch: 512,
        n_ubatch: 512,
        n_threads: threads,
        n_threads_batch: threads,
        queue_capacity: 64,
        ..EngineConfig::default()
    };
    let engine = Engine::start(Arc::clone(&model), config)?;
    let request = |i: usize| {
        let mut r = Request::new(PROMPTS[i % PROMPTS.len()]);
        r.sampling = SamplingParams::greedy();
        r.max_tokens = Some(tokens);
        r.ignore_eos = true;
        // Every round does the same prompt work.
        r.cache_prompt = false;
        r
    };
    // Warm-up (page in the weights, build the graphs).
    futures::executor::block_on(engine.submit(request(0))?.collect())?;

    let mut results = Vec::new();
    for &c in &levels {
        let mut ttft = Vec::new();
        let mut generated = 0u64;
        let mut wall = Duration::ZERO;
        let steps_before = engine.metrics();
        for round in 0..rounds {
            let start = Instant::now();
            let handles = (0..c).map(|i| engine.submit(request(round * c + i))).collect::<Result<Vec<_>, _>>()?;
            let outputs =
                futures::executor::block_on(futures::future::join_all(handles.into_iter().map(|h| h.collect())));
            wall += start.elapsed();
            for out in outputs {
                let out = out?;
                generated += u64::from(out.usage.completion_tokens);
                ttft.extend(out.timings.first_token);
            }
        }
        ttft.sort_unstable();
        let m = engine.metrics();
        let steps = m.decode_steps - steps_before.decode_steps;
        let seq_steps = m.busy_seq_steps_total - steps_before.busy_seq_steps_total;
        results.push(json!({
            "concurrency": c,
            "requests": c * rounds,
            "tokens_per_request": tokens,
            "generated_tokens": generated,
            "wall_s": wall.as_secs_f64(),
            "tokens_per_s": generated as f64 / wall.as_secs_f64(),
            "ttft_p50_ms": percentile(&ttft, 50.0),
            "ttft_p99_ms": percentile(&ttft, 99.0),
            "mean_batch_occupancy": if steps > 0 { seq_steps as f64 / steps as f64 } else { 0.0 },
        }));
    }
    engine.shutdown_blocking(Duration::from_secs(5));
    let report = json!({
        "benchmark": "llama-runtime/engine",
        "model": model_path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "threads": threads,
        "n_seq_max": max_level,
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
