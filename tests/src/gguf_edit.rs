//! Derived test models: a copy of a GGUF file with metadata keys set or
//! replaced, tensors untouched. The suites use it to give the default model
//! what it lacks (for example fill-in-the-middle token ids) without
//! fetching another model.
//!
//! The writer re-emits the header (magic, version, counts, the key/value
//! pairs with the new ones, the tensor infos unchanged), pads to the file's
//! alignment and copies the tensor data as it is: tensor offsets are
//! relative to the data section, so they stay valid.

use std::io;
use std::path::Path;

/// A metadata value the editor can write.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8.
    Str(String),
    /// GGUF type 9 (array) of type 8.
    StrArray(Vec<String>),
    /// GGUF type 9 (array) of type 5.
    I32Array(Vec<i32>),
}

impl Value {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::I32(v) => {
                out.extend(5u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            Value::Str(s) => {
                out.extend(8u32.to_le_bytes());
                write_str(out, s);
            }
            Value::StrArray(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    write_str(out, s);
                }
            }
            Value::I32Array(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a GGUF file this editor reads: {what}"))
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| bad("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad("u32"))?))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad("u64"))?))
    }

    fn string(&mut self) -> io::Result<String> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("string length"))?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Skip one value of type `ty`; returns a `u32` value when it is one.
    fn skip_value(&mut self, ty: u32) -> io::Result<Option<u32>> {
        let size = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4 => return self.u32().map(Some),
            5 | 6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Ok(None);
            }
            9 => {
                let elem = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.skip_value(elem)?;
                }
                return Ok(None);
            }
            _ => return Err(bad("value type")),
        };
        self.take(size)?;
        Ok(None)
    }
}

/// Copy the GGUF file `src` to `dst` with `set` keys set (replacing any
/// existing value of the same key).
///
/// # Errors
/// I/O errors, or a file this editor cannot read (truncated, unknown type).
pub fn copy_with_metadata(src: &Path, dst: &Path, set: &[(&str, Value)]) -> io::Result<()> {
    let bytes = std::fs::read(src)?;
    let mut r = Reader { bytes: &bytes, pos: 0 };
    if r.take(4)? != b"GGUF" {
        return Err(bad("magic"));
    }
    let version = r.u32()?;
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut kept = Vec::new();
    let mut n_kept = 0u64;
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let start = r.pos;
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.skip_value(ty)?;
        if key == "general.alignment" {
            alignment = u64::from(value.ok_or_else(|| bad("alignment type"))?).max(1);
        }
        if !set.iter().any(|(k, _)| *k == key) {
            kept.extend_from_slice(&bytes[start..r.pos]);
            n_kept += 1;
        }
    }
    let infos_start = r.pos;
    for _ in 0..n_tensors {
        r.string()?;
        let n_dims = r.u32()?;
        r.take(8 * n_dims as usize)?;
        r.u32()?;
        r.u64()?;
    }
    let infos = &bytes[infos_start..r.pos];
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let data = bytes.get(data_start as usize..).ok_or_else(|| bad("data section"))?;

    let mut out = Vec::with_capacity(bytes.len() + 4096);
    out.extend(b"GGUF");
    out.extend(version.to_le_bytes());
    out.extend(n_tensors.to_le_bytes());
    out.extend((n_kept + set.len() as u64).to_le_bytes());
    out.extend(kept);
    for (key, value) in set {
        write_str(&mut out, key);
        value.write(&mut out);
    }
    out.extend(infos);
    out.resize((out.len() as u64).div_ceil(alignment) as usize * alignment as usize, 0);
    out.extend(data);
    std::fs::write(dst, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_round_trips_and_takes_new_keys() {
        let src = crate::paths::model_path();
        let dir = tempfile::tempdir().unwrap();
        let same = dir.path().join("same.gguf");
        copy_with_metadata(&src, &same, &[]).unwrap();
        assert_eq!(std::fs::read(&same).unwrap(), std::fs::read(&src).unwrap());

        let edited = dir.path().join("edited.gguf");
        let set = [("tokenizer.ggml.fim_pre_token_id", Value::U32(5)), ("general.name", Value::Str("edited".into()))];
        copy_with_metadata(&src, &edited, &set).unwrap();
        let info = llama_core::gguf::validate(&edited).expect("the edited file validates");
        assert_eq!(info.get_str("general.name"), Some("edited"));
        let params = llama_core::ModelParams { vocab_only: true, ..Default::default() };
        let model = llama_core::Model::load(&edited, &params).expect("llama.cpp loads it");
        assert_eq!(model.vocab().fim().pre, Some(5));
    }
}
