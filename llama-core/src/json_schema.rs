//! JSON output constraints: a GBNF grammar for "any JSON object" (the
//! server's `response_format: json_object`) and a small, bounded JSON-Schema →
//! GBNF converter for the common subset (the server's `json_schema`, the
//! CLI's `--json-schema`). The grammars it writes go into
//! `SamplingParams::grammar`; the `gbnf` module parses them.
//!
//! Pure safe Rust over std, serde and serde_json, with no llama.cpp in it:
//! the fuzz crate (`llama-core/fuzz`) compiles this file on its own.
//!
//! Supported: `type` (object, array, string, number, integer, boolean, null,
//! or a list of them), `properties`, `required`, `additionalProperties`
//! (as a value schema when there are no `properties`), `items`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `format` (date, time, date-time,
//! uuid), `enum`, `const`, `anyOf`, `oneOf` (as anyOf), a one-element
//! `allOf`, and local `$ref`s into `$defs`/`definitions`. Annotations
//! (`title`, `description`, `default`, `examples`, ...) are ignored. Anything
//! else is refused, so that the output never silently violates the schema.
//! Object keys come out in the order the schema lists them.
//!
//! ```
//! use llama_core::json_schema::{OrderedJson, json_schema_to_gbnf};
//!
//! let schema: OrderedJson = serde_json::from_str(r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#)?;
//! let grammar = json_schema_to_gbnf(&schema)?;
//! assert!(grammar.starts_with("root ::= "));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of subschemas accepted.
pub const MAX_SCHEMA_DEPTH: usize = 16;
/// Most grammar rules one schema may produce.
pub const MAX_RULES: usize = 512;
/// Largest `minItems`/`maxItems` accepted (each repetition is a rule in llama.cpp).
pub const MAX_ITEMS_BOUND: u64 = 256;
/// Largest `minLength`/`maxLength` accepted: llama.cpp's repetition
/// threshold. Above it llama.cpp refuses `{m,}` and reads `{m,n}` as `{m,}`,
/// so a larger `maxLength` would not be enforced at all.
pub const MAX_LENGTH_BOUND: u64 = crate::gbnf::LLAMA_REPETITION_THRESHOLD;
/// Longest grammar text a schema may produce, in bytes: the sampler refuses
/// longer grammars (llama-core's `MAX_GRAMMAR_BYTES`), and the bound keeps a
/// small schema from building a huge one (a `type` list repeats the same
/// subschema once per entry).
pub const MAX_GRAMMAR_OUTPUT_BYTES: usize = 256 << 10;

/// Why a schema could not be turned into a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A keyword or construct outside the supported subset.
    #[error("JSON schema feature not supported: {0}")]
    Unsupported(String),
    /// The schema is malformed.
    #[error("invalid JSON schema: {0}")]
    Invalid(String),
    /// Nested deeper than [`MAX_SCHEMA_DEPTH`].
    #[error("JSON schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    /// Would produce more than [`MAX_RULES`] rules or more than
    /// [`MAX_GRAMMAR_OUTPUT_BYTES`] of grammar.
    #[error(
        "JSON schema is too large (more than {MAX_RULES} grammar rules or {MAX_GRAMMAR_OUTPUT_BYTES} bytes of grammar)"
    )]
    TooLarge,
}

