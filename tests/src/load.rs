//! A bounded load generator: a fixed number of client threads, each
//! sending a fixed number of requests, with a global deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, Request, Response};
use crate::stats;

/// A small deterministic PRNG (SplitMix64), so load mixes replay.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// What the load consists of.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent client threads.
    pub clients: usize,
    /// Requests each client sends, one after another.
    pub requests_per_client: usize,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Every this many requests, a long prompt (otherwise short).
    pub long_prompt_every: usize,
    /// Words in a long prompt.
    pub long_prompt_words: usize,
    /// Seed of the mix.
    pub seed: u64,
    /// Stop sending new requests after this long (the run is bounded).
    pub deadline: Duration,
    /// Per-read socket timeout.
    pub read_timeout: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            clients: 16,
            requests_per_client: 10,
            max_tokens: 8,
            long_prompt_every: 5,
            long_prompt_words: 200,
            seed: 7,
            deadline: Duration::from_secs(600),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with a complete, well-formed response.
    Complete,
    /// A designed 503 (overloaded) carrying `Retry-After`.
    Overloaded,
    /// Any other 4xx (a bug in this generator or in the server's validation).
    ClientError(u16, String),
    /// A 5xx other than a designed 503, or a 503 without `Retry-After`.
    ServerError(u16, String),
    /// 200 but the body was cut off or malformed: a lost request.
    Incomplete(String),
    /// No response at all: connect, write or read failed.
    Transport(String),
}

/// One request's record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Streaming or not.
    pub stream: bool,
    /// Long prompt or not.
    pub long_prompt: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the whole exchange.
    pub latency: Duration,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Every request sent.
    pub records: Vec<Record>,
    /// Wall time of the run.
    pub wall: Duration,
    /// Requests the deadline prevented from being sent.
    pub not_sent: usize,
}

impl LoadReport {
    /// Requests that ended with `pred`.
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.records.iter().filter(|r| pred(&r.outcome)).count()
    }

    /// Completed requests.
    pub fn complete(&self) -> usize {
        self.count(|o| *o == Outcome::Complete)
    }

    /// Designed 503s.
    pub fn overloaded(&self) -> usize {
        self.count(|o| *o == Outcome::Overloaded)
    }

    /// Requests that ended neither complete nor with a designed 503.
    pub fn lost(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !matches!(r.outcome, Outcome::Complete | Outcome::Overloaded)).collect()
    }

    /// The `q`-quantile (0..=1) of the latencies of complete requests
    /// ([`stats::percentile`]); zero when none completed.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let secs: Vec<f64> =
            self.records.iter().filter(|r| r.outcome == Outcome::Complete).map(|r| r.latency.as_secs_f64()).collect();
        stats::percentile(&secs, q * 100.0).map_or(Duration::ZERO, Duration::from_secs_f64)
    }
}

/// A prompt of about `words` words, varied by `salt` so prefixes differ.
pub fn prompt(words: usize, salt: u64) -> String {
    const WORDS: &[&str] = &[
        "river", "stone", "light", "garden", "window", "paper", "engine", "cloud", "market", "violin", "harbor",
        "lantern", "forest", "copper", "signal", "meadow",
    ];
    let mut rng = Rng::new(salt);
    let mut out = format!("Note {salt}:");
    for _ in 0..words {
        out.push(' ');
        out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    out
}

/// A `/v1/completions` body.
pub fn completion_body(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"prompt": prompt, "max_tokens": max_tokens, "stream": stream, "temperature": 0, "cache_prompt": false})
}

/// Classify a `/v1/completions` or `/v1/chat/completions` response.
pub fn classify(resp: &Response, stream: bool) -> Outcome {
    let status = resp.status();
    let brief = resp.describe();
    match status {
        200 => {}
        503 if resp.head.header("retry-after").is_some() && is_error_shape(&resp.json()) => {
            return Outcome::Overloaded;
        }
        400..=499 => return Outcome::ClientError(status, brief),
        _ => return Outcome::ServerError(status, brief),
    }
    if !resp.complete {
        return Outcome::Incomplete(format!("body cut off: {brief}"));
    }
    if stream {
        let data = resp.sse_data();
        let Some(last) = data.last() else { return Outcome::Incomplete(format!("no events: {brief}")) };
        if last != "[DONE]" {
            return Outcome::Incomplete(format!("stream does not end with [DONE]: {brief}"));
        }
        let finish = data.iter().rev().skip(1).find_map(|d| {
            let v: Value = serde_json::from_str(d).ok()?;
            v["choices"][0]["finish_reason"].as_str().map(str::to_string)
        });
        if finish.is_none() {
            return Outcome::Incomplete(format!("no event carries a finish_reason: {brief}"));
        }
        // Every payload but the marker must be JSON.
        if data[..data.len() - 1].iter().any(|d| serde_json::from_str::<Value>(d).is_err()) {
            return Outcome::Incomplete(format!("a non-JSON event: {brief}"));
        }
        Outcome::Complete
    } else {
        match resp.json() {
            Some(v) if v["choices"][0]["finish_reason"].is_string() => Outcome::Complete,
            _ => Outcome::Incomplete(format!("no finish_reason: {brief}")),
        }
    }
}

/// Whether a body has the OpenAI error shape `{"error": {"message": .., "type": .., "code": ..}}`.
pub fn is_error_shape(body: &Option<Value>) -> bool {
    matches!(body, Some(v) if v["error"]["message"].is_string() && v["error"]["type"].is_string())
}

/// Run `spec` against `addr`: `/v1/completions`, half streaming, prompts
/// short or (every `long_prompt_every`) long.
pub fn run(addr: SocketAddr, spec: &LoadSpec) -> LoadReport {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..spec.clients)
        .map(|c| {
            let spec = spec.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = Rng::new(spec.seed.wrapping_mul(1000).wrapping_add(c as u64));
                let mut records = Vec::new();
                let mut not_sent = 0;
                for i in 0..spec.requests_per_client {
                    if stop.load(Ordering::Relaxed) || start.elapsed() > spec.deadline {
                        stop.store(true, Ordering::Relaxed);
                        not_sent += spec.requests_per_client - i;
                        break;
                    }
                    let stream = rng.below(2) == 0;
                    let long = spec.long_prompt_every > 0 && (i + c) % spec.long_prompt_every == 0;
                    let words = if long { spec.long_prompt_words } else { 4 + rng.below(8) as usize };
                    let body = completion_body(&prompt(words, rng.next_u64()), spec.max_tokens, stream);
                    let t0 = Instant::now();
                    let outcome =
                        match http::send(addr, &Request::post_json("/v1/completions", &body), spec.read_timeout) {
                            Ok(resp) => classify(&resp, stream),
                            Err(e) => Outcome::Transport(e.to_string()),
                        };
                    records.push(Record { stream, long_prompt: long, outcome, latency: t0.elapsed() });
                }
                (records, not_sent)
            })
        })
        .collect();
    let mut report = LoadReport::default();
    for t in threads {
        match t.join() {
            Ok((records, not_sent)) => {
                report.records.extend(records);
                report.not_sent += not_sent;
            }
            Err(_) => report.records.push(Record {
                stream: false,
                long_prompt: false,
                outcome: Outcome::Transport("client thread panicked".into()),
                latency: Duration::ZERO,
            }),
        }
    }
    report.wall = start.elapsed();
    report
}
