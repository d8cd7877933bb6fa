//! `generation_settings`: the settings a `/completion` runs with (and, in
//! `/props`, the server's defaults), in llama.cpp's shape.

use llama_core::SamplingParams;
use serde::Serialize;

/// The samplers llama.cpp's server lists, in its order.
const SAMPLERS: &[&str] = &["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"];

/// The per-request settings reported beside the sampling parameters.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunSettings<'a> {
    pub n_predict: Option<u32>,
    pub stop: &'a [String],
    pub n_probs: u32,
    pub ignore_eos: bool,
    pub stream: bool,
    /// Prompt tokens a context shift keeps.
    pub n_keep: i32,
    /// Cells a context shift drops (0: half).
    pub n_discard: u32,
    /// The scale of every LoRA adapter, `(id, scale)`.
    pub lora: &'a [(usize, f32)],
}

/// One adapter of `generation_settings.lora`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LoraScale {
    id: usize,
    scale: f64,
}

/// The settings object. The sampling parameters' f32 values are written
/// as f64, as the server always has (`0.95` as `0.949999988079071`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct GenerationSettings {
    chat_format: &'static str,
    dry_allowed_length: i32,
    dry_base: f64,
    dry_multiplier: f64,
    dry_penalty_last_n: i32,
    dry_sequence_breakers: Vec<String>,
    dynatemp_exponent: f64,
    dynatemp_range: f64,
    frequency_penalty: f64,
    generation_prompt: &'static str,
    grammar: String,
    ignore_eos: bool,
    /// `[[token, bias]]`, as requests may send it.
    logit_bias: Vec<(i32, f64)>,
    lora: Vec<LoraScale>,
    max_tokens: i64,
    min_keep: usize,
    min_p: f64,
    mirostat: u8,
    mirostat_eta: f64,
    mirostat_tau: f64,
    model: String,
    n_ctx: u32,
    n_discard: u32,
    n_keep: i32,
    n_predict: i64,
    n_probs: u32,
    post_sampling_probs: bool,
    presence_penalty: f64,
    reasoning_format: &'static str,
    reasoning_in_content: bool,
    repeat_last_n: i32,
    repeat_penalty: f64,
    samplers: &'static [&'static str],
    seed: u32,
    #[serde(rename = "speculative.n_max")]
    speculative_n_max: u32,
    #[serde(rename = "speculative.n_min")]
    speculative_n_min: u32,
    #[serde(rename = "speculative.p_min")]
    speculative_p_min: f64,
    stop: Vec<String>,
    stream: bool,
    temperature: f64,
    timings_per_token: bool,
    top_k: i32,
    top_n_sigma: f64,
    top_p: f64,
    typical_p: f64,
    xtc_probability: f64,
    xtc_threshold: f64,
}

impl GenerationSettings {
    /// The settings of sampling `p` with `run`, in a slot of `n_ctx` tokens, for `model`.
    pub(super) fn new(p: &SamplingParams, run: &RunSettings<'_>, n_ctx: u32, model: &str) -> Self {
        let n_predict = run.n_predict.map_or(-1, i64::from);
        GenerationSettings {
            // No tool-call or reasoning parsing: the content is the output as is.
            chat_format: "Content-only",
            dry_allowed_length: p.dry_allowed_length,
            dry_base: p.dry_base.into(),
            dry_multiplier: p.dry_multiplier.into(),
            dry_penalty_last_n: p.dry_penalty_last_n,
            dry_sequence_breakers: p.dry_sequence_breakers.clone(),
            dynatemp_exponent: 1.0,
            dynatemp_range: 0.0,
            frequency_penalty: p.frequency_penalty.into(),
            generation_prompt: "",
            grammar: p.grammar.clone().unwrap_or_default(),
            ignore_eos: run.ignore_eos,
            logit_bias: p.logit_bias.iter().map(|&(t, b)| (t, f64::from(b))).collect(),
            lora: run.lora.iter().map(|&(id, scale)| LoraScale { id, scale: scale.into() }).collect(),
            max_tokens: n_predict,
            min_keep: p.min_keep,
            min_p: p.min_p.into(),
            mirostat: p.mirostat,
            mirostat_eta: p.mirostat_eta.into(),
            mirostat_tau: p.mirostat_tau.into(),
            model: model.to_owned(),
            n_ctx,
            n_discard: run.n_discard,
            n_keep: run.n_keep,
            n_predict,
            n_probs: run.n_probs,
            post_sampling_probs: false,
            presence_penalty: p.presence_penalty.into(),
            reasoning_format: "none",
            reasoning_in_content: false,
            repeat_last_n: p.repeat_last_n,
            repeat_penalty: p.repeat_penalty.into(),
            samplers: SAMPLERS,
            seed: p.seed,
            // llama.cpp's defaults; there is no speculative decoding here.
            speculative_n_max: 16,
            speculative_n_min: 0,
            speculative_p_min: 0.75,
            stop: run.stop.to_vec(),
            stream: run.stream,
            temperature: p.temperature.into(),
            timings_per_token: false,
            top_k: p.top_k,
            // Not in llama-core's sampler chain: off, as llama.cpp's default.
            top_n_sigma: -1.0,
            top_p: p.top_p.into(),
            typical_p: p.typical_p.into(),
            xtc_probability: p.xtc_probability.into(),
            xtc_threshold: p.xtc_threshold.into(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    /// The server's defaults, run with a stop string and a grammar.
    pub(in crate::native) fn example() -> GenerationSettings {
        let p = SamplingParams { grammar: Some("root ::= \"x\"".into()), ..Default::default() };
        let stop = ["\n".to_string()];
        let run = RunSettings {
            n_predict: Some(8),
            stop: &stop,
            n_probs: 2,
            ignore_eos: false,
            stream: true,
            n_keep: 0,
            n_discard: 0,
            lora: &[(0, 0.5)],
        };
        GenerationSettings::new(&p, &run, 512, "m")
    }

    #[test]
    fn wire_order_and_widened_floats() {
        let g = example();
        assert_wire_order(&g);
        let json = serde_json::to_string(&g).unwrap();
        assert!(json.contains(r#""top_p":0.949999988079071"#), "{json}");
        assert!(json.contains(r#""max_tokens":8"#), "{json}");
    }
}
