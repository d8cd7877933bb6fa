//! The byte-level GGUF reader: header, key-value pairs, tensor infos.
//!
//! Works on a prefix of the file (`buf`) while knowing the real file size, so
//! that every bound is checked against the file while only the header is in
//! memory. Running past the prefix yields [`Stop::NeedMore`]; the caller reads
//! more and parses again.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::info::{GgufInfo, TensorInfo};
use super::value::{ARRAY_ITEMS_KEPT, GgufArray, GgufValue, GgufValueType};
use super::{
    DEFAULT_ALIGNMENT, GGML_MAX_DIMS, GGML_MAX_NAME, MAX_ALIGNMENT, MAX_ARRAY_LEN, MAX_HEADER_BYTES, MAX_KEY_LEN,
    MAX_KV, MAX_STRING_LEN, MAX_TENSORS,
};

/// The key whose strings are the vocabulary.
pub(super) const TOKENS_KEY: &str = "tokenizer.ggml.tokens";

/// Smallest possible key-value pair: key length (8) + a 1-byte key + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest possible tensor info: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Most entries reserved up front from a count in the file; beyond this,
/// collections grow as entries are actually read, so a lying count costs nothing.
const PREALLOC_LIMIT: u64 = 1 << 16;

/// Why parsing stopped.
#[derive(Debug)]
pub(super) enum Stop {
    /// The file is invalid.
    Invalid(GgufError),
    /// The header continues past the bytes we have; read at least `upto` bytes and retry.
    NeedMore {
        /// Minimum prefix length needed.
        upto: u64,
    },
}

impl From<GgufError> for Stop {
    fn from(e: GgufError) -> Self {
        Stop::Invalid(e)
    }
}

type Res<T> = Result<T, Stop>;

/// Facts about the vocabulary that need every token, gathered while parsing
/// because [`GgufArray`] keeps only the first items.
#[derive(Debug, Default)]
pub(super) struct TokenStats {
    /// Byte length of the longest token, and its id.
    pub longest: Option<(u64, usize)>,
    /// The first token whose text repeats an earlier one: `(id, first_id, text)`.
    /// Empty tokens count as llama.cpp renames them, `[EMPTY_<id>]`.
    pub duplicate: Option<(u64, u64, String)>,
    /// Bytes that have a token of their own, as llama.cpp's SPM tokenizer
    /// looks them up (`<0xE9>`, or the one-character string): a bit set.
    pub byte_tokens: [u64; 4],
}

impl TokenStats {
    /// Whether byte `b` has a token.
    pub fn has_byte_token(&self, b: u8) -> bool {
        self.byte_tokens[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }

    fn note_byte_token(&mut self, text: &str) {
        let b = match text.as_bytes() {
            // The one-character fallback; a NUL byte would be the empty string, which llama.cpp renames.
            [b] if *b != 0 => *b,
            // llama.cpp spells byte tokens with upper-case hex digits.
            [b'<', b'0', b'x', hi, lo, b'>'] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
                    return;
                }
                let hex = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'A' + 10 };
                hex(*hi) * 16 + hex(*lo)
            }
            _ => return,
        };
        self.byte_tokens[usize::from(b / 64)] |= 1 << (b % 64);
    }
}

