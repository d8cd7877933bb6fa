//! `POST /embedding` (and `/embeddings`): llama.cpp's embeddings, each
//! `{"index", "embedding": [[...]]}`, optionally not normalized.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::extract::Json;
use crate::openai::embeddings::{Vector, embedding_inputs};
use crate::state::AppState;

/// `POST /embedding` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// The text(s) or token ids.
    pub content: Option<Value>,
    /// Synonym of `content`.
    pub input: Option<Value>,
    /// 2 = Euclidean (default), -1 = none; other norms are not supported.
    pub embd_normalize: Option<i64>,
}

/// One input's embedding.
#[derive(Debug, Serialize)]
struct NativeEmbedding<'a> {
    /// One vector per input (llama.cpp nests it: one per token without pooling).
    embedding: [Vector<'a>; 1],
    index: usize,
}

/// `POST /embedding` (and `/embeddings`): `[{"index", "embedding": [[...]]}]`.
pub(crate) async fn embedding(
    State(state): State<AppState>,
    Json(req): Json<EmbeddingRequest>,
) -> Result<Response, AppError> {
    if !state.settings().embeddings {
        return Err(AppError::NotSupported("this server does not serve embeddings; start it with --embeddings".into()));
    }
    let normalize = match req.embd_normalize {
        None | Some(2) => true,
        Some(-1) => false,
        Some(other) => {
            return Err(AppError::invalid(
                "embd_normalize",
                format!("embd_normalize {other} is not supported (2 = Euclidean, -1 = none)"),
            ));
        }
    };
    let ready = state.ready()?;
    // `input` is read when `content` is absent; errors name the field given.
    let (value, param) = match (&req.content, &req.input) {
        (None, Some(input)) => (Some(input), "input"),
        (content, _) => (content.as_ref(), "content"),
    };
    let inputs = embedding_inputs(value, param, &ready)?;
    let result = ready.engine.embed(inputs, normalize).map_err(|r| AppError::from_rejected(r, param))?.await?;
    let body: Vec<NativeEmbedding<'_>> =
        result.iter().enumerate().map(|(index, e)| NativeEmbedding { embedding: [Vector(&e.vector)], index }).collect();
    Ok(JsonResponse(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        let v = [0.25f32, 0.1];
        assert_wire_order(&vec![NativeEmbedding { embedding: [Vector(&v)], index: 0 }]);
    }
}
