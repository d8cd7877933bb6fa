//! LoRA adapter files: the metadata and tensors that llama.cpp's adapter
//! loader (`llama-adapter.cpp`) reads, checked before it reads them.
//!
//! The loader reads `general.type`, `general.architecture` and
//! `adapter.type` with `gguf_get_val_str` and `adapter.lora.alpha` with
//! `gguf_get_val_f32`, which abort the process (`GGML_ASSERT`) when the key
//! has another type; it pairs tensors by their `.lora_a` / `.lora_b`
//! suffixes and checks their first two dimensions against the model's
//! tensor, but not the others (a 3-D LoRA tensor passes and makes ggml
//! assert in the first decode), nor the rank of a `token_embd` pair.
//! [`validate_adapter`] refuses all of those. Whether the adapter fits a
//! given model (architecture, tensor names, shapes) is checked against the
//! model when it is loaded (`LoraAdapter::load`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::info::{GgufInfo, TensorInfo};
use super::parse::Parsed;

/// The element types accepted for `lora_a` / `lora_b` tensors: what
/// llama.cpp's conversion script writes (`f32`, `f16`, `bf16`, `q8_0`).
pub const ADAPTER_TENSOR_TYPES: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0];

/// Validate the LoRA adapter file at `path`: the GGUF structure as
/// [`validate`](super::validate) checks it, then what llama.cpp's adapter
/// loader relies on: `general.type = adapter`, `adapter.type = lora` and
/// `general.architecture` strings, `adapter.lora.alpha` (if present) a
/// finite `f32`, no aLoRA invocation tokens, and every tensor one half of a
/// `lora_a` / `lora_b` pair of a type in [`ADAPTER_TENSOR_TYPES`] with at
/// most two dimensions and ranks that agree. Whether it fits a model is
/// checked when it is loaded for one.
///
/// # Errors
///
/// As [`validate`](super::validate) for the file itself;
/// [`GgufError::MissingKey`] and [`GgufError::InvalidMetadata`] for
/// metadata that is not a LoRA adapter's; [`GgufError::BadDimensions`] and
/// [`GgufError::InvalidAdapterTensor`] for tensors llama.cpp cannot use.
pub fn validate_adapter(path: impl AsRef<Path>) -> Result<GgufInfo, GgufError> {
    super::validate_with(path.as_ref(), check)
}

/// [`validate_adapter`] on a whole file held in memory.
///
/// # Errors
///
/// As [`validate_adapter`], but the path-related variants.
pub fn validate_adapter_bytes(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    super::validate_bytes_with(bytes, check)
}

fn invalid(key: &str, reason: impl Into<String>) -> GgufError {
    GgufError::InvalidMetadata { key: key.to_owned(), reason: reason.into() }
}

/// A string key llama.cpp reads with `gguf_get_val_str`: present, a
/// string, and equal to `want` when given.
fn string_key<'a>(info: &'a GgufInfo, key: &str, want: Option<&str>) -> Result<&'a str, GgufError> {
    let v = info.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })?;
    let s = v.as_str().ok_or_else(|| invalid(key, format!("must be a string, found a {}", v.value_type())))?;
    match want {
        Some(w) if s != w => Err(invalid(key, format!("is {s:?}; a LoRA adapter has {w:?}"))),
        _ => Ok(s),
    }
}

fn check(parsed: &Parsed) -> Result<(), GgufError> {
    let info = &parsed.info;
    string_key(info, "general.type", Some("adapter"))?;
    string_key(info, "adapter.type", Some("lora"))?;
    let arch = string_key(info, "general.architecture", None)?;
    if arch.is_empty() || arch.len() > 64 || !arch.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("general.architecture", format!("{arch:?} is not a plausible architecture name")));
    }
    if let Some(v) = info.get("adapter.lora.alpha") {
        match v.as_f64() {
            Some(a) if v.value_type() == super::GgufValueType::F32 && a.is_finite() && a >= 0.0 => {}
            _ => {
                return Err(invalid(
                    "adapter.lora.alpha",
                    format!("must be a finite, non-negative float32, found {v}"),
                ));
            }
        }
    }
    // Activated LoRA applies only after its invocation tokens; applied to
    // every token, as this crate would, it gives silently wrong output.
    if info.get("adapter.alora.invocation_tokens").is_some() {
        return Err(invalid("adapter.alora.invocation_tokens", "activated LoRA (aLoRA) adapters are not supported"));
    }
    check_tensors(&info.tensors)
}

