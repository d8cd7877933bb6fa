//! Safe Rust API over llama.cpp.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
pub mod gguf;

pub use error::{Error, Result};

/// A token id in the model's vocabulary.
pub type Token = i32;
/// A position in a sequence.
pub type Pos = i32;
/// A sequence id in a context (`0..n_seq_max`).
pub type SeqId = i32;
