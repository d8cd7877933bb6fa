//! The one error type of the HTTP layer, rendered in the OpenAI error shape
//! with llama.cpp's `type` strings and the HTTP status as numeric `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llama_runtime::{CoreError, EngineError, Rejected, SlotError};
use serde_json::{Value, json};

/// Everything a request can fail with. Internal details are logged, never
/// sent to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Malformed or out-of-range input (400 `invalid_request_error`).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, for the client.
        message: String,
        /// The offending request field, when one is to blame.
        param: Option<String>,
    },
    /// The prompt does not fit in a slot's context (400 `exceed_context_size_error`).
    #[error("the request exceeds the available context size: {n_prompt_tokens} prompt tokens, {n_ctx} per slot")]
    ContextExceeded {
        /// Tokens in the prompt.
        n_prompt_tokens: u32,
        /// Context size of one slot.
        n_ctx: u32,
    },
    /// Missing or wrong API key (401 `authentication_error`).
    #[error("Invalid API Key")]
    Unauthorized,
    /// Refused by policy, e.g. a `Host` that is not allowed (403 `permission_error`).
    #[error("{0}")]
    Forbidden(String),
    /// No such route or model (404 `not_found_error`).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (405 `invalid_request_error`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request took longer than `--timeout` (408 `timeout_error`).
    #[error("{0}")]
    Timeout(String),
    /// The request cannot be served in the current state of its target,
    /// e.g. a slot operation on a slot that is busy with a request (409
    /// `invalid_request_error`).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than `--max-body` (413 `invalid_request_error`).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A feature this server does not offer or that is switched off (501 `not_supported_error`).
    #[error("{0}")]
    NotSupported(String),
    /// Temporarily unable to serve: loading, overloaded, shutting down (503 `unavailable_error`).
    #[error("{message}")]
    Unavailable {
        /// What is going on.
        message: String,
        /// Seconds after which a retry makes sense (`Retry-After`).
        retry_after: Option<u32>,
    },
    /// A bug or an engine failure (500 `server_error`); the detail is only logged.
    #[error("internal server error")]
    Internal(String),
}

impl AppError {
    /// A 400 naming the field at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::InvalidRequest { message: message.into(), param: Some(param.into()) }
    }

    /// This error naming `param` when it is a 400 that names no field yet
    /// (a tokenizer error, for example, knows no field; its caller does).
    pub fn with_param(self, param: &str) -> Self {
        match self {
            AppError::InvalidRequest { message, param: None } => {
                AppError::InvalidRequest { message, param: Some(param.to_owned()) }
            }
            other => other,
        }
    }

    /// A 400 with no single field to blame.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::InvalidRequest { message: message.into(), param: None }
    }

    /// A 503 with a `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: Option<u32>) -> Self {
        AppError::Unavailable { message: message.into(), retry_after }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidRequest { .. } | AppError::ContextExceeded { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// llama.cpp's `type` string for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            AppError::InvalidRequest { .. }
            | AppError::MethodNotAllowed
            | AppError::Conflict(_)
            | AppError::PayloadTooLarge { .. } => "invalid_request_error",
            AppError::ContextExceeded { .. } => "exceed_context_size_error",
            AppError::Unauthorized => "authentication_error",
            AppError::Forbidden(_) => "permission_error",
            AppError::NotFound(_) => "not_found_error",
            AppError::Timeout(_) => "timeout_error",
            AppError::NotSupported(_) => "not_supported_error",
            AppError::Unavailable { .. } => "unavailable_error",
            AppError::Internal(_) => "server_error",
        }
    }

    /// The JSON body: `{"error": {"code", "message", "type", ...}}`.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "code": self.status().as_u16(),
            "message": self.to_string(),
            "type": self.error_type(),
        });
        match self {
            AppError::InvalidRequest { param: Some(param), .. } => error["param"] = json!(param),
            AppError::ContextExceeded { n_prompt_tokens, n_ctx } => {
                error["n_prompt_tokens"] = json!(n_prompt_tokens);
                error["n_ctx"] = json!(n_ctx);
            }
            _ => {}
        }
        json!({ "error": error })
    }

    /// The error as one SSE `data:` payload, for failures after a stream began.
    pub fn sse_payload(&self) -> String {
        self.body().to_string()
    }

    /// Build the error that matches an HTTP status, for responses produced
    /// by middleware (body limit, timeout, routing) that carry no JSON body.
    pub fn from_status(status: StatusCode, max_body: usize) -> Self {
        match status {
            StatusCode::BAD_REQUEST => AppError::bad_request("bad request"),
            StatusCode::UNAUTHORIZED => AppError::Unauthorized,
            StatusCode::FORBIDDEN => AppError::Forbidden("forbidden".into()),
            StatusCode::NOT_FOUND => AppError::NotFound("File Not Found".into()),
            StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => AppError::Timeout("request timed out".into()),
            StatusCode::CONFLICT => AppError::Conflict("conflict".into()),
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: max_body },
            StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
                AppError::bad_request(status.canonical_reason().unwrap_or("bad request").to_string())
            }
            StatusCode::NOT_IMPLEMENTED => AppError::NotSupported("not supported".into()),
            StatusCode::SERVICE_UNAVAILABLE => AppError::unavailable("service unavailable", Some(1)),
            s if s.is_client_error() => {
                AppError::bad_request(s.canonical_reason().unwrap_or("bad request").to_string())
            }
            _ => AppError::Internal(format!("status {status}")),
        }
    }
}

