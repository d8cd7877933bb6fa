//! Metadata values of a GGUF file.
#![forbid(unsafe_code)]

use std::fmt;

/// How many leading items of an array [`GgufArray::items`] keeps. Enough for
/// every per-layer array llama.cpp accepts (at most 512 layers), small enough
/// that a 256k-token vocabulary costs kilobytes, not megabytes.
pub const ARRAY_ITEMS_KEPT: usize = 1024;

/// The type tag of a GGUF metadata value (`gguf_type` in `gguf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgufValueType {
    /// `uint8` (tag 0).
    U8,
    /// `int8` (tag 1).
    I8,
    /// `uint16` (tag 2).
    U16,
    /// `int16` (tag 3).
    I16,
    /// `uint32` (tag 4).
    U32,
    /// `int32` (tag 5).
    I32,
    /// `float32` (tag 6).
    F32,
    /// `bool`, one byte (tag 7).
    Bool,
    /// Length-prefixed UTF-8 string (tag 8).
    String,
    /// Typed, length-prefixed array (tag 9).
    Array,
    /// `uint64` (tag 10).
    U64,
    /// `int64` (tag 11).
    I64,
    /// `float64` (tag 12).
    F64,
}

impl GgufValueType {
    /// The type with this tag, or `None` for an unknown tag.
    pub fn from_tag(tag: u32) -> Option<GgufValueType> {
        use GgufValueType::*;
        Some(match tag {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Size in bytes of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The short name llama.cpp uses (`"u32"`, `"str"`, `"arr"`, ...).
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "arr",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Whether this is one of the integer types.
    pub fn is_integer(self) -> bool {
        use GgufValueType::*;
        matches!(self, U8 | I8 | U16 | I16 | U32 | I32 | U64 | I64)
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Arrays keep their length and element type, but only
/// their first [`ARRAY_ITEMS_KEPT`] items, so that memory stays bounded.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
    /// An array (summarized, see [`GgufArray`]).
    Array(GgufArray),
}

/// A metadata array: its element type and full length, and its first items.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufArray {
    /// The type of every element (never [`GgufValueType::Array`]: nested arrays are refused).
    pub elem_type: GgufValueType,
    /// The number of elements in the file.
    pub len: u64,
    /// The first `min(len, ARRAY_ITEMS_KEPT)` elements.
    pub items: Vec<GgufValue>,
}

impl GgufArray {
    /// Whether `items` holds every element of the array.
    pub fn is_complete(&self) -> bool {
        self.items.len() as u64 == self.len
    }
}

impl GgufValue {
    /// The value's type tag.
    pub fn value_type(&self) -> GgufValueType {
        use GgufValue as V;
        match self {
            V::U8(_) => GgufValueType::U8,
            V::I8(_) => GgufValueType::I8,
            V::U16(_) => GgufValueType::U16,
            V::I16(_) => GgufValueType::I16,
            V::U32(_) => GgufValueType::U32,
            V::I32(_) => GgufValueType::I32,
            V::F32(_) => GgufValueType::F32,
            V::Bool(_) => GgufValueType::Bool,
            V::String(_) => GgufValueType::String,
            V::U64(_) => GgufValueType::U64,
            V::I64(_) => GgufValueType::I64,
            V::F64(_) => GgufValueType::F64,
            V::Array(_) => GgufValueType::Array,
        }
    }

    /// The value of any integer type, widened to `i128` so that every
    /// `u64` and every `i64` fits; `None` for non-integers.
    pub fn as_int(&self) -> Option<i128> {
        use GgufValue as V;
        Some(match *self {
            V::U8(v) => v.into(),
            V::I8(v) => v.into(),
            V::U16(v) => v.into(),
            V::I16(v) => v.into(),
            V::U32(v) => v.into(),
            V::I32(v) => v.into(),
            V::U64(v) => v.into(),
            V::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a `u64`, for any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as an `f64`, for the float types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string slice, for strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, for bools.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array, for arrays.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// How many characters of a string [`Display`](fmt::Display) shows.
const DISPLAY_STR_CHARS: usize = 200;
/// How many items of an array [`Display`](fmt::Display) shows.
const DISPLAY_ARRAY_ITEMS: usize = 8;

fn write_str_value(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let shown: String = s.chars().take(DISPLAY_STR_CHARS).collect();
    write!(f, "{shown:?}")?;
    if shown.len() < s.len() {
        write!(f, "… ({} bytes)", s.len())?;
    }
    Ok(())
}

/// Short, single-line rendering for `llama info`: strings quoted, escaped and
/// cut after 200 characters; arrays as `[type; len] [first items, …]`.
impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufValue as V;
        match self {
            V::U8(v) => write!(f, "{v}"),
            V::I8(v) => write!(f, "{v}"),
            V::U16(v) => write!(f, "{v}"),
            V::I16(v) => write!(f, "{v}"),
            V::U32(v) => write!(f, "{v}"),
            V::I32(v) => write!(f, "{v}"),
            V::F32(v) => write!(f, "{v}"),
            V::Bool(v) => write!(f, "{v}"),
            V::String(s) => write_str_value(f, s),
            V::U64(v) => write!(f, "{v}"),
            V::I64(v) => write!(f, "{v}"),
            V::F64(v) => write!(f, "{v}"),
            V::Array(a) => {
                write!(f, "[{}; {}] [", a.elem_type, a.len)?;
                for (i, item) in a.items.iter().take(DISPLAY_ARRAY_ITEMS).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if a.len > DISPLAY_ARRAY_ITEMS as u64 {
                    f.write_str(", …")?;
                }
                f.write_str("]")
            }
        }
    }
}
