//! What llama-core's integration tests share: the default model, found
//! and loaded once per test binary.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use llama_core::{Model, ModelParams};

/// The default model, fetched by `make setup` into `models/`.
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The default model with its weights, loaded once per test binary.
pub fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| load(&ModelParams::default())).clone()
}

/// The default model's vocabulary only (no weights), loaded once.
pub fn vocab_model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| load(&ModelParams { vocab_only: true, ..ModelParams::default() })).clone()
}

fn load(params: &ModelParams) -> Arc<Model> {
    Arc::new(Model::load(model_path(), params).expect("the default model loads (run `make setup`)"))
}
