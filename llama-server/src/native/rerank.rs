//! `POST /reranking` (and `/rerank`, `/v1/rerank`, `/v1/reranking`):
//! llama.cpp's reranking endpoint, on a server started with `--reranking`.
//!
//! Two request shapes, as llama.cpp accepts them: Jina's (`query`,
//! `documents`, `top_n`), answered with
//! `{"model", "object": "list", "usage", "results": [{"index", "relevance_score"}]}`,
//! and Hugging Face TEI's (`query`, `texts`, `return_text`), answered with
//! a bare array `[{"index", "score", "text"?}]`. Results are sorted by
//! score, highest first, and cut to `top_n`. The scores are the
//! reranker's raw outputs (llama.cpp does not squash them either).

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_runtime::{Rejected, RerankScore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::extract::Json;
use crate::state::AppState;

/// Most documents per reranking request.
pub const MAX_RERANK_DOCUMENTS: usize = 256;

/// The request body. Fields are read loosely and checked by hand, so that
/// errors carry llama.cpp's wording.
#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    /// Model name (any name is served by the loaded model).
    pub model: Option<String>,
    /// The query the documents are ranked against.
    pub query: Option<Value>,
    /// The documents (Jina's shape).
    pub documents: Option<Value>,
    /// The documents (TEI's shape); its presence selects TEI's response.
    pub texts: Option<Value>,
    /// How many results to return (default: all).
    pub top_n: Option<Value>,
    /// TEI's shape only: return each document's text with its score.
    pub return_text: Option<Value>,
}

/// Jina's response.
#[derive(Debug, Serialize)]
struct RerankList {
    model: String,
    object: &'static str,
    results: Vec<RerankResult>,
    usage: RerankUsage,
}

/// One document's result in Jina's response.
#[derive(Debug, Serialize)]
struct RerankResult {
    index: usize,
    relevance_score: f64,
}

/// One document's result in TEI's response.
#[derive(Debug, Serialize)]
struct TeiResult<'a> {
    index: usize,
    score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// `usage` of a reranking request: the tokens of every pair's prompt.
#[derive(Debug, Serialize)]
struct RerankUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// What a valid request asks for.
#[derive(Debug, PartialEq)]
struct Parsed {
    query: String,
    documents: Vec<String>,
    /// The field the documents came from (`documents` or `texts`).
    field: &'static str,
    tei: bool,
    top_n: usize,
    return_text: bool,
}

fn parse(req: RerankRequest) -> Result<Parsed, AppError> {
    let query = match req.query {
        None | Some(Value::Null) => return Err(AppError::invalid("query", "\"query\" must be provided")),
        Some(Value::String(q)) => q,
        Some(_) => return Err(AppError::invalid("query", "\"query\" must be a string")),
    };
    // `texts` selects TEI's shape; `documents` wins when both are given.
    let tei = req.texts.is_some();
    let (field, value) = match (req.documents, req.texts) {
        (Some(d), _) => ("documents", d),
        (None, Some(t)) => ("texts", t),
        (None, None) => ("documents", Value::Null),
    };
    let not_strings = || AppError::invalid(field, format!("\"{field}\" must be a non-empty string array"));
    let documents: Vec<String> = match value {
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(not_strings()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(not_strings()),
    };
    if documents.len() > MAX_RERANK_DOCUMENTS {
        return Err(AppError::invalid(
            field,
            format!("at most {MAX_RERANK_DOCUMENTS} documents per request, got {}", documents.len()),
        ));
    }
    let top_n = match req.top_n {
        None | Some(Value::Null) => documents.len(),
        Some(v) => v
            .as_u64()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .ok_or_else(|| AppError::invalid("top_n", "\"top_n\" must be a non-negative integer"))?,
    };
    let return_text = match req.return_text {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(AppError::invalid("return_text", "\"return_text\" must be a boolean")),
    };
    Ok(Parsed { query, documents, field, tei, top_n, return_text })
}

/// The documents' indices, best score first (ties keep the documents'
/// order), cut to `top_n`.
fn ranking(scores: &[RerankScore], top_n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].score.total_cmp(&scores[a].score));
    order.truncate(top_n);
    order
}

/// A refusal of the engine, with the document it concerns.
fn rejected(r: Rejected, field: &str) -> AppError {
    match r {
        Rejected::Input { index, reason } => match *reason {
            Rejected::InputTooLong { n_tokens, limit } => AppError::invalid(
                field,
                format!(
                    "document {index}: the query and the document make {n_tokens} tokens, more than the {limit} \
                     one pair may have (raise --ubatch-size, or --ctx-size per slot)"
                ),
            ),
            other => AppError::from_rejected(Rejected::Input { index, reason: Box::new(other) }, field),
        },
        other => AppError::from_rejected(other, field),
    }
}

