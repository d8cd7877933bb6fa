//! Section 2: llama-runtime's engine, in a child process of the suite, at
//! each concurrency level; and the C baseline's `batched` mode (the same
//! sequences, prefilled and decoded by hand in one context of the same
//! shape), which is what continuous batching can reach at best.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use llama_core::{Model, ModelParams, SamplingParams};
use llama_runtime::{Engine, EngineConfig, Event, Request};
use serde::{Deserialize, Serialize};

use super::load::{LevelFigures, LoadConfig, RequestTrace, RunTrace, prompt};
use super::proc::self_vm_hwm;
use crate::stats::{Summary, percentile};

/// Words per prompt for about `tokens` tokens of this prose (≈ 1.3 tokens a word).
pub fn words_for(tokens: u32) -> usize {
    (tokens as usize * 3 / 4).max(1)
}

/// The engine configuration every level runs under (and the server's flags mirror).
pub fn engine_config(cfg: &LoadConfig, threads: i32) -> EngineConfig {
    EngineConfig {
        n_ctx: cfg.n_ctx,
        n_seq_max: cfg.n_seq_max,
        n_batch: cfg.n_batch,
        n_ubatch: cfg.n_batch,
        n_threads: threads,
        n_threads_batch: threads,
        ..EngineConfig::default()
    }
}

/// What `bench-suite --child engine` prints: one run per level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineChildOutput {
    /// (concurrency, run) per level.
    pub runs: Vec<(u32, RunTrace)>,
    /// Peak RSS of the child.
    pub vm_hwm_kib: Option<u64>,
}

/// The child: start an engine, warm it up, run every level once.
pub fn child(model_path: &Path, threads: i32, cfg: &LoadConfig, round: u32) -> anyhow::Result<EngineChildOutput> {
    let model = Arc::new(Model::load(model_path, &ModelParams::default())?);
    let engine = Engine::start(model, engine_config(cfg, threads))?;
    // The client side of an in-process embedding: one thread, polling the
    // handles; the engine has its own OS thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let runs = rt.block_on(async {
        run_level(&engine, 1, cfg, usize::MAX, 4).await?;
        let mut runs = Vec::new();
        for (k, &c) in cfg.levels.iter().enumerate() {
            let run_id = round as usize * 100 + k;
            runs.push((c, run_level(&engine, c, cfg, run_id, cfg.max_tokens).await?));
        }
        anyhow::Ok(runs)
    })?;
    engine.shutdown_blocking(std::time::Duration::from_secs(5));
    Ok(EngineChildOutput { runs, vm_hwm_kib: self_vm_hwm() })
}

async fn run_level(
    engine: &Engine,
    concurrency: u32,
    cfg: &LoadConfig,
    run_id: usize,
    max_tokens: u32,
) -> anyhow::Result<RunTrace> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency as usize {
        let mut req = Request::new(prompt(run_id, i, words_for(cfg.prompt_tokens)));
        req.sampling = SamplingParams::greedy();
        req.max_tokens = Some(max_tokens);
        req.ignore_eos = true;
        let submitted = start.elapsed().as_secs_f64();
        let mut handle = engine.submit(req).map_err(|e| anyhow::anyhow!("submit refused: {e}"))?;
        let prompt_tokens = handle.n_prompt_tokens();
        tasks.push(async move {
            let mut trace = RequestTrace { submitted, tokens: Vec::new(), prompt_tokens };
            while let Some(ev) = handle.next().await {
                match ev {
                    Event::Token(_) => trace.tokens.push(start.elapsed().as_secs_f64()),
                    Event::Done(_) => return anyhow::Ok(trace),
                    Event::Error(e) => bail!("request failed: {e}"),
                    other => bail!("unexpected event {other:?}"),
                }
            }
            bail!("event stream ended without a terminal event")
        });
    }
    let requests = futures::future::try_join_all(tasks).await?;
    Ok(RunTrace { requests })
}

