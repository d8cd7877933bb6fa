//! Section 3: the real `llama-server` binary over HTTP/SSE on a loopback
//! port, with the same loads as the engine section. The server runs with the
//! engine section's configuration (`-c`, `-np`, `-b`, `-ub`, `-t`), so the
//! gap between the two sections is what HTTP, JSON and SSE cost.
//!
//! The client is reqwest on a single-threaded tokio runtime in the suite's
//! own process: `POST /v1/completions` with `stream: true`, greedy,
//! `ignore_eos`, each SSE `data:` chunk that carries text (and no
//! `finish_reason`) counted as one token when it arrives.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use super::load::{LevelFigures, LoadConfig, RequestTrace, RunTrace, prompt};
use crate::server::{ServerCommand, ServerProcess};
use crate::stats::Summary;

/// Start `bin` with the load's configuration and wait until `/health` answers 200.
pub fn start(bin: &Path, model: &Path, threads: i32, cfg: &LoadConfig) -> anyhow::Result<ServerProcess> {
    let mut args: Vec<String> =
        ["-c", &cfg.n_ctx.to_string(), "--parallel", &cfg.n_seq_max.to_string()].map(str::to_string).to_vec();
    args.extend(["--batch-size", "--ubatch-size"].into_iter().flat_map(|f| [f.to_string(), cfg.n_batch.to_string()]));
    start_with(bin, model, threads, &args, &[])
}

/// Start `bin` ([`ServerProcess`]: a free loopback port, a watchdog) with
/// `-m model -t threads` and `args`, without the caller's `RUST_LOG`, and
/// wait until `/health` answers 200.
pub fn start_with(
    bin: &Path,
    model: &Path,
    threads: i32,
    args: &[String],
    env: &[(&str, &str)],
) -> anyhow::Result<ServerProcess> {
    let args: Vec<String> = ["-t".to_string(), threads.to_string()].into_iter().chain(args.iter().cloned()).collect();
    let cmd = ServerCommand::new(&args).binary(bin).model(model).env_remove("RUST_LOG");
    let cmd = env.iter().fold(cmd, |c, (k, v)| c.env(k, v));
    cmd.start().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))
}

/// One level over HTTP: `concurrency` streaming requests at once.
pub async fn run_level(
    client: &reqwest::Client,
    base: &str,
    concurrency: u32,
    cfg: &LoadConfig,
    run_id: usize,
    max_tokens: u32,
) -> anyhow::Result<RunTrace> {
    let start = Instant::now();
    let words = super::engine::words_for(cfg.prompt_tokens);
    let url = format!("{base}/v1/completions");
    let tasks = (0..concurrency as usize).map(|i| {
        let body = json!({
            "prompt": prompt(run_id, i, words),
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": true,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let url = url.clone();
        async move {
            let submitted = start.elapsed().as_secs_f64();
            let resp = client.post(&url).json(&body).send().await?;
            if !resp.status().is_success() {
                let status = resp.status();
                bail!("{url}: {status}: {}", resp.text().await.unwrap_or_default());
            }
            let mut trace = RequestTrace { submitted, tokens: Vec::new(), prompt_tokens: 0 };
            let mut body = resp.bytes_stream();
            let mut sse = crate::sse::Decoder::new();
            while let Some(bytes) = body.next().await {
                let bytes = bytes?;
                let now = start.elapsed().as_secs_f64();
                for data in sse.push(&bytes) {
                    let data = data.trim();
                    if data == "[DONE]" {
                        return Ok(trace);
                    }
                    let v: Value = serde_json::from_str(data).with_context(|| format!("bad SSE data: {data}"))?;
                    if let Some(err) = v.get("error") {
                        bail!("server error: {err}");
                    }
                    if let Some(n) = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64) {
                        trace.prompt_tokens = n as u32;
                    }
                    let choice = v.pointer("/choices/0");
                    let is_token = choice.is_some_and(|c| {
                        c.get("finish_reason").is_none_or(Value::is_null)
                            && c.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty())
                    });
                    if is_token {
                        trace.tokens.push(now);
                    }
                }
            }
            bail!("the SSE stream ended without [DONE]")
        }
    });
    let requests = futures::future::try_join_all(tasks).await?;
    Ok(RunTrace { requests })
}

/// Section 3 as written to benchmarks.json.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSection {
    /// How the server was started.
    pub command: String,
    /// The load (the engine section's).
    pub config: LoadConfig,
    /// Mean prompt length in tokens, as the server reported it.
    pub prompt_tokens: f64,
    /// Per level.
    pub levels: Vec<LevelFigures>,
    /// RSS right after start-up (healthy, no request yet), MiB.
    pub idle_rss_mib: Option<f64>,
    /// RSS after every load had finished, MiB.
    pub idle_after_load_rss_mib: Option<f64>,
    /// Peak RSS over the whole section, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Tokens generated per request as the client counted them (should be max_tokens).
    pub tokens_per_request: Summary,
    /// Idle RSS of a server started with its default context per KV cache type.
    pub idle_by_cache_type: Vec<IdleRss>,
}

/// RSS of an idle `llama-server` (default `-c`/`-np`, one short request
/// served) with one KV cache type for both K and V.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRss {
    /// `-ctk`/`-ctv` value.
    pub cache_type: String,
    /// The KV cache size llama.cpp reported at start-up, MiB.
    pub kv_mib: Option<f64>,
    /// VmRSS after the request, MiB.
    pub rss_mib: Option<f64>,
}

/// Measure [`IdleRss`] for each cache type, one server at a time.
pub async fn idle_by_cache_type(
    bin: &Path,
    model: &Path,
    threads: i32,
    client: &reqwest::Client,
    types: &[&str],
) -> anyhow::Result<Vec<IdleRss>> {
    let mut out = Vec::new();
    for &t in types {
        let args = ["-ctk", t, "-ctv", t].map(str::to_string);
        let server = start_with(bin, model, threads, &args, &[("RUST_LOG", "warn,llama_cpp=debug")])?;
        let body = json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0});
        let r = client.post(format!("{}/v1/completions", server.base_url())).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("a request to the server with cache type {t} failed: {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_mib = server.rss_kib().map(|k| k as f64 / 1024.0);
        let log = server.log();
        out.push(IdleRss { cache_type: t.to_string(), kv_mib: kv_size_mib(&log), rss_mib });
    }
    Ok(out)
}

/// The `size = N MiB` of llama.cpp's KV cache line in a log.
fn kv_size_mib(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("llama_kv_cache") && l.contains("size ="))?;
    let rest = &line[line.find("size =")? + "size =".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_size_is_read_from_the_log() {
        let log = "2026 INFO llama_cpp: load\n2026 INFO llama_cpp: llama_kv_cache: size =   90.00 MiB (  4096 cells,  30 layers,  4/4 seqs), K (f16):   45.00 MiB\n";
        assert_eq!(kv_size_mib(log), Some(90.0));
        assert_eq!(kv_size_mib("nothing here"), None);
    }
}
