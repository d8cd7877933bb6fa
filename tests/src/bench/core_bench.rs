//! Section 1: llama-core driven directly against the C baseline.
//!
//! Both sides do the same work as `llama-baseline bench`: a synthetic prompt
//! `(i * 7919 + 13) % n_vocab`, a small warm-up decode, then per repetition
//! a cleared KV cache and a prefill in chunks of `n_batch` with logits for
//! the last token only (pp), and a cleared cache and `n_gen` single-token
//! decodes (tg). Each side runs in its own process (so that each has its own
//! peak RSS), and rounds alternate baseline, ours, baseline, ours.
//!
//! Ours also measures what the baseline's loop does not do: sampling. A
//! real prompt is prefilled and `n_gen` tokens are generated with the greedy
//! chain and with the full default chain (top-k 40, typical, top-p 0.95,
//! min-p 0.05, temperature 0.8, dist), timing `Sampler::sample` apart from
//! `Context::decode` for every token.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use llama_core::bench::{PpTg, prefill};
use llama_core::{Context, ContextParams, Model, ModelParams, Sampler, SamplingParams};
use serde::{Deserialize, Serialize};

use super::proc::{run_measured, self_vm_hwm};
use crate::stats::{Summary, median, ratio};

/// Sizes of the llama-core section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreConfig {
    /// Prompt tokens for pp.
    pub n_prompt: u32,
    /// Generated tokens for tg and for the sampling runs.
    pub n_gen: u32,
    /// Batch (and micro-batch) size.
    pub n_batch: u32,
    /// Repetitions inside each process.
    pub reps: u32,
    /// Processes per side (interleaved).
    pub rounds: u32,
}

/// Text for the sampling runs: real prose, so the logits look like real ones.
const SAMPLING_PROMPT: &str = "Once upon a time, in a small village by the sea, there lived an old fisherman who";

/// One sampling run of the child. Medians, not means: a token that the OS
/// preempted says nothing about the code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingRun {
    /// Median µs per `Sampler::sample` call.
    pub sample_us_median: f64,
    /// Fastest `Sampler::sample` call, µs.
    pub sample_us_min: f64,
    /// Median µs per single-token `Context::decode` call.
    pub decode_us_median: f64,
}

/// What `bench-suite --child core` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreChildOutput {
    /// Prompt processing, tokens/s per repetition.
    pub pp: Vec<f64>,
    /// Generation, tokens/s per repetition.
    pub tg: Vec<f64>,
    /// Peak RSS after the pp/tg part (before the sampling context exists).
    pub vm_hwm_kib: Option<u64>,
    /// Greedy chain.
    pub greedy: SamplingRun,
    /// The default chain.
    pub default_chain: SamplingRun,
}

/// Run the child's measurements (in this process) and return them.
pub fn child(model_path: &Path, threads: i32, cfg: &CoreConfig) -> anyhow::Result<CoreChildOutput> {
    let model = Arc::new(Model::load(model_path, &ModelParams::default())?);
    let (pp, tg) = {
        // The protocol of the C baseline's bench mode (llama_core::bench).
        let mut bench = PpTg::new(Arc::clone(&model), cfg.n_prompt, cfg.n_gen, cfg.n_batch, threads)?;
        let pp = (0..cfg.reps).map(|_| bench.pp()).collect::<Result<Vec<f64>, _>>()?;
        let tg = (0..cfg.reps).map(|_| bench.tg()).collect::<Result<Vec<f64>, _>>()?;
        (pp, tg)
    };
    let vm_hwm_kib = self_vm_hwm();
    let greedy = sampling_run(&model, threads, cfg, &SamplingParams::greedy())?;
    let default_chain = sampling_run(&model, threads, cfg, &SamplingParams { seed: 42, ..SamplingParams::default() })?;
    Ok(CoreChildOutput { pp, tg, vm_hwm_kib, greedy, default_chain })
}

fn sampling_run(
    model: &Arc<Model>,
    threads: i32,
    cfg: &CoreConfig,
    sampling: &SamplingParams,
) -> anyhow::Result<SamplingRun> {
    let prompt = model.vocab().tokenize(SAMPLING_PROMPT, true, false)?;
    let params = ContextParams {
        n_ctx: prompt.len() as u32 + cfg.n_gen + 16,
        n_batch: cfg.n_batch,
        n_ubatch: cfg.n_batch,
        n_seq_max: 1,
        n_threads: threads,
        n_threads_batch: threads,
        ..ContextParams::default()
    };
    let mut ctx = Context::new(Arc::clone(model), &params)?;
    let mut sampler = Sampler::new(model, sampling)?;
    let mut last = prefill(&mut ctx, &prompt)?;
    let mut batch = ctx.new_batch();
    let mut sample_us = Vec::with_capacity(cfg.n_gen as usize);
    let mut decode_us = Vec::with_capacity(cfg.n_gen as usize);
    for pos in prompt.len()..prompt.len() + cfg.n_gen as usize {
        let t0 = Instant::now();
        let token = sampler.sample(&ctx, last)?;
        sample_us.push(t0.elapsed().as_secs_f64() * 1e6);
        batch.clear();
        last = batch.add(token, pos as i32, &[0], true)?;
        let t1 = Instant::now();
        ctx.decode(&batch)?;
        decode_us.push(t1.elapsed().as_secs_f64() * 1e6);
    }
    Ok(SamplingRun {
        sample_us_median: median(&sample_us).unwrap_or(f64::NAN),
        sample_us_min: sample_us.iter().copied().fold(f64::INFINITY, f64::min),
        decode_us_median: median(&decode_us).unwrap_or(f64::NAN),
    })
}

