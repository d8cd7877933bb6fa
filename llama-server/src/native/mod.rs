//! llama.cpp's own API: `/`, `/health`, `/completion`, `/tokenize`,
//! `/detokenize`, `/apply-template`, `/embedding`, `/props`, `/slots`,
//! `/metrics`, with llama.cpp's request and response shapes.

mod completion;
mod embedding;
mod generation_settings;
mod props;
mod slots;
mod status;
mod template;
mod tokenize;

pub(crate) use completion::{completion, infill};
pub(crate) use embedding::embedding;
pub(crate) use props::{props, set_props};
pub(crate) use slots::slots;
pub(crate) use status::{health, index, metrics};
pub(crate) use template::apply_template;
pub(crate) use tokenize::{detokenize, tokenize};
