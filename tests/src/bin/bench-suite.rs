//! `bench-suite`: llama.rs against llama.cpp driven directly from C, in one
//! run that anyone can repeat (`make bench`).
//!
//! Sections (each figure a median over repeats, each side in its own
//! process, rounds interleaved baseline / ours so that drift hits both):
//!
//! 1. `core`: llama-core prefill and decode vs `llama-baseline bench`, and
//!    the cost of sampling per token.
//! 2. `engine`: llama-runtime's engine at 1 / 4 / 8 / 16 concurrent requests
//!    (aggregate tokens/s, TTFT and inter-token latency).
//! 3. `server`: the real `llama-server` over HTTP/SSE with the same loads.
//! 4. `cold`: `llama generate -n 1` vs `llama-baseline first-token`.
//! 5. memory: peak RSS of every process above and the idle server's RSS.
//!
//! Writes `benchmarks.json`, `BENCHMARKS.md` and `benchmarks.png` into
//! `--out` (default: the repository's `docs/`). `--smoke` runs tiny sizes
//! once, for CI. The in-process paths run as children of this program
//! (`--child core|engine`), so that each has a peak RSS of its own.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use llama_e2e::bench::report::{Outcome, Report};
use llama_e2e::bench::{cold, core_bench, engine, load, server};
use llama_e2e::stats;

