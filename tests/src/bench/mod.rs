//! The benchmark suite behind the `bench-suite` binary (`make bench`):
//! llama.rs against llama.cpp driven directly from C. See `NOTES.md` in
//! this directory for how each figure is measured.
//!
//! - [`core_bench`]: section 1, llama-core prefill/decode vs the C baseline.
//! - [`engine`]: section 2, llama-runtime's engine under concurrent load.
//! - [`server`]: section 3, the real `llama-server` over HTTP/SSE.
//! - [`cold`]: section 4, cold start to the first token.
//! - [`load`], [`proc`], [`machine`], [`report`], [`chart`]: the shared
//!   load shape, measured child processes, the machine description, and
//!   `benchmarks.{json,png}` / `BENCHMARKS.md`.
//!
//! Medians and percentiles come from [`crate::stats`].

pub mod chart;
pub mod cold;
pub mod core_bench;
pub mod engine;
pub mod load;
pub mod machine;
pub mod proc;
pub mod report;
pub mod server;
