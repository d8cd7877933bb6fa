//! llama.cpp's own API: `/`, `/health`, `/completion`, `/tokenize`,
//! `/detokenize`, `/apply-template`, `/embedding`, `/reranking`, `/props`, `/slots`,
//! `/slots/{id}` (save, restore, erase), `/metrics`, with llama.cpp's
//! request and response shapes.

mod completion;
mod embedding;
mod generation_settings;
mod props;
mod rerank;
mod slot_files;
mod slots;
mod status;
mod template;
mod tokenize;

pub(crate) use completion::{completion, infill};
pub(crate) use embedding::embedding;
pub(crate) use props::{props, set_props};
pub use rerank::MAX_RERANK_DOCUMENTS;
pub(crate) use rerank::rerank;
pub(crate) use slot_files::{slot_action, state_key as slot_state_key};
pub(crate) use slots::slots;
pub(crate) use status::{health, index, metrics};
pub(crate) use template::apply_template;
pub(crate) use tokenize::{detokenize, tokenize};
