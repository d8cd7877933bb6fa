//! Log-probabilities from raw logits, for the `logprobs` of completions.
#![forbid(unsafe_code)]

use crate::Token;

/// The `n` most likely tokens with their log-probabilities, best first.
pub fn log_softmax_top(logits: &[f32], n: usize) -> Vec<(Token, f32)> {
    let lse = log_sum_exp(logits);
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.select_nth_unstable_by(n - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(n);
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter().map(|i| (i as Token, logits[i] - lse)).collect()
}

/// The log-probability of `token` under `logits`.
pub fn log_softmax_of(logits: &[f32], token: Token) -> f32 {
    match usize::try_from(token).ok().and_then(|i| logits.get(i)) {
        Some(&l) => l - log_sum_exp(logits),
        None => f32::NEG_INFINITY,
    }
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln()
}