/// Speeds and peak RSS of one side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreSide {
    /// Prompt processing, tokens/s.
    pub pp_tok_s: Summary,
    /// Generation, tokens/s.
    pub tg_tok_s: Summary,
    /// Peak RSS per process, MiB.
    pub peak_rss_mib: Summary,
}

/// Cost of one sampler chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplingCost {
    /// µs per sampled token (each process's median over its tokens).
    pub us_per_token: Summary,
    /// Fastest sampled token per process, µs.
    pub us_min: Summary,
    /// Sampling time as % of single-token decode time (medians, per process).
    pub pct_of_decode: Summary,
}

/// Section 1 as written to benchmarks.json.
#[derive(Debug, Clone, Serialize)]
pub struct CoreSection {
    /// Sizes.
    pub config: CoreConfig,
    /// `llama-baseline bench`.
    pub baseline: CoreSide,
    /// llama-core.
    pub ours: CoreSide,
    /// ours / baseline, prompt processing (medians).
    pub ratio_pp: Option<f64>,
    /// ours / baseline, generation (medians).
    pub ratio_tg: Option<f64>,
    /// ours / baseline, prompt processing, best repetition of each side:
    /// noise only ever slows a run down, so on a busy machine this is the
    /// steadier estimate of the code's own overhead.
    pub ratio_pp_best: Option<f64>,
    /// ours / baseline, generation, best repetition of each side.
    pub ratio_tg_best: Option<f64>,
    /// Greedy sampling.
    pub sampling_greedy: SamplingCost,
    /// The default chain.
    pub sampling_default_chain: SamplingCost,
}

#[derive(Debug, Deserialize)]
struct BaselineBench {
    pp: Vec<f64>,
    tg: Vec<f64>,
}

/// How long one process of this section may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Run section 1: `cfg.rounds` rounds of baseline then ours.
pub fn run(model: &Path, threads: i32, cfg: &CoreConfig, log: &dyn Fn(&str)) -> anyhow::Result<CoreSection> {
    let exe = std::env::current_exe()?;
    let (mut base, mut ours) = (Raw::default(), Raw::default());
    let mut greedy = (Vec::new(), Vec::new(), Vec::new());
    let mut default_chain = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..cfg.rounds {
        let m = run_measured(
            Command::new(llama_sys::BASELINE_BIN).arg(model).arg("bench").args([
                cfg.n_prompt.to_string(),
                cfg.n_gen.to_string(),
                cfg.reps.to_string(),
                threads.to_string(),
                cfg.n_batch.to_string(),
            ]),
            TIMEOUT,
        )?
        .check("llama-baseline bench")?;
        let b: BaselineBench = serde_json::from_str(m.stdout_text().trim()).context("llama-baseline bench output")?;
        base.push(b.pp, b.tg, m.vm_hwm_kib);

        let m = run_measured(
            Command::new(&exe)
                .args(["--child", "core", "--threads", &threads.to_string(), "--model"])
                .arg(model)
                .arg("--core-config")
                .arg(serde_json::to_string(cfg)?),
            TIMEOUT,
        )?
        .check("bench-suite --child core")?;
        let o: CoreChildOutput = serde_json::from_str(m.stdout_text().trim()).context("core child output")?;
        ours.push(o.pp, o.tg, o.vm_hwm_kib);
        for (acc, run) in [(&mut greedy, &o.greedy), (&mut default_chain, &o.default_chain)] {
            acc.0.push(run.sample_us_median);
            acc.1.push(run.sample_us_min);
            acc.2.push(100.0 * run.sample_us_median / run.decode_us_median);
        }
        log(&format!(
            "core round {}/{}: baseline pp {:.1} tg {:.1} | ours pp {:.1} tg {:.1} tok/s",
            round + 1,
            cfg.rounds,
            median(&base.pp).unwrap_or(f64::NAN),
            median(&base.tg).unwrap_or(f64::NAN),
            median(&ours.pp).unwrap_or(f64::NAN),
            median(&ours.tg).unwrap_or(f64::NAN),
        ));
    }
    let (baseline, ours) = (base.summarise(), ours.summarise());
    Ok(CoreSection {
        config: cfg.clone(),
        ratio_pp: ratio(ours.pp_tok_s.median, baseline.pp_tok_s.median),
        ratio_tg: ratio(ours.tg_tok_s.median, baseline.tg_tok_s.median),
        ratio_pp_best: ratio(ours.pp_tok_s.max, baseline.pp_tok_s.max),
        ratio_tg_best: ratio(ours.tg_tok_s.max, baseline.tg_tok_s.max),
        baseline,
        ours,
        sampling_greedy: SamplingCost {
            us_per_token: Summary::of(greedy.0),
            us_min: Summary::of(greedy.1),
            pct_of_decode: Summary::of(greedy.2),
        },
        sampling_default_chain: SamplingCost {
            us_per_token: Summary::of(default_chain.0),
            us_min: Summary::of(default_chain.1),
            pct_of_decode: Summary::of(default_chain.2),
        },
    })
}

#[derive(Default)]
struct Raw {
    pp: Vec<f64>,
    tg: Vec<f64>,
    rss_mib: Vec<f64>,
}

impl Raw {
    fn push(&mut self, pp: Vec<f64>, tg: Vec<f64>, rss_kib: Option<u64>) {
        self.pp.extend(pp);
        self.tg.extend(tg);
        self.rss_mib.extend(rss_kib.map(|k| k as f64 / 1024.0));
    }

    fn summarise(self) -> CoreSide {
        CoreSide {
            pp_tok_s: Summary::of(self.pp),
            tg_tok_s: Summary::of(self.tg),
            peak_rss_mib: Summary::of(self.rss_mib),
        }
    }
}
