//! Validation of untrusted GGUF files in safe Rust, before llama.cpp sees them.
//!
//! llama.cpp's own GGUF loader has a long history of memory-safety bugs on
//! crafted files (header counts and string lengths that overflow, size
//! arithmetic that wraps, tensors whose data lies past the end of the file),
//! and at the vendored version some inconsistent metadata still makes it abort
//! the whole process (`llama.block_count` of 0 or 1000, duplicate vocabulary
//! entries, unknown rope scaling types, SPM vocabularies without byte tokens,
//! ...). [`validate`] reads only the
//! header of a file, bounds every count and length by the bytes that remain,
//! does all size arithmetic checked, and refuses anything suspicious with a
//! typed [`GgufError`] that says what is wrong.
//!
//! ```no_run
//! let info = llama_core::gguf::validate("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! println!("{} layers, vocab {:?}", info.tensors.len(), info.n_vocab());
//! # Ok::<(), llama_core::gguf::GgufError>(())
//! ```
//!
//! What passes here has a well-formed header, tensor data ranges inside the
//! file, and (for the keys it knows) self-consistent hyperparameters. It does
//! not mean that llama.cpp supports the architecture, nor that the weights are
//! sensible; llama.cpp may still refuse such a file, with an error. The file
//! can also change between validation and loading; callers that fear that
//! should validate a private copy.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::path::Path;

mod adapter;
mod error;
mod ggml_type;
mod info;
mod model;
mod parse;
mod value;

pub use adapter::{ADAPTER_TENSOR_TYPES, validate_adapter, validate_adapter_bytes};
pub use error::GgufError;
pub use ggml_type::GgmlType;
pub use info::{GgufInfo, TensorInfo};
pub use model::SPECIAL_TOKEN_KEYS;
pub use value::{ARRAY_ITEMS_KEPT, GgufArray, GgufValue, GgufValueType};

/// Alignment of the data section when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted (1 MiB).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Largest header (metadata + tensor infos) read, in bytes (256 MiB). Real
/// models with 256k-token vocabularies need a few tens of MiB.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;
/// Most metadata key-value pairs accepted (real models have about 50).
pub const MAX_KV: u64 = 1 << 16;
/// Most tensors accepted (large mixture-of-experts models have tens of thousands).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most elements in one metadata array (llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Longest metadata key accepted, in bytes.
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// Longest metadata string accepted, in bytes (64 MiB; chat templates are kilobytes).
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Longest vocabulary entry accepted, in bytes. Real vocabularies stay below
/// a few hundred; llama.cpp aborts only past 2 GiB, but its tokenizer scans
/// up to this length at every position.
pub const MAX_TOKEN_BYTES: u64 = 16 << 10;
/// Smallest vocabulary accepted: with fewer tokens, llama.cpp's default
/// special-token ids point outside the vocabulary.
pub const MIN_VOCAB: u64 = 2;
/// ggml's `GGML_MAX_DIMS`.
pub const GGML_MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME`: tensor names must be shorter than this.
pub const GGML_MAX_NAME: usize = 64;
/// llama.cpp's `LLAMA_MAX_LAYERS`: `block_count` must be in `1..=512`.
pub const LLAMA_MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS`.
pub const LLAMA_MAX_EXPERTS: u64 = 1024;

/// The first read; most headers fit (the default model's is 1.7 MiB).
const FIRST_READ: u64 = 2 << 20;

/// Validate the GGUF file at `path` and describe it.
///
/// Reads only the header, with bounded reads that grow as needed (never the
/// tensor data, never a memory map), so a 100 MiB model validates in a few
/// milliseconds. See the [module docs](self) for what is checked.
///
/// # Errors
///
/// [`GgufError::NotFound`], [`GgufError::NotAFile`] and [`GgufError::Io`] for
/// the path itself; any other variant for a malformed or inconsistent file.
pub fn validate(path: impl AsRef<Path>) -> Result<GgufInfo, GgufError> {
    validate_with(path.as_ref(), |parsed| model::check(&parsed.info, parsed.tokens.as_ref()))
}

/// Read the header of the file at `path` with bounded reads, parse it and
/// run `check` on the result (the model checks, or the adapter checks).
fn validate_with(path: &Path, check: impl Fn(&parse::Parsed) -> Result<(), GgufError>) -> Result<GgufInfo, GgufError> {
    let io_err = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => GgufError::NotFound { path: path.to_owned() },
        _ => GgufError::Io { path: path.to_owned(), source },
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(GgufError::NotAFile { path: path.to_owned() });
    }
    let file = File::open(path).map_err(io_err)?;
    // The size of the file we opened, not of whatever the path named a moment ago.
    let file_size = file.metadata().map_err(io_err)?.len();
    if file_size == 0 {
        return Err(GgufError::Empty);
    }

    let mut buf = Vec::new();
    let mut reader = file;
    let mut want = FIRST_READ.min(file_size).min(MAX_HEADER_BYTES);
    loop {
        let have = buf.len() as u64;
        if want > have {
            // `want` <= MAX_HEADER_BYTES, which fits in usize.
            buf.reserve((want - have) as usize);
            let got = (&mut reader).take(want - have).read_to_end(&mut buf).map_err(io_err)? as u64;
            if got < want - have {
                // The file shrank while we read it.
                return Err(GgufError::Io {
                    path: path.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being read"),
                });
            }
        }
        match parse::parse(&buf, file_size) {
            Ok(parsed) => {
                check(&parsed)?;
                return Ok(parsed.info);
            }
            Err(parse::Stop::Invalid(e)) => return Err(e),
            Err(parse::Stop::NeedMore { upto }) => {
                // Grow geometrically so that the header is parsed O(log n) times.
                want = upto.max(want.saturating_mul(4)).min(file_size).min(MAX_HEADER_BYTES);
            }
        }
    }
}

/// Validate a whole GGUF file held in memory. Same checks as [`validate`];
/// this is the entry point for fuzzing and property tests.
///
/// # Errors
///
/// Any [`GgufError`] variant but the path-related ones.
pub fn validate_bytes(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    validate_bytes_with(bytes, |parsed| model::check(&parsed.info, parsed.tokens.as_ref()))
}

/// [`validate_bytes`] with another `check` (see [`validate_with`]).
fn validate_bytes_with(
    bytes: &[u8],
    check: impl Fn(&parse::Parsed) -> Result<(), GgufError>,
) -> Result<GgufInfo, GgufError> {
    match parse::parse(bytes, bytes.len() as u64) {
        Ok(parsed) => {
            check(&parsed)?;
            Ok(parsed.info)
        }
        Err(parse::Stop::Invalid(e)) => Err(e),
        // Unreachable: the buffer is the whole file, so every read inside the
        // file is inside the buffer. Reported as a truncation rather than a panic.
        Err(parse::Stop::NeedMore { upto }) => Err(GgufError::Truncated {
            what: "header".into(),
            offset: bytes.len() as u64,
            needed: upto.saturating_sub(bytes.len() as u64),
            file_size: bytes.len() as u64,
        }),
    }
}
