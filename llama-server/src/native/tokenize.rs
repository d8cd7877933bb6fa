//! `POST /tokenize` and `POST /detokenize`: text to token ids and back,
//! with the model's tokenizer.

use std::sync::Arc;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_core::Token;
use serde::{Deserialize, Serialize};

use crate::blocking::maybe_blocking;
use crate::error::AppError;
use crate::extract::Json;
use crate::state::AppState;

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// The text.
    pub content: String,
    /// Add BOS/EOS as the model wants (default false).
    pub add_special: Option<bool>,
    /// Turn special-token text into special tokens (default true).
    pub parse_special: Option<bool>,
    /// Return `{id, piece}` objects instead of ids.
    pub with_pieces: Option<bool>,
}

/// The `/tokenize` body: ids, or `{id, piece}` objects.
#[derive(Debug, Serialize)]
struct Tokens<T> {
    tokens: Vec<T>,
}

/// A token with its piece.
#[derive(Debug, Serialize)]
struct WithPiece {
    id: Token,
    piece: PieceText,
}

/// A piece as text when it is valid UTF-8, else as its bytes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum PieceText {
    Text(String),
    Bytes(Vec<u8>),
}

/// `POST /tokenize`
pub(crate) async fn tokenize(
    State(state): State<AppState>,
    Json(req): Json<TokenizeRequest>,
) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let (add, parse) = (req.add_special.unwrap_or(false), req.parse_special.unwrap_or(true));
    let content = req.content;
    let engine = Arc::clone(&ready.engine);
    let tokens = maybe_blocking(content.len(), move || engine.model().tokenize(&content, add, parse))
        .await?
        .map_err(|e| AppError::from(e).with_param("content"))?;
    if !req.with_pieces.unwrap_or(false) {
        return Ok(JsonResponse(Tokens { tokens }).into_response());
    }
    let model = ready.model();
    let tokens = tokens
        .into_iter()
        .map(|id| {
            let piece = match String::from_utf8(model.token_piece(id)) {
                Ok(s) => PieceText::Text(s),
                Err(e) => PieceText::Bytes(e.into_bytes()),
            };
            WithPiece { id, piece }
        })
        .collect();
    Ok(JsonResponse(Tokens::<WithPiece> { tokens }).into_response())
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<i64>,
}

/// The `/detokenize` body.
#[derive(Debug, Serialize)]
struct Detokenized {
    content: String,
}

/// `POST /detokenize`
pub(crate) async fn detokenize(
    State(state): State<AppState>,
    Json(req): Json<DetokenizeRequest>,
) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let n_vocab = ready.model().info().n_vocab;
    let tokens: Vec<Token> = req
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if (0..n_vocab as i64).contains(&t) {
                Ok(t as Token)
            } else {
                Err(AppError::invalid(
                    format!("tokens[{i}]"),
                    format!("token id {t} is outside the vocabulary (0..{n_vocab})"),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let engine = Arc::clone(&ready.engine);
    let content = maybe_blocking(tokens.len() * 4, move || engine.model().detokenize(&tokens, false, true)).await??;
    Ok(JsonResponse(Detokenized { content }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        assert_wire_order(&Tokens { tokens: vec![1, 2] });
        let pieces = vec![
            WithPiece { id: 1, piece: PieceText::Text("a".into()) },
            WithPiece { id: 2, piece: PieceText::Bytes(vec![0xe2, 0x82]) },
        ];
        assert_wire_order(&Tokens { tokens: pieces });
        assert_wire_order(&Detokenized { content: "x".into() });
    }
}
