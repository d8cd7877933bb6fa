//! Prompts as requests give them: text, token ids, llama.cpp's mixed
//! `[12, "text", 34]`, or an array of those; and what the engine and the
//! response make of them.

use llama_core::Token;
use llama_runtime::Prompt;
use serde_json::Value;

use crate::error::AppError;
use crate::state::Ready;

/// One prompt as a request gave it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PromptIn {
    /// Text (tokenized with BOS where the model wants it, special tokens parsed).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<Token>),
    /// llama.cpp's mixed form `[12, "text", 34]`.
    Mixed(Vec<Piece>),
}

/// A piece of a mixed prompt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Token(Token),
}

/// Parse a `prompt`/`input` field: a string, an array of token ids, an
/// array of strings (several prompts), or an array of those, at most `max`
/// prompts. `allow_mixed` also accepts llama.cpp's `[12, "text", 34]`.
pub(crate) fn parse_prompts(
    value: &Value,
    param: &str,
    allow_mixed: bool,
    max: usize,
) -> Result<Vec<PromptIn>, AppError> {
    let shape = || {
        AppError::invalid(
            param,
            format!("`{param}` must be a string, an array of token ids, or an array of strings or token arrays"),
        )
    };
    let one = |v: &Value| -> Result<PromptIn, AppError> {
        match v {
            Value::String(s) => Ok(PromptIn::Text(s.clone())),
            Value::Array(items) => {
                if items.iter().all(Value::is_number) {
                    Ok(PromptIn::Tokens(items.iter().map(|t| token_id(t, param)).collect::<Result<_, _>>()?))
                } else if allow_mixed && items.iter().all(|x| x.is_number() || x.is_string()) {
                    let pieces = items
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(Piece::Text(s.clone())),
                            other => token_id(other, param).map(Piece::Token),
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(PromptIn::Mixed(pieces))
                } else {
                    Err(shape())
                }
            }
            _ => Err(shape()),
        }
    };
    let prompts = match value {
        Value::String(_) => vec![one(value)?],
        Value::Array(items) if items.is_empty() => return Err(AppError::invalid(param, format!("`{param}` is empty"))),
        Value::Array(items) if items.iter().all(|x| x.is_string()) => {
            items.iter().map(one).collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(items) if items.iter().any(Value::is_array) => {
            items.iter().map(one).collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(_) => vec![one(value)?],
        _ => return Err(shape()),
    };
    if prompts.len() > max {
        return Err(AppError::invalid(param, format!("at most {max} prompts per request")));
    }
    Ok(prompts)
}

fn token_id(v: &Value, param: &str) -> Result<Token, AppError> {
    v.as_i64()
        .and_then(|t| Token::try_from(t).ok())
        .ok_or_else(|| AppError::invalid(param, format!("`{param}` has a token id that is not a 32-bit integer: {v}")))
}

impl PromptIn {
    /// The runtime prompt. Mixed prompts are tokenized here, with BOS only
    /// when they start with text (llama.cpp's rule).
    /// Tokenizing errors name `param`.
    pub(crate) fn to_prompt(&self, ready: &Ready, param: &str) -> Result<Prompt, AppError> {
        Ok(match self {
            PromptIn::Text(s) => Prompt::Text(s.clone()),
            PromptIn::Tokens(t) => Prompt::Tokens(t.clone()),
            PromptIn::Mixed(pieces) => {
                let model = ready.model();
                let mut tokens = Vec::new();
                for (i, piece) in pieces.iter().enumerate() {
                    match piece {
                        Piece::Token(t) => tokens.push(*t),
                        Piece::Text(s) => tokens
                            .extend(model.tokenize(s, i == 0, true).map_err(|e| AppError::from(e).with_param(param))?),
                    }
                }
                Prompt::Tokens(tokens)
            }
        })
    }

    /// The prompt as text (token ids detokenized), for `echo` and `prompt` fields.
    pub(crate) fn text(&self, ready: &Ready) -> String {
        let model = ready.model();
        let detok = |t: &[Token]| model.detokenize(t, false, true).unwrap_or_default();
        match self {
            PromptIn::Text(s) => s.clone(),
            PromptIn::Tokens(t) => detok(t),
            PromptIn::Mixed(pieces) => pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(s) => s.clone(),
                    Piece::Token(t) => detok(&[*t]),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prompt_shapes() {
        let p = |v: Value, mixed| parse_prompts(&v, "prompt", mixed, crate::request::MAX_CHOICES * 8);
        assert_eq!(p(json!("hi"), false).unwrap(), [PromptIn::Text("hi".into())]);
        assert_eq!(p(json!([1, 2]), false).unwrap(), [PromptIn::Tokens(vec![1, 2])]);
        assert_eq!(p(json!(["a", "b"]), false).unwrap(), [PromptIn::Text("a".into()), PromptIn::Text("b".into())]);
        assert_eq!(p(json!([[1], "b"]), false).unwrap(), [PromptIn::Tokens(vec![1]), PromptIn::Text("b".into())]);
        assert_eq!(
            p(json!([1, "x"]), true).unwrap(),
            [PromptIn::Mixed(vec![Piece::Token(1), Piece::Text("x".into())])]
        );
        assert!(p(json!([1, "x"]), false).is_err());
        assert!(p(json!([]), false).is_err());
        assert!(p(json!([1i64 << 40]), false).is_err());
        assert!(p(json!({"a": 1}), true).is_err());
    }
}
