//! The sampling fields every generation endpoint accepts (llama.cpp takes
//! its sampling knobs on the OpenAI routes too), declared once in
//! [`with_sampling_fields!`], and their merge over the server's defaults
//! into [`SamplingParams`].
//!
//! The list generates three things: the fields of each request struct
//! ([`request_with_sampling!`]), the borrowed view [`SamplingFields`] that
//! [`build_sampling`] takes from any of them, and the copy into
//! `SamplingParams`. The engine validates the result once, at submit.

use std::sync::Arc;

use llama_core::json_schema;
use llama_core::{RANDOM_SEED, SamplingParams};

use crate::error::AppError;
use crate::logit_bias::logit_bias;
use crate::state::Ready;

/// Longest GBNF grammar accepted, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = llama_core::MAX_GRAMMAR_BYTES;

/// The one list of sampling fields. Invokes `$crate::sampling::$then!` with
/// `$input` followed by two groups:
///
/// - `copied`: `field: Type` is copied into `SamplingParams::field` as it
///   is; `field: Type => convert` through `convert(&value)?`;
/// - `built`: turned into `SamplingParams` by [`build_sampling`], which
///   tokenizes the bias and picks one of the grammars.
macro_rules! with_sampling_fields {
    ($then:ident! { $($input:tt)* }) => {
        $crate::sampling::$then! {
            $($input)*
            copied {
                /// Sampling temperature (`<= 0` is greedy).
                temperature: f32,
                /// Top-k.
                top_k: i32,
                /// Top-p.
                top_p: f32,
                /// Min-p.
                min_p: f32,
                /// Locally typical sampling.
                typical_p: f32,
                /// Repeat penalty.
                repeat_penalty: f32,
                /// Repeat penalty look-back.
                repeat_last_n: i32,
                /// Presence penalty.
                presence_penalty: f32,
                /// Frequency penalty.
                frequency_penalty: f32,
                /// Mirostat mode (0, 1, 2).
                mirostat: u32 => mirostat_mode,
                /// Mirostat tau.
                mirostat_tau: f32,
                /// Mirostat eta.
                mirostat_eta: f32,
                /// DRY multiplier.
                dry_multiplier: f32,
                /// DRY base.
                dry_base: f32,
                /// DRY allowed length.
                dry_allowed_length: i32,
                /// DRY look-back.
                dry_penalty_last_n: i32,
                /// DRY sequence breakers.
                dry_sequence_breakers: Vec<String>,
                /// XTC probability.
                xtc_probability: f32,
                /// XTC threshold.
                xtc_threshold: f32,
                /// Minimum candidates kept.
                min_keep: usize,
                /// RNG seed (-1 = random).
                seed: i64 => sampler_seed,
            }
            built {
                /// Logit bias: `{"id": bias}` or `[[id, bias|false], ["text", bias]]`.
                logit_bias: ::serde_json::Value,
                /// A GBNF grammar.
                grammar: String,
                /// A JSON schema the output must match.
                json_schema: ::llama_core::json_schema::OrderedJson,
            }
        }
    };
}
pub(crate) use with_sampling_fields;

/// Defines a request struct with the endpoint's own fields (first, as
/// written), then every sampling field of [`with_sampling_fields!`] and the
/// request settings all generation endpoints share (`cache_prompt`,
/// `ignore_eos`, `n_keep`, `n_discard`, `id_slot`, `lora`). Also gives it `sampling_fields()` (the
/// [`SamplingFields`] view) and `request_template()`.
macro_rules! request_with_sampling {
    ($($definition:tt)*) => {
        $crate::sampling::with_sampling_fields!(request_struct! { $($definition)* });
    };
}
pub(crate) use request_with_sampling;

