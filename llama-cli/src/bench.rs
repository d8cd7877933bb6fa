//! `llama bench`: prompt processing (pp) and generation (tg) speed of our
//! Rust path against the C baseline, in one run.
//!
//! Both sides do exactly what `llama-sys/baseline/baseline.c` does in its
//! `bench` mode: the same synthetic prompt `(i * 7919 + 13) % n_vocab`, a
//! small warm-up decode, then per repetition: clear the KV cache, prefill in
//! chunks of `n_batch` with logits for the last token only (pp); clear, then
//! decode `n_gen` single tokens, each asking for logits (tg). Rounds
//! alternate baseline, ours, baseline, ours, so that slow drifts of the
//! machine (thermal, other load) hit both sides alike.

use std::process::Command;
use std::sync::Arc;

use llama_core::Model;
use llama_core::bench::PpTg;
use serde::Deserialize;
use serde_json::json;

use crate::cli::BenchArgs;
use crate::{Outcome, load, output};

/// Tokens per second of each repetition.
#[derive(Debug, Default, Deserialize)]
struct Speeds {
    pp: Vec<f64>,
    tg: Vec<f64>,
}

/// Run `llama bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let threads = args.threads.unwrap_or_else(llama_core::default_threads);
    let model = load::load(&args.model)?;
    let path = model.path().to_path_buf();
    let mut ours_bench = OursBench::new(Arc::clone(&model), &args, threads)?;

    let mut baseline = Speeds::default();
    let mut ours = Speeds::default();
    for round in 0..args.repetitions {
        if !args.no_baseline {
            let b = run_baseline(&path, &args, threads)?;
            baseline.pp.extend(b.pp);
            baseline.tg.extend(b.tg);
        }
        let (pp, tg) = ours_bench.round()?;
        ours.pp.push(pp);
        ours.tg.push(tg);
        if output::stderr_is_tty() {
            eprint!("\rround {}/{}", round + 1, args.repetitions);
        }
    }
    if output::stderr_is_tty() {
        eprint!("\r\x1b[2K");
    }
    report(&args, &model, threads, &baseline, &ours)?;
    Ok(Outcome::Done)
}

/// Our side: llama-core driven directly, in this process, with the
/// protocol of [`llama_core::bench`] (the same as the C baseline's).
struct OursBench {
    bench: PpTg,
}

impl OursBench {
    fn new(model: Arc<Model>, args: &BenchArgs, threads: i32) -> anyhow::Result<Self> {
        Ok(OursBench { bench: PpTg::new(model, args.n_prompt, args.n_gen, args.batch_size, threads)? })
    }

    /// One repetition: (pp tokens/s, tg tokens/s).
    fn round(&mut self) -> anyhow::Result<(f64, f64)> {
        Ok((self.bench.pp()?, self.bench.tg()?))
    }
}

/// The C side: one process, one repetition.
fn run_baseline(model: &std::path::Path, args: &BenchArgs, threads: i32) -> anyhow::Result<Speeds> {
    let bin = llama_sys::BASELINE_BIN;
    let out = Command::new(bin)
        .arg(model)
        .args(["bench", &args.n_prompt.to_string(), &args.n_gen.to_string(), "1"])
        .args([threads.to_string(), args.batch_size.to_string()])
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run the C baseline {bin}: {e} (rebuild llama-sys, or pass --no-baseline)")
        })?;
    if !out.status.success() {
        anyhow::bail!("the C baseline failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .map_err(|e| anyhow::anyhow!("unexpected output from the C baseline ({e}): {}", text.trim()))
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

fn ratio(ours: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (ours, baseline) {
        (Some(o), Some(b)) if b > 0.0 => Some(o / b),
        _ => None,
    }
}

fn report(args: &BenchArgs, model: &Model, threads: i32, baseline: &Speeds, ours: &Speeds) -> anyhow::Result<()> {
    let (b_pp, b_tg) = (median(&baseline.pp), median(&baseline.tg));
    let (o_pp, o_tg) = (median(&ours.pp), median(&ours.tg));
    if args.json {
        return output::print_json(&json!({
            "model": model.path().display().to_string(),
            "description": model.description(),
            "n_prompt": args.n_prompt,
            "n_gen": args.n_gen,
            "n_batch": args.batch_size,
            "threads": threads,
            "rounds": args.repetitions,
            "llama_cpp": llama_sys::LLAMA_CPP_VERSION,
            "baseline": if args.no_baseline { json!(null) } else {
                json!({ "pp": baseline.pp, "tg": baseline.tg, "pp_median": b_pp, "tg_median": b_tg })
            },
            "ours": { "pp": ours.pp, "tg": ours.tg, "pp_median": o_pp, "tg_median": o_tg },
            "ratio": { "pp": ratio(o_pp, b_pp), "tg": ratio(o_tg, b_tg) },
        }));
    }
    let lines = [
        format!(
            "{} | {} threads, batch {}, {} rounds (medians, tokens/s)",
            model.description(),
            threads,
            args.batch_size,
            args.repetitions
        ),
        table_row("test", "baseline (C)", "llama.rs", "ratio"),
        result_row(&format!("pp{}", args.n_prompt), b_pp, o_pp),
        result_row(&format!("tg{}", args.n_gen), b_tg, o_tg),
    ];
    output::print_line(&lines.join("\n"))
}

/// One line of the text table: test, baseline, ours, ratio.
fn table_row(test: &str, baseline: &str, ours: &str, ratio: &str) -> String {
    format!("{test:<8} {baseline:>14} {ours:>14} {ratio:>8}")
}

/// The table line of one test from its two medians (`-` where one is missing).
fn result_row(test: &str, baseline: Option<f64>, ours: Option<f64>) -> String {
    let speed = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let ratio = ratio(ours, baseline).map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    table_row(test, &speed(baseline), &speed(ours), &ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), None), None);
    }

    #[test]
    fn rows_line_up() {
        assert_eq!(
            table_row("test", "baseline (C)", "llama.rs", "ratio"),
            "test       baseline (C)       llama.rs    ratio"
        );
        assert_eq!(result_row("pp512", Some(100.0), Some(50.04)), "pp512             100.0           50.0    0.500");
        assert_eq!(result_row("tg128", None, Some(7.0)), "tg128                 -            7.0        -");
    }
}
