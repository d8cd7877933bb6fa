//! LoRA adapters for the default model, built by the suites: random
//! low-rank A/B pairs (F32) for `attn_q` and `attn_v` of the first block,
//! in the layout llama.cpp's `llama-adapter.cpp` reads (`general.type =
//! adapter`, `adapter.type = lora`, `adapter.lora.alpha`,
//! `general.architecture`; A is `{n_in, rank}`, B is `{rank, n_out}`). The
//! deltas are large on purpose, so that any non-zero scale changes greedy
//! output; they mean nothing.

use std::io;
use std::path::{Path, PathBuf};

use crate::gguf_edit::Value;
use crate::gguf_write::GgufWriter;

/// The projections the adapters change.
pub const TARGETS: [&str; 2] = ["blk.0.attn_q.weight", "blk.0.attn_v.weight"];
/// Their rank.
pub const RANK: u64 = 8;

/// `n` values in `[-amp, amp)` from a xorshift generator seeded with `seed`.
fn random(seed: u64, n: u64, amp: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// An adapter for the model at `model` (its `TARGETS` dimensions are read
/// from the file), with weights from `seed`, as a writer the caller may
/// still change (hostile variants).
///
/// # Errors
/// When the model does not validate or lacks a target tensor.
pub fn writer(model: &Path, seed: u64) -> io::Result<GgufWriter> {
    let info = llama_core::gguf::validate(model).map_err(io::Error::other)?;
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str(info.architecture().unwrap_or("llama").to_owned()))
        .meta("general.type", Value::Str("adapter".into()))
        .meta("adapter.type", Value::Str("lora".into()))
        .meta("adapter.lora.alpha", Value::F32(RANK as f32))
        .meta("adapter.lora.task_name", Value::Str(format!("test-{seed}")));
    for (k, base) in TARGETS.into_iter().enumerate() {
        let dims = &info.tensor(base).ok_or_else(|| io::Error::other(format!("the model has no {base}")))?.dims;
        let (n_in, n_out) = (dims[0], dims[1]);
        let s = seed * 16 + k as u64 * 2;
        w.tensor_f32(&format!("{base}.lora_a"), &[n_in, RANK], random(s, n_in * RANK, 0.5));
        w.tensor_f32(&format!("{base}.lora_b"), &[RANK, n_out], random(s + 1, RANK * n_out, 0.5));
    }
    Ok(w)
}

/// Write `w` to `name` under `target/tmp/llama-e2e/lora/` (through a
/// temporary file renamed into place) and return the path.
///
/// # Errors
/// I/O errors.
pub fn write(name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let profile = crate::paths::profile_dir();
    let dir = profile.parent().unwrap_or(&profile).join("tmp").join("llama-e2e").join("lora");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A good adapter for the default model with weights from `seed`, written
/// as `adapter-<seed>.gguf`.
///
/// # Errors
/// As [`writer`] and [`write`].
pub fn adapter(seed: u64) -> io::Result<PathBuf> {
    let bytes = writer(&crate::paths::model_path(), seed)?.to_bytes();
    write(&format!("adapter-{seed}.gguf"), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_validates_as_one() {
        let bytes = writer(&crate::paths::model_path(), 1).unwrap().to_bytes();
        let info = llama_core::gguf::validate_adapter_bytes(&bytes).expect("a valid adapter");
        assert_eq!(info.tensors.len(), 4);
        assert_eq!(info.get_str("adapter.lora.task_name"), Some("test-1"));
    }
}