/// The body of [`request_with_sampling!`], called with the field list.
macro_rules! request_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$own_meta:meta])* pub $own:ident : $own_ty:ty,)* }
        copied { $($(#[$copied_doc:meta])* $copied:ident : $copied_ty:ty $(=> $convert:ident)?,)* }
        built { $($(#[$built_doc:meta])* $built:ident : $built_ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct $name {
            $($(#[$own_meta])* pub $own: $own_ty,)*
            $($(#[$copied_doc])* pub $copied: Option<$copied_ty>,)*
            $($(#[$built_doc])* pub $built: Option<$built_ty>,)*
            /// Reuse a cached prompt prefix (default true).
            pub cache_prompt: Option<bool>,
            /// Keep generating past end-of-generation (default `--ignore-eos`).
            pub ignore_eos: Option<bool>,
            /// Prompt tokens a context shift keeps (default `--keep`; -1 = all).
            pub n_keep: Option<i64>,
            /// Cells a context shift drops (0 or absent: half).
            pub n_discard: Option<i64>,
            /// Run in this slot (-1 or absent: any free slot).
            pub id_slot: Option<i64>,
            /// LoRA adapter scales for this request, `[{"id", "scale"}]`
            /// (unlisted adapters 0; absent: the global scales).
            pub lora: Option<Vec<$crate::lora::LoraEntry>>,
        }

        impl $name {
            /// The sampling fields of this request.
            pub(crate) fn sampling_fields(&self) -> $crate::sampling::SamplingFields<'_> {
                $crate::sampling::SamplingFields {
                    $($copied: self.$copied.as_ref(),)*
                    $($built: self.$built.as_ref(),)*
                }
            }

            /// The engine settings of this request: the fields every
            /// generation endpoint shares, around what the endpoint validated.
            pub(crate) fn request_template(
                &self,
                ready: &$crate::state::Ready,
                sampling: ::llama_core::SamplingParams,
                max_tokens: Option<u32>,
                stop: Vec<String>,
                n_probs: u32,
            ) -> Result<$crate::request::RequestTemplate, $crate::error::AppError> {
                let defaults = &ready.request_defaults;
                Ok($crate::request::RequestTemplate {
                    sampling,
                    max_tokens,
                    stop,
                    ignore_eos: self.ignore_eos.unwrap_or(defaults.ignore_eos),
                    n_probs,
                    cache_prompt: self.cache_prompt.unwrap_or(defaults.cache_prompt),
                    context_shift: $crate::request::context_shift(defaults, self.n_keep, self.n_discard)?,
                    slot: $crate::request::id_slot(self.id_slot)?,
                    lora: $crate::lora::request_scales(&*ready.engine, self.lora.as_deref())?,
                })
            }
        }
    };
}
pub(crate) use request_struct;

/// Declares [`SamplingFields`], called with the field list.
macro_rules! sampling_view {
    (
        copied { $($(#[$copied_doc:meta])* $copied:ident : $copied_ty:ty $(=> $convert:ident)?,)* }
        built { $($(#[$built_doc:meta])* $built:ident : $built_ty:ty,)* }
    ) => {
        /// The sampling fields of a request (any endpoint's), borrowed.
        #[derive(Debug, Default, Clone, Copy)]
        pub(crate) struct SamplingFields<'a> {
            $($(#[$copied_doc])* pub $copied: Option<&'a $copied_ty>,)*
            $($(#[$built_doc])* pub $built: Option<&'a $built_ty>,)*
        }

        impl SamplingFields<'_> {
            /// Copy the fields that map one to one onto `params`, converted
            /// where the request's type is not the parameter's.
            fn copy_into(&self, params: &mut SamplingParams) -> Result<(), AppError> {
                $(if let Some(value) = self.$copied {
                    params.$copied = $crate::sampling::sampling_view!(@convert value $(, $convert)?);
                })*
                Ok(())
            }
        }
    };
    (@convert $value:ident) => { Clone::clone($value) };
    (@convert $value:ident, $convert:ident) => { $convert($value)? };
}
pub(crate) use sampling_view;

with_sampling_fields!(sampling_view! {});

/// `mirostat`: 0 (off), 1 or 2.
fn mirostat_mode(mode: &u32) -> Result<u8, AppError> {
    match *mode {
        m @ 0..=2 => Ok(m as u8),
        _ => Err(AppError::invalid("mirostat", "`mirostat` must be 0, 1 or 2")),
    }
}

/// `seed`: see [`seed_from`].
fn sampler_seed(seed: &i64) -> Result<u32, AppError> {
    Ok(seed_from(*seed))
}

/// OpenAI and llama.cpp take 64-bit seeds, -1 meaning random; llama.cpp's
/// sampler takes 32 bits. Negative means random; larger values wrap.
pub(crate) fn seed_from(seed: i64) -> u32 {
    if seed < 0 { RANDOM_SEED } else { (seed as u64 & 0xffff_ffff) as u32 }
}

/// Build sampling parameters from the server defaults and a request's
/// fields. `extra_grammar` is a grammar derived from `response_format`;
/// at most one of it, `grammar` and `json_schema` may be given.
pub(crate) async fn build_sampling(
    defaults: &SamplingParams,
    fields: &SamplingFields<'_>,
    extra_grammar: Option<String>,
    ready: &Arc<Ready>,
) -> Result<SamplingParams, AppError> {
    let mut p = defaults.clone();
    fields.copy_into(&mut p)?;
    if let Some(bias) = fields.logit_bias {
        p.logit_bias = logit_bias(bias, ready).await?;
    }
    let mut grammars = Vec::new();
    if let Some(g) = fields.grammar.filter(|g| !g.trim().is_empty()) {
        if g.len() > MAX_GRAMMAR_BYTES {
            return Err(AppError::invalid("grammar", format!("`grammar` is longer than {MAX_GRAMMAR_BYTES} bytes")));
        }
        grammars.push(g.clone());
    }
    if let Some(schema) = fields.json_schema {
        grammars.push(
            json_schema::json_schema_to_gbnf(schema).map_err(|e| AppError::invalid("json_schema", e.to_string()))?,
        );
    }
    if let Some(g) = extra_grammar {
        grammars.push(g);
    }
    if grammars.len() > 1 {
        return Err(AppError::bad_request(
            "use only one of `grammar`, `json_schema` and `response_format` to constrain the output",
        ));
    }
    // A request's own constraint replaces the server's (--grammar, -j).
    if let Some(g) = grammars.pop() {
        p.grammar = Some(g);
    }
    // Validated once, by the engine at submit (which builds the sampler).
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(seed_from(-1), RANDOM_SEED);
        assert_eq!(seed_from(42), 42);
        assert_eq!(seed_from(1 << 32 | 7), 7);
    }

    #[test]
    fn copied_fields_override_the_defaults() {
        let breakers = vec!["x".to_string()];
        let fields = SamplingFields {
            temperature: Some(&0.5),
            top_k: Some(&3),
            mirostat: Some(&2),
            dry_sequence_breakers: Some(&breakers),
            seed: Some(&(1 << 32 | 9)),
            ..Default::default()
        };
        let mut p = SamplingParams::default();
        fields.copy_into(&mut p).unwrap();
        assert_eq!((p.temperature, p.top_k, p.mirostat, p.seed), (0.5, 3, 2, 9));
        assert_eq!(p.dry_sequence_breakers, breakers);
        assert_eq!(p.top_p, SamplingParams::default().top_p);

        let bad = SamplingFields { mirostat: Some(&3), ..Default::default() };
        assert!(matches!(bad.copy_into(&mut p), Err(AppError::InvalidRequest { .. })));
    }
}