/// Every tensor is one half of a `lora_a` / `lora_b` pair of a supported
/// type with at most two dimensions whose rank agrees with its partner
/// (`*_norm.weight` tensors are skipped by llama.cpp, and here).
fn check_tensors(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut pairs: BTreeMap<&str, (Option<&TensorInfo>, Option<&TensorInfo>)> = BTreeMap::new();
    for t in tensors {
        let (base, is_a) = if let Some(base) = t.name.strip_suffix(".lora_a") {
            (base, true)
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            (base, false)
        } else if t.name.ends_with("_norm.weight") {
            continue;
        } else {
            return Err(GgufError::InvalidAdapterTensor {
                name: t.name.clone(),
                reason: "is neither `<tensor>.lora_a` nor `<tensor>.lora_b`".into(),
            });
        };
        // llama.cpp strips every occurrence of the suffix, not only the last.
        if base.contains(".lora_a") || base.contains(".lora_b") {
            return Err(GgufError::InvalidAdapterTensor {
                name: t.name.clone(),
                reason: "has the suffix `.lora_a` or `.lora_b` twice".into(),
            });
        }
        if !ADAPTER_TENSOR_TYPES.contains(&t.ggml_type) {
            let names: Vec<&str> = ADAPTER_TENSOR_TYPES.iter().filter_map(|t| t.name()).collect();
            return Err(GgufError::InvalidAdapterTensor {
                name: t.name.clone(),
                reason: format!(
                    "has type {}; adapters may use {}",
                    t.ggml_type.name().unwrap_or("?"),
                    names.join(", ")
                ),
            });
        }
        if t.dims.iter().skip(2).any(|&d| d != 1) {
            return Err(GgufError::BadDimensions {
                name: t.name.clone(),
                reason: format!("{:?}: LoRA tensors have at most two dimensions", t.dims),
            });
        }
        let entry = pairs.entry(base).or_default();
        let half = if is_a { &mut entry.0 } else { &mut entry.1 };
        *half = Some(t);
    }
    if pairs.is_empty() {
        return Err(GgufError::InvalidAdapterTensor {
            name: String::new(),
            reason: "the adapter has no lora_a / lora_b tensors".into(),
        });
    }
    for (base, pair) in pairs {
        let (Some(a), Some(b)) = pair else {
            let missing = if pair.0.is_none() { "lora_a" } else { "lora_b" };
            return Err(GgufError::InvalidAdapterTensor {
                name: base.to_owned(),
                reason: format!("has no {missing} tensor (a LoRA pair needs both)"),
            });
        };
        let dim = |t: &TensorInfo, i: usize| t.dims.get(i).copied().unwrap_or(1);
        // A is {n_in, r}, B is {r, n_out}; for token_embd both are
        // {r, ...}: llama.cpp gathers rows of A and multiplies by B.
        let (rank_a, rank_b) =
            if base.ends_with("token_embd.weight") { (dim(a, 0), dim(b, 0)) } else { (dim(a, 1), dim(b, 0)) };
        if rank_a != rank_b {
            return Err(GgufError::InvalidAdapterTensor {
                name: base.to_owned(),
                reason: format!(
                    "lora_a {:?} and lora_b {:?} disagree on the rank ({rank_a} vs {rank_b})",
                    a.dims, b.dims
                ),
            });
        }
    }
    Ok(())
}
