//! GGUF validation: the real model validates with the expected values, and a
//! corpus of malformed files (patched copies of the real header, and files
//! built from scratch with the small writer below) each fails with its own
//! typed error, never a panic. A property test mutates headers at random.
//! The last section hands validator-approved edge files to llama.cpp through
//! `Model::load` and checks that the process survives.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use llama_core::gguf::{self, GgmlType, GgufError, GgufInfo, GgufValue, GgufValueType};
use llama_core::{ChatTemplate, Error, Model, ModelParams};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The real model
// ---------------------------------------------------------------------------

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The whole default model, read once per test binary.
fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read(model_path()).expect("default model present (run vendor/setup.sh)"))
}

fn model_info() -> &'static GgufInfo {
    static INFO: OnceLock<GgufInfo> = OnceLock::new();
    INFO.get_or_init(|| gguf::validate(model_path()).expect("the default model validates"))
}

/// Assert that `$result` is an error matching `$pat`, with a non-empty message.
macro_rules! assert_err {
    ($result:expr, $pat:pat $(if $guard:expr)?) => {
        match $result {
            Err(e) => {
                let shown = e.to_string();
                assert!(matches!(&e, $pat $(if $guard)?), "wrong error: {e:?} ({shown})");
                assert!(!shown.is_empty());
            }
            Ok(_) => panic!("expected {}, got Ok", stringify!($pat)),
        }
    };
}

#[test]
fn real_model_validates_with_expected_values() {
    let info = model_info();
    assert_eq!(info.version, 3);
    assert_eq!(info.alignment, 32);
    assert_eq!(info.file_size, model_bytes().len() as u64);
    assert_eq!(info.data_offset % 32, 0);
    assert!(info.data_offset > 1_000_000 && info.data_offset < info.file_size, "{}", info.data_offset);
    assert_eq!(info.architecture(), Some("llama"));
    assert_eq!(info.n_vocab(), Some(49152));
    assert_eq!(info.get_u64("llama.block_count"), Some(30));
    assert_eq!(info.arch_value("embedding_length").and_then(GgufValue::as_u64), Some(576));
    assert_eq!(info.get_u64("llama.context_length"), Some(8192));
    assert_eq!(info.get_u64("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(info.get_str("tokenizer.ggml.model"), Some("gpt2"));
    let template = info.chat_template().expect("has a chat template");
    assert!(template.contains("<|im_start|>"), "{template}");

    // 30 layers × 9 tensors + token_embd + output_norm; data fills the file.
    assert_eq!(info.tensor_count(), 272);
    let embd = info.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, [576, 49152]);
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.offset, 0);
    assert_eq!(info.tensor("blk.0.attn_q.weight").unwrap().ggml_type, GgmlType::Q4_1);
    let end = info.tensors.iter().map(|t| info.data_offset + t.offset + t.n_bytes).max().unwrap();
    assert!(end <= info.file_size && info.file_size - end < 32, "{end} vs {}", info.file_size);
    assert!((134_000_000..135_000_000).contains(&info.n_params()), "{}", info.n_params());

    // Arrays are summarized: full length, bounded items.
    let tokens = info.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!((tokens.elem_type, tokens.len), (GgufValueType::String, 49152));
    assert_eq!(tokens.items.len(), gguf::ARRAY_ITEMS_KEPT);
    assert_eq!(tokens.items[1].as_str(), Some("<|im_start|>"));
    let shown = info.get("tokenizer.ggml.tokens").unwrap().to_string();
    assert!(shown.starts_with("[str; 49152] [\"<|endoftext|>\", \"<|im_start|>\""), "{shown}");
    assert!(shown.len() < 300, "{shown}");

    // The file and the in-memory paths agree.
    assert_eq!(&gguf::validate_bytes(model_bytes()).unwrap(), info);
}

#[test]
fn real_model_validates_quickly() {
    model_info();
    // An optimized build takes about 6 ms; this unoptimized test build about
    // 50 ms on an idle machine. The bound only catches pathologies (reading
    // the weights, quadratic parsing) on a loaded CI machine.
    let start = Instant::now();
    for _ in 0..3 {
        gguf::validate(model_path()).unwrap();
    }
    let each = start.elapsed() / 3;
    assert!(each < Duration::from_secs(5), "{each:?} per validation");
}

// ---------------------------------------------------------------------------
// A tiny GGUF writer
// ---------------------------------------------------------------------------

/// A metadata value as written to the file, including invalid encodings.
#[derive(Clone, Debug)]
enum V {
    U8(u8),
    I32(i32),
    U32(u32),
    F32(f32),
    U64(u64),
    /// A bool's raw byte (0 or 1 when valid).
    Bool(u8),
    Str(Vec<u8>),
    /// An array: element tag and items.
    Arr(u32, Vec<V>),
    /// An array header claiming `len` elements, followed by `items`.
    ArrLen(u32, u64, Vec<V>),
    /// A string header claiming `len` bytes, followed by `bytes`.
    StrLen(u64, Vec<u8>),
    /// Any type tag followed by raw bytes.
    Raw(u32, Vec<u8>),
}

impl V {
    fn tag(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) | V::StrLen(..) => 8,
            V::Arr(..) | V::ArrLen(..) => 9,
            V::U64(_) => 10,
            V::Raw(tag, _) => *tag,
        }
    }

    fn payload(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::U32(v) => out.extend(v.to_le_bytes()),
            V::I32(v) => out.extend(v.to_le_bytes()),
            V::F32(v) => out.extend(v.to_le_bytes()),
            V::U64(v) => out.extend(v.to_le_bytes()),
            V::Bool(b) => out.push(*b),
            V::Str(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s);
            }
            V::StrLen(len, s) => {
                out.extend(len.to_le_bytes());
                out.extend(s);
            }
            V::Arr(elem, items) => V::ArrLen(*elem, items.len() as u64, items.clone()).payload(out),
            V::ArrLen(elem, len, items) => {
                out.extend(elem.to_le_bytes());
                out.extend(len.to_le_bytes());
                for item in items {
                    item.payload(out);
                }
            }
            V::Raw(_, bytes) => out.extend(bytes),
        }
    }
}

fn s(text: &str) -> V {
    V::Str(text.as_bytes().to_vec())
}

fn strs<S: AsRef<str>>(items: &[S]) -> V {
    V::Arr(8, items.iter().map(|t| s(t.as_ref())).collect())
}

#[derive(Clone, Debug)]
struct Tensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    ty: u32,
    /// `None`: placed after the previous tensor, aligned.
    offset: Option<u64>,
}

/// A GGUF file under construction. `build` lays tensors out one after the
/// other (unless an offset is forced) and appends zeroed data.
#[derive(Clone, Debug)]
struct Gguf {
    magic: [u8; 4],
    version: u32,
    /// Overrides of the header counts.
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kv: Vec<(Vec<u8>, V)>,
    tensors: Vec<Tensor>,
    /// Padding used by the writer (set `general.alignment` separately).
    alignment: u64,
}

const F32: u32 = 0;
const Q4_0: u32 = 2;

fn nbytes(dims: &[u64], ty: u32) -> Option<u64> {
    let t = GgmlType::from_id(ty);
    let (block, size) = (t.block_size()?, t.type_size()?);
    let (first, rest) = dims.split_first()?;
    rest.iter().try_fold((first / block).checked_mul(size)?, |acc, &d| acc.checked_mul(d))
}

impl Gguf {
    fn empty() -> Gguf {
        Gguf {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kv: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    fn set(mut self, key: &str, value: V) -> Gguf {
        self.set_raw(key.as_bytes(), value);
        self
    }

    fn set_raw(&mut self, key: &[u8], value: V) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.kv.push((key.to_vec(), value)),
        }
    }

    fn push_kv(mut self, key: &[u8], value: V) -> Gguf {
        self.kv.push((key.to_vec(), value));
        self
    }

