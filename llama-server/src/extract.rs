//! A JSON body extractor whose errors name the field at fault.
//!
//! axum's own `Json` answers 422 with a plain-text body and needs a
//! `Content-Type` header; llama.cpp's server and OpenAI answer 400 in their
//! JSON error shape and curl users often forget the header. This one reads
//! the body whatever its content type and maps serde's error, with the path
//! from `serde_path_to_error`, to [`AppError::InvalidRequest`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::AppError;

/// The body limit in force, put into request extensions by the router so
/// that a 413 can say what the limit is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Parse `bytes` as a `T`, turning serde's error into a 400 that names the field.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        describe(&path, &inner)
    })?;
    de.end().map_err(|err| describe(".", &err))?;
    Ok(value)
}

fn describe(path: &str, err: &serde_json::Error) -> AppError {
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => AppError::bad_request(format!("invalid JSON body: {err}")),
        Category::Data => {
            let message = strip_position(&err.to_string());
            if path == "." || path.is_empty() {
                // serde reports a missing field at the parent; name the field itself.
                match missing_field(&message) {
                    Some(field) => AppError::invalid(field, format!("missing required field `{field}`")),
                    None => AppError::bad_request(format!("invalid request body: {message}")),
                }
            } else {
                match missing_field(&message) {
                    Some(field) => {
                        let full = format!("{path}.{field}");
                        AppError::invalid(full.clone(), format!("missing required field `{full}`"))
                    }
                    None => AppError::invalid(path, format!("invalid value for `{path}`: {message}")),
                }
            }
        }
    }
}

/// serde_json appends " at line L column C"; for a data error the path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // fields are only read by the deserializer in these tests
    struct Body {
        messages: Vec<Msg>,
        temperature: Option<f32>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
        content: String,
    }

    fn err(json: &str) -> AppError {
        parse::<Body>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let e = err(r#"{"messages":[{"role":"user","content":3}]}"#);
        match e {
            AppError::InvalidRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("messages[0].content"));
                assert!(message.contains("messages[0].content"), "{message}");
                assert!(!message.contains("line 1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_field_is_named() {
        match err(r#"{"temperature":1}"#) {
            AppError::InvalidRequest { param, .. } => assert_eq!(param.as_deref(), Some("messages")),
            other => panic!("{other:?}"),
        }
        match err(r#"{"messages":[{"role":"user"}]}"#) {
            AppError::InvalidRequest { param, .. } => assert_eq!(param.as_deref(), Some("messages[0].content")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_400_without_param() {
        for body in ["", "{", "{\"messages\": [}", "{\"messages\": [", r#"{"messages":[]} trailing"#] {
            match err(body) {
                AppError::InvalidRequest { param: None, message } => assert!(message.contains("JSON"), "{message}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_whitespace_is_fine() {
        let body: Body = parse(b"{\"messages\": []}\n  ").unwrap();
        assert!(body.messages.is_empty());
    }
}