/// Repository root (this crate lives in `tests/`).
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Benchmark llama.rs against llama.cpp driven from C.
#[derive(Debug, Parser)]
#[command(name = "bench-suite")]
struct Cli {
    /// Tiny sizes, one round: checks that every section runs (seconds, for CI)
    #[arg(long)]
    smoke: bool,
    /// Where benchmarks.json, BENCHMARKS.md and benchmarks.png go [default: <repo>/docs]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// GGUF model [default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Threads for every path [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
    /// Interleaved rounds per side [default: 5, or 1 with --smoke]
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Run only these sections
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<SectionName>,
    /// Directory holding the `llama` and `llama-server` binaries [default: this program's directory]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// The command line to print in BENCHMARKS.md
    #[arg(long, default_value = "make bench")]
    command_line: String,
    /// Internal: run one in-process path and print its JSON
    #[arg(long, value_enum, hide = true)]
    child: Option<ChildKind>,
    /// Internal: the core child's sizes, as JSON
    #[arg(long, hide = true)]
    core_config: Option<String>,
    /// Internal: the engine child's load, as JSON
    #[arg(long, hide = true)]
    load_config: Option<String>,
    /// Internal: the engine child's round (makes its prompts unique)
    #[arg(long, hide = true, default_value_t = 0)]
    round: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SectionName {
    Core,
    Engine,
    Server,
    Cold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ChildKind {
    Core,
    Engine,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let model = cli.model.clone().unwrap_or_else(|| Path::new(REPO).join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !model.is_file() {
        bail!("model {} not found (run `make setup`, or pass --model)", model.display());
    }
    let model = model.canonicalize()?;
    let threads = cli.threads.unwrap_or_else(llama_core::default_threads);
    match cli.child {
        Some(ChildKind::Core) => {
            let cfg: core_bench::CoreConfig =
                serde_json::from_str(cli.core_config.as_deref().context("--core-config is required")?)?;
            let out = core_bench::child(&model, threads, &cfg)?;
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
        Some(ChildKind::Engine) => {
            let cfg: load::LoadConfig =
                serde_json::from_str(cli.load_config.as_deref().context("--load-config is required")?)?;
            let out = engine::child(&model, threads, &cfg, cli.round)?;
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
        None => run_suite(&cli, &model, threads),
    }
}

fn run_suite(cli: &Cli, model: &Path, threads: i32) -> anyhow::Result<()> {
    let started = Instant::now();
    let out_dir = cli.out.clone().unwrap_or_else(|| Path::new(REPO).join("docs"));
    let out_dir = out_dir.canonicalize().unwrap_or(out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("executable has no directory")?.to_path_buf(),
    };
    let rounds = cli.rounds.unwrap_or(if cli.smoke { 1 } else { 5 });
    let wanted = |s: SectionName| cli.only.is_empty() || cli.only.contains(&s);
    let log = |msg: &str| eprintln!("[{:6.1}s] {msg}", started.elapsed().as_secs_f64());

    let mut report = Report::new(cli.smoke, &cli.command_line, model, threads);
    log(&format!(
        "machine: {} ({} cores), load {:.2}; model {}; {threads} threads",
        report.machine.cpu,
        report.machine.cores,
        report.machine.load_before.unwrap_or(f64::NAN),
        model.display()
    ));

    if wanted(SectionName::Core) {
        let cfg = if cli.smoke {
            core_bench::CoreConfig { n_prompt: 32, n_gen: 8, n_batch: 512, reps: 1, rounds }
        } else {
            core_bench::CoreConfig { n_prompt: 512, n_gen: 128, n_batch: 512, reps: 2, rounds }
        };
        report.core = Outcome::from(core_bench::run(model, threads, &cfg, &log), "core", &log);
    }
    if wanted(SectionName::Engine) || wanted(SectionName::Server) {
        let levels = if cli.smoke { vec![1, 2] } else { vec![1, 4, 8, 16] };
        let n_seq_max = levels.iter().copied().max().unwrap_or(1);
        let cfg = load::LoadConfig {
            rounds: if cli.smoke { 1 } else { rounds.div_ceil(2).max(1) + 1 },
            prompt_tokens: if cli.smoke { 16 } else { 64 },
            max_tokens: if cli.smoke { 4 } else { 64 },
            n_seq_max,
            n_ctx: n_seq_max * if cli.smoke { 64 } else { 256 },
            n_batch: 512,
            levels,
        };
        let server_bin = bin_dir.join("llama-server");
        let server_bin = if !wanted(SectionName::Server) {
            Err("not selected".to_string())
        } else if server_bin.is_file() {
            Ok(server_bin)
        } else {
            Err(format!("{} not built (cargo build --release -p llama-server)", server_bin.display()))
        };
        let (e, s) = run_load(model, threads, &cfg, wanted(SectionName::Engine), server_bin, &log);
        report.engine = e;
        report.server = s;
    }
    if wanted(SectionName::Cold) {
        let llama = bin_dir.join("llama");
        report.cold_start = if llama.is_file() {
            let cold_rounds = if cli.smoke { 1 } else { 2 * rounds };
            Outcome::from(cold::run(&llama, model, threads, cold_rounds, &log), "cold start", &log)
        } else {
            Outcome::skipped(format!("{} not built (cargo build --release -p llama-cli)", llama.display()))
        };
    }

    report.finish(started.elapsed());
    report.write(&out_dir)?;
    log(&format!("wrote {}/{{benchmarks.json,BENCHMARKS.md,benchmarks.png}}", out_dir.display()));
    Ok(())
}

/// Sections 2 and 3 together, so that their rounds interleave: per round,
/// the engine child (every level), the C baseline's batched mode (every
/// level), then the server (every level). The server is started once.
fn run_load(
    model: &Path,
    threads: i32,
    cfg: &load::LoadConfig,
    do_engine: bool,
    server_bin: Result<PathBuf, String>,
    log: &dyn Fn(&str),
) -> (Outcome<engine::EngineSection>, Outcome<server::ServerSection>) {
    let mut engine_runs: Vec<Vec<load::RunTrace>> = vec![Vec::new(); cfg.levels.len()];
    let mut engine_rss = Vec::new();
    let mut engine_err = None;
    let mut baseline: Vec<engine::BatchedOutput> = cfg.levels.iter().map(|_| Default::default()).collect();
    let mut baseline_rss = Vec::new();
    let mut server_runs: Vec<Vec<load::RunTrace>> = vec![Vec::new(); cfg.levels.len()];
    let mut server_err = None;

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("cannot build the client runtime: {e}");
            return (Outcome::skipped(msg.clone()), Outcome::skipped(msg));
        }
    };
    // Idle pooled connections are dropped before the server's 10 s
    // keep-alive close: between server sections this runtime is not polled,
    // so a connection the server closed would only be found dead on reuse.
    let client = reqwest::Client::builder().no_proxy().pool_idle_timeout(Duration::from_secs(5)).build();
    let server = match (&server_bin, client) {
        (Ok(bin), Ok(client)) => match server::start(bin, model, threads, cfg) {
            Ok(s) => {
                let idle = s.rss_kib();
                log(&format!("server up at {} (idle RSS {:.1} MiB)", s.base_url(), idle.unwrap_or(0) as f64 / 1024.0));
                // Warm-up: one short request, untimed.
                if let Err(e) = rt.block_on(server::run_level(&client, &s.base_url(), 1, cfg, usize::MAX, 4)) {
                    server_err = Some(format!("warm-up request failed: {e:#}"));
                }
                Some((s, client, idle))
            }
            Err(e) => {
                server_err = Some(format!("failed: {e:#}"));
                None
            }
        },
        (Err(why), _) => {
            server_err = Some(why.clone());
            None
        }
        (_, Err(e)) => {
            server_err = Some(format!("cannot build the HTTP client: {e}"));
            None
        }
    };

    let mut prompt_tokens = Vec::new();
    for round in 0..cfg.rounds {
        if do_engine && engine_err.is_none() {
            match engine::spawn_child(model, threads, cfg, round) {
                Ok(out) => {
                    for (k, (_, run)) in out.runs.into_iter().enumerate() {
                        prompt_tokens.extend(run.requests.iter().map(|r| f64::from(r.prompt_tokens)));
                        if let Some(slot) = engine_runs.get_mut(k) {
                            slot.push(run);
                        }
                    }
                    engine_rss.extend(out.vm_hwm_kib.map(|k| k as f64 / 1024.0));
                }
                Err(e) => {
                    log(&format!("engine section FAILED: {e:#}"));
                    engine_err = Some(format!("failed: {e:#}"));
                }
            }
            let n_prompt = stats::median(&prompt_tokens).map_or(cfg.prompt_tokens, |p| p.round() as u32);
            for (k, &c) in cfg.levels.iter().enumerate() {
                match engine::baseline_batched(model, threads, cfg, n_prompt, c) {
                    Ok((out, rss)) => {
                        baseline[k].extend(out);
                        if c == cfg.n_seq_max {
                            baseline_rss.extend(rss.map(|k| k as f64 / 1024.0));
                        }
                    }
                    Err(e) => log(&format!("baseline batched c={c} FAILED: {e:#}")),
                }
            }
        }
        if let Some((srv, client, _)) = server.as_ref().filter(|_| server_err.is_none()) {
            for (k, &c) in cfg.levels.iter().enumerate() {
                match rt.block_on(server::run_level(
                    client,
                    &srv.base_url(),
                    c,
                    cfg,
                    1000 + round as usize * 100 + k,
                    cfg.max_tokens,
                )) {
                    Ok(run) => server_runs[k].push(run),
                    Err(e) => {
                        log(&format!("server section FAILED at c={c}: {e:#}"));
                        server_err = Some(format!("failed at c={c}: {e:#}"));
                        break;
                    }
                }
            }
        }
        let fig = |runs: &[load::RunTrace], c| {
            load::LevelFigures::from_runs(c, runs).aggregate_tok_s.median.unwrap_or(f64::NAN)
        };
        log(&format!(
            "load round {}/{}: aggregate tok/s engine {} | server {}",
            round + 1,
            cfg.rounds,
            cfg.levels
                .iter()
                .zip(&engine_runs)
                .map(|(&c, r)| format!("c{c}={:.0}", fig(r, c)))
                .collect::<Vec<_>>()
                .join(" "),
            cfg.levels
                .iter()
                .zip(&server_runs)
                .map(|(&c, r)| format!("c{c}={:.0}", fig(r, c)))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }

    let engine_out = match (do_engine, engine_err) {
        (false, _) => Outcome::skipped("not selected"),
        (true, Some(e)) => Outcome::skipped(e),
        (true, None) => Outcome::Measured(engine::EngineSection {
            config: cfg.clone(),
            prompt_tokens: stats::median(&prompt_tokens).unwrap_or(0.0),
            levels: cfg.levels.iter().zip(&engine_runs).map(|(&c, r)| load::LevelFigures::from_runs(c, r)).collect(),
            baseline: cfg.levels.iter().zip(&baseline).map(|(&c, b)| b.figures(c)).collect(),
            peak_rss_mib: stats::Summary::of(engine_rss),
            baseline_peak_rss_mib: stats::Summary::of(baseline_rss),
        }),
    };
    let server_out = match (server, server_err) {
        (_, Some(e)) => Outcome::skipped(e),
        (None, None) => Outcome::skipped("not started"),
        (Some((srv, client, idle)), None) => {
            let after = srv.rss_kib();
            let peak = srv.hwm_kib();
            let command = srv.command_line();
            drop(srv);
            // The load server's context is sized for the highest level; the
            // idle figures use the server's defaults, one cache type at a time.
            let by_type = match &server_bin {
                Ok(bin) => rt
                    .block_on(server::idle_by_cache_type(bin, model, threads, &client, &["f16", "q8_0", "q4_0"]))
                    .unwrap_or_else(|e| {
                        log(&format!("idle RSS by cache type failed: {e:#}"));
                        Vec::new()
                    }),
                Err(_) => Vec::new(),
            };
            for r in &by_type {
                log(&format!(
                    "idle server, -ctk/-ctv {}: RSS {:.1} MiB, KV {:.1} MiB",
                    r.cache_type,
                    r.rss_mib.unwrap_or(0.0),
                    r.kv_mib.unwrap_or(0.0)
                ));
            }
            let all: Vec<&load::RequestTrace> = server_runs.iter().flatten().flat_map(|r| &r.requests).collect();
            let prompt: Vec<f64> = all.iter().map(|r| f64::from(r.prompt_tokens)).collect();
            Outcome::Measured(server::ServerSection {
                command,
                config: cfg.clone(),
                prompt_tokens: stats::median(&prompt).unwrap_or(0.0),
                levels: cfg
                    .levels
                    .iter()
                    .zip(&server_runs)
                    .map(|(&c, r)| load::LevelFigures::from_runs(c, r))
                    .collect(),
                idle_rss_mib: idle.map(|k| k as f64 / 1024.0),
                idle_after_load_rss_mib: after.map(|k| k as f64 / 1024.0),
                peak_rss_mib: peak.map(|k| k as f64 / 1024.0),
                tokens_per_request: stats::Summary::of(all.iter().map(|r| r.tokens.len() as f64).collect()),
                idle_by_cache_type: by_type,
            })
        }
    };
    (engine_out, server_out)
}
