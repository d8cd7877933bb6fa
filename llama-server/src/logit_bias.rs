//! `logit_bias` in every shape llama.cpp accepts: `{"15043": 1.0}`
//! (OpenAI), `{"Hello": -1}`, `[[15043, 1.0]]`, `[[15043, false]]` (ban)
//! and `[["Hello", -0.5]]` (every token of the text).

use std::sync::Arc;

use llama_core::Token;
use serde_json::Value;

use crate::blocking::{INLINE_WORK_BYTES, maybe_blocking};
use crate::error::AppError;
use crate::state::Ready;

/// Most logit-bias entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Longest text key of a logit bias, in bytes. A key stands for a word or a
/// phrase; at most [`MAX_LOGIT_BIAS`] tokens can result anyway, so longer
/// text is refused before it is tokenized.
pub const MAX_LOGIT_BIAS_TEXT_BYTES: usize = 4096;

/// The (token, bias) pairs of a `logit_bias` field. Text keys are
/// tokenized, on a blocking thread when together they are long (see
/// [`INLINE_WORK_BYTES`]).
pub(crate) async fn logit_bias(value: &Value, ready: &Arc<Ready>) -> Result<Vec<(Token, f32)>, AppError> {
    let text_bytes = text_bytes(value)?;
    if text_bytes <= INLINE_WORK_BYTES {
        parse(value, ready)
    } else {
        let (value, ready) = (value.clone(), Arc::clone(ready));
        maybe_blocking(text_bytes, move || parse(&value, &ready)).await?
    }
}

/// Parse a logit bias (see the module documentation for the shapes).
fn parse(value: &Value, ready: &Ready) -> Result<Vec<(Token, f32)>, AppError> {
    let bad = |msg: String| AppError::invalid("logit_bias", msg);
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => {
            // Keys are strings; numeric ones are token ids.
            return collect(map.iter().map(|(k, v)| (Key::Str(k), v)), ready);
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Ok((&pair[0], &pair[1])),
                _ => Err(bad("each entry must be a [token, bias] pair".into())),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`logit_bias` must be an object or an array of [token, bias] pairs".into())),
    };
    let keys = pairs.into_iter().map(|(k, v)| {
        let key = match k {
            Value::Number(n) => Key::Num(n.as_i64()),
            Value::String(s) => Key::Text(s),
            _ => Key::Invalid,
        };
        (key, v)
    });
    collect(keys, ready)
}

/// The bytes of the string keys of a logit bias (the text it may tokenize),
/// after refusing any key longer than [`MAX_LOGIT_BIAS_TEXT_BYTES`].
/// Shapes that are not a bias count nothing; [`parse`] refuses them.
fn text_bytes(value: &Value) -> Result<usize, AppError> {
    let keys: Vec<&str> = match value {
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) => pair.first().and_then(Value::as_str),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut total = 0;
    for key in keys {
        if key.len() > MAX_LOGIT_BIAS_TEXT_BYTES {
            return Err(AppError::invalid(
                "logit_bias",
                format!("a logit_bias text may be at most {MAX_LOGIT_BIAS_TEXT_BYTES} bytes, one has {}", key.len()),
            ));
        }
        total += key.len();
    }
    Ok(total)
}

/// What a bias entry applies to.
enum Key<'a> {
    /// A JSON number key.
    Num(Option<i64>),
    /// An object key: a token id if numeric, else text.
    Str(&'a str),
    /// A string in the array form: always text.
    Text(&'a str),
    Invalid,
}

fn collect<'a>(
    entries: impl Iterator<Item = (Key<'a>, &'a Value)>,
    ready: &Ready,
) -> Result<Vec<(Token, f32)>, AppError> {
    let bad = |msg: String| AppError::invalid("logit_bias", msg);
    let model = ready.model();
    let n_vocab = model.info().n_vocab;
    let mut out = Vec::new();
    for (key, value) in entries {
        let bias = match value {
            Value::Number(n) => {
                let b = n.as_f64().unwrap_or(f64::NAN) as f32;
                if !b.is_finite() {
                    return Err(bad(format!("bias {n} is not a finite number")));
                }
                b
            }
            Value::Bool(false) => f32::NEG_INFINITY,
            _ => return Err(bad("a bias must be a number or false".into())),
        };
        let tokens: Vec<Token> = match key {
            Key::Num(Some(id)) => vec![check_id(id, n_vocab)?],
            Key::Str(s) => match s.trim().parse::<i64>() {
                Ok(id) => vec![check_id(id, n_vocab)?],
                Err(_) => model.tokenize(s, false, false).map_err(|e| AppError::from(e).with_param("logit_bias"))?,
            },
            Key::Text(text) => {
                model.tokenize(text, false, false).map_err(|e| AppError::from(e).with_param("logit_bias"))?
            }
            Key::Num(None) | Key::Invalid => return Err(bad("a token must be an integer id or a string".into())),
        };
        out.extend(tokens.into_iter().map(|t| (t, bias)));
        if out.len() > MAX_LOGIT_BIAS {
            return Err(bad(format!("at most {MAX_LOGIT_BIAS} tokens may be biased")));
        }
    }
    Ok(out)
}

fn check_id(id: i64, n_vocab: i32) -> Result<Token, AppError> {
    if (0..n_vocab as i64).contains(&id) {
        Ok(id as Token)
    } else {
        Err(AppError::invalid("logit_bias", format!("token id {id} is outside the vocabulary (0..{n_vocab})")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_text_keys_are_refused_before_tokenizing() {
        let long = "x".repeat(MAX_LOGIT_BIAS_TEXT_BYTES + 1);
        assert!(text_bytes(&json!({ long.clone(): 1.0 })).is_err());
        assert!(text_bytes(&json!([[long, 1.0]])).is_err());
        assert_eq!(text_bytes(&json!({"ab": 1.0, "15043": 2.0})).unwrap(), 7);
        assert_eq!(text_bytes(&json!([[15043, 1.0], ["abc", false]])).unwrap(), 3);
        assert_eq!(text_bytes(&json!("not a bias")).unwrap(), 0);
    }
}
