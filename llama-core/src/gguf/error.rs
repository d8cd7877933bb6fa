//! Why a GGUF file was refused.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// Why a GGUF file was refused. Every message names the offending field,
/// its value and the limit it broke, so that a user can tell a truncated
/// download from a malicious file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The path does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The path exists but is not a regular file (a directory, a device, ...).
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path that was given.
        path: PathBuf,
    },
    /// Reading the file failed.
    #[error("{}: read error: {source}", path.display())]
    Io {
        /// The path that was given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file has no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found:02x?} instead of \"GGUF\"")]
    BadMagic {
        /// The first bytes of the file (up to 4).
        found: Vec<u8>,
    },
    /// The GGUF version is not 2 or 3.
    #[error("unsupported GGUF version {version}{}", version_hint(*version))]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
    },
    /// A fixed-size field runs past the end of the file.
    #[error("file truncated: {what} at offset {offset} needs {needed} bytes, but the file ends at {file_size}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file size.
        file_size: u64,
    },
    /// A declared length (string bytes) runs past the end of the file.
    #[error("{what} at offset {offset} claims {length} bytes, but only {remaining} bytes remain in the file")]
    LengthPastEof {
        /// What the length belongs to.
        what: String,
        /// Where the length field is.
        offset: u64,
        /// The declared length.
        length: u64,
        /// Bytes left in the file after the length field.
        remaining: u64,
    },
    /// A count (tensors, key-value pairs, array elements) is larger than the
    /// file could possibly hold, or larger than a hard limit.
    #[error("{what}: count {count} exceeds the limit of {limit}")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The declared count.
        count: u64,
        /// The largest count accepted here.
        limit: u64,
    },
    /// A string is longer than this validator accepts.
    #[error("{what} at offset {offset} is {length} bytes long, more than the limit of {limit}")]
    StringTooLong {
        /// What the string is.
        what: String,
        /// Where its length field is.
        offset: u64,
        /// Its length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// The header (metadata and tensor infos) is larger than this validator reads.
    #[error("the GGUF header is larger than {limit} bytes")]
    HeaderTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A key or string value is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// What the string is.
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },
    /// A metadata key is empty.
    #[error("metadata key #{index} is empty")]
    EmptyKey {
        /// The index of the key-value pair.
        index: u64,
    },
    /// A metadata value has an unknown type tag, or is an array of arrays.
    #[error("key `{key}`: {reason}")]
    BadValueType {
        /// The key.
        key: String,
        /// What is wrong with its type.
        reason: String,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a power of two in the accepted range.
    #[error("general.alignment = {alignment} is not a power of two between 1 and {max}")]
    BadAlignment {
        /// The value in the file.
        alignment: u64,
        /// The largest alignment accepted.
        max: u64,
    },
    /// The same tensor name appears twice.
    #[error("duplicate tensor name `{name}`")]
    DuplicateTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor name is longer than ggml's 63-byte limit.
    #[error("tensor name {name:?} is {length} bytes long; ggml allows at most {max}")]
    TensorNameTooLong {
        /// The tensor name.
        name: String,
        /// Its length in bytes.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A tensor has an unusable shape (no dimensions, more than 4, or a zero,
    /// negative or oversized dimension).
    #[error("tensor `{name}`: bad dimensions: {reason}")]
    BadDimensions {
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's ggml type id is unknown or removed.
    #[error("tensor `{name}` has invalid ggml type {type_id}")]
    InvalidTensorType {
        /// The tensor name.
        name: String,
        /// The type id in the file.
        type_id: u32,
    },
    /// A block-quantized tensor's rows are not a whole number of blocks.
    #[error(
        "tensor `{name}` of type {type_name} has {ne0} elements per row, not a multiple of the block size {block_size}"
    )]
    RowNotBlockAligned {
        /// The tensor name.
        name: String,
        /// The ggml type name.
        type_name: &'static str,
        /// Elements per row.
        ne0: u64,
        /// Elements per block.
        block_size: u64,
    },
    /// An element count or byte size does not fit in 63 bits.
    #[error("arithmetic overflow: {what}")]
    Overflow {
        /// What was being computed.
        what: String,
    },
    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error("tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}")]
    TensorMisaligned {
        /// The tensor name.
        name: String,
        /// The offset (relative to the data section).
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data does not lie inside the file.
    #[error("tensor `{name}`: data [{start}, {start} + {size}) lies outside the file of {file_size} bytes")]
    TensorOutOfBounds {
        /// The tensor name.
        name: String,
        /// Absolute file offset of its first byte.
        start: u64,
        /// Its size in bytes.
        size: u64,
        /// The file size.
        file_size: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("tensors `{first}` and `{second}` overlap in the data section")]
    TensorOverlap {
        /// The tensor with the lower offset.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// A required metadata key is missing.
    #[error("required metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has the wrong type or an impossible value.
    #[error("metadata `{key}`: {reason}")]
    InvalidMetadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Hyperparameters contradict each other or the tensors.
    #[error("inconsistent hyperparameters: {reason}")]
    InconsistentHyperparameters {
        /// What contradicts what.
        reason: String,
    },
    /// The vocabulary is too small to be real (llama.cpp then falls back to
    /// default special-token ids that do not exist).
    #[error("the vocabulary has {n_vocab} tokens; at least {min} are required")]
    VocabTooSmall {
        /// Tokens in `tokenizer.ggml.tokens`.
        n_vocab: u64,
        /// The minimum.
        min: u64,
    },
    /// Two vocabulary entries have the same text (llama.cpp aborts on this).
    #[error("token {id} has the same text as token {first_id}: {text:?}")]
    DuplicateToken {
        /// The later token id.
        id: u64,
        /// The earlier token id with the same text.
        first_id: u64,
        /// The text (cut to 64 characters).
        text: String,
    },
    /// A tensor of a LoRA adapter file that llama.cpp could not use: a
    /// name that is not `<base tensor>.lora_a` / `.lora_b`, half of a pair,
    /// an element type or shape the adapter code does not handle.
    #[error("adapter tensor `{name}`: {reason}")]
    InvalidAdapterTensor {
        /// The tensor name (or the base tensor's, for a pair).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A special-token id lies outside the vocabulary.
    #[error("`{key}` = {id} is outside the vocabulary (0..{n_vocab})")]
    SpecialTokenOutOfVocab {
        /// The metadata key.
        key: String,
        /// The id in the file.
        id: i128,
        /// The vocabulary size.
        n_vocab: u64,
    },
}

fn version_hint(version: u32) -> &'static str {
    if version != 0 && version & 0xFFFF == 0 {
        " (a byte-swapped version: was the file written on a big-endian machine?); supported: 2 and 3"
    } else {
        "; supported: 2 and 3"
    }
}