/// A JSON value that keeps object keys in document order (serde_json's
/// `Value` sorts them, and key order is part of what a schema asks for).
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as serde_json holds it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, keys in document order.
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// The value of `key` if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Compact JSON text.
    pub fn to_json_text(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            OrderedJson::Null => out.push_str("null"),
            OrderedJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OrderedJson::Number(n) => out.push_str(&n.to_string()),
            OrderedJson::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
            OrderedJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            OrderedJson::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            OrderedJson::Number(n) => {
                n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedJson;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Null)
            }
            fn visit_none<E>(self) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<OrderedJson, D::Error> {
                OrderedJson::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<OrderedJson, E> {
                serde_json::Number::from_f64(n)
                    .map(OrderedJson::Number)
                    .ok_or_else(|| E::custom("numbers must be finite"))
            }
            fn visit_str<E>(self, s: &str) -> Result<OrderedJson, E> {
                Ok(OrderedJson::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<OrderedJson, E> {
                Ok(OrderedJson::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OrderedJson::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
                // Later duplicates win, as in serde_json, and take the later
                // position. The index keeps this linear in the number of keys.
                let mut entries: Vec<Option<(String, OrderedJson)>> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, OrderedJson>()? {
                    if let Some(earlier) = index.insert(k.clone(), entries.len()) {
                        entries[earlier] = None;
                    }
                    entries.push(Some((k, v)));
                }
                Ok(OrderedJson::Object(entries.into_iter().flatten().collect()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Grammar rules every generated grammar may use. `ws` is bounded so that a
/// small model cannot loop on whitespace forever.
const PRIMITIVES: &str = r#"ws ::= | " " | "\n" [ \t]{0,20}
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
boolean ::= "true" | "false"
null ::= "null"
"#;

const PRIMITIVE_NAMES: &[&str] =
    &["root", "ws", "value", "object", "array", "string", "char", "number", "integer", "boolean", "null"];

/// Keywords that only describe and never constrain.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "strict",
];

const SUPPORTED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "format",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
];

/// A grammar accepting any JSON object (OpenAI's `json_object` mode).
pub fn json_object_grammar() -> String {
    format!("root ::= object\n{PRIMITIVES}")
}

/// Convert a JSON schema to a GBNF grammar whose `root` matches exactly the
/// JSON texts (with bounded whitespace) the schema accepts.
///
/// # Errors
///
/// [`SchemaError::Unsupported`] for a keyword outside the supported subset
/// (see the module documentation), [`SchemaError::Invalid`] for a malformed
/// schema (a wrong type for a keyword, a `$ref` that does not resolve, ...),
/// [`SchemaError::TooDeep`] past [`MAX_SCHEMA_DEPTH`] levels of nesting and
/// [`SchemaError::TooLarge`] past [`MAX_RULES`] rules or
/// [`MAX_GRAMMAR_OUTPUT_BYTES`] of grammar.
pub fn json_schema_to_gbnf(schema: &OrderedJson) -> Result<String, SchemaError> {
    let mut conv = Converter {
        root: schema,
        rules: Vec::new(),
        used: PRIMITIVE_NAMES.iter().map(|s| s.to_string()).collect(),
        refs: HashMap::new(),
        bytes: "root ::= \n".len() + PRIMITIVES.len(),
    };
    let expr = conv.visit(schema, "root", 0)?;
    if conv.bytes.saturating_add(expr.len()) > MAX_GRAMMAR_OUTPUT_BYTES {
        return Err(SchemaError::TooLarge);
    }
    let mut out = format!("root ::= {expr}\n");
    for (name, body) in &conv.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    out.push_str(PRIMITIVES);
    Ok(out)
}

struct Converter<'a> {
    root: &'a OrderedJson,
    rules: Vec<(String, String)>,
    used: HashSet<String>,
    refs: HashMap<String, String>,
    /// Bytes of grammar text so far (rules, `root ::= \n` and the primitives).
    bytes: usize,
}

impl<'a> Converter<'a> {
    fn fresh(&mut self, hint: &str) -> Result<String, SchemaError> {
        if self.rules.len() >= MAX_RULES {
            return Err(SchemaError::TooLarge);
        }
        let mut base: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        if base.is_empty() {
            base = "r".into();
        }
        base.truncate(40);
        let mut name = base.clone();
        let mut n = 1;
        while self.used.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.used.insert(name.clone());
        Ok(name)
    }

    fn add_rule(&mut self, hint: &str, body: String) -> Result<String, SchemaError> {
        let name = self.fresh(hint)?;
        self.count_bytes(&name, &body)?;
        self.rules.push((name.clone(), body));
        Ok(name)
    }

    /// Account for the line `name ::= body`; refuse past [`MAX_GRAMMAR_OUTPUT_BYTES`].
    fn count_bytes(&mut self, name: &str, body: &str) -> Result<(), SchemaError> {
        self.bytes = self.bytes.saturating_add(name.len() + " ::= \n".len() + body.len());
        if self.bytes > MAX_GRAMMAR_OUTPUT_BYTES { Err(SchemaError::TooLarge) } else { Ok(()) }
    }

    /// Return a GBNF expression (a rule name or a parenthesized group) for `schema`.
    fn visit(&mut self, schema: &'a OrderedJson, hint: &str, depth: usize) -> Result<String, SchemaError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        let entries = match schema {
            OrderedJson::Bool(true) => return Ok("value".into()),
            OrderedJson::Bool(false) => return Err(SchemaError::Unsupported("the `false` schema".into())),
            OrderedJson::Object(entries) => entries,
            other => {
                return Err(SchemaError::Invalid(format!("a schema must be an object, got {}", other.to_json_text())));
            }
        };
        for (key, _) in entries {
            if !SUPPORTED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                return Err(SchemaError::Unsupported(format!("keyword `{key}`")));
            }
        }
        if let Some(reference) = schema.get("$ref") {
            return self.visit_ref(reference, depth);
        }
        if let Some(value) = schema.get("const") {
            return Ok(literal(&value.to_json_text()));
        }
        if let Some(values) = schema.get("enum") {
            let OrderedJson::Array(values) = values else {
                return Err(SchemaError::Invalid("`enum` must be an array".into()));
            };
            if values.is_empty() {
                return Err(SchemaError::Invalid("`enum` must not be empty".into()));
            }
            let alts: Vec<String> = values.iter().map(|v| literal(&v.to_json_text())).collect();
            return self.add_rule(hint, alts.join(" | "));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = schema.get(key) {
                let OrderedJson::Array(options) = options else {
                    return Err(SchemaError::Invalid(format!("`{key}` must be an array")));
                };
                if options.is_empty() {
                    return Err(SchemaError::Invalid(format!("`{key}` must not be empty")));
                }
                let mut alts = Vec::new();
                for (i, option) in options.iter().enumerate() {
                    alts.push(self.visit(option, &format!("{hint}-{i}"), depth + 1)?);
                }
                return self.add_rule(hint, alts.join(" | "));
            }
        }
        if let Some(all) = schema.get("allOf") {
            return match all {
                OrderedJson::Array(items) if items.len() == 1 => self.visit(&items[0], hint, depth + 1),
                _ => Err(SchemaError::Unsupported("`allOf` with more than one schema".into())),
            };
        }
        match schema.get("type") {
            Some(OrderedJson::String(t)) => self.visit_typed(schema, t, hint, depth),
            Some(OrderedJson::Array(types)) => {
                if types.is_empty() {
                    return Err(SchemaError::Invalid("`type` must not be an empty list".into()));
                }
                let mut alts = Vec::new();
                for t in types {
                    let OrderedJson::String(t) = t else {
                        return Err(SchemaError::Invalid("`type` entries must be strings".into()));
                    };
                    alts.push(self.visit_typed(schema, t, &format!("{hint}-{t}"), depth)?);
                }
                self.add_rule(hint, alts.join(" | "))
            }
            Some(_) => Err(SchemaError::Invalid("`type` must be a string or a list of strings".into())),
            None if schema.get("properties").is_some() => self.visit_typed(schema, "object", hint, depth),
            None if schema.get("items").is_some() => self.visit_typed(schema, "array", hint, depth),
            None => Ok("value".into()),
        }
    }

    fn visit_ref(&mut self, reference: &OrderedJson, depth: usize) -> Result<String, SchemaError> {
        let OrderedJson::String(reference) = reference else {
            return Err(SchemaError::Invalid("`$ref` must be a string".into()));
        };
        if let Some(name) = self.refs.get(reference) {
            return Ok(name.clone());
        }
        let (section, def) = reference
            .strip_prefix("#/$defs/")
            .map(|d| ("$defs", d))
            .or_else(|| reference.strip_prefix("#/definitions/").map(|d| ("definitions", d)))
            .ok_or_else(|| {
                SchemaError::Unsupported(format!("`$ref` {reference:?} (only #/$defs/... and #/definitions/...)"))
            })?;
        let target = self
            .root
            .get(section)
            .and_then(|defs| defs.get(def))
            .ok_or_else(|| SchemaError::Invalid(format!("`$ref` {reference:?} points nowhere")))?;
        // Name the rule before visiting so that recursive references resolve.
        let name = self.fresh(def)?;
        self.refs.insert(reference.clone(), name.clone());
        let index = self.rules.len();
        self.rules.push((name.clone(), String::new()));
        let body = self.visit(target, &format!("{def}-body"), depth + 1)?;
        self.count_bytes(&name, &body)?;
        self.rules[index].1 = body;
        Ok(name)
    }

    fn visit_typed(
        &mut self,
        schema: &'a OrderedJson,
        ty: &str,
        hint: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        match ty {
            "object" => self.visit_object(schema, hint, depth),
            "array" => self.visit_array(schema, hint, depth),
            "string" => self.visit_string(schema, hint),
            "number" => Ok("number".into()),
            "integer" => Ok("integer".into()),
            "boolean" => Ok("boolean".into()),
            "null" => Ok("null".into()),
            other => Err(SchemaError::Invalid(format!("unknown type {other:?}"))),
        }
    }

    fn visit_string(&mut self, schema: &OrderedJson, hint: &str) -> Result<String, SchemaError> {
        if let Some(format) = schema.get("format") {
            let OrderedJson::String(format) = format else {
                return Err(SchemaError::Invalid("`format` must be a string".into()));
            };
            let date = r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )"#;
            let time = r#"( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#;
            let body = match format.as_str() {
                "date" => format!(r#""\"" {date} "\"""#),
                "time" => format!(r#""\"" {time} "\"""#),
                "date-time" => format!(r#""\"" {date} "T" {time} "\"""#),
                "uuid" => r#""\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"""#.to_string(),
                other => return Err(SchemaError::Unsupported(format!("string format {other:?}"))),
            };
            return self.add_rule(hint, body);
        }
        let min = bound(schema, "minLength", MAX_LENGTH_BOUND)?;
        let max = bound(schema, "maxLength", MAX_LENGTH_BOUND)?;
        if min.is_none() && max.is_none() {
            return Ok("string".into());
        }
        let min = min.unwrap_or(0);
        if let Some(max) = max
            && max < min
        {
            return Err(SchemaError::Invalid("maxLength is smaller than minLength".into()));
        }
        let rep = match max {
            Some(max) => format!("{{{min},{max}}}"),
            None => format!("{{{min},}}"),
        };
        self.add_rule(hint, format!(r#""\"" char{rep} "\"""#))
    }

    fn visit_array(&mut self, schema: &'a OrderedJson, hint: &str, depth: usize) -> Result<String, SchemaError> {
        for key in ["prefixItems", "uniqueItems", "contains"] {
            if schema.get(key).is_some() {
                return Err(SchemaError::Unsupported(format!("keyword `{key}`")));
            }
        }
        let item = match schema.get("items") {
            None => "value".to_string(),
            Some(items) => self.visit(items, &format!("{hint}-item"), depth + 1)?,
        };
        let min = bound(schema, "minItems", MAX_ITEMS_BOUND)?.unwrap_or(0);
        let max = bound(schema, "maxItems", MAX_ITEMS_BOUND)?;
        if let Some(max) = max
            && max < min
        {
            return Err(SchemaError::Invalid("maxItems is smaller than minItems".into()));
        }
        let more = |n_min: u64, n_max: Option<u64>| -> String {
            let rep = match (n_min, n_max) {
                (0, None) => "*".to_string(),
                (lo, None) => format!("{{{lo},}}"),
                (lo, Some(hi)) => format!("{{{lo},{hi}}}"),
            };
            format!(r#"( "," ws {item} ws ){rep}"#)
        };
        let body = match (min, max) {
            (_, Some(0)) => r#""[" ws "]""#.to_string(),
            (0, max) => format!(r#""[" ws ( {item} ws {} )? "]""#, more(0, max.map(|m| m - 1))),
            (min, max) => format!(r#""[" ws {item} ws {} "]""#, more(min - 1, max.map(|m| m - 1))),
        };
        self.add_rule(hint, body)
    }

    fn visit_object(&mut self, schema: &'a OrderedJson, hint: &str, depth: usize) -> Result<String, SchemaError> {
        for key in ["patternProperties", "minProperties", "maxProperties", "propertyNames", "dependentRequired"] {
            if schema.get(key).is_some() {
                return Err(SchemaError::Unsupported(format!("keyword `{key}`")));
            }
        }
        let properties = match schema.get("properties") {
            None => None,
            Some(OrderedJson::Object(props)) => Some(props),
            Some(_) => return Err(SchemaError::Invalid("`properties` must be an object".into())),
        };
        let required: Vec<&str> = match schema.get("required") {
            None => Vec::new(),
            Some(OrderedJson::Array(names)) => names
                .iter()
                .map(|n| match n {
                    OrderedJson::String(s) => Ok(s.as_str()),
                    _ => Err(SchemaError::Invalid("`required` entries must be strings".into())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(SchemaError::Invalid("`required` must be an array".into())),
        };
        let additional = schema.get("additionalProperties");
        let props = match properties {
            Some(props) if !props.is_empty() => props,
            _ => {
                if let Some(name) = required.first() {
                    return Err(SchemaError::Unsupported(format!(
                        "required property {name:?} that is not in `properties`"
                    )));
                }
                return match additional {
                    None | Some(OrderedJson::Bool(true)) => Ok("object".into()),
                    Some(OrderedJson::Bool(false)) => self.add_rule(hint, r#""{" ws "}""#.into()),
                    Some(value_schema) => {
                        let value = self.visit(value_schema, &format!("{hint}-value"), depth + 1)?;
                        let kv = format!(r#"string ws ":" ws {value} ws"#);
                        self.add_rule(hint, format!(r#""{{" ws ( {kv} ( "," ws {kv} )* )? "}}""#))
                    }
                };
            }
        };
        if let Some(OrderedJson::Object(_)) = additional {
            return Err(SchemaError::Unsupported(
                "`additionalProperties` as a schema together with `properties`".into(),
            ));
        }
        let names: HashSet<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        for name in &required {
            if !names.contains(name) {
                return Err(SchemaError::Unsupported(format!(
                    "required property {name:?} that is not in `properties`"
                )));
            }
        }
        let required: HashSet<&str> = required.into_iter().collect();
        // kv[i]: `"name" ws ":" ws VALUE`
        let mut kvs = Vec::with_capacity(props.len());
        for (name, prop_schema) in props {
            let value = self.visit(prop_schema, &format!("{hint}-{name}"), depth + 1)?;
            let key = literal(&serde_json::Value::String(name.clone()).to_string());
            kvs.push((required.contains(name.as_str()), format!(r#"{key} ws ":" ws {value} ws"#)));
        }
        // first[i] / after[i]: properties i.. when none / some came before.
        // A required property i gives first[i] = kv[i] after[i+1] and
        // after[i] = "," kv[i] after[i+1]; runs of them are collected in
        // `run` and joined once, when an optional property (or the start)
        // needs them: joining one at a time would copy the tail each time.
        let mut first = String::new();
        let mut after = String::new();
        let mut run: Vec<&str> = Vec::new();
        for (i, (is_required, kv)) in kvs.iter().enumerate().rev() {
            if *is_required {
                run.push(kv);
                continue;
            }
            (first, after) = required_run(&mut run, first, after);
            let with_first = join(&[kv, &after]);
            let with_after = join(&[r#""," ws"#, kv, &after]);
            first = if first.is_empty() {
                format!("( {with_first} )?")
            } else {
                self.add_rule(&format!("{hint}-rest-{i}"), format!("{with_first} | {first}"))?
            };
            after = if after.is_empty() {
                format!("( {with_after} )?")
            } else {
                self.add_rule(&format!("{hint}-more-{i}"), format!("{with_after} | {after}"))?
            };
        }
        (first, _) = required_run(&mut run, first, after);
        self.add_rule(hint, join(&[r#""{" ws"#, &first, r#""}""#]))
    }
}

/// `(first[i], after[i])` for the required properties in `run` (nearest
/// last) followed by properties with `(first, after)`; empties `run`.
fn required_run(run: &mut Vec<&str>, first: String, after: String) -> (String, String) {
    if run.is_empty() {
        return (first, after);
    }
    let mut parts = Vec::with_capacity(2 * run.len() + 1);
    for kv in run.iter().rev() {
        parts.push(r#""," ws"#);
        parts.push(kv);
    }
    parts.push(&after);
    let chain = (join(&parts[1..]), join(&parts));
    run.clear();
    chain
}

fn join(parts: &[&str]) -> String {
    parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" ")
}

fn bound(schema: &OrderedJson, key: &str, cap: u64) -> Result<Option<u64>, SchemaError> {
    match schema.get(key) {
        None => Ok(None),
        Some(v) => {
            let n =
                v.as_u64().ok_or_else(|| SchemaError::Invalid(format!("`{key}` must be a non-negative integer")))?;
            if n > cap {
                return Err(SchemaError::Unsupported(format!("`{key}` above {cap}")));
            }
            Ok(Some(n))
        }
    }
}

/// A GBNF string literal matching `text` exactly.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> OrderedJson {
        serde_json::from_str(text).unwrap()
    }

    fn convert(text: &str) -> Result<String, SchemaError> {
        json_schema_to_gbnf(&schema(text))
    }

    #[test]
    fn ordered_json_keeps_key_order() {
        let v = schema(r#"{"z":1,"a":[true,null,"x"],"m":{"b":1.5,"a":-2}}"#);
        assert_eq!(v.to_json_text(), r#"{"z":1,"a":[true,null,"x"],"m":{"b":1.5,"a":-2}}"#);
    }

    #[test]
    fn literal_escapes() {
        assert_eq!(literal("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
    }

    /// A small GBNF interpreter for the subset this module emits, so that
    /// tests can check which texts a generated grammar accepts.
    mod gbnf {
        use std::collections::{BTreeSet, HashMap};

        #[derive(Debug, Clone)]
        pub enum Node {
            Lit(Vec<char>),
            Class(bool, Vec<(char, char)>),
            Ref(String),
            Seq(Vec<Node>),
            Alt(Vec<Node>),
            Rep(Box<Node>, usize, Option<usize>),
        }

        pub struct Grammar(HashMap<String, Node>);

        struct P<'a> {
            s: &'a [char],
            i: usize,
        }

        impl P<'_> {
            fn ws(&mut self) {
                while self.i < self.s.len() && self.s[self.i] == ' ' {
                    self.i += 1;
                }
            }
            fn peek(&self) -> Option<char> {
                self.s.get(self.i).copied()
            }
            fn esc(&mut self) -> char {
                let c = self.s[self.i];
                self.i += 1;
                match c {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'x' => {
                        let h: String = self.s[self.i..self.i + 2].iter().collect();
                        self.i += 2;
                        char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap()
                    }
                    other => other,
                }
            }
            fn alt(&mut self) -> Node {
                let mut alts = vec![self.seq()];
                loop {
                    self.ws();
                    if self.peek() == Some('|') {
                        self.i += 1;
                        alts.push(self.seq());
                    } else {
                        break;
                    }
                }
                if alts.len() == 1 { alts.pop().unwrap() } else { Node::Alt(alts) }
            }
            fn seq(&mut self) -> Node {
                let mut items = Vec::new();
                loop {
                    self.ws();
                    let Some(c) = self.peek() else { break };
                    let atom = match c {
                        '"' => {
                            self.i += 1;
                            let mut lit = Vec::new();
                            while self.s[self.i] != '"' {
                                if self.s[self.i] == '\\' {
                                    self.i += 1;
                                    lit.push(self.esc());
                                } else {
                                    lit.push(self.s[self.i]);
                                    self.i += 1;
                                }
                            }
                            self.i += 1;
                            Node::Lit(lit)
                        }
                        '[' => {
                            self.i += 1;
                            let neg = self.peek() == Some('^');
                            if neg {
                                self.i += 1;
                            }
                            let mut ranges = Vec::new();
                            while self.s[self.i] != ']' {
                                let mut lo = self.s[self.i];
                                self.i += 1;
                                if lo == '\\' {
                                    lo = self.esc();
                                }
                                let mut hi = lo;
                                if self.peek() == Some('-') && self.s[self.i + 1] != ']' {
                                    self.i += 1;
                                    hi = self.s[self.i];
                                    self.i += 1;
                                    if hi == '\\' {
                                        hi = self.esc();
                                    }
                                }
                                ranges.push((lo, hi));
                            }
                            self.i += 1;
                            Node::Class(neg, ranges)
                        }
                        '(' => {
                            self.i += 1;
                            let inner = self.alt();
                            self.ws();
                            assert_eq!(self.peek(), Some(')'));
                            self.i += 1;
                            inner
                        }
                        c if c.is_ascii_alphanumeric() || c == '-' => {
                            let start = self.i;
                            while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
                                self.i += 1;
                            }
                            Node::Ref(self.s[start..self.i].iter().collect())
                        }
                        _ => break,
                    };
                    let atom = match self.peek() {
                        Some('*') => {
                            self.i += 1;
                            Node::Rep(Box::new(atom), 0, None)
                        }
                        Some('+') => {
                            self.i += 1;
                            Node::Rep(Box::new(atom), 1, None)
                        }
                        Some('?') => {
                            self.i += 1;
                            Node::Rep(Box::new(atom), 0, Some(1))
                        }
                        Some('{') => {
                            let end = self.i + self.s[self.i..].iter().position(|&c| c == '}').unwrap();
                            let body: String = self.s[self.i + 1..end].iter().collect();
                            self.i = end + 1;
                            let (lo, hi) = match body.split_once(',') {
                                None => (body.parse().unwrap(), Some(body.parse().unwrap())),
                                Some((lo, "")) => (lo.parse().unwrap(), None),
                                Some((lo, hi)) => (lo.parse().unwrap(), Some(hi.parse().unwrap())),
                            };
                            Node::Rep(Box::new(atom), lo, hi)
                        }
                        _ => atom,
                    };
                    items.push(atom);
                }
                if items.len() == 1 { items.pop().unwrap() } else { Node::Seq(items) }
            }
        }

        impl Grammar {
            pub fn parse(text: &str) -> Grammar {
                let mut rules = HashMap::new();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let (name, body) = line.split_once(" ::= ").unwrap_or_else(|| panic!("bad rule {line:?}"));
                    let chars: Vec<char> = body.chars().collect();
                    let mut p = P { s: &chars, i: 0 };
                    let node = p.alt();
                    p.ws();
                    assert_eq!(p.i, chars.len(), "unparsed rest in {line:?}");
                    assert!(rules.insert(name.to_string(), node).is_none(), "duplicate rule {name}");
                }
                Grammar(rules)
            }

            fn ends(&self, node: &Node, s: &[char], at: usize, depth: usize) -> BTreeSet<usize> {
                assert!(depth < 200, "grammar recursion too deep");
                let mut out = BTreeSet::new();
                match node {
                    Node::Lit(lit) => {
                        if s[at..].starts_with(lit) {
                            out.insert(at + lit.len());
                        }
                    }
                    Node::Class(neg, ranges) => {
                        if let Some(&c) = s.get(at)
                            && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg
                        {
                            out.insert(at + 1);
                        }
                    }
                    Node::Ref(name) => {
                        let rule = self.0.get(name).unwrap_or_else(|| panic!("undefined rule {name}"));
                        out = self.ends(rule, s, at, depth + 1);
                    }
                    Node::Seq(items) => {
                        let mut cur = BTreeSet::from([at]);
                        for item in items {
                            cur = cur.iter().flat_map(|&p| self.ends(item, s, p, depth + 1)).collect();
                        }
                        out = cur;
                    }
                    Node::Alt(alts) => {
                        for a in alts {
                            out.extend(self.ends(a, s, at, depth + 1));
                        }
                    }
                    Node::Rep(inner, lo, hi) => {
                        let mut cur = BTreeSet::from([at]);
                        let mut n = 0;
                        loop {
                            if n >= *lo {
                                out.extend(cur.iter().copied());
                            }
                            if hi.is_some_and(|h| n >= h) || cur.is_empty() || n > s.len() + lo {
                                break;
                            }
                            cur = cur.iter().flat_map(|&p| self.ends(inner, s, p, depth + 1)).collect();
                            n += 1;
                        }
                    }
                }
                out
            }

            pub fn accepts(&self, text: &str) -> bool {
                let s: Vec<char> = text.chars().collect();
                self.ends(&Node::Ref("root".into()), &s, 0, 0).contains(&s.len())
            }
        }
    }

    fn check(schema_text: &str, good: &[&str], bad: &[&str]) {
        let g = gbnf::Grammar::parse(&convert(schema_text).unwrap());
        for text in good {
            assert!(g.accepts(text), "{schema_text}\nshould accept {text}");
        }
        for text in bad {
            assert!(!g.accepts(text), "{schema_text}\nshould reject {text}");
        }
    }

    #[test]
    fn object_with_required_and_optional_in_order() {
        check(
            r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"},"maxItems":3}},"required":["name"]}"#,
            &[
                r#"{"name":"x"}"#,
                r#"{"name":"x","age":3}"#,
                r#"{ "name" : "x" , "tags" : [ "a", "b" ] }"#,
                "{\n  \"name\": \"x\",\n  \"age\": -12,\n  \"tags\": []\n}",
                r#"{"name":"x","tags":["a","b","c"]}"#,
            ],
            &[
                "{}",
                r#"{"age":3}"#,
                r#"{"name":"x",}"#,
                r#"{"age":1,"name":"x"}"#,
                r#"{"name":"x","tags":["a","b","c","d"]}"#,
                r#"{"name":"x","age":1.5}"#,
                r#"{"name":"x","other":1}"#,
            ],
        );
    }

    #[test]
    fn all_optional_object() {
        check(
            r#"{"properties":{"a":{"type":"number"},"b":{"type":"boolean"},"c":{"type":"null"}}}"#,
            &["{}", r#"{"b":true}"#, r#"{"a":1e5,"c":null}"#, r#"{"a":-0.5,"b":false,"c":null}"#],
            &[r#"{,"b":true}"#, r#"{"b":true,}"#, r#"{"c":null,"a":1}"#, r#"{"a":01}"#],
        );
    }

    #[test]
    fn strings_arrays_and_formats() {
        check(
            r#"{"type":"string","minLength":2,"maxLength":3}"#,
            &[r#""ab""#, r#""a\"c""#],
            &[r#""a""#, r#""abcd""#, "ab"],
        );
        check(
            r#"{"type":"array","items":{"type":"integer"},"minItems":2}"#,
            &["[1,2]", "[1, 2, 3, 4]"],
            &["[]", "[1]", "[1,]", "[1.5,2]"],
        );
        check(r#"{"type":"string","format":"date"}"#, &[r#""2024-02-29""#], &[r#""2024-13-01""#, r#""24-01-01""#]);
        check(
            r#"{"type":"string","format":"uuid"}"#,
            &[r#""123e4567-e89b-12d3-a456-426614174000""#],
            &[r#""123e4567e89b12d3a456426614174000""#],
        );
        check(
            r#"{"type":"object","additionalProperties":{"type":"integer"}}"#,
            &["{}", r#"{"x":1,"y":2}"#],
            &[r#"{"x":"1"}"#],
        );
    }

    #[test]
    fn generic_json_object() {
        let g = gbnf::Grammar::parse(&json_object_grammar());
        for good in ["{}", r#"{"a":[1,2,{"b":null}],"c":"\u00e9\n","d":true}"#, "{ \"k\" : -1.25e-3 }"] {
            assert!(g.accepts(good), "{good}");
        }
        for bad in ["[]", "\"x\"", "{\"a\":}", "{'a':1}", "{\"a\":1,}"] {
            assert!(!g.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn enum_const_anyof_types() {
        let g = convert(r#"{"enum":["red","green",3,null]}"#).unwrap();
        assert!(g.contains(r#""\"red\"" | "\"green\"" | "3" | "null""#), "{g}");
        let g = convert(r#"{"const":{"a":1}}"#).unwrap();
        assert!(g.starts_with(r#"root ::= "{\"a\":1}""#), "{g}");
        let g = convert(r#"{"anyOf":[{"type":"string"},{"type":"null"}]}"#).unwrap();
        assert!(g.contains("string | null"), "{g}");
        let g = convert(r#"{"type":["integer","boolean"]}"#).unwrap();
        assert!(g.contains("integer | boolean"), "{g}");
    }

    #[test]
    fn refs_resolve_and_may_recurse() {
        let g = convert(
            r##"{"$defs":{"Node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/Node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/Node"}"##,
        )
        .unwrap();
        assert!(g.starts_with("root ::= node\n"), "{g}");
        assert!(g.contains("node ::= "), "{g}");
    }

    #[test]
    fn unsupported_is_refused() {
        for s in [
            r#"{"type":"string","pattern":"^a+$"}"#,
            r#"{"type":"integer","minimum":0}"#,
            r#"{"type":"array","prefixItems":[]}"#,
            r#"{"type":"object","properties":{"a":{}},"additionalProperties":{"type":"string"}}"#,
            r##"{"$ref":"https://example.com/x"}"##,
            r#"{"allOf":[{"type":"string"},{"type":"integer"}]}"#,
            r#"{"type":"string","format":"email"}"#,
            r#"{"type":"array","maxItems":100000}"#,
        ] {
            assert!(matches!(convert(s), Err(SchemaError::Unsupported(_))), "{s}: {:?}", convert(s));
        }
        for s in [r#"{"type":"nope"}"#, r#"{"enum":[]}"#, r#"{"required":"a","type":"object"}"#, r#"5"#] {
            assert!(matches!(convert(s), Err(SchemaError::Invalid(_))), "{s}: {:?}", convert(s));
        }
    }

    /// `maxLength` 4096 was accepted and written as `char{0,4096}`, which
    /// llama.cpp reads as `char{0,}`; `minLength` 3000 gave a grammar that
    /// llama.cpp refuses (found by the `json_schema` fuzz target, which
    /// checks every grammar with the GBNF parser).
    #[test]
    #[cfg_attr(miri, ignore = "validates 2000-fold repetitions")]
    fn string_lengths_stay_within_what_llama_cpp_enforces() {
        for s in [
            r#"{"type":"string","maxLength":2000}"#,
            r#"{"type":"string","minLength":2000}"#,
            r#"{"type":"string","minLength":1999,"maxLength":2000}"#,
        ] {
            let g = convert(s).unwrap();
            let stats = crate::gbnf::validate_with(&g, &crate::gbnf::Limits::default()).unwrap();
            assert!(stats.rules < 2200, "{s}: {stats:?}");
        }
        for s in [r#"{"type":"string","maxLength":2001}"#, r#"{"type":"string","minLength":3000}"#] {
            assert!(matches!(convert(s), Err(SchemaError::Unsupported(_))), "{s}: {:?}", convert(s));
        }
    }

    #[test]
    fn depth_is_capped() {
        let mut s = String::from(r#"{"type":"string"}"#);
        for _ in 0..(MAX_SCHEMA_DEPTH + 2) {
            s = format!(r#"{{"type":"array","items":{s}}}"#);
        }
        assert_eq!(convert(&s), Err(SchemaError::TooDeep));
    }

    #[test]
    fn rule_count_is_capped() {
        let props: Vec<String> = (0..(MAX_RULES + 10)).map(|i| format!(r#""p{i}":{{"enum":[1]}}"#)).collect();
        let s = format!(r#"{{"type":"object","properties":{{{}}}}}"#, props.join(","));
        assert_eq!(convert(&s), Err(SchemaError::TooLarge));
    }

    #[test]
    fn later_duplicate_keys_win_and_move_last() {
        let v = schema(r#"{"a":1,"b":2,"a":3,"c":{"x":1,"x":2}}"#);
        assert_eq!(v.to_json_text(), r#"{"b":2,"a":3,"c":{"x":2}}"#);
    }

    /// A `type` list visits the schema once per entry: 500 × "object" over a
    /// 10 kB `const` asked for a 5 MB grammar from a 15 kB schema.
    #[test]
    #[cfg_attr(miri, ignore = "large inputs")]
    fn grammar_size_is_capped() {
        let types = vec![r#""object""#; 500].join(",");
        let s = format!(r#"{{"type":[{types}],"properties":{{"a":{{"const":"{}"}}}}}}"#, "x".repeat(10_000));
        assert_eq!(convert(&s), Err(SchemaError::TooLarge));
        let s = format!(r#"{{"const":"{}"}}"#, "x".repeat(MAX_GRAMMAR_OUTPUT_BYTES));
        assert_eq!(convert(&s), Err(SchemaError::TooLarge));
        let s = format!(r#"{{"const":"{}"}}"#, "x".repeat(MAX_GRAMMAR_OUTPUT_BYTES / 2));
        assert!(convert(&s).is_ok_and(|g| g.len() <= MAX_GRAMMAR_OUTPUT_BYTES));
    }

    /// Objects with many keys, and many required properties, take linear
    /// time (both were quadratic: 100 000 keys took 31 s in a release build).
    #[test]
    #[cfg_attr(miri, ignore = "large inputs")]
    fn many_keys_and_required_properties_are_linear() {
        let start = std::time::Instant::now();
        let keys: Vec<String> = (0..100_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let v = schema(&format!("{{{}}}", keys.join(",")));
        assert!(matches!(&v, OrderedJson::Object(e) if e.len() == 100_000 && e[99_999].0 == "k99999"));
        let props: Vec<String> = (0..20_000).map(|i| format!(r#""p{i}":{{}}"#)).collect();
        let names: Vec<String> = (0..20_000).map(|i| format!(r#""p{i}""#)).collect();
        let s = format!(r#"{{"properties":{{{}}},"required":[{}]}}"#, props.join(","), names.join(","));
        assert_eq!(convert(&s), Err(SchemaError::TooLarge));
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{:?}", start.elapsed());
    }

    #[test]
    fn required_runs_between_optional_properties() {
        let g = convert(r#"{"properties":{"a":{},"b":{},"c":{},"d":{},"e":{}},"required":["b","c","e"]}"#).unwrap();
        assert!(
            g.contains(concat!(
                r#"root-rest-0 ::= "\"a\"" ws ":" ws value ws "," ws "\"b\"" ws ":" ws value ws "," ws "\"c\"" ws ":" ws value ws root-more-3 | "\"b\"" ws ":" ws value ws "," ws "\"c\"" ws ":" ws value ws root-more-3"#,
                "\n",
                r#"root-more-0 ::= "," ws "\"a\"" ws ":" ws value ws "," ws "\"b\"" ws ":" ws value ws "," ws "\"c\"" ws ":" ws value ws root-more-3 | "," ws "\"b\"" ws ":" ws value ws "," ws "\"c\"" ws ":" ws value ws root-more-3"#,
                "\nroot-1 ::= \"{\" ws root-rest-0 \"}\"\n",
            )),
            "{g}"
        );
        check(
            r#"{"properties":{"a":{},"b":{},"c":{},"d":{},"e":{}},"required":["b","c","e"]}"#,
            &[r#"{"b":1,"c":2,"e":3}"#, r#"{"a":0,"b":1,"c":2,"d":4,"e":3}"#, r#"{"b":1,"c":2,"d":4,"e":3}"#],
            &[r#"{"a":0,"c":2,"e":3}"#, r#"{"b":1,"c":2}"#, r#"{"a":0,"b":1,"c":2,"e":3,"d":4}"#, "{}"],
        );
    }

    #[test]
    fn empty_schema_is_any_value() {
        assert!(convert("{}").unwrap().starts_with("root ::= value\n"));
        assert!(json_object_grammar().starts_with("root ::= object\n"));
    }
}