/// `POST /reranking` and its aliases.
pub(crate) async fn rerank(
    State(state): State<AppState>,
    Json(req): Json<RerankRequest>,
) -> Result<Response, AppError> {
    if !state.settings().reranking {
        return Err(AppError::from_rejected(Rejected::RerankingDisabled, "query"));
    }
    state.check_model(req.model.as_deref())?;
    let p = parse(req)?;
    let ready = state.ready()?;
    let scores = ready.engine.rerank(&p.query, &p.documents).map_err(|r| rejected(r, p.field))?.await?;
    let order = ranking(&scores, p.top_n);
    if p.tei {
        let body: Vec<TeiResult<'_>> = order
            .iter()
            .map(|&index| TeiResult {
                index,
                score: f64::from(scores[index].score),
                text: p.return_text.then(|| p.documents[index].as_str()),
            })
            .collect();
        return Ok(JsonResponse(body).into_response());
    }
    let n_tokens: u64 = scores.iter().map(|s| u64::from(s.n_tokens)).sum();
    let body = RerankList {
        model: state.model_id(),
        object: "list",
        results: order
            .iter()
            .map(|&index| RerankResult { index, relevance_score: f64::from(scores[index].score) })
            .collect(),
        usage: RerankUsage { prompt_tokens: n_tokens, total_tokens: n_tokens },
    };
    Ok(JsonResponse(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;
    use serde_json::json;

    fn req(body: Value) -> RerankRequest {
        serde_json::from_value(body).unwrap()
    }

    fn message(e: AppError) -> String {
        e.to_string()
    }

    #[test]
    fn requests_parse_like_llama_cpp() {
        let p = parse(req(json!({"query": "q", "documents": ["a", "b"], "top_n": 1}))).unwrap();
        assert_eq!((p.query.as_str(), p.documents.len(), p.top_n, p.tei, p.field), ("q", 2, 1, false, "documents"));
        let p = parse(req(json!({"query": "q", "texts": ["a"], "return_text": true}))).unwrap();
        assert_eq!((p.tei, p.return_text, p.top_n, p.field), (true, true, 1, "texts"));
        for (body, wanted) in [
            (json!({"documents": ["a"]}), "\"query\" must be provided"),
            (json!({"query": 7, "documents": ["a"]}), "\"query\" must be a string"),
            (json!({"query": "q"}), "\"documents\" must be a non-empty string array"),
            (json!({"query": "q", "documents": []}), "\"documents\" must be a non-empty string array"),
            (json!({"query": "q", "documents": "a"}), "\"documents\" must be a non-empty string array"),
            (json!({"query": "q", "documents": ["a", 1]}), "\"documents\" must be a non-empty string array"),
            (json!({"query": "q", "texts": []}), "\"texts\" must be a non-empty string array"),
            (json!({"query": "q", "documents": ["a"], "top_n": -1}), "\"top_n\" must be a non-negative integer"),
            (json!({"query": "q", "documents": ["a"], "top_n": "2"}), "\"top_n\" must be a non-negative integer"),
            (json!({"query": "q", "texts": ["a"], "return_text": "yes"}), "\"return_text\" must be a boolean"),
        ] {
            assert_eq!(message(parse(req(body.clone())).unwrap_err()), wanted, "{body}");
        }
        let many = vec!["d"; MAX_RERANK_DOCUMENTS + 1];
        assert!(message(parse(req(json!({"query": "q", "documents": many}))).unwrap_err()).contains("at most 256"));
    }

    #[test]
    fn ranking_sorts_by_score_keeps_ties_in_order_and_cuts() {
        let s = |score| RerankScore { score, n_tokens: 1 };
        let scores = [s(0.5), s(2.0), s(-1.0), s(2.0)];
        assert_eq!(ranking(&scores, 10), [1, 3, 0, 2]);
        assert_eq!(ranking(&scores, 2), [1, 3]);
        assert!(ranking(&scores, 0).is_empty());
    }

    #[test]
    fn wire_order() {
        assert_wire_order(&RerankList {
            model: "m".into(),
            object: "list",
            results: vec![RerankResult { index: 0, relevance_score: 0.5 }],
            usage: RerankUsage { prompt_tokens: 3, total_tokens: 3 },
        });
        assert_wire_order(&vec![TeiResult { index: 0, score: 0.5, text: Some("t") }]);
    }
}
