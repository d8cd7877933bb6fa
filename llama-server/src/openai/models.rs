//! `GET /v1/models` (and `/models`): the one model this server serves.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::{AppState, Phase};

/// The `/v1/models` body.
#[derive(Debug, Serialize)]
struct ModelList {
    data: Vec<ModelEntry>,
    object: &'static str,
}

/// The served model.
#[derive(Debug, Serialize)]
struct ModelEntry {
    created: u64,
    id: String,
    /// llama.cpp's extension; `null` while the model loads.
    meta: Option<ModelMeta>,
    object: &'static str,
    owned_by: &'static str,
}

/// Facts about the loaded model, as llama.cpp reports them.
#[derive(Debug, Serialize)]
struct ModelMeta {
    n_ctx_train: u32,
    n_embd: u32,
    n_params: u64,
    n_vocab: i32,
    size: u64,
    /// llama.cpp's `LLAMA_VOCAB_TYPE_BPE`, which it reports whatever the vocabulary.
    vocab_type: u32,
}

/// `GET /v1/models`
pub(crate) async fn models(State(state): State<AppState>) -> Response {
    let meta = match state.phase() {
        Phase::Ready(r) => {
            let info = r.model().info();
            Some(ModelMeta {
                n_ctx_train: info.n_ctx_train,
                n_embd: info.n_embd,
                n_params: info.n_params,
                n_vocab: info.n_vocab,
                size: info.size_bytes,
                vocab_type: 2,
            })
        }
        _ => None,
    };
    let model =
        ModelEntry { created: state.created(), id: state.model_id(), meta, object: "model", owned_by: "llamars" };
    Json(ModelList { data: vec![model], object: "list" }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        let meta = ModelMeta { n_ctx_train: 1, n_embd: 2, n_params: 3, n_vocab: 4, size: 5, vocab_type: 2 };
        for meta in [Some(meta), None] {
            let entry = ModelEntry { created: 1, id: "m".into(), meta, object: "model", owned_by: "llamars" };
            assert_wire_order(&ModelList { data: vec![entry], object: "list" });
        }
    }
}
