//! What sections 2 (engine) and 3 (server) share: the load shape, the
//! per-request traces they record and the figures computed from them.
//!
//! At each concurrency level `c`, one run submits `c` requests at once
//! (each with its own prompt, so that no prefix cache is shared) and waits
//! for all of them; every request generates exactly `max_tokens` tokens
//! (`ignore_eos`). A request's trace is the time of its submission and of
//! each token's arrival, on one clock per run.

use serde::{Deserialize, Serialize};

use crate::stats::{Summary, median, percentile};

/// The load: sizes and levels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    /// Concurrency levels.
    pub levels: Vec<u32>,
    /// Runs per level and side.
    pub rounds: u32,
    /// Approximate prompt length in tokens (prompts are prose, cut to this).
    pub prompt_tokens: u32,
    /// Tokens generated per request.
    pub max_tokens: u32,
    /// Parallel slots of the engine (and the server): the highest level.
    pub n_seq_max: u32,
    /// Total KV cells.
    pub n_ctx: u32,
    /// Batch size.
    pub n_batch: u32,
}

/// One request's timeline, seconds from the start of its run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestTrace {
    /// When it was submitted (sent).
    pub submitted: f64,
    /// When each token arrived.
    pub tokens: Vec<f64>,
    /// Prompt tokens, as counted by the engine (0 if unknown).
    pub prompt_tokens: u32,
}

/// One run: `c` requests at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunTrace {
    /// Every request of the run.
    pub requests: Vec<RequestTrace>,
}

impl RunTrace {
    /// Generated tokens over the run's wall time (first submit to last token).
    pub fn aggregate_tok_s(&self) -> Option<f64> {
        let start = self.requests.iter().map(|r| r.submitted).reduce(f64::min)?;
        let end = self.requests.iter().filter_map(|r| r.tokens.last().copied()).reduce(f64::max)?;
        let n: usize = self.requests.iter().map(|r| r.tokens.len()).sum();
        (end > start).then(|| n as f64 / (end - start))
    }
}

/// The figures of one concurrency level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LevelFigures {
    /// Concurrent requests.
    pub concurrency: u32,
    /// Tokens/s of all requests together, per run.
    pub aggregate_tok_s: Summary,
    /// Tokens/s of each request after its first token (1 / mean ITL), per request.
    pub stream_tok_s: Summary,
    /// Time to first token, ms, over every request of every run.
    pub ttft_ms_p50: Option<f64>,
    /// 99th percentile of the same.
    pub ttft_ms_p99: Option<f64>,
    /// Largest time to first token, ms.
    pub ttft_ms_max: Option<f64>,
    /// Inter-token latency, ms, over every gap of every request.
    pub itl_ms_p50: Option<f64>,
    /// 99th percentile of the same.
    pub itl_ms_p99: Option<f64>,
    /// Requests measured.
    pub requests: usize,
    /// Median TTFT (ms) of the k-th request submitted in a run, k = 0..c:
    /// how long a request waits given how many were sent just before it.
    pub ttft_ms_by_rank: Vec<f64>,
}

impl LevelFigures {
    /// Compute the figures of level `concurrency` from its runs.
    pub fn from_runs(concurrency: u32, runs: &[RunTrace]) -> LevelFigures {
        let mut ttft = Vec::new();
        let mut itl = Vec::new();
        let mut stream = Vec::new();
        for req in runs.iter().flat_map(|r| &r.requests) {
            if let Some(first) = req.tokens.first() {
                ttft.push((first - req.submitted) * 1e3);
            }
            itl.extend(req.tokens.windows(2).map(|w| (w[1] - w[0]) * 1e3));
            if let (Some(first), Some(last)) = (req.tokens.first(), req.tokens.last())
                && last > first
            {
                stream.push((req.tokens.len() - 1) as f64 / (last - first));
            }
        }
        LevelFigures {
            concurrency,
            aggregate_tok_s: Summary::of(runs.iter().filter_map(RunTrace::aggregate_tok_s).collect()),
            stream_tok_s: Summary::of(stream),
            ttft_ms_p50: percentile(&ttft, 50.0),
            ttft_ms_p99: percentile(&ttft, 99.0),
            ttft_ms_max: ttft.iter().copied().reduce(f64::max),
            itl_ms_p50: percentile(&itl, 50.0),
            itl_ms_p99: percentile(&itl, 99.0),
            requests: runs.iter().map(|r| r.requests.len()).sum(),
            ttft_ms_by_rank: (0..concurrency as usize)
                .filter_map(|k| {
                    let at_rank: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.requests.get(k))
                        .filter_map(|q| q.tokens.first().map(|t| (t - q.submitted) * 1e3))
                        .collect();
                    median(&at_rank)
                })
                .collect(),
        }
    }
}

/// Prose the prompts are cut from.
const PROSE: &str = "The lighthouse keeper climbed the spiral stairs every evening, counting the steps as his \
father had taught him, and at the top he wiped the great lens clean of salt before lighting the lamp. \
Ships passed far out on the dark water, their own small lights moving slowly along the horizon, and he \
wrote each one down in the logbook with the time, the direction and, when he could read it through the \
telescope, the name painted on the bow. In winter the storms came in from the west and the whole tower \
hummed with the wind, and he would sit by the stove listening to the sea throw itself against the rocks \
below, waiting for morning.";

/// The prompt of request `index` in run `run`: a unique opening (so no
/// request shares a cached prefix with another, in this run or an earlier
/// one), then prose, about `words` words in all.
pub fn prompt(run: usize, index: usize, words: usize) -> String {
    let mut p = format!("{run}-{index}. Story:");
    for w in PROSE.split_whitespace().cycle().take(words) {
        p.push(' ');
        p.push_str(w);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(submitted: f64, tokens: &[f64]) -> RequestTrace {
        RequestTrace { submitted, tokens: tokens.to_vec(), prompt_tokens: 0 }
    }

    #[test]
    fn figures_from_known_traces() {
        let run = RunTrace { requests: vec![req(0.0, &[0.1, 0.2, 0.3]), req(0.0, &[0.2, 0.3, 0.5])] };
        assert!((run.aggregate_tok_s().unwrap_or(0.0) - 6.0 / 0.5).abs() < 1e-9);
        let f = LevelFigures::from_runs(2, &[run]);
        assert_eq!(f.requests, 2);
        assert!((f.ttft_ms_p50.unwrap_or(0.0) - 150.0).abs() < 1e-6);
        assert!((f.ttft_ms_max.unwrap_or(0.0) - 200.0).abs() < 1e-6);
        // Gaps: 100, 100, 100, 200 ms.
        assert!((f.itl_ms_p50.unwrap_or(0.0) - 100.0).abs() < 1e-6);
        assert_eq!(f.stream_tok_s.samples.len(), 2);
        assert_eq!(f.ttft_ms_by_rank.len(), 2);
        assert!((f.ttft_ms_by_rank[1] - 200.0).abs() < 1e-6);
    }

    #[test]
    fn prompts_differ_from_the_first_word() {
        assert_ne!(prompt(0, 1, 10).split(' ').next(), prompt(0, 2, 10).split(' ').next());
        assert_ne!(prompt(0, 1, 10).split(' ').next(), prompt(1, 1, 10).split(' ').next());
        assert_eq!(prompt(3, 4, 10).split(' ').count(), 12);
    }
}
