//! llama.rs's parsers of outside input, compiled on their own for fuzzing:
//! the same source files as the crates they belong to, without llama.cpp
//! (and its CMake build) in the instrumented build.
//!
//! - `gguf`: llama-core's GGUF validator (`llama-core/src/gguf.rs`, `gguf/`),
//!   LoRA adapter files included;
//! - `json_schema`: llama-core's JSON schema → GBNF converter
//!   (`llama-core/src/json_schema.rs`, used by the server and the CLI);
//! - `gbnf`: llama-core's GBNF parser (`llama-core/src/gbnf.rs`, `gbnf/`);
//! - `chat`: llama-core's chat templates (`llama-core/src/chat.rs`) with the
//!   error type they return (`error.rs`); `ChatTemplate::for_model`, the one
//!   function that needs a loaded model, compiles against a stand-in [`Model`]
//!   that is never called here.
//!
//! The body of every fuzz target is a plain function in [`targets`], so that
//! it can be replayed without libFuzzer: the workspace's tests
//! (`llama-core/tests/fuzz_corpus_replay.rs`, `llama-server/tests/fuzz_corpus_replay.rs`)
//! include the same files by `#[path]` and run them over the committed corpora.
#![forbid(unsafe_code)]

#[path = "../../src"]
mod llama_core_src {
    pub mod chat;
    pub mod error;
    pub mod gbnf;
    pub mod gguf;
    pub mod json_schema;
}

pub use llama_core_src::chat;
pub use llama_core_src::error::{Error, Result};
pub use llama_core_src::gbnf;
pub use llama_core_src::gguf;
pub use llama_core_src::json_schema;
pub use model_stand_in::{Model, builtin_chat_templates};

/// What `chat.rs` calls `crate::model` (llama.cpp's built-in chat formats).
mod model {
    pub(crate) use crate::model_stand_in::apply_builtin_chat_template;
}

/// A token id (as in llama-core).
pub type Token = i32;
/// A position in a sequence (as in llama-core).
pub type Pos = i32;
/// A sequence id (as in llama-core).
pub type SeqId = i32;

/// What `chat.rs` needs of llama-core's `Model` to compile. Nothing here
/// calls it: the fuzz targets build templates from their source text.
mod model_stand_in {
    use crate::{Result, Token};

    /// Stands in for `llama_core::Model`: a model without a chat template.
    #[derive(Debug, Default)]
    pub struct Model {
        vocab: Vocab,
    }

    /// Stands in for `llama_core::Vocab`.
    #[derive(Debug, Default)]
    pub struct Vocab;

    impl Model {
        /// No template.
        pub fn chat_template(&self) -> Option<String> {
            None
        }

        /// The vocabulary.
        pub fn vocab(&self) -> &Vocab {
            &self.vocab
        }
    }

    /// Stands in for `llama_core::builtin_chat_templates`: no built-in
    /// formats without llama.cpp.
    pub fn builtin_chat_templates() -> Vec<String> {
        Vec::new()
    }

    /// Stands in for llama.cpp's built-in formatter: it knows no format.
    pub(crate) fn apply_builtin_chat_template(
        _template: &str,
        _messages: &[(&str, &str)],
        _add_generation_prompt: bool,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    impl Vocab {
        /// Empty pieces.
        pub fn token_to_piece(&self, _token: Token, _special: bool) -> Result<Vec<u8>> {
            Ok(Vec::new())
        }

        /// No BOS.
        pub fn bos(&self) -> Option<Token> {
            None
        }

        /// No EOS.
        pub fn eos(&self) -> Option<Token> {
            None
        }
    }
}

/// The fuzz targets' bodies, one function per target (each file is also
/// compiled into the workspace's corpus-replay tests).
pub mod targets {
    pub mod chat_template;
    pub mod gbnf_parse;
    pub mod gguf_adapter;
    pub mod gguf_validate;
    pub mod json_schema;
}

pub mod replay;

pub use targets::chat_template::chat_template;
pub use targets::gbnf_parse::gbnf_parse;
pub use targets::gguf_adapter::gguf_adapter;
pub use targets::gguf_validate::gguf_validate;
pub use targets::json_schema::json_schema;

/// The committed corpora through the target functions. Under `make miri`,
/// `FUZZ_REPLAY_SAMPLE=n` takes n evenly spaced inputs of each target.
#[cfg(test)]
mod corpus_replay {
    use std::path::{Path, PathBuf};

    use crate::replay::{inputs, replay_files};

    fn sample(target: &str) -> Vec<PathBuf> {
        let files = inputs(Path::new(env!("CARGO_MANIFEST_DIR")), target);
        let n = std::env::var("FUZZ_REPLAY_SAMPLE").ok().and_then(|v| v.parse::<usize>().ok());
        match n {
            Some(n) if n < files.len() => (0..n).map(|i| files[i * files.len() / n].clone()).collect(),
            _ => files,
        }
    }

    #[test]
    fn gguf_validate() {
        replay_files("gguf_validate", &sample("gguf_validate"), crate::gguf_validate);
    }

    #[test]
    fn gguf_adapter() {
        assert!(replay_files("gguf_adapter", &sample("gguf_adapter"), crate::gguf_adapter) > 0);
    }

    #[test]
    fn json_schema() {
        assert!(replay_files("json_schema", &sample("json_schema"), crate::json_schema) > 0);
    }

    #[test]
    fn gbnf_parse() {
        assert!(replay_files("gbnf_parse", &sample("gbnf_parse"), crate::gbnf_parse) > 0);
    }

    /// Under Miri, only inputs that render through the known templates
    /// (hostile messages): a hostile template may run 5 million fuel steps.
    #[test]
    fn chat_template() {
        let mut files = sample("chat_template");
        if cfg!(miri) {
            files.retain(|f| std::fs::read(f).is_ok_and(|d| d.first().is_some_and(|b| (b >> 1) & 3 != 0)));
        }
        assert!(replay_files("chat_template", &files, crate::chat_template) > 0);
    }
}
