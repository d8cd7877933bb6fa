//! `usage`: token counts of a completion, counted over its choices and
//! prompts, in OpenAI's shape.

// The runtime's per-request counts; `Usage` here is the wire object.
use llama_runtime::Usage as Counts;
use serde::Serialize;

use llama_runtime::Output;

/// The `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct Usage {
    completion_tokens: u32,
    prompt_tokens: u32,
    prompt_tokens_details: PromptTokensDetails,
    total_tokens: u32,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u32,
}

impl From<&Counts> for Usage {
    fn from(u: &Counts) -> Self {
        Usage {
            completion_tokens: u.completion_tokens,
            prompt_tokens: u.prompt_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: u.cached_tokens },
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// The counts of the choices of one prompt (see [`add_choice`]).
pub(super) fn sum_choices(results: &[Output]) -> Counts {
    let mut total = Counts::default();
    for r in results {
        add_choice(&mut total, &r.usage);
    }
    total
}

/// Count one finished choice into `total`: prompt tokens once (every choice
/// has the same prompt), completions summed.
pub(super) fn add_choice(total: &mut Counts, choice: &Counts) {
    total.prompt_tokens = total.prompt_tokens.max(choice.prompt_tokens);
    total.cached_tokens = total.cached_tokens.max(choice.cached_tokens);
    total.completion_tokens += choice.completion_tokens;
}

/// Several prompts: their counts add up (each already counts its prompt once).
pub(super) fn add_prompts(per_prompt: impl Iterator<Item = Counts>) -> Counts {
    per_prompt.fold(Counts::default(), |mut total, u| {
        total.prompt_tokens += u.prompt_tokens;
        total.cached_tokens += u.cached_tokens;
        total.completion_tokens += u.completion_tokens;
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    fn counts(prompt: u32, cached: u32, completion: u32) -> Counts {
        let mut c = Counts::default();
        (c.prompt_tokens, c.cached_tokens, c.completion_tokens) = (prompt, cached, completion);
        c
    }

    #[test]
    fn choices_share_their_prompt_and_prompts_add_up() {
        let mut one_prompt = Counts::default();
        add_choice(&mut one_prompt, &counts(10, 4, 3));
        add_choice(&mut one_prompt, &counts(10, 6, 5));
        assert_eq!(one_prompt, counts(10, 6, 8));
        assert_eq!(add_prompts([one_prompt, counts(7, 0, 2)].into_iter()), counts(17, 6, 10));
        let usage = Usage::from(&counts(17, 6, 10));
        assert_eq!(usage.total_tokens, 27);
        assert_wire_order(&usage);
    }
}
