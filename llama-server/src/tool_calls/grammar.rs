//! The grammar that constrains a model's output to tool calls: built from
//! the tools' JSON schemas by llama-core's converter, so that a call's
//! arguments follow its schema.

use llama_core::json_schema::{OrderedJson, SchemaError, json_schema_to_gbnf};

use super::parse::{HERMES_CLOSE, HERMES_OPEN};
use super::{Choice, Format, Tool, Tools};
use crate::error::AppError;

/// The grammar for a request's tools in `format`, if the output must be
/// constrained: always in the generic format (its calls are JSON the model
/// has not been trained to write), and with `tool_choice` `required` or a
/// named function in the others (`auto` leaves a model free to answer in
/// text). `response` is the schema of a reply that is not a call (a
/// `response_format`), for the generic format.
///
/// A tool whose `parameters` use schema features the converter does not
/// support (`pattern`, `minimum`, ...) gets any JSON object as arguments.
///
/// # Errors
/// A 400 naming `tools[i].function.parameters` for a malformed schema.
pub(crate) fn tool_grammar(
    format: Format,
    tools: &Tools,
    response: Option<&OrderedJson>,
) -> Result<Option<String>, AppError> {
    let constrained = match tools.choice {
        Choice::None => return Ok(None),
        Choice::Auto => format == Format::Generic,
        Choice::Required | Choice::Named(_) => true,
    };
    if !constrained {
        return Ok(None);
    }
    let chosen: Vec<(usize, &Tool)> = tools
        .list
        .iter()
        .enumerate()
        .filter(|(_, t)| match &tools.choice {
            Choice::Named(name) => &t.name == name,
            _ => true,
        })
        .collect();
    let mut params = Vec::with_capacity(chosen.len());
    for &(i, tool) in &chosen {
        params.push(arguments_schema(i, tool)?);
    }
    let build = |params: &[OrderedJson]| -> Result<String, SchemaError> {
        let defs = hoist_defs(params);
        let args_key = if matches!(format, Format::Llama3 { .. }) { "parameters" } else { "arguments" };
        let calls = any_of(chosen.iter().zip(&defs.0).map(|((_, t), p)| call_schema(&t.name, args_key, p)).collect());
        let schema = match format {
            Format::Generic => {
                let call_part = if tools.parallel {
                    object(vec![("tool_calls", array_of(calls, None))])
                } else {
                    object(vec![("tool_call", calls)])
                };
                if tools.choice == Choice::Auto {
                    let reply = response.cloned().unwrap_or_else(|| schema_of_type("string"));
                    any_of(vec![call_part, object(vec![("response", reply)])])
                } else {
                    call_part
                }
            }
            Format::MistralNemo => array_of(calls, (!tools.parallel).then_some(1)),
            Format::Hermes | Format::Llama3 { .. } => calls,
        };
        let grammar = json_schema_to_gbnf(&with_defs(schema, defs.1))?;
        Ok(match format {
            Format::Hermes => wrap_root(&grammar, HERMES_OPEN, HERMES_CLOSE, tools.parallel),
            _ => grammar,
        })
    };
    // All tools' schemas together may be too large for one grammar; then
    // every call takes any object as arguments.
    match build(&params) {
        Ok(g) => Ok(Some(g)),
        Err(SchemaError::TooLarge | SchemaError::TooDeep) => {
            let loose = vec![schema_of_type("object"); params.len()];
            build(&loose).map(Some).map_err(|e| AppError::invalid("tools", e.to_string()))
        }
        Err(e) => Err(AppError::invalid("tools", e.to_string())),
    }
}

/// The schema a call's arguments follow: the tool's `parameters` when the
/// converter takes them, any object when they use what it does not support
/// (or when there are none).
fn arguments_schema(index: usize, tool: &Tool) -> Result<OrderedJson, AppError> {
    let Some(parameters) = &tool.parameters else {
        return Ok(schema_of_type("object"));
    };
    match json_schema_to_gbnf(parameters) {
        Ok(_) => Ok(parameters.clone()),
        Err(SchemaError::Invalid(m)) => Err(AppError::invalid(
            format!("tools[{index}].function.parameters"),
            format!("invalid JSON schema in `tools[{index}].function.parameters`: {m}"),
        )),
        Err(e) => {
            tracing::debug!(tool = %tool.name, "tool arguments not constrained to their schema: {e}");
            Ok(schema_of_type("object"))
        }
    }
}

fn string(s: &str) -> OrderedJson {
    OrderedJson::String(s.to_owned())
}