/// A parsed header plus what the model checks need beyond it.
#[derive(Debug)]
pub(super) struct Parsed {
    pub info: GgufInfo,
    pub tokens: Option<TokenStats>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    /// Absolute offset of the next byte; always `<= file_size`.
    pos: u64,
    file_size: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.file_size - self.pos
    }

    /// The next `n` bytes.
    fn take(&mut self, n: u64, what: &str) -> Res<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos,
                needed: n,
                file_size: self.file_size,
            }
            .into());
        }
        // Cannot overflow: pos + n <= file_size.
        let end = self.pos + n;
        if end > MAX_HEADER_BYTES {
            return Err(GgufError::HeaderTooLarge { limit: MAX_HEADER_BYTES }.into());
        }
        if end > self.buf.len() as u64 {
            return Err(Stop::NeedMore { upto: end });
        }
        // Both bounds are <= buf.len() (checked above), which is a usize.
        let bytes = &self.buf[self.pos as usize..end as usize];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Res<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        // `take` returned exactly N bytes.
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Res<u32> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Res<u64> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed string of at most `limit` bytes, as raw bytes.
    fn string_bytes(&mut self, what: &str, limit: u64) -> Res<(u64, &'a [u8])> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::LengthPastEof {
                what: what.to_owned(),
                offset: at,
                length: len,
                remaining: self.remaining(),
            }
            .into());
        }
        if len > limit {
            return Err(GgufError::StringTooLong { what: what.to_owned(), offset: at, length: len, limit }.into());
        }
        let start = self.pos;
        Ok((start, self.take(len, what)?))
    }

    /// A length-prefixed UTF-8 string of at most `limit` bytes.
    fn string(&mut self, what: &str, limit: u64) -> Res<&'a str> {
        let (start, bytes) = self.string_bytes(what, limit)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { what: what.to_owned(), offset: start }.into())
    }

    /// One fixed-size scalar of type `ty` (not a string or an array).
    fn scalar(&mut self, ty: GgufValueType, key: &str, what: &str) -> Res<GgufValue> {
        use GgufValueType as T;
        Ok(match ty {
            T::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            T::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            T::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            T::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            T::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            T::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            T::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            T::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            T::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            T::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            T::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => {
                        return Err(GgufError::InvalidMetadata {
                            key: key.to_owned(),
                            reason: format!("bool at offset {at} has byte value {b}, neither 0 nor 1"),
                        }
                        .into());
                    }
                }
            }
            T::String | T::Array => {
                return Err(GgufError::BadValueType {
                    key: key.to_owned(),
                    reason: format!("internal: {ty} is not a scalar type"),
                }
                .into());
            }
        })
    }
}

fn value_type(tag: u32, key: &str, role: &str) -> Res<GgufValueType> {
    GgufValueType::from_tag(tag).ok_or_else(|| {
        GgufError::BadValueType { key: key.to_owned(), reason: format!("unknown {role} type tag {tag}") }.into()
    })
}