/// One level of the C baseline's `batched` mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BaselineLevel {
    /// Sequences.
    pub concurrency: u32,
    /// Tokens/s of all sequences together, per repetition.
    pub aggregate_tok_s: Summary,
    /// Time to first token, ms (p50 over sequences and repetitions).
    pub ttft_ms_p50: Option<f64>,
    /// Largest time to first token, ms.
    pub ttft_ms_max: Option<f64>,
    /// Decode step time, ms (p50).
    pub itl_ms_p50: Option<f64>,
    /// Decode step time, ms (p99).
    pub itl_ms_p99: Option<f64>,
    /// Median TTFT of the k-th sequence, ms.
    pub ttft_ms_by_rank: Vec<f64>,
}

/// Raw output of `llama-baseline batched`.
#[derive(Debug, Default, Deserialize)]
pub struct BatchedOutput {
    /// Per sequence and repetition.
    pub ttft_ms: Vec<f64>,
    /// Per decode step.
    pub itl_ms: Vec<f64>,
    /// Per repetition.
    pub aggregate_tok_s: Vec<f64>,
}

impl BatchedOutput {
    /// Append another run's samples.
    pub fn extend(&mut self, o: BatchedOutput) {
        self.ttft_ms.extend(o.ttft_ms);
        self.itl_ms.extend(o.itl_ms);
        self.aggregate_tok_s.extend(o.aggregate_tok_s);
    }

    /// The figures of one level.
    pub fn figures(&self, concurrency: u32) -> BaselineLevel {
        BaselineLevel {
            concurrency,
            aggregate_tok_s: Summary::of(self.aggregate_tok_s.clone()),
            ttft_ms_p50: percentile(&self.ttft_ms, 50.0),
            ttft_ms_max: self.ttft_ms.iter().copied().reduce(f64::max),
            itl_ms_p50: percentile(&self.itl_ms, 50.0),
            itl_ms_p99: percentile(&self.itl_ms, 99.0),
            ttft_ms_by_rank: (0..concurrency as usize)
                .filter_map(|k| {
                    let at: Vec<f64> =
                        self.ttft_ms.iter().skip(k).step_by(concurrency.max(1) as usize).copied().collect();
                    crate::stats::median(&at)
                })
                .collect(),
        }
    }
}

/// Run `llama-baseline batched` for one level.
pub fn baseline_batched(
    model: &Path,
    threads: i32,
    cfg: &LoadConfig,
    n_prompt: u32,
    concurrency: u32,
) -> anyhow::Result<(BatchedOutput, Option<u64>)> {
    let m = super::proc::run_measured(
        std::process::Command::new(llama_sys::BASELINE_BIN).arg(model).arg("batched").args([
            n_prompt.to_string(),
            cfg.max_tokens.to_string(),
            concurrency.to_string(),
            "1".to_string(),
            threads.to_string(),
            cfg.n_batch.to_string(),
            cfg.n_ctx.to_string(),
            cfg.n_seq_max.to_string(),
        ]),
        std::time::Duration::from_secs(600),
    )?
    .check("llama-baseline batched")?;
    let out: BatchedOutput = serde_json::from_str(m.stdout_text().trim()).context("llama-baseline batched output")?;
    Ok((out, m.vm_hwm_kib))
}

/// Section 2 as written to benchmarks.json.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSection {
    /// The load.
    pub config: LoadConfig,
    /// Mean prompt length in tokens, as the engine tokenized it.
    pub prompt_tokens: f64,
    /// The engine, per level.
    pub levels: Vec<LevelFigures>,
    /// The C baseline's `batched` mode, per level.
    pub baseline: Vec<BaselineLevel>,
    /// Peak RSS of the engine child, MiB.
    pub peak_rss_mib: Summary,
    /// Peak RSS of the baseline, MiB.
    pub baseline_peak_rss_mib: Summary,
}

/// Run one engine child (all levels, once).
pub fn spawn_child(model: &Path, threads: i32, cfg: &LoadConfig, round: u32) -> anyhow::Result<EngineChildOutput> {
    let exe = std::env::current_exe()?;
    let m = super::proc::run_measured(
        std::process::Command::new(exe)
            .args(["--child", "engine", "--threads", &threads.to_string(), "--round", &round.to_string(), "--model"])
            .arg(model)
            .arg("--load-config")
            .arg(serde_json::to_string(cfg)?),
        std::time::Duration::from_secs(600),
    )?
    .check("bench-suite --child engine")?;
    serde_json::from_str(m.stdout_text().trim()).context("engine child output")
}
