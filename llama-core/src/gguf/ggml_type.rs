//! The tensor element types of ggml, as far as a GGUF reader needs them:
//! their ids, names, block sizes and block byte sizes.
#![forbid(unsafe_code)]

use std::fmt;

/// A ggml tensor element type, by its numeric id in the GGUF file.
///
/// Only ids that the vendored ggml can load are [valid](GgmlType::is_valid);
/// removed types (4, 5, 31–33, 36–38) and ids past the end are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// One row of the type table: `(id, name, elements per block, bytes per block)`.
/// Values taken from `type_traits` in the vendored `ggml/src/ggml.c`
/// (`ggml_blck_size`/`ggml_type_size`), checked against the built library.
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "f32", 1, 4),
    (1, "f16", 1, 2),
    (2, "q4_0", 32, 18),
    (3, "q4_1", 32, 20),
    (6, "q5_0", 32, 22),
    (7, "q5_1", 32, 24),
    (8, "q8_0", 32, 34),
    (9, "q8_1", 32, 36),
    (10, "q2_K", 256, 84),
    (11, "q3_K", 256, 110),
    (12, "q4_K", 256, 144),
    (13, "q5_K", 256, 176),
    (14, "q6_K", 256, 210),
    (15, "q8_K", 256, 292),
    (16, "iq2_xxs", 256, 66),
    (17, "iq2_xs", 256, 74),
    (18, "iq3_xxs", 256, 98),
    (19, "iq1_s", 256, 50),
    (20, "iq4_nl", 32, 18),
    (21, "iq3_s", 256, 110),
    (22, "iq2_s", 256, 82),
    (23, "iq4_xs", 256, 136),
    (24, "i8", 1, 1),
    (25, "i16", 1, 2),
    (26, "i32", 1, 4),
    (27, "i64", 1, 8),
    (28, "f64", 1, 8),
    (29, "iq1_m", 256, 56),
    (30, "bf16", 1, 2),
    (34, "tq1_0", 256, 54),
    (35, "tq2_0", 256, 66),
    (39, "mxfp4", 32, 17),
    (40, "nvfp4", 64, 36),
    (41, "q1_0", 128, 18),
    (42, "q2_0", 64, 18),
];

impl GgmlType {
    /// `f32`.
    pub const F32: GgmlType = GgmlType(0);
    /// `f16`.
    pub const F16: GgmlType = GgmlType(1);
    /// `q4_0`: blocks of 32 elements, 18 bytes each.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// `q4_1`: blocks of 32 elements, 20 bytes each.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// `q8_0`: blocks of 32 elements, 34 bytes each.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// `q6_K`: blocks of 256 elements, 210 bytes each.
    pub const Q6_K: GgmlType = GgmlType(14);
    /// `bf16`.
    pub const BF16: GgmlType = GgmlType(30);

    /// The type with this numeric id (valid or not).
    pub const fn from_id(id: u32) -> GgmlType {
        GgmlType(id)
    }

    /// The numeric id stored in the file.
    pub const fn id(self) -> u32 {
        self.0
    }

    fn row(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }

    /// Whether the vendored ggml can load tensors of this type.
    pub fn is_valid(self) -> bool {
        self.row().is_some()
    }

    /// ggml's name for the type (`"q4_K"`), or `None` for an invalid id.
    pub fn name(self) -> Option<&'static str> {
        self.row().map(|t| t.1)
    }

    /// Elements per block (1 for plain types), or `None` for an invalid id.
    pub fn block_size(self) -> Option<u64> {
        self.row().map(|t| t.2)
    }

    /// Bytes per block, or `None` for an invalid id.
    pub fn type_size(self) -> Option<u64> {
        self.row().map(|t| t.3)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "invalid ggml type {}", self.0),
        }
    }
}
