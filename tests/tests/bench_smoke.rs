//! `bench-suite --smoke` runs every section end to end (tiny sizes, one
//! round) and writes well-formed output. Timings are never asserted on:
//! this checks that the benchmark keeps working, not how fast anything is.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A summary object (`{median, min, max, samples}`) with at least one finite sample.
fn assert_summary(v: &Value, what: &str) {
    let samples = v["samples"].as_array().unwrap_or_else(|| panic!("{what}: no samples in {v}"));
    assert!(!samples.is_empty(), "{what}: empty samples");
    assert!(samples.iter().all(|s| s.as_f64().is_some_and(f64::is_finite)), "{what}: {samples:?}");
    assert!(v["median"].as_f64().is_some(), "{what}: no median");
}

fn assert_levels(section: &Value, name: &str) {
    let levels = section["levels"].as_array().unwrap_or_else(|| panic!("{name}: no levels"));
    let wanted: Vec<u64> = section["config"]["levels"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(!wanted.is_empty(), "{name}: no configured levels");
    assert_eq!(levels.len(), wanted.len(), "{name}: one figure set per level");
    let max_tokens = section["config"]["max_tokens"].as_u64().unwrap_or(0);
    for (l, c) in levels.iter().zip(&wanted) {
        assert_eq!(l["concurrency"].as_u64(), Some(*c));
        assert_eq!(l["requests"].as_u64(), Some(*c), "{name} c={c}: every request measured");
        assert_summary(&l["aggregate_tok_s"], &format!("{name} c={c} aggregate"));
        for key in ["ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99"] {
            assert!(l[key].as_f64().is_some_and(|v| v >= 0.0), "{name} c={c}: {key} = {}", l[key]);
        }
    }
    assert!(max_tokens > 1, "{name}: max_tokens {max_tokens}");
}

fn binary_next_to(exe: &Path, name: &str) -> bool {
    exe.parent().is_some_and(|d| d.join(name).is_file())
}

#[test]
fn smoke_run_writes_every_section() {
    let exe = Path::new(env!("CARGO_BIN_EXE_bench-suite"));
    let dir = tempfile::tempdir().expect("a temporary output directory");
    let out = dir.path();
    let status = Command::new(exe)
        .args(["--smoke", "--command-line", "cargo test -p llama-e2e --test bench_smoke", "--out"])
        .arg(out)
        .status()
        .expect("bench-suite starts");
    assert!(status.success(), "bench-suite --smoke failed: {status}");

    let text = std::fs::read_to_string(out.join("benchmarks.json")).expect("benchmarks.json written");
    let json: Value = serde_json::from_str(&text).expect("benchmarks.json is JSON");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["smoke"], true);
    assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(json["threads"].as_i64().is_some_and(|t| t >= 1));
    assert_eq!(json["llama_cpp_version"], llama_sys::LLAMA_CPP_VERSION);
    for key in ["core", "engine", "server", "cold_start", "memory", "targets"] {
        assert!(json.get(key).is_some(), "section {key} missing");
    }

    // Sections that need nothing but this crate always run.
    let core = &json["core"];
    assert!(core.get("skipped").is_none(), "core skipped: {}", core["skipped"]);
    for side in ["baseline", "ours"] {
        assert_summary(&core[side]["pp_tok_s"], &format!("core {side} pp"));
        assert_summary(&core[side]["tg_tok_s"], &format!("core {side} tg"));
    }
    assert!(core["ratio_pp"].as_f64().is_some() && core["ratio_tg"].as_f64().is_some());
    assert_summary(&core["sampling_greedy"]["us_per_token"], "greedy sampling");
    assert_summary(&core["sampling_default_chain"]["us_per_token"], "default-chain sampling");

    let engine = &json["engine"];
    assert!(engine.get("skipped").is_none(), "engine skipped: {}", engine["skipped"]);
    assert_levels(engine, "engine");
    assert_eq!(engine["baseline"].as_array().map(Vec::len), engine["levels"].as_array().map(Vec::len));

    // The server and cold-start sections drive the `llama-server` and
    // `llama` binaries; `cargo test --workspace` builds them next to ours.
    // Built, they must have run; not built, the section must say so.
    let server = &json["server"];
    if binary_next_to(exe, "llama-server") {
        assert!(server.get("skipped").is_none(), "server skipped: {}", server["skipped"]);
        assert_levels(server, "server");
        assert!(server["idle_rss_mib"].as_f64().is_some_and(|m| m > 0.0));
        let by_type = server["idle_by_cache_type"].as_array().expect("idle RSS per cache type");
        let kv = |t: &str| {
            let r = by_type.iter().find(|r| r["cache_type"] == t).unwrap_or_else(|| panic!("no {t} row: {by_type:?}"));
            assert!(r["rss_mib"].as_f64().is_some_and(|m| m > 0.0), "{r}");
            r["kv_mib"].as_f64().unwrap_or_else(|| panic!("no KV size read from the log: {r}"))
        };
        // Sizes, not timings: q8_0 is 34 bytes per 32 values, q4_0 18, f16 64.
        let (f16, q8, q4) = (kv("f16"), kv("q8_0"), kv("q4_0"));
        assert!((q8 / f16 - 34.0 / 64.0).abs() < 0.01 && (q4 / f16 - 18.0 / 64.0).abs() < 0.01, "{f16} {q8} {q4}");
    } else {
        assert!(server["skipped"].as_str().is_some_and(|s| s.contains("not built")), "{server}");
    }
    let cold = &json["cold_start"];
    if binary_next_to(exe, "llama") {
        assert!(cold.get("skipped").is_none(), "cold start skipped: {}", cold["skipped"]);
        assert_summary(&cold["baseline"]["first_token_ms"], "baseline first token");
        assert_summary(&cold["ours"]["first_token_ms"], "llama first token");
    } else {
        assert!(cold["skipped"].as_str().is_some_and(|s| s.contains("not built")), "{cold}");
    }

    let targets = json["targets"].as_array().expect("targets is a list");
    assert!(targets.len() >= 10, "every target is listed: {targets:?}");
    for t in targets {
        assert!(t["id"].is_string() && t["target"].is_string() && t["measured"].is_string(), "{t}");
        assert!(t["met"].is_boolean() || t["met"].is_null(), "{t}");
    }

    let md = std::fs::read_to_string(out.join("BENCHMARKS.md")).expect("BENCHMARKS.md written");
    for heading in ["## Targets", "## 1. llama-core", "## 2. Engine", "## 4. Cold start", "## 5. Memory"] {
        assert!(md.contains(heading), "BENCHMARKS.md lacks {heading}");
    }
    assert!(md.contains("cargo test -p llama-e2e --test bench_smoke"), "the command is stated");
    let png = std::fs::read(out.join("benchmarks.png")).expect("benchmarks.png written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "benchmarks.png is a PNG");
}
