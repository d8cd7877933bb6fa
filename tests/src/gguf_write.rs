//! New GGUF files from scratch: metadata plus F32 tensors. The suites use
//! it for models no download provides, built from their description (see
//! [`crate::reranker`]).
//!
//! The layout is GGUF version 3 as llama.cpp's `gguf.cpp` reads it: the
//! header (magic, version, tensor and key/value counts), the key/value
//! pairs in insertion order, the tensor infos (name, dimensions innermost
//! first, type, offset into the data section), padding to the alignment
//! (32 bytes), then each tensor's data, each padded to the alignment.

use std::io;
use std::path::Path;

use crate::gguf_edit::{Value, write_str};

/// The data-section alignment (llama.cpp's `GGUF_DEFAULT_ALIGNMENT`).
const ALIGNMENT: usize = 32;
/// ggml's type id of F32.
const GGML_TYPE_F32: u32 = 0;

/// A GGUF file being described; [`to_bytes`](Self::to_bytes) or
/// [`write`](Self::write) lays it out.
#[derive(Debug, Default, Clone)]
pub struct GgufWriter {
    kv: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    data: Vec<f32>,
}

impl GgufWriter {
    /// An empty file: no keys, no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value` (replacing an earlier value of the same key).
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_owned(), value));
        self
    }

    /// Add an F32 tensor. `dims` are ggml's, innermost (row length) first;
    /// `data` holds their product of values, row-major.
    ///
    /// # Panics
    /// If `data` does not have as many values as `dims` describe, or a
    /// tensor of that name was already added: both are bugs of the caller.
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], data: Vec<f32>) -> &mut Self {
        let n: u64 = dims.iter().product();
        assert_eq!(n, data.len() as u64, "tensor {name}: dims {dims:?} need {n} values, got {}", data.len());
        assert!(self.tensors.iter().all(|t| t.name != name), "tensor {name} added twice");
        self.tensors.push(Tensor { name: name.to_owned(), dims: dims.to_vec(), data });
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            write_str(&mut out, key);
            value.write(&mut out);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(GGML_TYPE_F32.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset += (t.data.len() * 4).next_multiple_of(ALIGNMENT);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        for t in &self.tensors {
            for v in &t.data {
                out.extend(v.to_le_bytes());
            }
            out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        }
        out
    }

    /// Write the file to `path`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_validates_and_reads_back() {
        let mut w = GgufWriter::new();
        w.meta("general.name", Value::Str("tiny".into()))
            .meta("general.name", Value::Str("tinier".into()))
            .meta("test.list", Value::StrArray(vec!["a".into(), "b".into()]))
            .meta("test.ids", Value::I32Array(vec![1, -2, 3]))
            .tensor_f32("a", &[3], vec![1.0, 2.0, 3.0])
            .tensor_f32("b", &[2, 2], vec![0.5; 4]);
        let bytes = w.to_bytes();
        let info = llama_core::gguf::validate_bytes(&bytes).expect("the writer's output validates");
        assert_eq!(info.get_str("general.name"), Some("tinier"));
        assert_eq!(info.tensors.len(), 2);
        let b = info.tensor("b").expect("tensor b");
        assert_eq!(b.dims, vec![2, 2]);
    }
}