    fn remove(mut self, key: &str) -> Gguf {
        self.kv.retain(|(k, _)| k != key.as_bytes());
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32) -> Gguf {
        self.tensors.push(Tensor { name: name.as_bytes().to_vec(), dims: dims.to_vec(), ty, offset: None });
        self
    }

    fn without_tensor(mut self, name: &str) -> Gguf {
        self.tensors.retain(|t| t.name != name.as_bytes());
        self
    }

    fn tensor_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors.iter_mut().find(|t| t.name == name.as_bytes()).expect("tensor exists")
    }

    /// The header (through the last tensor info, unpadded) and the length of the data section.
    fn header(&self) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            out.extend((key.len() as u64).to_le_bytes());
            out.extend(key);
            out.extend(value.tag().to_le_bytes());
            value.payload(&mut out);
        }
        let mut next = 0u64;
        let mut data_len = 0u64;
        for t in &self.tensors {
            let size = nbytes(&t.dims, t.ty).unwrap_or(0);
            let offset = t.offset.unwrap_or(next);
            let end = offset.saturating_add(size);
            next = end.div_ceil(self.alignment).saturating_mul(self.alignment);
            // Absurd (forced) offsets and sizes get no data; that is what they test.
            if end <= 64 << 20 {
                data_len = data_len.max(end);
            }
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend(&t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        (out, data_len)
    }

    /// The whole file: header, padding to the alignment, zeroed tensor data.
    fn build(&self) -> Vec<u8> {
        let (mut out, data_len) = self.header();
        if !self.tensors.is_empty() {
            out.resize(out.len().next_multiple_of(self.alignment as usize), 0);
        }
        out.resize(out.len() + data_len as usize, 0);
        out
    }

    fn header_len(&self) -> usize {
        self.header().0.len()
    }
}

const N_EMBD: u64 = 64;
const N_FF: u64 = 128;
const N_HEAD: u32 = 4;
const N_HEAD_KV: u32 = 2;
const HEAD_DIM: u64 = N_EMBD / N_HEAD as u64;

fn tiny_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    tokens.extend((33u8..=126).map(|b| char::from(b).to_string()));
    tokens.extend(["Ġ", "Ċ", "Ġt", "he"].map(String::from));
    tokens
}

/// [`tiny_llama`] with an SPM ("llama") vocabulary: the ASCII tokens plus
/// one `<0xXX>` token per byte, and scores.
fn tiny_spm() -> Gguf {
    let mut tokens = tiny_tokens();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let n = tokens.len();
    tiny_llama_with(tokens)
        .set("tokenizer.ggml.model", s("llama"))
        .remove("tokenizer.ggml.merges")
        .set("tokenizer.ggml.scores", V::Arr(6, (0..n).map(|i| V::F32(-(i as f32))).collect()))
}

/// A two-layer llama model with f32 zero weights that passes validation and
/// that llama.cpp loads.
fn tiny_llama() -> Gguf {
    tiny_llama_with(tiny_tokens())
}

/// [`tiny_llama`] with another vocabulary (types: first three control, others normal).
fn tiny_llama_with(tokens: Vec<String>) -> Gguf {
    llama_model(tokens, TINY)
}

/// The sizes of a synthetic llama model.
#[derive(Clone, Copy, Debug)]
struct Shape {
    embd: u64,
    ff: u64,
    heads: u32,
    heads_kv: u32,
}

const TINY: Shape = Shape { embd: N_EMBD, ff: N_FF, heads: N_HEAD, heads_kv: N_HEAD_KV };
/// Small enough for fuzz seeds (about 10 KiB).
const MICRO: Shape = Shape { embd: 8, ff: 16, heads: 2, heads_kv: 1 };