fn schema_of_type(t: &str) -> OrderedJson {
    OrderedJson::Object(vec![("type".into(), string(t))])
}

/// `{"type": "object", "properties": {...}, "required": [all of them]}`.
fn object(properties: Vec<(&str, OrderedJson)>) -> OrderedJson {
    let required = properties.iter().map(|(k, _)| string(k)).collect();
    OrderedJson::Object(vec![
        ("type".into(), string("object")),
        ("properties".into(), OrderedJson::Object(properties.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ("required".into(), OrderedJson::Array(required)),
    ])
}

fn array_of(items: OrderedJson, max: Option<u64>) -> OrderedJson {
    let mut entries = vec![
        ("type".into(), string("array")),
        ("items".into(), items),
        ("minItems".into(), OrderedJson::Number(1.into())),
    ];
    if let Some(max) = max {
        entries.push(("maxItems".into(), OrderedJson::Number(max.into())));
    }
    OrderedJson::Object(entries)
}

fn any_of(mut options: Vec<OrderedJson>) -> OrderedJson {
    if options.len() == 1 {
        return options.remove(0);
    }
    OrderedJson::Object(vec![("anyOf".into(), OrderedJson::Array(options))])
}

/// `{"name": NAME, ARGS_KEY: arguments}`, in that order.
fn call_schema(name: &str, args_key: &str, arguments: &OrderedJson) -> OrderedJson {
    object(vec![("name", OrderedJson::Object(vec![("const".into(), string(name))])), (args_key, arguments.clone())])
}

/// The tools' schemas with their `$defs`/`definitions` moved to one root
/// (a `$ref` resolves from the root of the whole schema), each tool's
/// renamed `t<i>-<name>` and its `$ref`s rewritten to match.
fn hoist_defs(params: &[OrderedJson]) -> (Vec<OrderedJson>, Vec<(String, OrderedJson)>) {
    let mut defs = Vec::new();
    let mut out = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let prefix = format!("t{i}-");
        let OrderedJson::Object(entries) = p else {
            out.push(p.clone());
            continue;
        };
        let mut kept = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match (k.as_str(), v) {
                ("$defs" | "definitions", OrderedJson::Object(items)) => {
                    for (name, schema) in items {
                        defs.push((format!("{prefix}{name}"), rename_refs(schema, &prefix)));
                    }
                }
                _ => kept.push((k.clone(), rename_refs(v, &prefix))),
            }
        }
        out.push(OrderedJson::Object(kept));
    }
    (out, defs)
}

fn rename_refs(v: &OrderedJson, prefix: &str) -> OrderedJson {
    match v {
        OrderedJson::Object(entries) => OrderedJson::Object(
            entries
                .iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", OrderedJson::String(r)) => {
                        let renamed = r
                            .strip_prefix("#/$defs/")
                            .or_else(|| r.strip_prefix("#/definitions/"))
                            .map_or_else(|| r.clone(), |name| format!("#/$defs/{prefix}{name}"));
                        (k.clone(), OrderedJson::String(renamed))
                    }
                    _ => (k.clone(), rename_refs(v, prefix)),
                })
                .collect(),
        ),
        OrderedJson::Array(items) => OrderedJson::Array(items.iter().map(|i| rename_refs(i, prefix)).collect()),
        other => other.clone(),
    }
}

fn with_defs(schema: OrderedJson, defs: Vec<(String, OrderedJson)>) -> OrderedJson {
    if defs.is_empty() {
        return schema;
    }
    match schema {
        OrderedJson::Object(mut entries) => {
            entries.push(("$defs".into(), OrderedJson::Object(defs)));
            OrderedJson::Object(entries)
        }
        other => other,
    }
}

