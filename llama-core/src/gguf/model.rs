//! Model-level consistency: the metadata that llama.cpp trusts when it builds
//! a model (layer counts, head counts, vocabulary, special tokens), checked
//! against each other and against the tensors.
//!
//! Generic checks read `{arch}.` keys for any `general.architecture`; a few
//! stricter ones apply only to architectures we know (`llama`). Each check
//! exists because the vendored llama.cpp aborts the process (`GGML_ASSERT`),
//! divides by zero, or indexes out of bounds when it fails.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use super::error::GgufError;
use super::info::GgufInfo;
use super::parse::{TOKENS_KEY, TokenStats};
use super::value::{GgufValue, GgufValueType};
use super::{LLAMA_MAX_EXPERTS, LLAMA_MAX_LAYERS, MAX_TOKEN_BYTES, MIN_VOCAB};

/// Every special-token id key llama.cpp reads (`llama-vocab.cpp`).
pub const SPECIAL_TOKEN_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
const EOS_KEY: &str = "tokenizer.ggml.eos_token_id";
const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS_KEY: &str = "tokenizer.ggml.add_eos_token";
const SEP_KEY: &str = "tokenizer.ggml.seperator_token_id";

/// The rope scaling types llama.cpp knows; any other string is a `GGML_ASSERT`.
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

fn invalid(key: &str, reason: impl Into<String>) -> GgufError {
    GgufError::InvalidMetadata { key: key.to_owned(), reason: reason.into() }
}

fn inconsistent(reason: impl Into<String>) -> GgufError {
    GgufError::InconsistentHyperparameters { reason: reason.into() }
}

fn describe(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(a) => format!("an array of {} {}", a.len, a.elem_type),
        other => format!("a {}", other.value_type()),
    }
}

/// An optional integer key of any integer type.
fn int_key(info: &GgufInfo, key: &str) -> Result<Option<i128>, GgufError> {
    match info.get(key) {
        None => Ok(None),
        Some(v) => {
            v.as_int().map(Some).ok_or_else(|| invalid(key, format!("must be an integer, found {}", describe(v))))
        }
    }
}

/// An optional string key.
fn str_key<'a>(info: &'a GgufInfo, key: &str) -> Result<Option<&'a str>, GgufError> {
    match info.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| invalid(key, format!("must be a string, found {}", describe(v)))),
    }
}

/// An optional bool key.
fn bool_key(info: &GgufInfo, key: &str) -> Result<Option<bool>, GgufError> {
    match info.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| invalid(key, format!("must be a bool, found {}", describe(v)))),
    }
}

/// An optional integer key that may also be a per-layer array (llama.cpp's
/// `get_key_or_arr`): one value, or exactly `n_layer` values.
fn per_layer_key(info: &GgufInfo, key: &str, n_layer: Option<u64>) -> Result<Option<Vec<i128>>, GgufError> {
    let Some(v) = info.get(key) else { return Ok(None) };
    if let Some(i) = v.as_int() {
        return Ok(Some(vec![i]));
    }
    let bad =
        || invalid(key, format!("must be an integer or an array of one integer per layer, found {}", describe(v)));
    let a = v.as_array().ok_or_else(bad)?;
    if !a.elem_type.is_integer() || !a.is_complete() || a.len == 0 {
        return Err(bad());
    }
    if let Some(n) = n_layer
        && a.len != n
    {
        return Err(invalid(key, format!("has {} per-layer values but block_count is {n}", a.len)));
    }
    Ok(Some(a.items.iter().filter_map(GgufValue::as_int).collect()))
}

/// All model-level checks.
pub(super) fn check(info: &GgufInfo, tokens: Option<&TokenStats>) -> Result<(), GgufError> {
    let n_vocab = check_vocab(info, tokens)?;
    if let Some(arch) = str_key(info, "general.architecture")? {
        if arch.is_empty() || arch.len() > 64 || !arch.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("general.architecture", format!("{arch:?} is not a plausible architecture name")));
        }
        check_arch(info, arch, n_vocab)?;
    }
    Ok(())
}

