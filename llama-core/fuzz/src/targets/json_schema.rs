//! Fuzz target `json_schema`: any byte string is parsed as the server parses
//! a `json_schema` (serde_json into `OrderedJson`) and converted to GBNF.
//! Never a panic; `OrderedJson` writes back JSON that parses to the same
//! value (`const` and `enum` literals are made from it); a grammar, when the
//! conversion succeeds, is bounded in size by the schema's size and in rules
//! by `MAX_RULES`, and llama-core's GBNF parser accepts it (so llama.cpp
//! does, and reads it as written).
//!
//! Compiled into the fuzz crate and into llama-core's corpus-replay test;
//! the includer provides `crate::json_schema` and `crate::gbnf` (llama-core's
//! modules of those names).

use crate::json_schema::{MAX_RULES, OrderedJson, json_schema_to_gbnf};

/// Grammar bytes allowed whatever the schema (the primitives and a few rules).
pub const OUTPUT_BASE_BYTES: usize = 64 << 10;
/// Grammar bytes allowed per byte of schema text.
pub const OUTPUT_BYTES_PER_INPUT_BYTE: usize = 32;
/// Rules every grammar has besides those made for the schema (`root` and the primitives).
const FIXED_RULES: usize = 11;

/// Run one input.
pub fn json_schema(data: &[u8]) {
    let Ok(schema) = serde_json::from_slice::<OrderedJson>(data) else {
        return;
    };
    let text = schema.to_json_text();
    match serde_json::from_str::<OrderedJson>(&text) {
        Ok(again) => assert!(same(&again, &schema), "to_json_text does not round-trip: {text}"),
        Err(e) => panic!("to_json_text wrote JSON that does not parse ({e}): {text}"),
    }
    let Ok(grammar) = json_schema_to_gbnf(&schema) else {
        return;
    };
    let limit = OUTPUT_BASE_BYTES + OUTPUT_BYTES_PER_INPUT_BYTE * data.len();
    assert!(
        grammar.len() <= limit,
        "a {}-byte schema gave a {}-byte grammar (limit {limit})",
        data.len(),
        grammar.len()
    );
    let rules = grammar
        .lines()
        .filter(|line| {
            line.split_once(" ::= ").is_some_and(|(name, _)| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
        })
        .count();
    assert!(rules <= MAX_RULES + FIXED_RULES, "{rules} rules");
    assert!(grammar.starts_with("root ::= "));
    if let Err(e) = crate::gbnf::validate(&grammar) {
        panic!("the grammar is not one llama.cpp accepts as written: {e}\n{grammar}");
    }
}

/// Equal values, except that floating-point numbers may differ in their last
/// bits: serde_json's default float parsing is not correctly rounded, so the
/// shortest text of a float (what `to_json_text` writes) can read back one
/// unit in the last place away (seen for `1844674407370955407370`).
fn same(a: &OrderedJson, b: &OrderedJson) -> bool {
    match (a, b) {
        (OrderedJson::Number(x), OrderedJson::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (OrderedJson::Array(x), OrderedJson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (OrderedJson::Object(x), OrderedJson::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}
