//! What validation learned about a file: [`GgufInfo`] and [`TensorInfo`].
#![forbid(unsafe_code)]

use super::ggml_type::GgmlType;
use super::value::GgufValue;

/// One tensor's header entry, already checked: valid type, 1–4 positive
/// dimensions, data inside the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor name (at most 63 bytes), e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Its element type.
    pub ggml_type: GgmlType,
    /// Its dimensions, innermost (row length) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
    /// The product of `dims`.
    pub n_elements: u64,
    /// Size of its data in bytes.
    pub n_bytes: u64,
}

/// Everything [`validate`](super::validate) read from a GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufInfo {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of every tensor offset in it.
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// Every metadata key-value pair in file order (large arrays summarized,
    /// see [`GgufArray`](super::GgufArray)).
    pub metadata: Vec<(String, GgufValue)>,
    /// Every tensor in file order.
    pub tensors: Vec<TensorInfo>,
}

impl GgufInfo {
    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of a string metadata key (`None` if absent or not a string).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    /// The value of an integer metadata key of any width, if it is non-negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`, the human-readable model name, if set.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// Number of tokens in `tokenizer.ggml.tokens`.
    pub fn n_vocab(&self) -> Option<u64> {
        self.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(|a| a.len)
    }

    /// `tokenizer.chat_template`, the Jinja chat template, if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// The value of an architecture-scoped key: `arch_value("block_count")`
    /// reads `llama.block_count` in a llama model.
    pub fn arch_value(&self, suffix: &str) -> Option<&GgufValue> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total number of elements in all tensors (the parameter count).
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements).fold(0, u64::saturating_add)
    }

    /// Total size of all tensor data in bytes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).fold(0, u64::saturating_add)
    }
}
