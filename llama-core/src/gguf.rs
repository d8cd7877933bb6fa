//! GGUF validation in safe Rust (being written).

/// Why a GGUF file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Placeholder until the validator lands.
    #[error("placeholder")]
    Placeholder,
}
