//! A tiny reranker the suites build themselves: a two-layer BERT
//! cross-encoder with a classification head (`cls`, `cls.output`) and
//! deterministic pseudo-random weights, about 120 KiB, with a WordPiece
//! vocabulary of 81 tokens. llama.cpp loads it as architecture `bert` with
//! rank pooling (`bert.pooling_type = 4`), so a context over it returns one
//! score per sequence. The weights mean nothing: the suites test the
//! plumbing (prompt layout, one finite score per document, determinism,
//! shapes), never what a score says.
//!
//! Its vocabulary: `[PAD]` 0, `[UNK]` 1, `[CLS]` 2 (BOS), `[SEP]` 3 (EOS
//! and SEP), `[MASK]` 4, then `▁a`…`▁z` (a letter that starts a word),
//! `a`…`z` (one inside a word), `▁0`…`▁9`, `0`…`9` and a few
//! punctuation marks. Any other word becomes `[UNK]`. The tokenizer
//! lowercases. `add_bos`, `add_eos` and `add_sep` are all set, so
//! llama.cpp's rerank layout for a query and a document is
//! `[CLS] query [SEP] [SEP] document [SEP]`, as for XLM-RoBERTa rerankers
//! such as bge-reranker-v2-m3.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::gguf_edit::Value;
use crate::gguf_write::GgufWriter;

/// Embedding width.
pub const N_EMBD: u64 = 32;
/// Feed-forward width.
pub const N_FF: u64 = 64;
/// Encoder layers.
pub const N_LAYER: u64 = 2;
/// Attention heads.
pub const N_HEAD: u32 = 2;
/// Training context: the position embedding has this many rows, so no
/// sequence may be longer.
pub const N_CTX_TRAIN: u64 = 128;
/// `[CLS]`, the BOS token.
pub const CLS: i32 = 2;
/// `[SEP]`, the EOS and separator token.
pub const SEP: i32 = 3;
/// `[UNK]`.
pub const UNK: i32 = 1;

const PUNCTUATION: &[&str] = &[".", ",", "?", "!"];

/// The vocabulary, in id order.
pub fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| (*s).to_owned()).collect();
    v.extend(('a'..='z').map(|c| format!("\u{2581}{c}")));
    v.extend(('a'..='z').map(String::from));
    v.extend(('0'..='9').map(|c| format!("\u{2581}{c}")));
    v.extend(('0'..='9').map(String::from));
    v.extend(PUNCTUATION.iter().map(|p| format!("\u{2581}{p}")));
    v
}

/// The id of a letter or digit `c` starting a word (`▁c`).
pub fn word_start(c: char) -> i32 {
    match c {
        'a'..='z' => 5 + (c as i32 - 'a' as i32),
        '0'..='9' => 57 + (c as i32 - '0' as i32),
        _ => UNK,
    }
}

/// The id of a letter or digit `c` inside a word.
pub fn word_inner(c: char) -> i32 {
    match c {
        'a'..='z' => 31 + (c as i32 - 'a' as i32),
        '0'..='9' => 67 + (c as i32 - '0' as i32),
        _ => UNK,
    }
}

/// How the model's tokenizer spells `text` (lowercase letters, digits and
/// spaces only): one word-start token and then inner tokens per word.
///
/// # Panics
/// On any other character (a bug of the test that asks).
pub fn tokens_of(text: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        for (i, c) in word.chars().enumerate() {
            assert!(c.is_ascii_lowercase() || c.is_ascii_digit(), "tokens_of: {c:?} is not a letter or digit");
            out.push(if i == 0 { word_start(c) } else { word_inner(c) });
        }
    }
    out
}

/// The tokens llama.cpp's rerank layout gives a query and a document:
/// `[CLS] query [SEP] [SEP] document [SEP]`.
pub fn rerank_tokens(query: &str, document: &str) -> Vec<i32> {
    let mut out = vec![CLS];
    out.extend(tokens_of(query));
    out.extend([SEP, SEP]);
    out.extend(tokens_of(document));
    out.push(SEP);
    out
}

/// splitmix64: a small, fixed pseudo-random sequence, so the file is the
/// same byte for byte on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    fn uniform(&mut self, scale: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }

    fn fill(&mut self, n: u64, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
}

