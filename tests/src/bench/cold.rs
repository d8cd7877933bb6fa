//! Section 4: cold start, process start to first token.
//!
//! `llama generate -n 1` (greedy, same threads, same context size) against
//! `llama-baseline first-token`, hyperfine-style: one untimed run each to warm
//! the page cache, then rounds alternating baseline and ours. Each run is
//! timed from just before `spawn` to the first byte on its stdout (the first
//! token) and to its exit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::proc::run_measured;
use crate::stats::{Summary, ratio};

/// Prompt for the cold-start runs.
pub const PROMPT: &str = "The capital of France is";
/// Context size both sides use (the baseline's default for `first-token`).
pub const N_CTX: u32 = 2048;

/// One side of the cold-start comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdSide {
    /// The exact command line.
    pub command: String,
    /// Spawn to first stdout byte, ms.
    pub first_token_ms: Summary,
    /// Spawn to exit, ms.
    pub exit_ms: Summary,
    /// Peak RSS, MiB.
    pub peak_rss_mib: Summary,
}

/// Section 4 as written to benchmarks.json.
#[derive(Debug, Clone, Serialize)]
pub struct ColdSection {
    /// Timed runs per side.
    pub rounds: u32,
    /// `llama-baseline MODEL first-token PROMPT THREADS`.
    pub baseline: ColdSide,
    /// `llama generate -n 1 ...`.
    pub ours: ColdSide,
    /// ours / baseline, time to first token (medians).
    pub ratio_first_token: Option<f64>,
    /// ours / baseline, time to exit (medians).
    pub ratio_exit: Option<f64>,
}

const TIMEOUT: Duration = Duration::from_secs(120);

fn baseline_cmd(model: &Path, threads: i32) -> Command {
    let mut c = Command::new(llama_sys::BASELINE_BIN);
    c.arg(model).arg("first-token").arg(PROMPT).arg(threads.to_string());
    c
}

fn ours_cmd(llama: &Path, model: &Path, threads: i32) -> Command {
    let mut c = Command::new(llama);
    c.arg("generate")
        .arg("-m")
        .arg(model)
        .args(["-n", "1", "--temp", "0", "-t", &threads.to_string(), "-c", &N_CTX.to_string(), PROMPT])
        .env_remove("RUST_LOG")
        .env_remove("LLAMA_MODEL");
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') {
            s.push_str(&format!(" \"{a}\""));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

#[derive(Default)]
struct Raw {
    first: Vec<f64>,
    exit: Vec<f64>,
    rss: Vec<f64>,
}

impl Raw {
    fn record(&mut self, cmd: &mut Command, what: &str) -> anyhow::Result<()> {
        let m = run_measured(cmd, TIMEOUT)?.check(what)?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // A run that printed nothing (the first token was end-of-generation)
        // still has an exit time; its first token is its exit.
        self.first.push(ms(m.first_stdout.unwrap_or(m.wall)));
        self.exit.push(ms(m.wall));
        self.rss.extend(m.vm_hwm_kib.map(|k| k as f64 / 1024.0));
        Ok(())
    }

    fn summarise(self, command: String) -> ColdSide {
        ColdSide {
            command,
            first_token_ms: Summary::of(self.first),
            exit_ms: Summary::of(self.exit),
            peak_rss_mib: Summary::of(self.rss),
        }
    }
}

/// Run section 4.
pub fn run(llama: &Path, model: &Path, threads: i32, rounds: u32, log: &dyn Fn(&str)) -> anyhow::Result<ColdSection> {
    // Warm the page cache (model file, binaries, shared libraries).
    run_measured(&mut baseline_cmd(model, threads), TIMEOUT)?.check("llama-baseline first-token")?;
    run_measured(&mut ours_cmd(llama, model, threads), TIMEOUT)?.check("llama generate -n 1")?;
    let (mut base, mut ours) = (Raw::default(), Raw::default());
    for _ in 0..rounds {
        base.record(&mut baseline_cmd(model, threads), "llama-baseline first-token")?;
        ours.record(&mut ours_cmd(llama, model, threads), "llama generate -n 1")?;
    }
    let baseline = base.summarise(describe(&baseline_cmd(model, threads)));
    let ours = ours.summarise(describe(&ours_cmd(llama, model, threads)));
    log(&format!(
        "cold start: baseline {:.1} ms, ours {:.1} ms to first token",
        baseline.first_token_ms.median.unwrap_or(f64::NAN),
        ours.first_token_ms.median.unwrap_or(f64::NAN)
    ));
    Ok(ColdSection {
        rounds,
        ratio_first_token: ratio(ours.first_token_ms.median, baseline.first_token_ms.median),
        ratio_exit: ratio(ours.exit_ms.median, baseline.exit_ms.median),
        baseline,
        ours,
    })
}