/// Vocabulary and special tokens; returns the vocabulary size if there is one.
fn check_vocab(info: &GgufInfo, tokens: Option<&TokenStats>) -> Result<Option<u64>, GgufError> {
    let Some(v) = info.get(TOKENS_KEY) else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .filter(|a| a.elem_type == GgufValueType::String)
        .ok_or_else(|| invalid(TOKENS_KEY, format!("must be an array of strings, found {}", describe(v))))?;
    let n_vocab = list.len;
    if n_vocab < MIN_VOCAB {
        return Err(GgufError::VocabTooSmall { n_vocab, min: MIN_VOCAB });
    }
    // llama.cpp keeps token ids in an i32.
    if n_vocab > i32::MAX as u64 {
        return Err(GgufError::CountTooLarge { what: TOKENS_KEY.into(), count: n_vocab, limit: i32::MAX as u64 });
    }
    if let Some(stats) = tokens {
        if let Some((id, len)) = stats.longest
            && len as u64 > MAX_TOKEN_BYTES
        {
            return Err(invalid(TOKENS_KEY, format!("token {id} is {len} bytes long, more than {MAX_TOKEN_BYTES}")));
        }
        if let Some((id, first_id, text)) = &stats.duplicate {
            return Err(GgufError::DuplicateToken { id: *id, first_id: *first_id, text: text.clone() });
        }
    }

    let per_token = |key: &str, types: &[GgufValueType]| -> Result<(), GgufError> {
        let Some(v) = info.get(key) else { return Ok(()) };
        let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
        let a = v.as_array().filter(|a| types.contains(&a.elem_type)).ok_or_else(|| {
            invalid(key, format!("must be an array of {}, found {}", names.join(" or "), describe(v)))
        })?;
        if a.len != n_vocab {
            return Err(invalid(key, format!("has {} entries for a vocabulary of {n_vocab} tokens", a.len)));
        }
        Ok(())
    };
    // llama.cpp accepts integer scores too, and converts them.
    per_token("tokenizer.ggml.scores", &[GgufValueType::F32, GgufValueType::I32])?;
    per_token("tokenizer.ggml.token_type", &[GgufValueType::I32])?;
    if let Some(v) = info.get("tokenizer.ggml.merges")
        && v.as_array().is_none_or(|a| a.elem_type != GgufValueType::String)
    {
        return Err(invalid("tokenizer.ggml.merges", format!("must be an array of strings, found {}", describe(v))));
    }

    for &key in SPECIAL_TOKEN_KEYS {
        if let Some(id) = int_key(info, key)?
            && !(0..i128::from(n_vocab)).contains(&id)
        {
            return Err(GgufError::SpecialTokenOutOfVocab { key: key.to_owned(), id, n_vocab });
        }
    }

    let model = str_key(info, "tokenizer.ggml.model")?.unwrap_or("");

    // llama.cpp's SPM tokenizer ("llama") spells unknown text as byte tokens,
    // looked up with `std::map::at`: a missing one throws a C++ exception
    // out of `llama_tokenize`, which aborts the process. Every byte that
    // valid UTF-8 text can contain needs a token.
    if model == "llama"
        && let Some(stats) = tokens
        && let Some(b) = (0u8..=0xF4).filter(|b| !matches!(b, 0xC0 | 0xC1)).find(|&b| !stats.has_byte_token(b))
    {
        return Err(invalid(
            TOKENS_KEY,
            format!(
                "the SPM vocabulary has no token for byte 0x{b:02X} (`<0x{b:02X}>`), which llama.cpp cannot tokenize"
            ),
        ));
    }

    // Without an explicit id, llama.cpp uses a per-tokenizer default id, and
    // aborts while tokenizing if a special token must be added but that
    // default is missing or was disabled for lying outside the vocabulary.
    let (default_bos, default_eos, default_sep): (Option<u64>, Option<u64>, Option<u64>) = match model {
        "llama" | "plamo2" => (Some(1), Some(2), None),
        "bert" => (Some(101), None, Some(102)),
        "gpt2" => (Some(11), Some(11), None),
        "t5" => (None, Some(1), None),
        _ => (None, None, None),
    };
    let add_bos = bool_key(info, ADD_BOS_KEY)?;
    let add_eos = bool_key(info, ADD_EOS_KEY)?;
    // WPM ("bert") adds CLS (its BOS) and SEP to every tokenization with special tokens, whatever the flags say.
    let wpm = model == "bert";
    let bos_by_default = matches!(model, "llama" | "plamo2" | "gpt2");
    let needs_bos = wpm || add_bos.unwrap_or(bos_by_default);
    check_default_special(info, model, n_vocab, BOS_KEY, needs_bos, default_bos)?;
    check_default_special(info, model, n_vocab, EOS_KEY, add_eos.unwrap_or(false), default_eos)?;
    check_default_special(info, model, n_vocab, SEP_KEY, wpm, default_sep)?;
    Ok(Some(n_vocab))
}

