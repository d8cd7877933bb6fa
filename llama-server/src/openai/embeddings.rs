//! `POST /v1/embeddings`, the inputs it shares with llama.cpp's
//! `/embedding`, and vectors as floats or base64.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use llama_runtime::Prompt;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::extract::Json;
use crate::prompt::parse_prompts;
use crate::state::{AppState, Ready};

/// Most inputs per embeddings request.
pub const MAX_EMBED_INPUTS: usize = 256;

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: Option<String>,
    /// A string, an array of strings, an array of token ids, or an array of token arrays.
    pub input: Option<Value>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    /// Must equal the model's embedding size when given.
    pub dimensions: Option<u32>,
}

/// The `/v1/embeddings` body.
#[derive(Debug, Serialize)]
struct EmbeddingList<'a> {
    data: Vec<EmbeddingData<'a>>,
    model: String,
    object: &'static str,
    usage: EmbeddingUsage,
}

/// One input's embedding.
#[derive(Debug, Serialize)]
struct EmbeddingData<'a> {
    embedding: Encoded<'a>,
    index: usize,
    object: &'static str,
}

/// A vector as `encoding_format` asks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Encoded<'a> {
    Float(Vector<'a>),
    Base64(String),
}

/// `usage` of an embeddings request.
#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// An embedding vector, written as an array of f64: each f32 widened, as
/// the server has always written them (`0.1f32` as `0.10000000149011612`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vector<'a>(pub &'a [f32]);

impl Serialize for Vector<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for &x in self.0 {
            seq.serialize_element(&f64::from(x))?;
        }
        seq.end()
    }
}

/// Little-endian f32 bytes, base64-encoded (what OpenAI's `encoding_format: base64` returns).
fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

/// Parse embedding inputs (`param` names the field) into runtime prompts.
pub(crate) fn embedding_inputs(value: Option<&Value>, param: &str, ready: &Ready) -> Result<Vec<Prompt>, AppError> {
    let value = value.ok_or_else(|| AppError::invalid(param, format!("missing required field `{param}`")))?;
    let prompts = parse_prompts(value, param, true, MAX_EMBED_INPUTS)?;
    prompts.iter().map(|p| p.to_prompt(ready, param)).collect()
}

/// `POST /v1/embeddings`
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Json(req): Json<EmbeddingsRequest>,
) -> Result<Response, AppError> {
    state.check_model(req.model.as_deref())?;
    if !state.settings().embeddings {
        return Err(AppError::NotSupported("this server does not serve embeddings; start it with --embeddings".into()));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(AppError::invalid(
                "encoding_format",
                format!("unknown encoding_format {other:?} (float or base64)"),
            ));
        }
    };
    let ready = state.ready()?;
    if let Some(d) = req.dimensions
        && d != ready.model().info().n_embd
    {
        return Err(AppError::invalid(
            "dimensions",
            format!("this model's embeddings have {} dimensions", ready.model().info().n_embd),
        ));
    }
    let inputs = embedding_inputs(req.input.as_ref(), "input", &ready)?;
    let result = ready.engine.embed(inputs, true).map_err(|r| AppError::from_rejected(r, "input"))?.await?;
    let n_tokens: u64 = result.iter().map(|e| u64::from(e.n_tokens)).sum();
    let data = result
        .iter()
        .enumerate()
        .map(|(index, e)| EmbeddingData {
            embedding: if base64 { Encoded::Base64(base64_f32(&e.vector)) } else { Encoded::Float(Vector(&e.vector)) },
            index,
            object: "embedding",
        })
        .collect();
    let body = EmbeddingList {
        data,
        model: state.model_id(),
        object: "list",
        usage: EmbeddingUsage { prompt_tokens: n_tokens, total_tokens: n_tokens },
    };
    Ok(JsonResponse(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn base64_matches_known_vectors() {
        // 1.0f32 = 00 00 80 3f ; 2.0f32 = 00 00 00 40
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
        // RFC 4648 section 10, as little-endian bytes of three floats.
        let bytes = *b"foobar\0\0\0\0\0\0";
        let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(base64_f32(&floats), "Zm9vYmFyAAAAAAAA");
    }

    #[test]
    fn vectors_are_written_widened_like_before() {
        let v = [0.1f32, -2.5, f32::NAN];
        assert_eq!(serde_json::to_string(&Vector(&v)).unwrap(), serde_json::json!(v).to_string());
        assert_eq!(serde_json::to_string(&Vector(&v)).unwrap(), "[0.10000000149011612,-2.5,null]");
    }

    #[test]
    fn wire_order() {
        let v = [0.5f32];
        for embedding in [Encoded::Float(Vector(&v)), Encoded::Base64(base64_f32(&v))] {
            assert_wire_order(&EmbeddingList {
                data: vec![EmbeddingData { embedding, index: 0, object: "embedding" }],
                model: "m".into(),
                object: "list",
                usage: EmbeddingUsage { prompt_tokens: 1, total_tokens: 1 },
            });
        }
    }
}
