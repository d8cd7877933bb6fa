//! Shared helpers for the end-to-end suites of llama.rs: they run the real
//! binaries against the real default model over real loopback sockets.
//!
//! - [`paths`]: the workspace, the default model, and the `llama-server`
//!   binary of the current cargo profile (built on demand).
//! - [`server`]: [`server::ServerProcess`], one real `llama-server` process on
//!   a free loopback port, killed when the test process goes away.
//! - [`http`]: a small blocking HTTP/1.1 client over `std::net::TcpStream`.
//!   It is hand-written on purpose: the suites send bytes no well-behaved
//!   client would (invalid UTF-8, huge headers, a wrong `Host`) and hang up
//!   at chosen points, which a full client library does not allow.
//! - [`load`]: a bounded, self-terminating load generator with latency
//!   percentiles.
//! - [`figures`]: suite size knobs (`RELIABILITY_SCALE=ci|long`) and the
//!   figures each suite records under `target/reliability/`.
//! - [`sse`]: the one server-sent-events parser (whole bodies, raw event
//!   framing, and an incremental decoder for streamed bytes).
//! - [`stats`]: medians and percentiles, for the suites and the benchmarks.
//! - [`bench`]: the benchmark suite run by the `bench-suite` binary.
//! - [`gguf_edit`]: derived test models (a GGUF copy with metadata set).
//! - [`gguf_write`]: new GGUF files (metadata and F32 tensors).
//! - [`reranker`]: a tiny random-weight BERT reranker the suites build.
//! - [`lora`]: random LoRA adapters for the default model, good and hostile.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Wait for `child` to exit for at most `timeout`; past it, kill and reap
/// it and return `None`.
pub fn wait_or_kill(child: &mut std::process::Child, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub mod bench;
pub mod figures;
pub mod gguf_edit;
pub mod gguf_write;
pub mod http;
pub mod load;
pub mod lora;
pub mod paths;
pub mod reranker;
pub mod server;
pub mod sse;
pub mod stats;