/// A two-layer llama model of `shape` with f32 zero weights.
fn llama_model(tokens: Vec<String>, shape: Shape) -> Gguf {
    let Shape { embd, ff, heads, heads_kv } = shape;
    let head_dim = embd / u64::from(heads);
    let n_vocab = tokens.len() as u64;
    let mut g = Gguf::empty()
        .set("general.architecture", s("llama"))
        .set("general.name", s("tiny test llama"))
        .set("llama.block_count", V::U32(2))
        .set("llama.context_length", V::U32(256))
        .set("llama.embedding_length", V::U32(embd as u32))
        .set("llama.feed_forward_length", V::U32(ff as u32))
        .set("llama.attention.head_count", V::U32(heads))
        .set("llama.attention.head_count_kv", V::U32(heads_kv))
        .set("llama.rope.dimension_count", V::U32(head_dim as u32))
        .set("llama.rope.freq_base", V::F32(10000.0))
        .set("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5))
        .set("tokenizer.ggml.model", s("gpt2"))
        .set("tokenizer.ggml.pre", s("default"))
        .set("tokenizer.ggml.tokens", strs(&tokens))
        .set("tokenizer.ggml.token_type", V::Arr(5, (0..n_vocab).map(|i| V::I32(if i < 3 { 3 } else { 1 })).collect()))
        .set("tokenizer.ggml.merges", strs(&["Ġ t", "h e"]))
        .set("tokenizer.ggml.bos_token_id", V::U32(1))
        .set("tokenizer.ggml.eos_token_id", V::U32(2))
        .set("tokenizer.ggml.unknown_token_id", V::U32(0))
        .set("tokenizer.ggml.add_bos_token", V::Bool(0))
        .tensor("token_embd.weight", &[embd, n_vocab], F32)
        .tensor("output_norm.weight", &[embd], F32);
    let kv_dim = head_dim * u64::from(heads_kv);
    for i in 0..2 {
        g = g
            .tensor(&format!("blk.{i}.attn_norm.weight"), &[embd], F32)
            .tensor(&format!("blk.{i}.attn_q.weight"), &[embd, embd], F32)
            .tensor(&format!("blk.{i}.attn_k.weight"), &[embd, kv_dim], F32)
            .tensor(&format!("blk.{i}.attn_v.weight"), &[embd, kv_dim], F32)
            .tensor(&format!("blk.{i}.attn_output.weight"), &[embd, embd], F32)
            .tensor(&format!("blk.{i}.ffn_norm.weight"), &[embd], F32)
            .tensor(&format!("blk.{i}.ffn_gate.weight"), &[embd, ff], F32)
            .tensor(&format!("blk.{i}.ffn_down.weight"), &[ff, embd], F32)
            .tensor(&format!("blk.{i}.ffn_up.weight"), &[embd, ff], F32);
    }
    g
}

fn check(g: &Gguf) -> Result<GgufInfo, GgufError> {
    gguf::validate_bytes(&g.build())
}

#[test]
fn synthetic_files_validate() {
    let info = check(&Gguf::empty()).unwrap();
    assert_eq!((info.version, info.tensor_count(), info.data_offset), (3, 0, 24));
    let mut aligned = Gguf::empty().set("general.alignment", V::U32(64)).tensor("x", &[3], F32);
    aligned.alignment = 64;
    let info = check(&aligned).unwrap();
    assert_eq!((info.alignment, info.data_offset), (64, 128));
    let info = check(&tiny_llama()).unwrap();
    assert_eq!(info.n_vocab(), Some(tiny_tokens().len() as u64));
    assert_eq!(info.tensor_count(), 2 + 2 * 9);
    assert_eq!(info.tensor("blk.1.attn_k.weight").unwrap().n_bytes, N_EMBD * HEAD_DIM * 2 * 4);
    let mut v2 = tiny_llama();
    v2.version = 2;
    assert_eq!(check(&v2).unwrap().version, 2);
    // Block-quantized rows that are whole blocks, scores, per-layer head
    // counts and an explicit vocab size are all fine.
    check(
        &tiny_llama()
            .tensor("extra.q4", &[64, 2], Q4_0)
            .set("tokenizer.ggml.scores", V::Arr(6, tiny_tokens().iter().map(|_| V::F32(0.0)).collect()))
            .set("llama.attention.head_count", V::Arr(4, vec![V::U32(4), V::U32(4)]))
            .set("llama.attention.head_count_kv", V::Arr(4, vec![V::U32(2), V::U32(1)]))
            .set("llama.vocab_size", V::U32(tiny_tokens().len() as u32)),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------
// Malformed files built from scratch
// ---------------------------------------------------------------------------

#[test]
fn empty_short_and_foreign_files() {
    assert_err!(gguf::validate_bytes(&[]), GgufError::Empty);
    assert_err!(gguf::validate_bytes(b"GG"), GgufError::Truncated { offset: 0, .. });
    assert_err!(gguf::validate_bytes(b"GGUF"), GgufError::Truncated { offset: 4, .. });
    assert_err!(gguf::validate_bytes(b"GGML\x03\0\0\0"), GgufError::BadMagic { found } if found == b"GGML");
    assert_err!(gguf::validate_bytes(b"\x7fELF"), GgufError::BadMagic { .. });
    assert_err!(gguf::validate_bytes(b"x"), GgufError::BadMagic { .. });
    // Deterministic pseudo-random bytes.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    assert_err!(gguf::validate_bytes(&random), GgufError::BadMagic { .. });
    let mut g = Gguf::empty();
    g.magic = *b"FUGG";
    assert_err!(check(&g), GgufError::BadMagic { .. });
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, 99, u32::MAX] {
        let mut g = tiny_llama();
        g.version = version;
        assert_err!(check(&g), GgufError::UnsupportedVersion { version: v } if *v == version);
    }
    let mut g = Gguf::empty();
    g.version = 3u32.swap_bytes();
    let e = check(&g).unwrap_err();
    assert!(e.to_string().contains("byte-swapped"), "{e}");
}

#[test]
fn huge_counts() {
    for n in [u64::MAX, 1 << 40, 1 << 20] {
        let mut g = Gguf::empty();
        g.n_tensors = Some(n);
        assert_err!(check(&g), GgufError::CountTooLarge { what, count, .. } if what == "tensor count" && *count == n);
        let mut g = Gguf::empty();
        g.n_kv = Some(n);
        assert_err!(check(&g), GgufError::CountTooLarge { what, .. } if what == "metadata key-value count");
    }
    // One key more or less than the file holds: tensor infos read as keys, or a key as a tensor info.
    for delta in [1, -1] {
        let mut g = tiny_llama();
        g.n_kv = Some(g.kv.len().checked_add_signed(delta).unwrap() as u64);
        assert!(check(&g).is_err());
    }
    // Array lengths beyond the remaining bytes.
    for (elem, len) in [(4u32, 1u64 << 40), (8, u64::MAX), (0, u64::MAX), (12, 1 << 61)] {
        let g = Gguf::empty().set("a", V::ArrLen(elem, len, vec![]));
        assert_err!(check(&g), GgufError::CountTooLarge { what, count, .. } if what == "array `a`" && *count == len);
    }
}

#[test]
fn string_lengths() {
    // Past the end of the file: a key, a value, a tensor name.
    let g = Gguf::empty().push_kv(b"k", V::StrLen(1 << 40, b"abc".to_vec()));
    assert_err!(check(&g), GgufError::LengthPastEof { length, .. } if *length == 1 << 40);
    let g = Gguf::empty().push_kv(b"k", V::StrLen(u64::MAX, vec![]));
    assert_err!(check(&g), GgufError::LengthPastEof { .. });
    let mut g = Gguf::empty();
    g.n_kv = Some(1);
    let mut bytes = g.build();
    bytes.extend(u64::MAX.to_le_bytes());
    bytes.extend([0u8; 64]);
    assert_err!(gguf::validate_bytes(&bytes), GgufError::LengthPastEof { what, offset: 24, .. } if what == "metadata key");
    let g = Gguf::empty().set("strings", V::Arr(8, vec![s("ok"), V::StrLen(1 << 33, b"x".to_vec())]));
    assert_err!(check(&g), GgufError::LengthPastEof { what, .. } if what == "value of `strings`");
    // Inside the file but over the limits.
    let long_key = "k".repeat((gguf::MAX_KEY_LEN + 1) as usize);
    assert_err!(check(&Gguf::empty().set(&long_key, V::U8(1))), GgufError::StringTooLong { .. });
    let g = Gguf::empty().tensor(&"t".repeat(64), &[1], F32);
    assert_err!(check(&g), GgufError::TensorNameTooLong { length: 64, max: 63, .. });
    check(&Gguf::empty().tensor(&"t".repeat(63), &[1], F32)).unwrap();
}

#[test]
fn bad_keys_and_value_types() {
    assert_err!(check(&Gguf::empty().push_kv(b"\xff\xfe", V::U8(1))), GgufError::InvalidUtf8 { what, .. } if what == "metadata key");
    assert_err!(check(&Gguf::empty().set("k", V::Str(b"ok\xc3(".to_vec()))), GgufError::InvalidUtf8 { .. });
    assert_err!(check(&Gguf::empty().set("k", V::Arr(8, vec![V::Str(vec![0x80])]))), GgufError::InvalidUtf8 { .. });
    assert_err!(check(&Gguf::empty().push_kv(b"", V::U64(1))), GgufError::EmptyKey { index: 0 });
    assert_err!(
        check(&Gguf::empty().push_kv(b"k", V::U8(1)).push_kv(b"k", V::U8(2))),
        GgufError::DuplicateKey { key } if key == "k"
    );
    for tag in [13, 99, u32::MAX] {
        assert_err!(check(&Gguf::empty().set("k", V::Raw(tag, vec![0; 16]))), GgufError::BadValueType { key, .. } if key == "k");
        assert_err!(check(&Gguf::empty().set("k", V::ArrLen(tag, 1, vec![V::U8(0)]))), GgufError::BadValueType { .. });
    }
    // Arrays of arrays are refused, as llama.cpp does.
    let nested = V::Arr(9, vec![V::Raw(4, [1u64.to_le_bytes().to_vec(), 7u32.to_le_bytes().to_vec()].concat())]);
    assert_err!(check(&Gguf::empty().set("k", nested)), GgufError::BadValueType { reason, .. } if reason.contains("arrays of arrays"));
    assert_err!(check(&Gguf::empty().set("k", V::Bool(2))), GgufError::InvalidMetadata { .. });
    assert_err!(
        check(&Gguf::empty().set("k", V::Arr(7, vec![V::Bool(1), V::Bool(9)]))),
        GgufError::InvalidMetadata { .. }
    );
}

#[test]
fn alignment() {
    for a in [0u32, 3, 48, 1 << 21, u32::MAX] {
        let g = Gguf::empty().set("general.alignment", V::U32(a));
        assert_err!(check(&g), GgufError::BadAlignment { alignment, .. } if *alignment == u64::from(a));
    }
    assert_err!(
        check(&Gguf::empty().set("general.alignment", V::U64(32))),
        GgufError::InvalidMetadata { key, .. } if key == "general.alignment"
    );
    check(&Gguf::empty().set("general.alignment", V::U32(1))).unwrap();
}

#[test]
fn bad_tensor_shapes_and_types() {
    let one = |dims: &[u64], ty: u32| check(&Gguf::empty().tensor("t", dims, ty));
    assert_err!(one(&[], F32), GgufError::BadDimensions { reason, .. } if reason.contains("no dimensions"));
    assert_err!(one(&[1, 1, 1, 1, 1], F32), GgufError::BadDimensions { reason, .. } if reason.contains("5 dimensions"));
    assert_err!(one(&[4, 0], F32), GgufError::BadDimensions { reason, .. } if reason.contains("dimension 1 is 0"));
    assert_err!(one(&[4, u64::MAX], F32), GgufError::BadDimensions { reason, .. } if reason.contains("negative"));
    for ty in [4, 5, 31, 36, 43, 1000, u32::MAX] {
        assert_err!(one(&[32], ty), GgufError::InvalidTensorType { type_id, .. } if *type_id == ty);
    }
    assert_err!(one(&[33], Q4_0), GgufError::RowNotBlockAligned { ne0: 33, block_size: 32, .. });
    assert_err!(one(&[1 << 32, 1 << 32], F32), GgufError::Overflow { .. });
    assert_err!(one(&[1 << 62], 28), GgufError::Overflow { .. });
    assert_err!(one(&[1 << 40, 1 << 20, 1 << 4], 24), GgufError::Overflow { .. });
    let mut g = Gguf::empty().tensor("t", &[8], F32).tensor("t", &[8], F32);
    assert_err!(check(&g), GgufError::DuplicateTensor { name } if name == "t");
    g.tensors[1].name = b"\xff".to_vec();
    assert_err!(check(&g), GgufError::InvalidUtf8 { what, .. } if what == "tensor name");
}

#[test]
fn bad_tensor_data_ranges() {
    let with_offset = |offset: u64| {
        let mut g = Gguf::empty().tensor("a", &[8], F32).tensor("b", &[8], F32);
        g.tensors[1].offset = Some(offset);
        check(&g)
    };
    with_offset(32).unwrap();
    assert_err!(with_offset(1), GgufError::TensorMisaligned { offset: 1, alignment: 32, .. });
    assert_err!(with_offset(33), GgufError::TensorMisaligned { .. });
    assert_err!(with_offset(1 << 40), GgufError::TensorOutOfBounds { name, size: 32, .. } if name == "b");
    assert_err!(with_offset(u64::MAX - 31), GgufError::Overflow { .. });
    assert_err!(with_offset(0), GgufError::TensorOverlap { first, second } if first == "a" && second == "b");
    // A tensor whose data runs past the end of the file.
    let g = tiny_llama();
    let bytes = g.build();
    assert_err!(
        gguf::validate_bytes(&bytes[..bytes.len() - 1]),
        GgufError::TensorOutOfBounds { name, .. } if name == "blk.1.ffn_up.weight"
    );
}

#[test]
fn inconsistent_layers() {
    for n in [0u32, 513, 1000, u32::MAX] {
        assert_err!(
            check(&tiny_llama().set("llama.block_count", V::U32(n))),
            GgufError::InvalidMetadata { key, .. } if key == "llama.block_count"
        );
    }
    assert_err!(
        check(&tiny_llama().set("llama.block_count", V::U32(3))),
        GgufError::InconsistentHyperparameters { .. }
    );
    assert_err!(
        check(&tiny_llama().set("llama.block_count", V::U32(1))),
        GgufError::InconsistentHyperparameters { .. }
    );
    assert_err!(
        check(&tiny_llama().set("llama.block_count", s("2"))),
        GgufError::InvalidMetadata { reason, .. } if reason.contains("integer")
    );
    assert_err!(check(&tiny_llama().remove("llama.block_count")), GgufError::MissingKey { key } if key == "llama.block_count");
    // A gap: layers 0 and 2 of block_count 2.
    let mut g = tiny_llama();
    for t in g.tensors.iter_mut().filter(|t| t.name.starts_with(b"blk.1.")) {
        t.name = String::from_utf8(t.name.clone()).unwrap().replace("blk.1.", "blk.2.").into_bytes();
    }
    assert_err!(check(&g), GgufError::InconsistentHyperparameters { reason } if reason.contains("layer 2"));
    assert_err!(
        check(&tiny_llama().set("llama.nextn_predict_layers", V::U32(3))),
        GgufError::InconsistentHyperparameters { .. }
    );
}

#[test]
fn inconsistent_attention_and_sizes() {
    let bad = |key: &str, value: V| check(&tiny_llama().set(key, value));
    assert_err!(bad("llama.attention.head_count_kv", V::U32(3)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(bad("llama.attention.head_count_kv", V::U32(8)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(bad("llama.attention.head_count_kv", V::U32(0)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(bad("llama.attention.head_count", V::U32(0)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(bad("llama.attention.head_count", V::U32(6)), GgufError::InconsistentHyperparameters { reason } if reason.contains("divisible"));
    assert_err!(
        bad("llama.attention.head_count", V::Arr(4, vec![V::U32(4)])),
        GgufError::InvalidMetadata { reason, .. } if reason.contains("block_count is 2")
    );
    assert_err!(
        bad("llama.attention.head_count", V::Arr(6, vec![V::F32(4.0), V::F32(4.0)])),
        GgufError::InvalidMetadata { .. }
    );
    assert_err!(bad("llama.attention.key_length", V::U32(0)), GgufError::InvalidMetadata { .. });
    assert_err!(bad("llama.embedding_length", V::U32(0)), GgufError::InvalidMetadata { .. });
    assert_err!(bad("llama.context_length", V::U32(0)), GgufError::InvalidMetadata { key, .. } if key == "llama.context_length");
    assert_err!(bad("llama.feed_forward_length", V::U32(0)), GgufError::InvalidMetadata { .. });
    assert_err!(bad("llama.rope.scaling.type", s("quadratic")), GgufError::InvalidMetadata { .. });
    check(&tiny_llama().set("llama.rope.scaling.type", s("yarn"))).unwrap();
    assert_err!(bad("llama.embedding_length", V::U32(128)), GgufError::InconsistentHyperparameters { reason } if reason.contains("token_embd.weight"));
    assert_err!(bad("llama.vocab_size", V::U32(1 << 20)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(check(&tiny_llama().remove("llama.embedding_length")), GgufError::MissingKey { .. });
    // Mixture-of-experts counts that llama.cpp asserts on.
    assert_err!(bad("llama.expert_count", V::U32(2000)), GgufError::InconsistentHyperparameters { .. });
    assert_err!(bad("llama.expert_used_count", V::U32(2)), GgufError::InconsistentHyperparameters { .. });
    let moe = tiny_llama().set("llama.expert_count", V::U32(8)).set("llama.expert_used_count", V::U32(2));
    check(&moe).unwrap();
    assert_err!(
        check(&moe.clone().set("llama.expert_used_count", V::U32(9))),
        GgufError::InconsistentHyperparameters { .. }
    );
    assert_err!(check(&moe.set("llama.expert_group_count", V::U32(3))), GgufError::InconsistentHyperparameters { .. });
    // Per-layer lists that disagree, in an architecture without block_count.
    let generic = Gguf::empty()
        .set("general.architecture", s("other"))
        .set("other.attention.head_count", V::Arr(4, vec![V::U32(4); 3]))
        .set("other.attention.head_count_kv", V::Arr(4, vec![V::U32(2); 2]));
    assert_err!(check(&generic), GgufError::InconsistentHyperparameters { .. });
    check(&generic.clone().set("other.attention.head_count_kv", V::Arr(4, vec![V::U32(2); 3]))).unwrap();
    check(&generic.set("other.attention.head_count", V::U32(4))).unwrap();
    // Architecture name.
    assert_err!(bad("general.architecture", V::U32(1)), GgufError::InvalidMetadata { .. });
    assert_err!(bad("general.architecture", s("lla ma")), GgufError::InvalidMetadata { .. });
}

#[test]
fn bad_vocabularies_and_special_tokens() {
    let bad = |key: &str, value: V| check(&tiny_llama().set(key, value));
    let n = tiny_tokens().len() as u64;
    // Vocabulary of size 1 (and 0).
    let one = Gguf::empty().set("tokenizer.ggml.model", s("llama")).set("tokenizer.ggml.tokens", strs(&["<s>"]));
    assert_err!(check(&one), GgufError::VocabTooSmall { n_vocab: 1, min: 2 });
    assert_err!(
        check(&one.set("tokenizer.ggml.tokens", V::Arr(8, vec![]))),
        GgufError::VocabTooSmall { n_vocab: 0, .. }
    );
    assert_err!(bad("tokenizer.ggml.tokens", V::Arr(4, vec![V::U32(1), V::U32(2)])), GgufError::InvalidMetadata { .. });
    // Duplicate entries make llama.cpp abort; so does an empty token clashing with its placeholder name.
    let mut dup = tiny_tokens();
    dup[50] = dup[40].clone();
    assert_err!(bad("tokenizer.ggml.tokens", strs(&dup)), GgufError::DuplicateToken { id: 50, first_id: 40, .. });
    let mut empty = tiny_tokens();
    empty[5] = String::new();
    empty[7] = "[EMPTY_5]".into();
    assert_err!(bad("tokenizer.ggml.tokens", strs(&empty)), GgufError::DuplicateToken { id: 7, first_id: 5, .. });
    let mut long = tiny_tokens();
    long[9] = "x".repeat(gguf::MAX_TOKEN_BYTES as usize + 1);
    assert_err!(bad("tokenizer.ggml.tokens", strs(&long)), GgufError::InvalidMetadata { reason, .. } if reason.contains("token 9"));
    // Scores and token types: wrong element type, wrong length.
    assert_err!(bad("tokenizer.ggml.scores", strs(&tiny_tokens())), GgufError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.scores");
    assert_err!(bad("tokenizer.ggml.scores", V::Arr(0, vec![V::U8(0); n as usize])), GgufError::InvalidMetadata { .. });
    assert_err!(bad("tokenizer.ggml.scores", V::F32(0.0)), GgufError::InvalidMetadata { .. });
    assert_err!(
        bad("tokenizer.ggml.scores", V::Arr(6, vec![V::F32(0.0); n as usize - 1])),
        GgufError::InvalidMetadata { .. }
    );
    assert_err!(
        bad("tokenizer.ggml.token_type", V::Arr(6, vec![V::F32(1.0); n as usize])),
        GgufError::InvalidMetadata { .. }
    );
    assert_err!(bad("tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(1); 3])), GgufError::InvalidMetadata { .. });
    assert_err!(bad("tokenizer.ggml.merges", V::Arr(5, vec![V::I32(1)])), GgufError::InvalidMetadata { .. });
    // Special-token ids outside the vocabulary, for every key.
    for key in gguf::SPECIAL_TOKEN_KEYS {
        assert_err!(
            bad(key, V::U32(1_000_000)),
            GgufError::SpecialTokenOutOfVocab { key: k, id: 1_000_000, n_vocab } if k == key && *n_vocab == n
        );
        assert_err!(bad(key, V::U32(n as u32)), GgufError::SpecialTokenOutOfVocab { .. });
        assert_err!(bad(key, V::I32(-1)), GgufError::SpecialTokenOutOfVocab { id: -1, .. });
        assert_err!(bad(key, s("1")), GgufError::InvalidMetadata { .. });
        check(&tiny_llama().set(key, V::U32(n as u32 - 1))).unwrap();
    }
    // Default ids that do not exist while BOS/EOS must be added. The
    // vocabulary has 101 tokens, so bert's default CLS (101) and SEP (102) do not exist.
    let gpt2 = tiny_llama().remove("tokenizer.ggml.bos_token_id");
    check(&gpt2).unwrap(); // add_bos_token = false: the default is never used
    let small_gpt2 = tiny_llama_with(tiny_tokens()[..11].to_vec())
        .remove("tokenizer.ggml.bos_token_id")
        .remove("tokenizer.ggml.add_bos_token");
    assert_err!(check(&small_gpt2), GgufError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.bos_token_id");
    // bert (WPM) adds CLS and SEP whatever add_bos_token says.
    let bert = tiny_llama().set("tokenizer.ggml.model", s("bert"));
    assert_err!(check(&bert), GgufError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.seperator_token_id");
    assert_err!(
        check(&bert.clone().remove("tokenizer.ggml.bos_token_id").set("tokenizer.ggml.seperator_token_id", V::U32(2))),
        GgufError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.bos_token_id"
    );
    check(&bert.set("tokenizer.ggml.seperator_token_id", V::U32(2))).unwrap();
    let t5 = tiny_llama()
        .set("tokenizer.ggml.model", s("t5"))
        .remove("tokenizer.ggml.bos_token_id")
        .set("tokenizer.ggml.add_bos_token", V::Bool(1));
    assert_err!(check(&t5), GgufError::InvalidMetadata { reason, .. } if reason.contains("no default"));
    assert_err!(bad("tokenizer.ggml.add_bos_token", V::U8(1)), GgufError::InvalidMetadata { .. });
}

#[test]
fn spm_vocabularies_need_byte_tokens() {
    // Without byte tokens, llama.cpp's SPM tokenizer throws a C++ exception
    // through `llama_tokenize` (an abort) on any character it has no token for.
    let spm = tiny_spm();
    check(&spm).unwrap();
    let without_bytes = tiny_llama().set("tokenizer.ggml.model", s("llama"));
    assert_err!(
        check(&without_bytes),
        GgufError::InvalidMetadata { key, reason } if key == "tokenizer.ggml.tokens" && reason.contains("byte 0x00")
    );
    // One byte token missing (é starts with 0xC3); lower-case spellings do not count.
    let mut tokens = tiny_tokens();
    tokens.extend((0..=255u8).map(|b| if b == 0xC3 { "<0xc3>".into() } else { format!("<0x{b:02X}>") }));
    let mut g = spm.clone().set("tokenizer.ggml.tokens", strs(&tokens));
    assert_err!(check(&g), GgufError::InvalidMetadata { reason, .. } if reason.contains("byte 0xC3"));
    // ASCII bytes may use their one-character token instead; 0xF5.. never occur in UTF-8.
    tokens.retain(|t| t != "<0x41>" && t != "<0xFF>" && t != "<0xc3>");
    tokens.push("<0xC3>".into());
    g.set_raw(b"tokenizer.ggml.tokens", strs(&tokens));
    g.set_raw(b"tokenizer.ggml.scores", V::Arr(6, vec![V::F32(0.0); tokens.len()]));
    g.set_raw(b"tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(1); tokens.len()]));
    g.tensor_mut("token_embd.weight").dims = vec![N_EMBD, tokens.len() as u64];
    check(&g).unwrap();
}

// ---------------------------------------------------------------------------
// Malformed copies of the real model
// ---------------------------------------------------------------------------

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("pattern present in the header")
}

/// Offset of the type tag of `key` in the real header.
fn kv_tag_offset(bytes: &[u8], key: &str) -> usize {
    let header = &bytes[..model_info().data_offset as usize];
    let pattern = [(key.len() as u64).to_le_bytes().as_slice(), key.as_bytes()].concat();
    find(header, &pattern) + pattern.len()
}

/// Offset of `n_dims` in the real header's info for tensor `name`.
fn tensor_info_offset(bytes: &[u8], name: &str) -> usize {
    kv_tag_offset(bytes, name)
}

/// A copy of the real model's header with zeroed weights: the same size and
/// layout, but cheap (the zero pages are never touched by validation).
fn model_copy() -> Vec<u8> {
    let header = model_info().data_offset as usize;
    let mut bytes = vec![0u8; model_bytes().len()];
    bytes[..header].copy_from_slice(&model_bytes()[..header]);
    bytes
}

/// The real model with a u32-sized value of `key` replaced by (`tag`, `value`).
fn patched(key: &str, tag: u32, value: [u8; 4]) -> Vec<u8> {
    let mut bytes = model_copy();
    let at = kv_tag_offset(&bytes, key);
    assert_eq!(&bytes[at..at + 4], &4u32.to_le_bytes(), "{key} is a u32 in the real model");
    bytes[at..at + 4].copy_from_slice(&tag.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&value);
    bytes
}

#[test]
fn real_model_with_bad_hyperparameters() {
    // The unpatched copy is valid, so each failure below is the patch's.
    assert_eq!(&gguf::validate_bytes(&model_copy()).unwrap(), model_info());
    for n in [0u32, 1000] {
        assert_err!(
            gguf::validate_bytes(&patched("llama.block_count", 4, n.to_le_bytes())),
            GgufError::InvalidMetadata { key, .. } if key == "llama.block_count"
        );
    }
    assert_err!(
        gguf::validate_bytes(&patched("llama.block_count", 4, 29u32.to_le_bytes())),
        GgufError::InconsistentHyperparameters { reason } if reason.contains("layer 29")
    );
    assert_err!(
        gguf::validate_bytes(&patched("llama.attention.head_count_kv", 4, 2u32.to_le_bytes())),
        GgufError::InconsistentHyperparameters { .. }
    );
    assert_err!(
        gguf::validate_bytes(&patched("llama.attention.head_count", 4, 7u32.to_le_bytes())),
        GgufError::InconsistentHyperparameters { .. }
    );
    assert_err!(
        gguf::validate_bytes(&patched("tokenizer.ggml.bos_token_id", 4, 1_000_000u32.to_le_bytes())),
        GgufError::SpecialTokenOutOfVocab { id: 1_000_000, n_vocab: 49152, .. }
    );
    assert_err!(
        gguf::validate_bytes(&patched("tokenizer.ggml.eos_token_id", 5, (-1i32).to_le_bytes())),
        GgufError::SpecialTokenOutOfVocab { id: -1, .. }
    );
    // `token_type` as f32 instead of i32 (same width, so the layout stays valid).
    let mut bytes = model_copy();
    let at = kv_tag_offset(&bytes, "tokenizer.ggml.token_type");
    assert_eq!(&bytes[at..at + 8], [9, 0, 0, 0, 5, 0, 0, 0], "array of i32");
    bytes[at + 4] = 6;
    assert_err!(gguf::validate_bytes(&bytes), GgufError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.token_type");
}

#[test]
fn real_model_with_bad_header_fields() {
    let with = |offset: usize, field: &[u8]| {
        let mut bytes = model_copy();
        bytes[offset..offset + field.len()].copy_from_slice(field);
        gguf::validate_bytes(&bytes)
    };
    assert_err!(with(0, b"GGUG"), GgufError::BadMagic { .. });
    for v in [0u32, 1, 99] {
        assert_err!(with(4, &v.to_le_bytes()), GgufError::UnsupportedVersion { .. });
    }
    assert_err!(with(8, &u64::MAX.to_le_bytes()), GgufError::CountTooLarge { what, .. } if what == "tensor count");
    assert_err!(with(16, &(1u64 << 50).to_le_bytes()), GgufError::CountTooLarge { .. });
    let bytes = model_bytes();
    let template = kv_tag_offset(bytes, "tokenizer.chat_template") + 4;
    assert_err!(with(template, &(1u64 << 40).to_le_bytes()), GgufError::LengthPastEof { length, .. } if *length == 1 << 40);
    let tokens = kv_tag_offset(bytes, "tokenizer.ggml.tokens") + 8;
    assert_err!(with(tokens, &(1u64 << 45).to_le_bytes()), GgufError::CountTooLarge { .. });

    // Tensor infos: n_dims, a dimension, the type, the offset of token_embd.weight.
    let info = tensor_info_offset(bytes, "token_embd.weight");
    assert_eq!(&bytes[info..info + 4], &2u32.to_le_bytes());
    assert_err!(with(info, &5u32.to_le_bytes()), GgufError::BadDimensions { .. });
    assert_err!(with(info, &0u32.to_le_bytes()), GgufError::BadDimensions { .. });
    assert_err!(with(info + 4, &0u64.to_le_bytes()), GgufError::BadDimensions { .. });
    assert_err!(with(info + 20, &99u32.to_le_bytes()), GgufError::InvalidTensorType { type_id: 99, .. });
    assert_err!(with(info + 4, &577u64.to_le_bytes()), GgufError::RowNotBlockAligned { .. });
    assert_err!(with(info + 24, &(1u64 << 40).to_le_bytes()), GgufError::TensorOutOfBounds { .. });
    assert_err!(with(info + 24, &1u64.to_le_bytes()), GgufError::TensorMisaligned { .. });
    assert_err!(with(info + 24, &(!31u64).to_le_bytes()), GgufError::Overflow { .. });
    assert_err!(with(info + 24, &32u64.to_le_bytes()), GgufError::TensorOverlap { .. });
}

/// What a file cut at `len` bytes must report, given where its header ends.
fn expect_truncated(bytes: &[u8], len: usize, header_end: usize) {
    let result = gguf::validate_bytes(&bytes[..len]);
    match (&result, len) {
        (Err(GgufError::Empty), 0) => {}
        (Err(GgufError::TensorOutOfBounds { .. }), l) if l >= header_end => {}
        (Err(GgufError::Truncated { .. } | GgufError::LengthPastEof { .. } | GgufError::CountTooLarge { .. }), l)
            if l > 0 && l < header_end => {}
        _ => panic!("cut at {len} (header ends at {header_end}): {result:?}"),
    }
}

#[test]
fn truncated_synthetic_file_at_every_offset() {
    let g = tiny_llama();
    let bytes = g.build();
    let header_end = g.header_len();
    gguf::validate_bytes(&bytes).unwrap();
    for len in 0..header_end + 64 {
        expect_truncated(&bytes, len, header_end);
    }
    for len in (header_end..bytes.len()).step_by(997) {
        expect_truncated(&bytes, len, header_end);
    }
}

#[test]
fn truncated_real_model() {
    let bytes = model_bytes();
    let data_offset = model_info().data_offset as usize;
    // The header ends with the last tensor info: name, n_dims, dims, type, offset.
    let last = model_info().tensors.last().unwrap();
    let header_end = tensor_info_offset(bytes, &last.name) + 4 + 8 * last.dims.len() + 4 + 8;
    assert!(header_end <= data_offset && data_offset - header_end < 32);
    // Every offset through the small keys, the start of the vocabulary and beyond.
    for len in 0..6000 {
        expect_truncated(bytes, len, header_end);
    }
    // Samples through the vocabulary, merges and tensor infos; every offset
    // around the end of the header; samples through the data.
    let samples = (6000..header_end).step_by(60_013);
    let around_end = (header_end - 40..data_offset + 2).step_by(3);
    let data = (data_offset..bytes.len()).step_by(9_000_011);
    for len in samples.chain(around_end).chain(data) {
        expect_truncated(bytes, len, header_end);
    }
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("llama-rs-gguf-test-{}-{name}", std::process::id())))
    }

    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let f = TempFile::new(name);
        fs::write(&f.0, bytes).unwrap();
        f
    }

    /// The first `header` bytes of `bytes`, then zeros (sparse) up to `bytes.len()`.
    fn sparse(name: &str, bytes: &[u8], header: usize) -> TempFile {
        let f = TempFile::with(name, &bytes[..header]);
        fs::OpenOptions::new().write(true).open(&f.0).unwrap().set_len(bytes.len() as u64).unwrap();
        f
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn paths() {
    let missing = std::env::temp_dir().join("llama-rs-definitely-missing.gguf");
    assert_err!(gguf::validate(&missing), GgufError::NotFound { path } if path == &missing);
    assert_err!(gguf::validate(std::env::temp_dir()), GgufError::NotAFile { .. });
    let empty = TempFile::with("empty.gguf", b"");
    assert_err!(gguf::validate(empty.path()), GgufError::Empty);
    let garbage = TempFile::with("garbage.gguf", b"<html>not a model</html>");
    assert_err!(gguf::validate(garbage.path()), GgufError::BadMagic { .. });
    let tiny = TempFile::with("tiny.gguf", &tiny_llama().build());
    assert_eq!(gguf::validate(tiny.path()).unwrap(), check(&tiny_llama()).unwrap());
    // The header of the real model alone: its tensors are out of bounds.
    let head = TempFile::with("head.gguf", &model_bytes()[..model_info().data_offset as usize]);
    assert_err!(gguf::validate(head.path()), GgufError::TensorOutOfBounds { .. });
    #[cfg(unix)]
    assert_err!(gguf::validate("/dev/null"), GgufError::NotAFile { .. });
}

#[test]
fn validate_reads_only_the_header() {
    // A 64 GiB sparse file: one f32 tensor of 2^34 elements after a tiny header.
    let g = Gguf::empty().tensor("big", &[1 << 34], F32);
    let header = g.build();
    let f = TempFile::with("huge.gguf", &header);
    let size = header.len() as u64 + (1u64 << 36);
    if fs::OpenOptions::new().write(true).open(f.path()).and_then(|file| file.set_len(size)).is_err() {
        eprintln!("skipped: the temp file system cannot hold a sparse 64 GiB file");
        return;
    }
    let start = Instant::now();
    let info = gguf::validate(f.path()).unwrap();
    assert_eq!(info.file_size, size);
    assert_eq!(info.tensors[0].n_bytes, 1 << 36);
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

// ---------------------------------------------------------------------------
// Random mutations
// ---------------------------------------------------------------------------

/// The first 64 KiB of the real model, and the whole synthetic model.
fn seeds() -> [Vec<u8>; 2] {
    [model_bytes()[..64 << 10].to_vec(), tiny_llama().build()]
}

/// Validate and require an answer (any) within a second.
fn survives(bytes: &[u8]) {
    let start = Instant::now();
    let _ = gguf::validate_bytes(bytes);
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
}

/// A mutation at a position mostly inside the header, where it matters.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    /// A little-endian integer written at a position (counts, lengths, offsets).
    SetU64(usize, u64),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = prop_oneof![4 => 0usize..4096, 1 => 0usize..70_000];
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(1 << 32),
        Just(1 << 63),
        Just(u32::MAX as u64),
        any::<u64>()
    ];
    prop_oneof![
        (pos.clone(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (pos.clone(), interesting).prop_map(|(p, v)| Mutation::SetU64(p, v)),
        (pos.clone(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (pos.clone(), 1usize..64).prop_map(|(p, n)| Mutation::Remove(p, n)),
        pos.prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let clamp = |p: usize, len: usize| p.min(len);
    match m {
        Mutation::Set(p, b) => {
            if let Some(slot) = bytes.get_mut(*p) {
                *slot = *b;
            }
        }
        Mutation::SetU64(p, v) => {
            let p = clamp(*p, bytes.len().saturating_sub(8));
            let end = (p + 8).min(bytes.len());
            bytes[p..end].copy_from_slice(&v.to_le_bytes()[..end - p]);
        }
        Mutation::Insert(p, b) => {
            let p = clamp(*p, bytes.len());
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(p, n) => {
            let p = clamp(*p, bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Truncate(p) => bytes.truncate(*p),
    }
}

/// Keys the model checks read, with the architecture prefix of [`tiny_llama`].
/// The first [`HOT_KEYS`] are picked more often.
const MODEL_KEYS: &[&str] = &[
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.feed_forward_length",
    "llama.expert_used_count",
    "llama.block_count",
    "llama.embedding_length",
    "general.architecture",
    "general.alignment",
    "llama.context_length",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.scaling.type",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.expert_group_count",
    "llama.expert_group_used_count",
    "llama.nextn_predict_layers",
    "llama.vocab_size",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
];

fn small_int() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..8),
        Just(16),
        Just(64),
        Just(101),
        Just(102),
        Just(512),
        Just(513),
        Just(1024),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        any::<u64>()
    ]
}

/// Well-formed values of every shape, for keys whose meaning the checks know.
fn model_value() -> impl Strategy<Value = V> {
    let name = prop_oneof![Just("llama".to_owned()), Just("bert".to_owned()), Just("t5".to_owned()), "[a-z0-9 ]{0,8}"];
    prop_oneof![
        2 => small_int().prop_map(|v| V::U32(v as u32)),
        1 => small_int().prop_map(V::U64),
        1 => any::<i32>().prop_map(V::I32),
        1 => any::<f32>().prop_map(V::F32),
        1 => (0u8..2).prop_map(V::Bool),
        1 => name.prop_map(|t| s(&t)),
        3 => prop::collection::vec(small_int(), 0..5)
            .prop_map(|v| V::Arr(4, v.into_iter().map(|x| V::U32(x as u32)).collect())),
        1 => prop::collection::vec(any::<i32>(), 0..5).prop_map(|v| V::Arr(5, v.into_iter().map(V::I32).collect())),
        1 => prop::collection::vec(any::<f32>(), 0..5).prop_map(|v| V::Arr(6, v.into_iter().map(V::F32).collect())),
        1 => prop::collection::vec("[a-z<>0-9]{0,4}", 0..6).prop_map(|v| strs(&v)),
    ]
}

/// A structural edit of [`tiny_llama`].
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, V),
    Remove(usize),
    Dims(usize, Vec<u64>),
    Type(usize, u32),
    Offset(usize, u64),
    Rename(usize, u64),
    Drop(usize),
}

const HOT_KEYS: usize = 6;

fn edit() -> impl Strategy<Value = Edit> {
    let key = prop_oneof![3 => 0..HOT_KEYS, 1 => 0..MODEL_KEYS.len()];
    let tensor = 0usize..20;
    prop_oneof![
        4 => (key.clone(), model_value()).prop_map(|(k, v)| Edit::Set(k, v)),
        1 => key.prop_map(Edit::Remove),
        1 => (tensor.clone(), prop::collection::vec(small_int(), 0..6)).prop_map(|(t, d)| Edit::Dims(t, d)),
        1 => (tensor.clone(), prop_oneof![0u32..45, any::<u32>()]).prop_map(|(t, ty)| Edit::Type(t, ty)),
        1 => (tensor.clone(), small_int()).prop_map(|(t, o)| Edit::Offset(t, o)),
        1 => (tensor.clone(), small_int()).prop_map(|(t, n)| Edit::Rename(t, n)),
        1 => tensor.prop_map(Edit::Drop),
    ]
}

fn apply_edit(g: &mut Gguf, e: &Edit) {
    let n = g.tensors.len();
    match e {
        Edit::Set(k, v) => g.set_raw(MODEL_KEYS[*k].as_bytes(), v.clone()),
        Edit::Remove(k) => g.kv.retain(|(key, _)| key != MODEL_KEYS[*k].as_bytes()),
        Edit::Dims(t, d) if *t < n => g.tensors[*t].dims = d.clone(),
        Edit::Type(t, ty) if *t < n => g.tensors[*t].ty = *ty,
        Edit::Offset(t, o) if *t < n => g.tensors[*t].offset = Some(*o),
        Edit::Rename(t, i) if *t < n => g.tensors[*t].name = format!("blk.{i}.x").into_bytes(),
        Edit::Drop(t) if *t < n => {
            g.tensors.remove(*t);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_models_never_panic(generic in any::<bool>(), edits in prop::collection::vec(edit(), 1..8)) {
        // Half the time without block_count or layers, where per-layer lists have no expected length.
        let mut g = tiny_llama();
        if generic {
            g = g.remove("llama.block_count");
            g.tensors.retain(|t| !t.name.starts_with(b"blk."));
        }
        for e in &edits {
            apply_edit(&mut g, e);
        }
        survives(&g.build());
    }

    #[test]
    fn mutated_headers_never_panic(which in 0usize..2, mutations in prop::collection::vec(mutation(), 1..6)) {
        static SEEDS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        let mut bytes = SEEDS.get_or_init(seeds)[which].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        survives(&bytes);
    }

    #[test]
    fn random_small_files_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512), version in 0u32..5) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(tail);
        survives(&bytes);
    }
}

/// Seeds for the fuzzer in `llama-core/fuzz`: small, valid files of every
/// shape the validator knows, plus the start of the real model.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut spm_tokens = tiny_tokens();
    spm_tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let n_spm = spm_tokens.len();
    let micro_spm = llama_model(spm_tokens, MICRO)
        .set("tokenizer.ggml.model", s("llama"))
        .remove("tokenizer.ggml.merges")
        .set("tokenizer.ggml.scores", V::Arr(6, vec![V::F32(0.0); n_spm]));
    let micro_moe = llama_model(tiny_tokens(), MICRO)
        .set("llama.expert_count", V::U32(4))
        .set("llama.expert_used_count", V::Arr(4, vec![V::U32(2), V::U32(1)]))
        .set("llama.attention.head_count_kv", V::Arr(4, vec![V::U32(1), V::U32(2)]))
        .set("llama.vocab_size", V::U32(tiny_tokens().len() as u32))
        .set("llama.rope.scaling.type", s("yarn"));
    let mut all_types = Gguf::empty()
        .set("general.alignment", V::U32(64))
        .set("u8", V::U8(1))
        .set("i32", V::I32(-1))
        .set("u32", V::U32(7))
        .set("f32", V::F32(0.5))
        .set("u64", V::U64(1 << 40))
        .set("bool", V::Bool(1))
        .set("str", s("text"))
        .set("raw i8", V::Raw(1, vec![0xff]))
        .set("raw u16", V::Raw(2, vec![1, 0]))
        .set("raw i16", V::Raw(3, vec![0xff, 0xff]))
        .set("raw i64", V::Raw(11, vec![0xff; 8]))
        .set("raw f64", V::Raw(12, 1.5f64.to_le_bytes().to_vec()))
        .set("arr u8", V::Arr(0, vec![V::U8(1), V::U8(2)]))
        .set("arr bool", V::Arr(7, vec![V::Bool(0), V::Bool(1)]))
        .set("arr str", strs(&["a", "b"]))
        .tensor("f16", &[4, 4], 1)
        .tensor("q4_0", &[32, 2], Q4_0)
        .tensor("q6_K", &[256], 14)
        .tensor("bf16", &[2, 1, 1, 3], 30);
    all_types.alignment = 64;
    vec![
        ("real-model-64k", model_bytes()[..64 << 10].to_vec()),
        ("empty", Gguf::empty().build()),
        ("all-types", all_types.build()),
        ("micro-llama-bpe", llama_model(tiny_tokens(), MICRO).build()),
        ("micro-llama-spm", micro_spm.build()),
        ("micro-llama-moe", micro_moe.build()),
    ]
}

#[test]
fn fuzz_seeds_are_valid() {
    let dir = std::env::var_os("GGUF_FUZZ_SEED_DIR").map(PathBuf::from);
    if let Some(dir) = &dir {
        fs::create_dir_all(dir).unwrap();
    }
    for (name, bytes) in fuzz_seeds() {
        assert!(bytes.len() <= 64 << 10, "{name}: {} bytes", bytes.len());
        let result = gguf::validate_bytes(&bytes);
        if name == "real-model-64k" {
            assert_err!(result, GgufError::CountTooLarge { .. });
        } else {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if let Some(dir) = &dir {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// End to end: what the validator lets through, llama.cpp must survive
// ---------------------------------------------------------------------------

fn load(path: &Path) -> llama_core::Result<Model> {
    Model::load(path, &ModelParams::default())
}

#[test]
fn llama_cpp_loads_the_synthetic_model() {
    let f = TempFile::with("e2e-tiny.gguf", &tiny_llama().build());
    let model = load(f.path()).unwrap();
    assert_eq!(model.n_layer(), 2);
    assert_eq!(model.n_embd(), N_EMBD as u32);
    assert_eq!(model.vocab().n_tokens(), tiny_tokens().len() as i32);
    // No template in the file: ChatML, and the reason.
    let template = ChatTemplate::for_model(&model, None).unwrap();
    assert_eq!(template.source(), llama_core::CHATML_TEMPLATE);
    assert_eq!(template.fallback(), Some("the model has no chat template"));
}

#[test]
fn llama_cpp_tokenizes_any_text_with_validated_vocabularies() {
    let text = "h\u{e9}llo \u{2713} \u{1F600}\0 \u{7f}\n\ttabs, CJK \u{4e2d}\u{6587}";
    for (name, g) in [("bpe", tiny_llama()), ("spm", tiny_spm())] {
        let f = TempFile::with(&format!("e2e-tok-{name}.gguf"), &g.build());
        let model = load(f.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for add_special in [false, true] {
            let tokens = model.vocab().tokenize(text, add_special, true).unwrap();
            assert!(!tokens.is_empty(), "{name}");
            assert!(tokens.iter().all(|&t| (0..model.vocab().n_tokens()).contains(&t)), "{name}: {tokens:?}");
        }
    }
}

#[test]
fn llama_cpp_refuses_validator_approved_edge_files_cleanly() {
    let mut wrong_shape = tiny_llama();
    wrong_shape.tensor_mut("blk.1.attn_q.weight").dims = vec![N_EMBD, N_EMBD / 2];
    let mut wrong_arch = tiny_llama().set("general.architecture", s("nosucharch"));
    for (key, _) in wrong_arch.kv.iter_mut() {
        if key.starts_with(b"llama.") {
            *key = [b"nosucharch.".as_slice(), &key[6..]].concat();
        }
    }
    let cases = [
        ("missing-tensor", tiny_llama().without_tensor("blk.1.ffn_up.weight")),
        ("wrong-shape", wrong_shape),
        ("bad-n-rot", tiny_llama().set("llama.rope.dimension_count", V::U32(8))),
        ("unknown-arch", wrong_arch),
        ("no-rms-eps", tiny_llama().remove("llama.attention.layer_norm_rms_epsilon")),
    ];
    for (name, g) in cases {
        let bytes = g.build();
        gguf::validate_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: the validator should accept it: {e}"));
        let f = TempFile::with(&format!("e2e-{name}.gguf"), &bytes);
        match load(f.path()) {
            Err(Error::ModelLoad { .. }) => {}
            other => panic!("{name}: expected ModelLoad, got {other:?}"),
        }
    }
    // Odd but harmless: llama.cpp loads these.
    let odd = [
        (
            "token-types",
            tiny_llama().set("tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(99); tiny_tokens().len()])),
        ),
        ("huge-context", tiny_llama().set("llama.context_length", V::U32(u32::MAX))),
        ("mha", {
            let mut g = tiny_llama().set("llama.attention.head_count_kv", V::U32(N_HEAD));
            for i in 0..2 {
                g.tensor_mut(&format!("blk.{i}.attn_k.weight")).dims = vec![N_EMBD, N_EMBD];
                g.tensor_mut(&format!("blk.{i}.attn_v.weight")).dims = vec![N_EMBD, N_EMBD];
            }
            g
        }),
    ];
    for (name, g) in odd {
        let f = TempFile::with(&format!("e2e-{name}.gguf"), &g.build());
        load(f.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn model_load_refuses_what_would_abort_llama_cpp() {
    let header = model_info().data_offset as usize;
    let cases: [(&str, Vec<u8>); 4] = [
        ("block-count-0", patched("llama.block_count", 4, 0u32.to_le_bytes())),
        ("block-count-1000", patched("llama.block_count", 4, 1000u32.to_le_bytes())),
        ("bos-1e6", patched("tokenizer.ggml.bos_token_id", 4, 1_000_000u32.to_le_bytes())),
        ("heads-kv-2", patched("llama.attention.head_count_kv", 4, 2u32.to_le_bytes())),
    ];
    for (name, bytes) in cases {
        // Header patched, weights sparse zeros: the same size as the real file.
        let f = TempFile::sparse(&format!("e2e-{name}.gguf"), &bytes, header);
        match load(f.path()) {
            Err(Error::InvalidModel(e)) => assert!(!e.to_string().is_empty()),
            other => panic!("{name}: expected InvalidModel, got {other:?}"),
        }
    }
    match load(&std::env::temp_dir().join("llama-rs-definitely-missing.gguf")) {
        Err(Error::ModelNotFound { .. } | Error::InvalidModel(GgufError::NotFound { .. })) => {}
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
}