/// `Retry-After` of a 503 that has no better estimate.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 5;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        // Every 503 says when to come back; without a specific estimate
        // (shutting down, engine stopped) clients wait a little longer.
        if let AppError::Unavailable { retry_after, .. } = &self {
            let secs = retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl AppError {
    /// The HTTP error for a llama-core error (bad parameters, grammar,
    /// template, tokens are the client's fault; the rest is internal).
    pub fn from_core(err: &llama_core::Error) -> Self {
        use llama_core::Error as E;
        match err {
            E::InvalidParam { name, reason } => {
                AppError::invalid(*name, format!("invalid value for `{name}`: {reason}"))
            }
            E::TokenOutOfVocab { token, n_vocab } => {
                AppError::bad_request(format!("token id {token} is outside the vocabulary (0..{n_vocab})"))
            }
            E::Tokenize(msg) => AppError::bad_request(format!("tokenization failed: {msg}")),
            E::Grammar(msg) => AppError::invalid("grammar", format!("invalid grammar: {msg}")),
            E::Template(msg) => AppError::bad_request(format!("chat template error: {msg}")),
            E::NoChatTemplate => {
                AppError::NotSupported("the model has no chat template; start the server with --chat-template".into())
            }
            other => AppError::Internal(other.to_string()),
        }
    }

    /// The HTTP error for a refused submit or embedding call; prompt
    /// problems name `prompt_param` (`prompt`, `messages`, `input`, ...).
    pub fn from_rejected(r: Rejected, prompt_param: &str) -> Self {
        match r {
            Rejected::Overloaded { queue_capacity } => AppError::unavailable(
                format!("the server is busy: {queue_capacity} requests are already waiting; retry later"),
                Some(1),
            ),
            Rejected::ShuttingDown => AppError::unavailable("the server is shutting down", None),
            Rejected::EmbeddingsDisabled => {
                AppError::NotSupported("this server does not serve embeddings; start it with --embeddings".into())
            }
            Rejected::RerankingOnly => AppError::NotSupported(
                "this server was started with --reranking: its model ranks documents (POST /rerank) and does not \
                 serve embeddings"
                    .into(),
            ),
            Rejected::CannotGenerate => AppError::NotSupported(
                "this model cannot generate text: its attention is not causal (an embedding or reranking model)".into(),
            ),
            Rejected::RerankingDisabled => {
                AppError::NotSupported("This server does not support reranking. Start it with `--reranking`".into())
            }
            Rejected::PromptTooLong { n_prompt, n_ctx } => {
                AppError::ContextExceeded { n_prompt_tokens: n_prompt, n_ctx }
            }
            Rejected::EmptyPrompt => AppError::invalid(prompt_param, "the prompt is empty"),
            Rejected::InvalidToken { token, n_vocab } => {
                AppError::invalid(prompt_param, format!("token id {token} is outside the vocabulary (0..{n_vocab})"))
            }
            Rejected::Tokenize(e) => AppError::invalid(prompt_param, e.to_string()),
            Rejected::Invalid(e) => AppError::from_core(e.get()),
            Rejected::Input { index, reason } => match AppError::from_rejected(*reason, prompt_param) {
                AppError::InvalidRequest { message, param } => {
                    AppError::InvalidRequest { message: format!("input {index}: {message}"), param }
                }
                other => other,
            },
            other => AppError::bad_request(other.to_string()),
        }
    }
}

impl From<llama_core::Error> for AppError {
    fn from(err: llama_core::Error) -> Self {
        AppError::from_core(&err)
    }
}

impl From<CoreError> for AppError {
    fn from(err: CoreError) -> Self {
        AppError::from_core(err.get())
    }
}

impl From<Rejected> for AppError {
    fn from(r: Rejected) -> Self {
        AppError::from_rejected(r, "prompt")
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Cancelled => AppError::unavailable("the request was cancelled", None),
            EngineError::DeadlineExceeded => {
                AppError::Timeout("the request took longer than the server's time limit (--timeout)".into())
            }
            EngineError::ShuttingDown => AppError::unavailable("the server is shutting down", None),
            EngineError::SlowConsumer { timeout } => {
                AppError::Timeout(format!("the client did not read the response for {} s", timeout.as_secs()))
            }
            // The request's grammar (or schema) cannot be completed with this model's tokens.
            EngineError::Constraint(reason) => AppError::bad_request(format!(
                "the grammar (or JSON schema) allows no token of this model at this point of the output: {reason}"
            )),
            EngineError::KvCacheFull => {
                AppError::unavailable("the KV cache is full; retry with fewer requests in flight", Some(1))
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<SlotError> for AppError {
    fn from(e: SlotError) -> Self {
        match e {
            // llama.cpp's words for a slot id it does not have.
            SlotError::NoSuchSlot { .. } => AppError::bad_request(format!("Invalid slot ID: {e}")),
            SlotError::Busy { .. } => AppError::Conflict(format!("{e}; retry when its request has finished")),
            SlotError::InvalidState(_) => AppError::bad_request(format!("Invalid slot save file: {e}")),
            SlotError::Overloaded { .. } => AppError::unavailable(e.to_string(), Some(1)),
            SlotError::ShuttingDown => AppError::unavailable("the server is shutting down", None),
            other => AppError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_has_code_message_type() {
        let body = AppError::invalid("messages", "`messages` must not be empty").body();
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "messages");
        assert_eq!(body["error"]["message"], "`messages` must not be empty");
    }

    #[test]
    fn context_exceeded_carries_counts() {
        let body = AppError::ContextExceeded { n_prompt_tokens: 900, n_ctx: 512 }.body();
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["type"], "exceed_context_size_error");
        assert_eq!(body["error"]["n_prompt_tokens"], 900);
        assert_eq!(body["error"]["n_ctx"], 512);
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let resp = AppError::unavailable("server is busy", Some(2)).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let body = AppError::Internal("secret path /root/x".into()).body();
        assert_eq!(body["error"]["message"], "internal server error");
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], 500);
    }

    #[test]
    fn runtime_errors_convert() {
        use std::time::Duration;
        assert_eq!(
            AppError::from(Rejected::Overloaded { queue_capacity: 2 }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let e = AppError::from(Rejected::PromptTooLong { n_prompt: 10, n_ctx: 5 });
        assert_eq!(e.error_type(), "exceed_context_size_error");
        assert_eq!(AppError::from_rejected(Rejected::EmptyPrompt, "messages").body()["error"]["param"], "messages");
        let bad_temp: CoreError = llama_core::Error::InvalidParam { name: "temperature", reason: "NaN".into() }.into();
        let e = AppError::from(Rejected::Invalid(bad_temp));
        assert_eq!(e.body()["error"]["param"], "temperature");
        let input = Rejected::Input { index: 2, reason: Box::new(Rejected::EmptyPrompt) };
        assert_eq!(AppError::from_rejected(input, "input").to_string(), "input 2: the prompt is empty");
        assert_eq!(AppError::from(EngineError::DeadlineExceeded).status(), StatusCode::REQUEST_TIMEOUT);
        let slow = EngineError::SlowConsumer { timeout: Duration::from_secs(3) };
        assert_eq!(AppError::from(slow).status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(AppError::from(EngineError::Internal("x".into())).status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(AppError::from(EngineError::Constraint("x".into())).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn statuses_map_to_llama_cpp_types() {
        for (status, ty) in [
            (StatusCode::UNAUTHORIZED, "authentication_error"),
            (StatusCode::NOT_FOUND, "not_found_error"),
            (StatusCode::CONFLICT, "invalid_request_error"),
            (StatusCode::NOT_IMPLEMENTED, "not_supported_error"),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error"),
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        ] {
            let err = AppError::from_status(status, 10);
            assert_eq!(err.status(), status);
            assert_eq!(err.error_type(), ty);
        }
    }
}
