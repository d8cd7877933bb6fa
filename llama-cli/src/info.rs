//! `llama info`: what a GGUF file holds, read by our own validator (no
//! weights loaded, nothing handed to llama.cpp).

use std::collections::BTreeMap;

use llama_core::gguf::{self, GgufInfo, GgufValue};
use serde_json::{Value, json};

use crate::cli::InfoArgs;
use crate::{Outcome, load, model_path, output};

/// The special tokens worth showing, by their GGUF key suffix.
const SPECIAL_TOKENS: &[(&str, &str)] = &[
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
    ("unknown", "tokenizer.ggml.unknown_token_id"),
    ("padding", "tokenizer.ggml.padding_token_id"),
    ("separator", "tokenizer.ggml.seperator_token_id"),
];

/// Run `llama info`.
pub fn run(args: InfoArgs) -> anyhow::Result<Outcome> {
    let path = model_path::resolve(&args.model)?;
    if !path.exists() {
        return Err(load::describe(llama_core::Error::ModelNotFound { path: path.clone() }, &path));
    }
    let info = gguf::validate(&path).map_err(|e| load::describe(llama_core::Error::InvalidModel(e), &path))?;
    let summary = Summary::of(&info);
    if args.json {
        let mut value = summary.to_json(&path.display().to_string(), &info);
        if args.metadata {
            let meta: serde_json::Map<String, Value> =
                info.metadata.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect();
            value["metadata"] = Value::Object(meta);
        }
        output::print_json(&value)?;
    } else {
        output::print_line(&summary.to_text(&path.display().to_string(), &info))?;
        if args.metadata {
            output::print_line("metadata:")?;
            for (k, v) in &info.metadata {
                output::print_line(&format!("  {k} = {v}"))?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// The interesting facts, gathered once for both output formats.
struct Summary<'a> {
    name: Option<&'a str>,
    architecture: Option<&'a str>,
    n_params: u64,
    tensor_bytes: u64,
    context_length: Option<u64>,
    embedding_length: Option<u64>,
    block_count: Option<u64>,
    head_count: Option<u64>,
    head_count_kv: Option<u64>,
    n_vocab: Option<u64>,
    tokenizer: Option<&'a str>,
    /// The tensor type holding the most weights (the "quantization").
    quantization: Option<&'static str>,
    /// Elements per tensor type.
    types: BTreeMap<&'static str, u64>,
    chat_template: Option<&'a str>,
    special: Vec<(&'static str, u64, Option<&'a str>)>,
}

impl<'a> Summary<'a> {
    fn of(info: &'a GgufInfo) -> Summary<'a> {
        let arch_u64 = |k: &str| info.arch_value(k).and_then(GgufValue::as_u64);
        let mut types: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in &info.tensors {
            *types.entry(t.ggml_type.name().unwrap_or("?")).or_default() += t.n_elements;
        }
        let quantization = types.iter().max_by_key(|(_, n)| **n).map(|(name, _)| *name);
        let token_text = |id: u64| -> Option<&'a str> {
            let tokens = info.get("tokenizer.ggml.tokens")?.as_array()?;
            tokens.items.get(usize::try_from(id).ok()?)?.as_str()
        };
        let special = SPECIAL_TOKENS
            .iter()
            .filter_map(|(label, key)| info.get_u64(key).map(|id| (*label, id, token_text(id))))
            .collect();
        Summary {
            name: info.name(),
            architecture: info.architecture(),
            n_params: info.n_params(),
            tensor_bytes: info.tensor_bytes(),
            context_length: arch_u64("context_length"),
            embedding_length: arch_u64("embedding_length"),
            block_count: arch_u64("block_count"),
            head_count: arch_u64("attention.head_count"),
            head_count_kv: arch_u64("attention.head_count_kv"),
            n_vocab: info.n_vocab(),
            tokenizer: info.get_str("tokenizer.ggml.model"),
            quantization,
            types,
            chat_template: info.chat_template(),
            special,
        }
    }

    fn to_json(&self, path: &str, info: &GgufInfo) -> Value {
        let special: serde_json::Map<String, Value> = self
            .special
            .iter()
            .map(|(label, id, text)| ((*label).to_owned(), json!({ "id": id, "text": text })))
            .collect();
        json!({
            "path": path,
            "name": self.name,
            "architecture": self.architecture,
            "gguf_version": info.version,
            "file_size": info.file_size,
            "parameters": self.n_params,
            "tensor_bytes": self.tensor_bytes,
            "tensors": info.tensor_count(),
            "quantization": self.quantization,
            "tensor_types": self.types,
            "context_length": self.context_length,
            "embedding_length": self.embedding_length,
            "block_count": self.block_count,
            "head_count": self.head_count,
            "head_count_kv": self.head_count_kv,
            "vocab_size": self.n_vocab,
            "tokenizer": self.tokenizer,
            "special_tokens": special,
            "has_chat_template": self.chat_template.is_some(),
            "chat_template": self.chat_template,
        })
    }

    fn to_text(&self, path: &str, info: &GgufInfo) -> String {
        let or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut lines = vec![
            format!("file:            {path} ({}, GGUF v{})", human_bytes(info.file_size), info.version),
            format!("name:            {}", self.name.unwrap_or("-")),
            format!("architecture:    {}", self.architecture.unwrap_or("-")),
            format!("parameters:      {} ({})", human_count(self.n_params), self.n_params),
            format!("weights:         {} in {} tensors", human_bytes(self.tensor_bytes), info.tensor_count()),
            format!(
                "quantization:    {} ({})",
                self.quantization.unwrap_or("-"),
                self.types.iter().map(|(t, n)| format!("{t}: {}", human_count(*n))).collect::<Vec<_>>().join(", ")
            ),
            format!("context length:  {}", or_dash(self.context_length)),
            format!(
                "layers:          {} (embedding {}, heads {}, kv heads {})",
                or_dash(self.block_count),
                or_dash(self.embedding_length),
                or_dash(self.head_count),
                or_dash(self.head_count_kv)
            ),
            format!("vocabulary:      {} tokens ({})", or_dash(self.n_vocab), self.tokenizer.unwrap_or("-")),
            format!(
                "chat template:   {}",
                self.chat_template.map_or_else(|| "no".to_owned(), |t| format!("yes ({} bytes)", t.len()))
            ),
        ];
        let special: Vec<String> = self
            .special
            .iter()
            .map(|(label, id, text)| match text {
                Some(text) => format!("{label} {id} {text:?}"),
                None => format!("{label} {id}"),
            })
            .collect();
        lines
            .push(format!("special tokens:  {}", if special.is_empty() { "-".to_owned() } else { special.join(", ") }));
        lines.join("\n")
    }
}

fn value_to_json(v: &GgufValue) -> Value {
    if let Some(a) = v.as_array() {
        let items: Vec<Value> = a.items.iter().map(value_to_json).collect();
        return if a.is_complete() { Value::Array(items) } else { json!({ "len": a.len, "first": items }) };
    }
    if let Some(i) = v.as_int() {
        return i64::try_from(i).map_or_else(|_| json!(i.to_string()), |i| json!(i));
    }
    if let Some(f) = v.as_f64() {
        return json!(f);
    }
    if let Some(b) = v.as_bool() {
        return json!(b);
    }
    json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn human_count(n: u64) -> String {
    let v = n as f64;
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", v / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", v / 1e6),
        _ => format!("{:.2}B", v / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(92 * 1024 * 1024 + 1), "92.0 MiB");
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(7_000_000_000), "7.00B");
    }
}
