//! `GET /openapi.json`: the OpenAPI 3.1 description of this server's API,
//! kept by hand in `docs/openapi.json` and checked against the router and
//! real responses by the tests.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
