//! Fuzz target `gguf_adapter`: any byte string given to the LoRA adapter
//! validator (`gguf::validate_adapter_bytes`, what `validate_adapter` runs on
//! a file) gives `Ok` or a typed error, never a panic. What passes is a
//! well-formed GGUF file (as `gguf_validate` checks it) that is an adapter
//! llama.cpp's loader can read: `general.type` = `adapter`, `adapter.type` =
//! `lora`, a string architecture, a finite non-negative f32 alpha if any, and
//! only `<tensor>.lora_a` / `.lora_b` pairs (or `*_norm.weight`) of the
//! supported types, at most two dimensions, ranks that agree. Validating it
//! again gives the same description.
//!
//! Compiled into the fuzz crate and into llama-core's corpus-replay test; the
//! includer provides `crate::gguf` (llama-core's `gguf` module).

use std::collections::BTreeMap;

/// Run one input.
pub fn gguf_adapter(data: &[u8]) {
    let info = match crate::gguf::validate_adapter_bytes(data) {
        Ok(info) => info,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(info.version == 2 || info.version == 3);
    assert!(info.alignment.is_power_of_two());
    for t in &info.tensors {
        assert!(t.offset % info.alignment == 0);
        assert!(info.data_offset + t.offset + t.n_bytes <= info.file_size);
        assert!(!t.dims.is_empty() && t.dims.len() <= 4 && t.dims.iter().all(|&d| d > 0));
    }
    let string = |key: &str| info.get(key).and_then(|v| v.as_str().map(str::to_owned));
    assert_eq!(string("general.type").as_deref(), Some("adapter"));
    assert_eq!(string("adapter.type").as_deref(), Some("lora"));
    assert!(string("general.architecture").is_some_and(|a| !a.is_empty()));
    if let Some(alpha) = info.get("adapter.lora.alpha") {
        assert!(alpha.as_f64().is_some_and(|a| a.is_finite() && a >= 0.0));
    }
    // Every tensor is half of a complete pair (or a norm llama.cpp skips).
    let mut halves: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for t in &info.tensors {
        if t.name.ends_with("_norm.weight") {
            continue;
        }
        assert!(crate::gguf::ADAPTER_TENSOR_TYPES.contains(&t.ggml_type), "{}: {:?}", t.name, t.ggml_type);
        assert!(t.dims.iter().skip(2).all(|&d| d == 1), "{}: {:?}", t.name, t.dims);
        let entry = if let Some(base) = t.name.strip_suffix(".lora_a") {
            &mut halves.entry(base).or_default().0
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            &mut halves.entry(base).or_default().1
        } else {
            panic!("accepted a tensor that is not a LoRA half: {}", t.name);
        };
        *entry = true;
    }
    assert!(!halves.is_empty());
    assert!(halves.values().all(|&(a, b)| a && b), "accepted an incomplete pair: {halves:?}");
    // Deterministic: the same bytes are accepted again, described the same
    // way (compared as text: a NaN in the metadata is not equal to itself).
    let again = crate::gguf::validate_adapter_bytes(data).expect("accepted once, accepted again");
    assert_eq!(format!("{again:?}"), format!("{info:?}"));
}