/// Parse the header in `buf`, a prefix of a file of `file_size` bytes.
pub(super) fn parse(buf: &[u8], file_size: u64) -> Res<Parsed> {
    if file_size == 0 {
        return Err(GgufError::Empty.into());
    }
    let mut c = Cursor { buf, pos: 0, file_size };

    // Magic. A file shorter than 4 bytes that is a prefix of "GGUF" is
    // truncated; anything else is not GGUF at all.
    let head = &buf[..buf.len().min(4)];
    if head != &b"GGUF"[..head.len()] {
        return Err(GgufError::BadMagic { found: head.to_vec() }.into());
    }
    c.take(4, "magic")?;

    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version }.into());
    }

    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    let tensor_limit = MAX_TENSORS.min(c.remaining() / MIN_TENSOR_INFO_BYTES);
    if n_tensors > tensor_limit {
        return Err(
            GgufError::CountTooLarge { what: "tensor count".into(), count: n_tensors, limit: tensor_limit }.into()
        );
    }
    let kv_limit = MAX_KV.min(c.remaining() / MIN_KV_BYTES);
    if n_kv > kv_limit {
        return Err(
            GgufError::CountTooLarge { what: "metadata key-value count".into(), count: n_kv, limit: kv_limit }.into()
        );
    }

    // Key-value pairs.
    let mut metadata = Vec::with_capacity(n_kv.min(PREALLOC_LIMIT) as usize);
    let mut seen_keys: HashSet<&str> = HashSet::with_capacity(n_kv.min(PREALLOC_LIMIT) as usize);
    let mut tokens = None;
    for index in 0..n_kv {
        let key = c.string("metadata key", MAX_KEY_LEN)?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index }.into());
        }
        if !seen_keys.insert(key) {
            return Err(GgufError::DuplicateKey { key: key.to_owned() }.into());
        }
        let what = format!("value of `{key}`");
        let ty = value_type(c.u32(&what)?, key, "value")?;
        let value = match ty {
            GgufValueType::String => GgufValue::String(c.string(&what, MAX_STRING_LEN)?.to_owned()),
            GgufValueType::Array => {
                let (array, stats) = parse_array(&mut c, key, &what)?;
                if stats.is_some() {
                    tokens = stats;
                }
                GgufValue::Array(array)
            }
            _ => c.scalar(ty, key, &what)?,
        };
        metadata.push((key.to_owned(), value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) => u64::from(*a),
        Some((key, v)) => {
            return Err(GgufError::InvalidMetadata {
                key: key.clone(),
                reason: format!("must be of type u32, found {}", v.value_type()),
            }
            .into());
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
        return Err(GgufError::BadAlignment { alignment, max: MAX_ALIGNMENT }.into());
    }

    // Tensor infos.
    let mut tensors = Vec::with_capacity(n_tensors.min(PREALLOC_LIMIT) as usize);
    let mut seen_names: HashSet<&str> = HashSet::with_capacity(n_tensors.min(PREALLOC_LIMIT) as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name", MAX_STRING_LEN)?;
        if name.len() >= GGML_MAX_NAME {
            return Err(GgufError::TensorNameTooLong {
                name: name.to_owned(),
                length: name.len(),
                max: GGML_MAX_NAME - 1,
            }
            .into());
        }
        if !seen_names.insert(name) {
            return Err(GgufError::DuplicateTensor { name: name.to_owned() }.into());
        }
        tensors.push(parse_tensor_info(&mut c, name)?);
    }

    // The data section starts at the next multiple of the alignment (llama.cpp
    // pads only when there are tensors).
    let header_end = c.pos;
    let data_offset = if n_tensors == 0 {
        header_end
    } else {
        header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| GgufError::Overflow { what: "data section offset".into() })?
    };

    check_tensor_data(&tensors, alignment, data_offset, file_size)?;

    Ok(Parsed { info: GgufInfo { version, alignment, data_offset, file_size, metadata, tensors }, tokens })
}

/// An array value; for the vocabulary, also the [`TokenStats`].
fn parse_array(c: &mut Cursor<'_>, key: &str, what: &str) -> Res<(GgufArray, Option<TokenStats>)> {
    let elem_type = value_type(c.u32(what)?, key, "array element")?;
    if elem_type == GgufValueType::Array {
        return Err(GgufError::BadValueType {
            key: key.to_owned(),
            reason: "arrays of arrays are not supported".into(),
        }
        .into());
    }
    let len = c.u64(what)?;
    // A string element takes at least its 8-byte length.
    let min_elem = elem_type.fixed_size().unwrap_or(8);
    let limit = MAX_ARRAY_LEN.min(c.remaining() / min_elem);
    if len > limit {
        return Err(GgufError::CountTooLarge { what: format!("array `{key}`"), count: len, limit }.into());
    }
    let kept = len.min(ARRAY_ITEMS_KEPT as u64);
    let mut items = Vec::with_capacity(kept as usize);

    if elem_type != GgufValueType::String {
        for _ in 0..kept {
            items.push(c.scalar(elem_type, key, what)?);
        }
        // Bools must be validated one by one; other types can be skipped.
        if elem_type == GgufValueType::Bool {
            for _ in kept..len {
                c.scalar(elem_type, key, what)?;
            }
        } else {
            // Cannot overflow: len * min_elem <= remaining.
            c.take((len - kept) * min_elem, what)?;
        }
        return Ok((GgufArray { elem_type, len, items }, None));
    }

    let is_vocab = key == TOKENS_KEY;
    let mut stats = TokenStats::default();
    let mut seen: HashMap<Cow<'_, [u8]>, u64> = HashMap::new();
    if is_vocab {
        seen.reserve(len.min(PREALLOC_LIMIT) as usize);
    }
    for i in 0..len {
        let s = c.string(what, MAX_STRING_LEN)?;
        if i < kept {
            items.push(GgufValue::String(s.to_owned()));
        }
        if is_vocab {
            stats.note_byte_token(s);
            if stats.longest.is_none_or(|(_, l)| s.len() > l) {
                stats.longest = Some((i, s.len()));
            }
            if stats.duplicate.is_none() {
                let text: Cow<'_, [u8]> = if s.is_empty() {
                    Cow::Owned(format!("[EMPTY_{i}]").into_bytes())
                } else {
                    Cow::Borrowed(s.as_bytes())
                };
                if let Some(&first) = seen.get(&text) {
                    let shown = String::from_utf8_lossy(&text).chars().take(64).collect();
                    stats.duplicate = Some((i, first, shown));
                } else {
                    seen.insert(text, i);
                }
            }
        }
    }
    Ok((GgufArray { elem_type, len, items }, is_vocab.then_some(stats)))
}

