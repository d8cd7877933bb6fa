//! Prometheus metrics: llama.cpp's `llamacpp:*` names from the engine's
//! counters, plus `llamars_*` ones, among them latency histograms measured
//! here from the timing of the events each request receives.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use llama_runtime::{Event, Metrics};

/// Upper bounds (seconds) of the time-to-first-token buckets.
pub const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds (seconds) of the inter-token-latency buckets.
pub const ITL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A fixed-bucket histogram, updated lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram with these bucket upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| secs <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Measurements the server makes itself.
#[derive(Debug)]
pub struct ServerStats {
    /// From the request reaching the handler to its first token.
    pub ttft: Histogram,
    /// Between consecutive tokens of one request.
    pub itl: Histogram,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats { ttft: Histogram::new(TTFT_BUCKETS), itl: Histogram::new(ITL_BUCKETS) }
    }
}

/// Wraps a request's event stream and records token timing into [`ServerStats`].
#[derive(Debug)]
pub struct Observed<S> {
    inner: S,
    stats: Arc<ServerStats>,
    start: Instant,
    last: Option<Instant>,
}

impl<S> Observed<S> {
    /// Observe `inner`, counting time from `start`.
    pub fn new(inner: S, stats: Arc<ServerStats>, start: Instant) -> Self {
        Observed { inner, stats, start, last: None }
    }
}

impl<S: Stream<Item = Event> + Unpin> Stream for Observed<S> {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Event::Token(_))) = &polled {
            let now = Instant::now();
            match this.last {
                None => this.stats.ttft.observe(now.saturating_duration_since(this.start)),
                Some(prev) => this.stats.itl.observe(now.saturating_duration_since(prev)),
            }
            this.last = Some(now);
        }
        polled
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// The Prometheus text exposition of `m` and `stats`.
pub fn render(m: &Metrics, stats: &ServerStats) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let prompt_processed = m.prompt_tokens_total.saturating_sub(m.cached_tokens_total) as f64;
    let prompt_secs = m.prefill_time_total.as_secs_f64();
    let decode_secs = m.decode_time_total.as_secs_f64();
    metric("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", prompt_processed);
    metric("llamacpp:prompt_seconds_total", "counter", "Prompt process time", prompt_secs);
    metric(
        "llamacpp:tokens_predicted_total",
        "counter",
        "Number of generation tokens processed.",
        m.generated_tokens_total as f64,
    );
    metric("llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time", decode_secs);
    metric("llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls", m.decode_steps as f64);
    metric(
        "llamacpp:n_busy_slots_per_decode",
        "gauge",
        "Average number of busy slots per llama_decode() call",
        ratio(m.busy_seq_steps_total as f64, m.decode_steps as f64),
    );
    metric(
        "llamacpp:prompt_tokens_seconds",
        "gauge",
        "Average prompt throughput in tokens/s.",
        ratio(prompt_processed, prompt_secs),
    );
    metric(
        "llamacpp:predicted_tokens_seconds",
        "gauge",
        "Average generation throughput in tokens/s.",
        ratio(m.generated_tokens_total as f64, decode_secs),
    );
    metric("llamacpp:requests_processing", "gauge", "Number of requests processing.", m.active_sequences as f64);
    metric("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", m.queue_depth as f64);
    metric(
        "llamacpp:kv_cache_usage_ratio",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        ratio(m.kv_cells_used as f64, m.kv_cells_total as f64),
    );
    metric("llamacpp:kv_cache_tokens", "gauge", "KV-cache tokens.", m.kv_cells_used as f64);
    metric("llamars_queue_depth", "gauge", "Requests waiting for a slot.", m.queue_depth as f64);
    metric("llamars_queue_capacity", "gauge", "Bound of the admission queue.", m.queue_capacity as f64);
    metric("llamars_kv_cells_used", "gauge", "KV cells in use, cached prefixes included.", m.kv_cells_used as f64);
    metric("llamars_kv_cells_total", "gauge", "KV cells in the context.", m.kv_cells_total as f64);
    metric(
        "llamars_rejected_total",
        "counter",
        "Requests refused at admission (queue full, bad input).",
        m.rejected_total as f64,
    );
    let _ = writeln!(
        out,
        "# HELP llamars_requests_total Requests by how they ended.\n# TYPE llamars_requests_total counter"
    );
    for (outcome, n) in [
        ("done", m.requests_done),
        ("cancelled", m.requests_cancelled),
        ("failed", m.requests_failed),
        ("timed_out", m.requests_timed_out),
        ("rejected", m.rejected_total),
    ] {
        let _ = writeln!(out, "llamars_requests_total{{outcome=\"{outcome}\"}} {n}");
    }
    stats.ttft.render(&mut out, "llamars_time_to_first_token_seconds", "Time from request to first generated token.");
    stats.itl.render(&mut out, "llamars_inter_token_latency_seconds", "Time between consecutive generated tokens.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 5.55\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn exposition_has_llama_cpp_and_own_names() {
        let m = Metrics {
            prompt_tokens_total: 100,
            cached_tokens_total: 20,
            generated_tokens_total: 50,
            decode_steps: 10,
            busy_seq_steps_total: 25,
            kv_cells_used: 64,
            kv_cells_total: 256,
            prefill_time_total: Duration::from_secs(2),
            decode_time_total: Duration::from_secs(1),
            ..Default::default()
        };
        let text = render(&m, &ServerStats::default());
        for line in [
            "llamacpp:prompt_tokens_total 80",
            "llamacpp:tokens_predicted_total 50",
            "llamacpp:n_decode_total 10",
            "llamacpp:n_busy_slots_per_decode 2.5",
            "llamacpp:prompt_tokens_seconds 40",
            "llamacpp:predicted_tokens_seconds 50",
            "llamacpp:kv_cache_usage_ratio 0.25",
            "llamacpp:kv_cache_tokens 64",
            "llamars_kv_cells_used 64",
            "llamars_requests_total{outcome=\"done\"} 0",
            "llamars_time_to_first_token_seconds_count 0",
            "llamars_inter_token_latency_seconds_bucket{le=\"+Inf\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line belongs to a declared metric family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")) || text.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }
}