/// `grammar` (from the converter, which starts it with `root ::= EXPR`)
/// with the call between `open` and `close`, once or, with `repeat`, one
/// or more times.
fn wrap_root(grammar: &str, open: &str, close: &str, repeat: bool) -> String {
    let (first, rest) = grammar.split_once('\n').unwrap_or((grammar, ""));
    let expr = first.strip_prefix("root ::= ").unwrap_or(first);
    let taken = |name: &str| rest.lines().any(|l| l.starts_with(&format!("{name} ::=")));
    let mut n = 0;
    let (call, json) = loop {
        let (call, json) = if n == 0 {
            ("tool-call".to_owned(), "tool-call-json".to_owned())
        } else {
            (format!("tool-call-{n}"), format!("tool-call-json-{n}"))
        };
        if !taken(&call) && !taken(&json) {
            break (call, json);
        }
        n += 1;
    };
    let open = llama_core::json_schema::literal(open);
    let close = llama_core::json_schema::literal(close);
    let root = if repeat { format!("{call} ( ws {call} )*") } else { call.clone() };
    format!("root ::= {root}\n{call} ::= {open} ws {json} ws {close}\n{json} ::= {expr}\n{rest}")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use llama_core::gbnf;

    use super::*;

    fn tools(choice: Choice, parallel: bool) -> Tools {
        let defs: Vec<OrderedJson> = [
            r#"{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}"#,
            r##"{"type": "function", "function": {"name": "add", "parameters": {"type": "object",
                "properties": {"a": {"$ref": "#/$defs/num"}, "b": {"type": "integer", "minimum": 0}}, "$defs": {"num": {"type": "number"}}}}}"##,
            r#"{"type": "function", "function": {"name": "now"}}"#,
        ]
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
        let mut t = Tools::from_request(Some(&defs), None, Some(parallel)).unwrap().unwrap();
        t.choice = choice;
        t
    }

    /// Whether `grammar` (read by llama-core's GBNF parser, which accepts
    /// what llama.cpp accepts) matches exactly `text`.
    fn accepts(grammar: &str, text: &str) -> bool {
        let g = gbnf::parse(grammar).unwrap_or_else(|e| panic!("{e}\n{grammar}"));
        let rules: HashMap<&str, &[gbnf::Alternative]> =
            g.rules.iter().map(|r| (r.name.as_str(), r.alternatives.as_slice())).collect();
        let chars: Vec<u32> = text.chars().map(u32::from).collect();
        let m = Matcher { rules, s: &chars };
        m.alternatives(m.rules["root"], 0, 0).contains(&chars.len())
    }

    /// Every end position of matches from a start: enough for the small
    /// texts of these tests.
    struct Matcher<'a> {
        rules: HashMap<&'a str, &'a [gbnf::Alternative]>,
        s: &'a [u32],
    }

    impl Matcher<'_> {
        fn alternatives(&self, alts: &[gbnf::Alternative], at: usize, depth: usize) -> BTreeSet<usize> {
            assert!(depth < 400, "grammar recursion too deep");
            let mut out = BTreeSet::new();
            for alt in alts {
                let mut cur = BTreeSet::from([at]);
                for item in &alt.items {
                    cur = cur.iter().flat_map(|&p| self.item(item, p, depth + 1)).collect();
                }
                out.extend(cur);
            }
            out
        }

        fn item(&self, item: &gbnf::Item, at: usize, depth: usize) -> BTreeSet<usize> {
            let Some(rep) = item.repetitions.first() else { return self.atom(&item.atom, at, depth) };
            assert_eq!(item.repetitions.len(), 1, "stacked repetitions are not used by the converter");
            let mut out = BTreeSet::new();
            let mut frontier = BTreeSet::from([at]);
            let mut n = 0;
            loop {
                if n >= rep.min {
                    out.extend(frontier.iter().copied());
                }
                if rep.max.is_some_and(|m| n >= m) || frontier.is_empty() || n > self.s.len() as u64 + rep.min {
                    break;
                }
                frontier = frontier.iter().flat_map(|&p| self.atom(&item.atom, p, depth + 1)).collect();
                n += 1;
            }
            out
        }

        fn atom(&self, atom: &gbnf::Atom, at: usize, depth: usize) -> BTreeSet<usize> {
            match atom {
                gbnf::Atom::Literal(lit) => {
                    if self.s[at..].starts_with(lit) {
                        BTreeSet::from([at + lit.len()])
                    } else {
                        BTreeSet::new()
                    }
                }
                gbnf::Atom::Class(class) => match self.s.get(at) {
                    Some(&c) => {
                        let listed = class.items.iter().any(|i| match *i {
                            gbnf::ClassItem::Char(x) => x == c,
                            gbnf::ClassItem::Range(lo, hi) => lo <= c && c <= hi,
                        });
                        if listed != class.negated { BTreeSet::from([at + 1]) } else { BTreeSet::new() }
                    }
                    None => BTreeSet::new(),
                },
                gbnf::Atom::Any => {
                    if at < self.s.len() {
                        BTreeSet::from([at + 1])
                    } else {
                        BTreeSet::new()
                    }
                }
                gbnf::Atom::Rule(name) => self.alternatives(self.rules[name.as_str()], at, depth + 1),
                gbnf::Atom::Group(alts) => self.alternatives(alts, at, depth + 1),
                gbnf::Atom::Token(_) => BTreeSet::new(),
            }
        }
    }

    #[test]
    fn generic_grammar_takes_calls_and_replies() {
        let g = tool_grammar(Format::Generic, &tools(Choice::Auto, false), None).unwrap().unwrap();
        assert!(accepts(&g, r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#));
        assert!(accepts(&g, r#"{"tool_call": {"name": "add", "arguments": {"a": 1.5, "b": 2}}}"#));
        assert!(accepts(&g, r#"{"tool_call": {"name": "now", "arguments": {"any": [1]}}}"#));
        assert!(accepts(&g, r#"{"response": "It is sunny."}"#));
        assert!(!accepts(&g, r#"{"tool_call": {"name": "get_weather", "arguments": {}}}"#), "city is required");
        assert!(!accepts(&g, r#"{"tool_call": {"name": "other", "arguments": {}}}"#));
        assert!(!accepts(&g, r#"{"tool_calls": [{"name": "now", "arguments": {}}]}"#));
        let required = tool_grammar(Format::Generic, &tools(Choice::Required, true), None).unwrap().unwrap();
        assert!(accepts(
            &required,
            r#"{"tool_calls": [{"name": "now", "arguments": {}}, {"name": "add", "arguments": {}}]}"#
        ));
        assert!(!accepts(&required, r#"{"response": "no"}"#));
        let named = tool_grammar(Format::Generic, &tools(Choice::Named("add".into()), false), None).unwrap().unwrap();
        assert!(accepts(&named, r#"{"tool_call": {"name": "add", "arguments": {"a": 1}}}"#));
        assert!(!accepts(&named, r#"{"tool_call": {"name": "now", "arguments": {}}}"#));
        let schema: OrderedJson = serde_json::from_str(
            r#"{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}"#,
        )
        .unwrap();
        let shaped = tool_grammar(Format::Generic, &tools(Choice::Auto, false), Some(&schema)).unwrap().unwrap();
        assert!(accepts(&shaped, r#"{"response": {"ok": true}}"#));
        assert!(!accepts(&shaped, r#"{"response": "text"}"#));
    }

    #[test]
    fn family_grammars_only_when_a_call_is_required() {
        for format in [Format::Hermes, Format::Llama3 { builtin: false }, Format::MistralNemo] {
            assert_eq!(tool_grammar(format, &tools(Choice::Auto, false), None).unwrap(), None);
            assert_eq!(tool_grammar(format, &tools(Choice::None, false), None).unwrap(), None);
        }
        assert_eq!(tool_grammar(Format::Generic, &tools(Choice::None, false), None).unwrap(), None);
        let hermes = tool_grammar(Format::Hermes, &tools(Choice::Required, true), None).unwrap().unwrap();
        let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}\n</tool_call>";
        assert!(accepts(&hermes, call));
        assert!(accepts(&hermes, &format!("{call}\n{call}")));
        assert!(!accepts(&hermes, "Sure!"));
        let one = tool_grammar(Format::Hermes, &tools(Choice::Required, false), None).unwrap().unwrap();
        assert!(!accepts(&one, &format!("{call}\n{call}")));
        let llama =
            tool_grammar(Format::Llama3 { builtin: true }, &tools(Choice::Required, false), None).unwrap().unwrap();
        assert!(accepts(&llama, r#"{"name": "now", "parameters": {}}"#));
        let mistral = tool_grammar(Format::MistralNemo, &tools(Choice::Required, false), None).unwrap().unwrap();
        assert!(accepts(&mistral, r#"[{"name": "now", "arguments": {}}]"#));
        assert!(!accepts(&mistral, r#"[{"name": "now", "arguments": {}}, {"name": "now", "arguments": {}}]"#));
    }

    #[test]
    fn malformed_parameters_are_a_400_naming_the_tool() {
        let bad: OrderedJson = serde_json::from_str(
            r#"{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "x"}}}"#,
        )
        .unwrap();
        let t =
            Tools::from_request(Some(&[bad]), Some(&OrderedJson::String("required".into())), None).unwrap().unwrap();
        match tool_grammar(Format::Generic, &t, None).unwrap_err() {
            AppError::InvalidRequest { param, .. } => {
                assert_eq!(param.as_deref(), Some("tools[0].function.parameters"))
            }
            e => panic!("{e:?}"),
        }
    }
}