fn parse_tensor_info(c: &mut Cursor<'_>, name: &str) -> Res<TensorInfo> {
    let bad_dims = |reason: String| GgufError::BadDimensions { name: name.to_owned(), reason };
    let what = format!("tensor info of `{name}`");

    let n_dims = c.u32(&what)?;
    if n_dims == 0 {
        return Err(bad_dims("it has no dimensions".into()).into());
    }
    if n_dims as usize > GGML_MAX_DIMS {
        return Err(bad_dims(format!("{n_dims} dimensions, ggml supports at most {GGML_MAX_DIMS}")).into());
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for j in 0..n_dims {
        let ne = c.u64(&what)?;
        if ne > i64::MAX as u64 {
            return Err(bad_dims(format!("dimension {j} is negative ({})", ne as i64)).into());
        }
        if ne == 0 {
            return Err(bad_dims(format!("dimension {j} is 0")).into());
        }
        dims.push(ne);
    }
    let overflow = |what: &str| GgufError::Overflow { what: format!("{what} of tensor `{name}` with dims {dims:?}") };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| overflow("element count"))?;

    let type_id = c.u32(&what)?;
    let ggml_type = GgmlType::from_id(type_id);
    let (Some(type_name), Some(block_size), Some(type_size)) =
        (ggml_type.name(), ggml_type.block_size(), ggml_type.type_size())
    else {
        return Err(GgufError::InvalidTensorType { name: name.to_owned(), type_id }.into());
    };
    if dims[0] % block_size != 0 {
        return Err(GgufError::RowNotBlockAligned { name: name.to_owned(), type_name, ne0: dims[0], block_size }.into());
    }
    // ggml_nbytes of a contiguous tensor: whole blocks per row, times the other dims.
    let n_bytes = (dims[0] / block_size)
        .checked_mul(type_size)
        .and_then(|row| dims[1..].iter().try_fold(row, |acc, &d| acc.checked_mul(d)))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| overflow("byte size"))?;

    let offset = c.u64(&what)?;
    Ok(TensorInfo { name: name.to_owned(), ggml_type, dims, offset, n_elements, n_bytes })
}

/// Every tensor aligned, inside the file, and not overlapping another.
fn check_tensor_data(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_size: u64,
) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if t.offset % alignment != 0 {
            return Err(GgufError::TensorMisaligned { name: t.name.clone(), offset: t.offset, alignment });
        }
        let overflow = || GgufError::Overflow {
            what: format!("data range of tensor `{}` (offset {}, {} bytes)", t.name, t.offset, t.n_bytes),
        };
        let start = data_offset.checked_add(t.offset).ok_or_else(overflow)?;
        let end = start.checked_add(t.n_bytes).ok_or_else(overflow)?;
        if end > file_size {
            return Err(GgufError::TensorOutOfBounds { name: t.name.clone(), start, size: t.n_bytes, file_size });
        }
        ranges.push((start, end, i));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next.0 < prev.1 {
            return Err(GgufError::TensorOverlap {
                first: tensors[prev.2].name.clone(),
                second: tensors[next.2].name.clone(),
            });
        }
    }
    Ok(())
}