/// The model, described: metadata and tensors. `extra` metadata is set
/// last (for example `tokenizer.chat_template.rerank`).
pub fn writer(extra: &[(&str, Value)]) -> GgufWriter {
    let vocab = vocabulary();
    let n_vocab = vocab.len() as u64;
    let token_types: Vec<i32> = (0..vocab.len())
        .map(|id| match id {
            1 => 2,         // unknown
            0 | 2..=4 => 3, // control
            _ => 1,         // normal
        })
        .collect();
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("bert".into()))
        .meta("general.name", Value::Str("tiny reranker (random weights, llama.rs tests)".into()))
        .meta("bert.context_length", Value::U32(N_CTX_TRAIN as u32))
        .meta("bert.embedding_length", Value::U32(N_EMBD as u32))
        .meta("bert.feed_forward_length", Value::U32(N_FF as u32))
        .meta("bert.block_count", Value::U32(N_LAYER as u32))
        .meta("bert.attention.head_count", Value::U32(N_HEAD))
        .meta("bert.attention.layer_norm_epsilon", Value::F32(1e-12))
        .meta("bert.attention.causal", Value::Bool(false))
        .meta("bert.pooling_type", Value::U32(4))
        .meta("bert.classifier.output_labels", Value::StrArray(vec!["relevance".into()]))
        .meta("tokenizer.ggml.model", Value::Str("bert".into()))
        .meta("tokenizer.ggml.tokens", Value::StrArray(vocab))
        .meta("tokenizer.ggml.token_type", Value::I32Array(token_types))
        .meta("tokenizer.ggml.token_type_count", Value::U32(2))
        .meta("tokenizer.ggml.padding_token_id", Value::U32(0))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(UNK as u32))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(CLS as u32))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(SEP as u32))
        .meta("tokenizer.ggml.seperator_token_id", Value::U32(SEP as u32))
        .meta("tokenizer.ggml.mask_token_id", Value::U32(4))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_eos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_sep_token", Value::Bool(true));
    for (key, value) in extra {
        w.meta(key, value.clone());
    }

    let (e, f) = (N_EMBD, N_FF);
    let mut rng = Rng(0x6C6C_616D_612E_7273); // "llama.rs"
    let ones = |n: u64| vec![1.0f32; n as usize];
    let zeros = |n: u64| vec![0.0f32; n as usize];
    let proj = (1.0 / (e as f32).sqrt()) * 1.7;
    w.tensor_f32("token_embd.weight", &[e, n_vocab], rng.fill(e * n_vocab, 1.0))
        .tensor_f32("token_types.weight", &[e, 2], rng.fill(e * 2, 0.1))
        .tensor_f32("position_embd.weight", &[e, N_CTX_TRAIN], rng.fill(e * N_CTX_TRAIN, 0.1))
        .tensor_f32("token_embd_norm.weight", &[e], ones(e))
        .tensor_f32("token_embd_norm.bias", &[e], zeros(e));
    for il in 0..N_LAYER {
        let name = |t: &str| format!("blk.{il}.{t}");
        for t in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            w.tensor_f32(&name(&format!("{t}.weight")), &[e, e], rng.fill(e * e, proj)).tensor_f32(
                &name(&format!("{t}.bias")),
                &[e],
                rng.fill(e, 0.02),
            );
        }
        w.tensor_f32(&name("attn_output_norm.weight"), &[e], ones(e))
            .tensor_f32(&name("attn_output_norm.bias"), &[e], zeros(e))
            .tensor_f32(&name("ffn_up.weight"), &[e, f], rng.fill(e * f, proj))
            .tensor_f32(&name("ffn_up.bias"), &[f], rng.fill(f, 0.02))
            .tensor_f32(&name("ffn_down.weight"), &[f, e], rng.fill(f * e, 1.0 / (f as f32).sqrt()))
            .tensor_f32(&name("ffn_down.bias"), &[e], rng.fill(e, 0.02))
            .tensor_f32(&name("layer_output_norm.weight"), &[e], ones(e))
            .tensor_f32(&name("layer_output_norm.bias"), &[e], zeros(e));
    }
    w.tensor_f32("cls.weight", &[e, e], rng.fill(e * e, proj))
        .tensor_f32("cls.bias", &[e], rng.fill(e, 0.02))
        .tensor_f32("cls.output.weight", &[e, 1], rng.fill(e, proj))
        .tensor_f32("cls.output.bias", &[1], vec![0.1]);
    w
}

/// Write the model (with `extra` metadata) to `path`, through a temporary
/// file renamed into place, so that concurrent test processes never see a
/// half-written file.
///
/// # Errors
/// I/O errors.
pub fn write_to(path: &Path, extra: &[(&str, Value)]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    writer(extra).write(&tmp)?;
    std::fs::rename(&tmp, path)
}

/// The model's file, written once per test process under
/// `target/tmp/llama-e2e/`.
///
/// # Panics
/// When the file cannot be written.
pub fn path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let profile = crate::paths::profile_dir();
        let dir = profile.parent().unwrap_or(&profile).join("tmp").join("llama-e2e");
        std::fs::create_dir_all(&dir).expect("create target/tmp/llama-e2e");
        let path = dir.join("tiny-reranker.gguf");
        write_to(&path, &[]).expect("write the tiny reranker");
        path
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_ids_match_the_helpers() {
        let v = vocabulary();
        assert_eq!(v.len(), 81);
        assert_eq!(v[word_start('a') as usize], "\u{2581}a");
        assert_eq!(v[word_inner('z') as usize], "z");
        assert_eq!(v[word_start('0') as usize], "\u{2581}0");
        assert_eq!(v[word_inner('9') as usize], "9");
    }

    #[test]
    fn the_model_validates_and_llama_cpp_tokenizes_as_described() {
        let path = path();
        let info = llama_core::gguf::validate(&path).expect("the tiny reranker validates");
        assert!(info.file_size < 200 << 10, "{} bytes", info.file_size);
        let params = llama_core::ModelParams { vocab_only: true, ..Default::default() };
        let model = llama_core::Model::load(&path, &params).expect("llama.cpp loads its vocabulary");
        let vocab = model.vocab();
        assert_eq!(vocab.tokenize("What is a panda?", false, false).unwrap(), {
            let mut t = tokens_of("what is a panda");
            t.push(79); // ▁?
            t
        });
        assert_eq!(vocab.tokenize("naïve €", false, false).unwrap(), vec![word_start('n'), 31, 39, 52, 35, UNK]);
    }
}
