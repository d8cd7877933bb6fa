//! `GET /`, `GET /health` and `GET /metrics`: what this server is, whether
//! it serves, and how it has been doing.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::AppError;
use crate::metrics;
use crate::state::AppState;

/// The `/` body.
#[derive(Debug, Serialize)]
struct Index {
    model: String,
    name: &'static str,
    openapi: &'static str,
    version: &'static str,
}

/// The `/health` body.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

/// `GET /health`: 200 `{"status":"ok"}` when serving; 503 while loading or
/// when the engine is stalled or stopped.
pub(crate) async fn health(State(state): State<AppState>) -> Result<Response, AppError> {
    state.health()?;
    Ok(Json(Health { status: "ok" }).into_response())
}

/// `GET /`: there is no web UI; say where the API is described.
pub(crate) async fn index(State(state): State<AppState>) -> Response {
    Json(Index {
        model: state.model_id(),
        name: "llama-server (llama.rs)",
        openapi: "/openapi.json",
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

/// `GET /metrics` (Prometheus text; needs `--metrics`).
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    if !state.settings().metrics {
        return Err(AppError::NotSupported(
            "This server does not support metrics endpoint. Start it with `--metrics`".into(),
        ));
    }
    let ready = state.ready()?;
    let text = metrics::render(&ready.engine.metrics(), &ready.stats);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        assert_wire_order(&Index { model: "m".into(), name: "n", openapi: "/o", version: "v" });
        assert_wire_order(&Health { status: "ok" });
    }
}
