//! `response_format`: output constrained to JSON, or to a JSON schema,
//! through a grammar.

use llama_core::json_schema::{self, OrderedJson};
use serde::Deserialize;

use crate::error::AppError;

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `json_schema`: `{name, schema, strict}`.
    pub json_schema: Option<JsonSchemaFormat>,
    /// llama.cpp extension: a schema directly under `response_format`.
    pub schema: Option<OrderedJson>,
}

/// `response_format.json_schema` (`name` and `strict` are accepted and
/// ignored: output is always constrained exactly).
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema.
    pub schema: Option<OrderedJson>,
}

/// A grammar for `response_format`, if it asks for JSON.
pub(crate) fn response_format_grammar(rf: Option<&ResponseFormat>) -> Result<Option<String>, AppError> {
    let Some(rf) = rf else { return Ok(None) };
    let convert = |s: &OrderedJson| {
        json_schema::json_schema_to_gbnf(s).map_err(|e| AppError::invalid("response_format", e.to_string()))
    };
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => match &rf.schema {
            Some(schema) => convert(schema).map(Some),
            None => Ok(Some(json_schema::json_object_grammar())),
        },
        "json_schema" => {
            let schema =
                rf.json_schema.as_ref().and_then(|j| j.schema.as_ref()).or(rf.schema.as_ref()).ok_or_else(|| {
                    AppError::invalid("response_format", "`response_format.json_schema.schema` is required")
                })?;
            convert(schema).map(Some)
        }
        other => Err(AppError::invalid(
            "response_format",
            format!("unknown response_format type {other:?} (expected text, json_object or json_schema)"),
        )),
    }
}

/// The JSON schema `response_format` asks the output to follow (any
/// object for `json_object`), for a grammar that also takes tool calls.
pub(crate) fn response_format_schema(rf: Option<&ResponseFormat>) -> Option<OrderedJson> {
    let rf = rf?;
    match rf.kind.as_str() {
        "json_object" => Some(
            rf.schema
                .clone()
                .unwrap_or_else(|| OrderedJson::Object(vec![("type".into(), OrderedJson::String("object".into()))])),
        ),
        "json_schema" => rf.json_schema.as_ref().and_then(|j| j.schema.clone()).or_else(|| rf.schema.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn response_formats() {
        let rf = |v: Value| -> ResponseFormat { serde_json::from_value(v).unwrap() };
        assert_eq!(response_format_grammar(Some(&rf(json!({"type": "text"})))).unwrap(), None);
        let g = response_format_grammar(Some(&rf(json!({"type": "json_object"})))).unwrap().unwrap();
        assert!(g.starts_with("root ::= object"));
        let g = response_format_grammar(Some(&rf(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "boolean"}}}),
        )))
        .unwrap()
        .unwrap();
        assert!(g.starts_with("root ::= boolean"), "{g}");
        assert!(response_format_grammar(Some(&rf(json!({"type": "json_schema"})))).is_err());
        assert!(response_format_grammar(Some(&rf(json!({"type": "yaml"})))).is_err());
        let unsupported =
            rf(json!({"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a"}}}));
        assert!(matches!(response_format_grammar(Some(&unsupported)), Err(AppError::InvalidRequest { .. })));
    }
}
