//! llama.cpp's `timings` object: how long the prompt and the generation
//! took, and their rates.

use llama_runtime::{Done, Usage};
use serde::Serialize;

/// `timings`, as llama.cpp's server reports it on a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Timings {
    cache_n: u32,
    predicted_ms: f64,
    predicted_n: u32,
    predicted_per_second: f64,
    predicted_per_token_ms: f64,
    prompt_ms: f64,
    prompt_n: u32,
    prompt_per_second: f64,
    prompt_per_token_ms: f64,
}

impl Timings {
    /// The timings of a finished request.
    pub(crate) fn of(done: &Done) -> Timings {
        Timings::new(&done.usage, &done.timings)
    }

    /// The timings of a request with these counts and durations. Cached
    /// prompt tokens are not counted as evaluated (`prompt_n`).
    pub(crate) fn new(usage: &Usage, timings: &llama_runtime::Timings) -> Timings {
        let prompt_n = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
        let predicted_n = usage.completion_tokens;
        let prompt_ms = timings.prefill.as_secs_f64() * 1e3;
        let predicted_ms = timings.decode.as_secs_f64() * 1e3;
        let per = |ms: f64, n: u32| if n > 0 { ms / n as f64 } else { 0.0 };
        let rate = |ms: f64, n: u32| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        Timings {
            cache_n: usage.cached_tokens,
            predicted_ms,
            predicted_n,
            predicted_per_second: rate(predicted_ms, predicted_n),
            predicted_per_token_ms: per(predicted_ms, predicted_n),
            prompt_ms,
            prompt_n,
            prompt_per_second: rate(prompt_ms, prompt_n),
            prompt_per_token_ms: per(prompt_ms, prompt_n),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn rates_and_wire_order() {
        let mut usage = Usage::default();
        (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) = (10, 4, 5);
        let mut timings = llama_runtime::Timings::default();
        (timings.prefill, timings.decode) = (Duration::from_millis(30), Duration::from_millis(50));
        let t = Timings::new(&usage, &timings);
        assert_eq!((t.prompt_n, t.predicted_n, t.cache_n), (6, 5, 4));
        assert_eq!(t.predicted_per_token_ms, 10.0);
        assert_eq!(t.prompt_per_second, 200.0);
        assert_wire_order(&t);
    }
}
