//! The GGUF validator of llama-core, compiled on its own for fuzzing: the
//! same source files, without llama.cpp in the instrumented build.
#![forbid(unsafe_code)]

#[path = "../../src"]
mod llama_core_src {
    pub mod gguf;
}

pub use llama_core_src::gguf;