fn check_default_special(
    info: &GgufInfo,
    model: &str,
    n_vocab: u64,
    id_key: &str,
    added: bool,
    default_id: Option<u64>,
) -> Result<(), GgufError> {
    if !added || info.get(id_key).is_some() {
        return Ok(());
    }
    match default_id {
        Some(d) if d < n_vocab => Ok(()),
        Some(d) => Err(invalid(
            id_key,
            format!(
                "missing, and the default id {d} of tokenizer model `{model}` is outside the vocabulary \
                 (0..{n_vocab}), but the token is added when tokenizing"
            ),
        )),
        None => Err(invalid(
            id_key,
            format!("missing, and tokenizer model `{model}` has no default, but the token is added when tokenizing"),
        )),
    }
}

/// The layer index of a `blk.N.*` tensor name.
fn block_index(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("blk.")?;
    let (digits, _) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check_arch(info: &GgufInfo, arch: &str, n_vocab: Option<u64>) -> Result<(), GgufError> {
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let is_llama = arch == "llama";

    // Layers.
    let block_count_key = key("block_count");
    let n_layer = match int_key(info, &block_count_key)? {
        None => None,
        Some(n) if (1..=i128::from(LLAMA_MAX_LAYERS)).contains(&n) => Some(n as u64),
        Some(n) => {
            return Err(invalid(&block_count_key, format!("{n} layers; llama.cpp supports 1 to {LLAMA_MAX_LAYERS}")));
        }
    };
    let blocks: BTreeSet<u64> = info.tensors.iter().filter_map(|t| block_index(&t.name)).collect();
    if let Some(&last) = blocks.last() {
        let n = n_layer.ok_or_else(|| GgufError::MissingKey { key: block_count_key.clone() })?;
        if last >= n {
            return Err(inconsistent(format!("tensors exist for layer {last}, but {block_count_key} is {n}")));
        }
        if blocks.len() as u64 != n {
            return Err(inconsistent(format!(
                "{block_count_key} is {n}, but tensors exist for only {} layers",
                blocks.len()
            )));
        }
    }
    if let Some(nextn) = int_key(info, &key("nextn_predict_layers"))?
        && (nextn < 0 || n_layer.is_some_and(|n| nextn > i128::from(n)))
    {
        return Err(inconsistent(format!("{arch}.nextn_predict_layers = {nextn} exceeds block_count {n_layer:?}")));
    }

    // Sizes that must be positive.
    for suffix in ["context_length", "embedding_length"] {
        let k = key(suffix);
        if let Some(v) = int_key(info, &k)?
            && !(1..=i128::from(u32::MAX)).contains(&v)
        {
            return Err(invalid(&k, format!("must be between 1 and {}, found {v}", u32::MAX)));
        }
    }
    let n_embd = int_key(info, &key("embedding_length"))?;

    // llama.cpp sizes the embedding and output matrices (hence the logits)
    // by `{arch}.vocab_size` when present, and the tokenizer by the token
    // list: a mismatch lets sampling pick ids the tokenizer does not have.
    let vocab_size_key = key("vocab_size");
    if let Some(v) = int_key(info, &vocab_size_key)?
        && let Some(n) = n_vocab
        && v != i128::from(n)
    {
        return Err(inconsistent(format!("{vocab_size_key} = {v}, but {TOKENS_KEY} has {n} tokens")));
    }

    // Attention heads.
    let head_key = key("attention.head_count");
    let kv_key = key("attention.head_count_kv");
    let heads = per_layer_key(info, &head_key, n_layer)?;
    let heads_kv = per_layer_key(info, &kv_key, n_layer)?;
    if let (Some(heads), Some(kv)) = (&heads, &heads_kv)
        && heads.len() > 1
        && kv.len() > 1
        && heads.len() != kv.len()
    {
        return Err(inconsistent(format!(
            "{head_key} has {} per-layer values but {kv_key} has {}",
            heads.len(),
            kv.len()
        )));
    }
    if let Some(heads) = &heads {
        let layers = heads.len().max(heads_kv.as_ref().map_or(0, Vec::len));
        for layer in 0..layers {
            // One value applies to every layer; otherwise both lists have `layers` values (checked above).
            let per_layer = |v: &[i128]| if v.len() == 1 { v[0] } else { v[layer] };
            let h = per_layer(heads);
            let kv = heads_kv.as_deref().map_or(h, per_layer);
            if !(0..=i128::from(u32::MAX)).contains(&h) || !(0..=i128::from(u32::MAX)).contains(&kv) {
                return Err(inconsistent(format!("layer {layer}: head counts {h} / {kv} are out of range")));
            }
            if is_llama && (h == 0 || kv == 0) {
                return Err(inconsistent(format!(
                    "layer {layer}: {head_key} = {h} and {kv_key} = {kv} must be positive"
                )));
            }
            if h > 0 && kv > 0 && h % kv != 0 {
                return Err(inconsistent(format!(
                    "layer {layer}: {head_key} = {h} is not a multiple of {kv_key} = {kv}"
                )));
            }
            if h == 0 && kv > 0 {
                return Err(inconsistent(format!("layer {layer}: {kv_key} = {kv} but {head_key} = 0")));
            }
        }
        let h0 = heads[0];
        if h0 > 0 {
            let key_len = int_key(info, &key("attention.key_length"))?;
            let value_len = int_key(info, &key("attention.value_length"))?;
            for (k, v) in [(key("attention.key_length"), key_len), (key("attention.value_length"), value_len)] {
                if let Some(v) = v
                    && !(1..=i128::from(u32::MAX)).contains(&v)
                {
                    return Err(invalid(&k, format!("must be positive, found {v}")));
                }
            }
            if let Some(e) = n_embd
                && (key_len.is_none() || value_len.is_none())
                && e % h0 != 0
            {
                return Err(inconsistent(format!(
                    "{arch}.embedding_length = {e} is not divisible by {head_key} = {h0} and no explicit key/value length is given"
                )));
            }
        }
    } else if heads_kv.is_some() {
        return Err(inconsistent(format!("{kv_key} is set but {head_key} is missing")));
    }

    // Feed-forward width.
    let ff_key = key("feed_forward_length");
    if let Some(ff) = per_layer_key(info, &ff_key, n_layer)?
        && let Some(bad) = ff.iter().find(|&&v| !(0..=i128::from(u32::MAX)).contains(&v) || (is_llama && v == 0))
    {
        return Err(invalid(&ff_key, format!("invalid width {bad}")));
    }

    // Rope scaling type: an unknown name is a GGML_ASSERT in llama.cpp.
    let rope_key = key("rope.scaling.type");
    if let Some(t) = str_key(info, &rope_key)?
        && !ROPE_SCALING_TYPES.contains(&t)
    {
        return Err(invalid(
            &rope_key,
            format!("unknown rope scaling type {t:?}; expected one of {ROPE_SCALING_TYPES:?}"),
        ));
    }

    check_experts(info, arch, n_layer)?;

    // The embedding matrix is {n_embd, n_vocab} in the llama family.
    if is_llama && let (Some(e), Some(v)) = (n_embd, n_vocab) {
        for name in ["token_embd.weight", "output.weight"] {
            if let Some(t) = info.tensor(name) {
                let expected = [e as u64, v];
                if t.dims != expected {
                    return Err(inconsistent(format!(
                        "tensor `{name}` has dims {:?}, expected [embedding_length, vocab size] = {expected:?}",
                        t.dims
                    )));
                }
            }
        }
    }

    // A llama model with tensors must say how big it is.
    if is_llama && !info.tensors.is_empty() {
        for suffix in ["block_count", "embedding_length", "attention.head_count", "context_length"] {
            if info.get(&key(suffix)).is_none() {
                return Err(GgufError::MissingKey { key: key(suffix) });
            }
        }
    }
    Ok(())
}

/// Mixture-of-experts counts, mirroring llama.cpp's asserts in `load_hparams`.
fn check_experts(info: &GgufInfo, arch: &str, n_layer: Option<u64>) -> Result<(), GgufError> {
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let n_expert = int_key(info, &key("expert_count"))?.unwrap_or(0);
    let used_max =
        per_layer_key(info, &key("expert_used_count"), n_layer)?.and_then(|v| v.into_iter().max()).unwrap_or(0);
    let groups = int_key(info, &key("expert_group_count"))?.unwrap_or(0);
    let group_used = int_key(info, &key("expert_group_used_count"))?.unwrap_or(0);
    let fail = |what: &str| {
        Err(inconsistent(format!(
            "experts: {what} (expert_count {n_expert}, expert_used_count {used_max}, expert_group_count {groups}, \
             expert_group_used_count {group_used})"
        )))
    };
    if !(0..=i128::from(LLAMA_MAX_EXPERTS)).contains(&n_expert) {
        return fail(&format!("expert_count must be between 0 and {LLAMA_MAX_EXPERTS}"));
    }
    if used_max < 0 || used_max > n_expert {
        return fail("more experts used than exist");
    }
    if n_expert > 0 {
        if used_max == 0 {
            return fail("experts exist but none is used");
        }
        if groups < 0 || groups >= n_expert {
            return fail("expert_group_count must be smaller than expert_count");
        }
        if groups > 1 && (n_expert % groups != 0 || group_used <= 0 || group_used >= groups) {
            return fail("expert groups must divide the experts and 0 < expert_group_used_count < expert_group_count");
        }
    } else if used_max != 0 || groups != 0 {
        return fail("expert counts set without experts");
    }
    Ok(())
}
