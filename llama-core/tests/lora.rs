//! LoRA adapters against the real default model: adapters the test
//! writes itself (random low-rank A/B for `attn_q` and `attn_v` of the
//! first block), validated, loaded, applied with scales and replaced; and
//! hostile adapter files, which are typed errors, never a crash.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_core::gguf::{GgufError, validate_adapter, validate_adapter_bytes};
use llama_core::{Context, ContextParams, Error, LoraAdapter, Model, ModelParams, Sampler, SamplingParams, Token};

mod common;
use common::{model, model_path};

/// A GGUF metadata value the writer below knows.
enum Meta {
    Str(&'static str),
    F32(f32),
    U32(u32),
}

/// F32 tensors: name, ggml dims (innermost first), values.
type Tensors = Vec<(String, Vec<u64>, Vec<f32>)>;

/// The bytes of a GGUF v3 file with `meta` and F32 `tensors` (name, ggml
/// dims innermost first, values).
fn gguf_bytes(meta: &[(&str, Meta)], tensors: &Tensors) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut out, k);
        match v {
            Meta::Str(v) => {
                out.extend(8u32.to_le_bytes());
                s(&mut out, v);
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, data) in tensors {
        s(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(0u32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64 * 4).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, _, data) in tensors {
        data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        out.resize(out.len().next_multiple_of(32), 0);
    }
    out
}

/// `n` values in `[-amp, amp)` from a xorshift generator seeded with `seed`.
fn random(seed: u64, n: usize, amp: f32) -> Vec<f32> {
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

/// The model's dimensions of tensor `name` (ggml order).
fn model_dims(name: &str) -> Vec<u64> {
    let info = llama_core::gguf::validate(model_path()).unwrap();
    info.tensor(name).unwrap_or_else(|| panic!("the model has {name}")).dims.clone()
}

/// Random rank-`rank` A/B pairs for `attn_q` and `attn_v` of block 0, in
/// the shapes llama.cpp expects: A is `{n_in, rank}`, B is `{rank, n_out}`.
fn lora_tensors(rank: u64, seed: u64) -> Tensors {
    let mut out = Vec::new();
    for (k, base) in ["blk.0.attn_q.weight", "blk.0.attn_v.weight"].into_iter().enumerate() {
        let w = model_dims(base);
        let (n_in, n_out) = (w[0], w[1]);
        let seed = seed * 16 + k as u64 * 2;
        out.push((format!("{base}.lora_a"), vec![n_in, rank], random(seed, (n_in * rank) as usize, 0.5)));
        out.push((format!("{base}.lora_b"), vec![rank, n_out], random(seed + 1, (rank * n_out) as usize, 0.5)));
    }
    out
}

fn adapter_meta(arch: &'static str) -> Vec<(&'static str, Meta)> {
    vec![
        ("general.architecture", Meta::Str(arch)),
        ("general.type", Meta::Str("adapter")),
        ("adapter.type", Meta::Str("lora")),
        ("adapter.lora.alpha", Meta::F32(8.0)),
        ("adapter.lora.task_name", Meta::Str("test-task")),
    ]
}

/// A fresh temporary file path for this test process.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llama-core-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A good adapter for the default model, written once per seed.
fn good_adapter(seed: u64) -> PathBuf {
    write(&format!("good-{seed}.gguf"), &gguf_bytes(&adapter_meta("llama"), &lora_tensors(8, seed)))
}

fn ctx() -> Context {
    let params =
        ContextParams { n_ctx: 256, n_batch: 64, n_ubatch: 64, n_threads: 2, n_threads_batch: 2, ..Default::default() };
    Context::new(model(), &params).unwrap()
}

/// Greedy tokens after `PROMPT` in a fresh sequence of `ctx`.
fn greedy(ctx: &mut Context, n: usize) -> Vec<Token> {
    let m = model();
    ctx.kv_clear();
    let prompt = m.vocab().tokenize("The capital of France is", true, false).unwrap();
    let mut sampler = Sampler::new(&m, &SamplingParams::greedy()).unwrap();
    let mut batch = ctx.new_batch();
    let mut last = batch.add_sequence(&prompt, 0, 0, true).unwrap();
    let mut pos = prompt.len() as i32;
    let mut out = Vec::new();
    while out.len() < n {
        ctx.decode(&batch).unwrap();
        let t = sampler.sample(ctx, last).unwrap();
        out.push(t);
        batch.clear();
        last = batch.add(t, pos, &[0], true).unwrap();
        pos += 1;
    }
    out
}

#[test]
fn scale_zero_is_the_base_model_and_scales_replace_each_other() {
    let m = model();
    let a = Arc::new(LoraAdapter::load(&m, good_adapter(1)).unwrap());
    let b = Arc::new(LoraAdapter::load(&m, good_adapter(2)).unwrap());
    assert_eq!(a.meta("adapter.lora.task_name").as_deref(), Some("test-task"));
    assert!(a.metadata().iter().any(|(k, v)| k == "adapter.type" && v == "lora"));
    let mut c = ctx();
    let base = greedy(&mut c, 8);

    c.set_lora_adapters(&[(Arc::clone(&a), 0.0), (Arc::clone(&b), 0.0)]).unwrap();
    assert!(c.lora_adapters().is_empty());
    assert_eq!(greedy(&mut c, 8), base, "scale 0 must be the base model exactly");

    c.set_lora_adapters(&[(Arc::clone(&a), 1.0)]).unwrap();
    let with_a = greedy(&mut c, 8);
    assert_ne!(with_a, base, "a non-zero scale changes the output");
    c.set_lora_adapters(&[(Arc::clone(&b), 1.0)]).unwrap();
    let with_b = greedy(&mut c, 8);
    assert_ne!(with_b, with_a, "replace-all: only b is applied now");
    c.set_lora_adapters(&[(Arc::clone(&a), 1.0)]).unwrap();
    assert_eq!(greedy(&mut c, 8), with_a, "switching back gives the same output");

    // The adapters outlive the handles the test drops: the context holds them.
    drop(a);
    drop(b);
    assert_eq!(greedy(&mut c, 8), with_a);
    c.set_lora_adapters(&[]).unwrap();
    assert_eq!(greedy(&mut c, 8), base, "an empty list applies none");
}

#[test]
fn bad_scales_and_duplicates_are_refused_without_a_change() {
    let m = model();
    let a = Arc::new(LoraAdapter::load(&m, good_adapter(3)).unwrap());
    let mut c = ctx();
    c.set_lora_adapters(&[(Arc::clone(&a), 0.5)]).unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        let err = c.set_lora_adapters(&[(Arc::clone(&a), bad)]).unwrap_err();
        assert!(matches!(err, Error::InvalidParam { name: "scale", .. }), "{err}");
    }
    let err = c.set_lora_adapters(&[(Arc::clone(&a), 1.0), (Arc::clone(&a), 2.0)]).unwrap_err();
    assert!(matches!(err, Error::InvalidParam { name: "adapters", .. }), "{err}");
    assert_eq!(c.lora_adapters().len(), 1);
    assert_eq!(c.lora_adapters()[0].1, 0.5);

    // An adapter loaded for another model (the same file, loaded twice).
    let other = Arc::new(Model::load(model_path(), &ModelParams::default()).unwrap());
    let foreign = Arc::new(LoraAdapter::load(&other, good_adapter(3)).unwrap());
    let err = c.set_lora_adapters(&[(foreign, 1.0)]).unwrap_err();
    assert!(matches!(err, Error::InvalidParam { name: "adapters", .. }), "{err}");
}

fn expect_invalid(path: &Path, what: &str) -> GgufError {
    match LoraAdapter::load(&model(), path) {
        Err(Error::InvalidAdapter(e)) => e,
        Err(other) => panic!("{what}: expected InvalidAdapter, got {other}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

fn expect_mismatch(path: &Path, what: &str) -> String {
    match LoraAdapter::load(&model(), path) {
        Err(Error::AdapterMismatch { reason, .. }) => reason,
        Err(other) => panic!("{what}: expected AdapterMismatch, got {other}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

#[test]
fn hostile_adapter_files_are_typed_errors() {
    let good = gguf_bytes(&adapter_meta("llama"), &lora_tensors(4, 9));
    validate_adapter_bytes(&good).unwrap();

    // Missing, empty, truncated (header and data), a model instead of an adapter.
    assert!(matches!(expect_invalid(&temp_path("missing.gguf"), "missing"), GgufError::NotFound { .. }));
    assert!(matches!(expect_invalid(&write("empty.gguf", &[]), "empty"), GgufError::Empty));
    for cut in [10, good.len() / 3, good.len() - 100] {
        let e = expect_invalid(&write(&format!("cut-{cut}.gguf"), &good[..cut]), "truncated");
        assert!(!matches!(e, GgufError::NotFound { .. }), "{e}");
    }
    let e = validate_adapter(model_path()).unwrap_err();
    assert!(matches!(&e, GgufError::InvalidMetadata { key, .. } if key == "general.type"), "{e}");

    // Metadata llama.cpp would read with the wrong getter (GGML_ASSERT), or refuse.
    let cases: Vec<(&str, Vec<(&str, Meta)>)> = vec![
        ("general.type", vec![("general.type", Meta::U32(1))]),
        ("general.type", vec![("general.type", Meta::Str("model"))]),
        ("adapter.type", vec![("adapter.type", Meta::Str("control_vector"))]),
        ("adapter.lora.alpha", vec![("adapter.lora.alpha", Meta::U32(8))]),
        ("adapter.lora.alpha", vec![("adapter.lora.alpha", Meta::F32(f32::NAN))]),
        ("general.architecture", vec![("general.architecture", Meta::F32(1.0))]),
        ("adapter.alora.invocation_tokens", vec![("adapter.alora.invocation_tokens", Meta::U32(1))]),
    ];
    for (key, change) in cases {
        let mut meta = adapter_meta("llama");
        for (k, v) in change {
            meta.retain(|(m, _)| *m != k);
            meta.push((k, v));
        }
        let e = validate_adapter_bytes(&gguf_bytes(&meta, &lora_tensors(4, 9))).unwrap_err();
        assert!(matches!(&e, GgufError::InvalidMetadata { key: k, .. } if k == key), "{key}: {e}");
    }
    let mut meta = adapter_meta("llama");
    meta.retain(|(k, _)| *k != "adapter.type");
    let e = validate_adapter_bytes(&gguf_bytes(&meta, &lora_tensors(4, 9))).unwrap_err();
    assert!(matches!(&e, GgufError::MissingKey { key } if key == "adapter.type"), "{e}");

    // Tensors llama.cpp cannot use: half a pair, a bad suffix, 3-D, ranks that disagree, none.
    let t = lora_tensors(4, 9);
    let tensor_cases: Vec<(&str, Tensors)> = vec![
        ("half a pair", t[..3].to_vec()),
        ("bad suffix", vec![("blk.0.attn_q.weight.lora_c".into(), vec![4], vec![0.0; 4])]),
        ("3-D", vec![("blk.0.attn_q.weight.lora_a".into(), vec![2, 2, 2], vec![0.0; 8])]),
        ("rank", {
            let mut t = t.clone();
            let (n, dims, _) = t[1].clone();
            t[1] = (n, vec![dims[0] + 1, dims[1]], vec![0.0; ((dims[0] + 1) * dims[1]) as usize]);
            t
        }),
        ("none", Vec::new()),
    ];
    for (what, tensors) in tensor_cases {
        let e = validate_adapter_bytes(&gguf_bytes(&adapter_meta("llama"), &tensors)).unwrap_err();
        assert!(matches!(e, GgufError::InvalidAdapterTensor { .. } | GgufError::BadDimensions { .. }), "{what}: {e}");
    }

    // Valid adapters for another model: architecture, tensor names, shapes.
    let reason = expect_mismatch(&write("arch.gguf", &gguf_bytes(&adapter_meta("gemma"), &t)), "arch");
    assert!(reason.contains("gemma"), "{reason}");
    let mut renamed = t.clone();
    renamed[0].0 = "blk.99.attn_q.weight.lora_a".into();
    renamed[1].0 = "blk.99.attn_q.weight.lora_b".into();
    let reason = expect_mismatch(&write("names.gguf", &gguf_bytes(&adapter_meta("llama"), &renamed)), "names");
    assert!(reason.contains("blk.99.attn_q.weight"), "{reason}");
    let mut shapes = t.clone();
    shapes[0] = (shapes[0].0.clone(), vec![100, 4], vec![0.0; 400]);
    let reason = expect_mismatch(&write("shapes.gguf", &gguf_bytes(&adapter_meta("llama"), &shapes)), "shapes");
    assert!(reason.contains("do not fit"), "{reason}");

    // The process is alive and the model still works.
    let mut c = ctx();
    assert_eq!(greedy(&mut c, 2).len(), 2);
}
