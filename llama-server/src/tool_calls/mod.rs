//! Tool calling for the OpenAI Chat Completions API: a request's `tools`,
//! `tool_choice` and `parallel_tool_calls` validated ([`Tools`]); the
//! format the model writes calls in, found from its chat template
//! ([`Format::detect`], as llama.cpp's server chooses it); the prompt the
//! template gets ([`template_input`]: the `tools` variable, assistant
//! `tool_calls`, and for templates that ignore tools a system message that
//! describes them); the grammar that makes a model call a tool when it must
//! ([`tool_grammar`]); and the model's output read back into calls, whole
//! ([`parse_output`]) or while it streams ([`ToolStream`]).
//!
//! docs/SERVER.md ("Tool calling") lists the formats and how each is
//! detected.

mod grammar;
mod json_scan;
mod parse;
mod prompt;
mod stream;

use std::collections::HashSet;

use llama_core::ChatTemplate;
use llama_core::json_schema::OrderedJson;

pub(crate) use grammar::tool_grammar;
pub(crate) use prompt::template_input;
pub(crate) use stream::{StreamDelta, ToolStream};

use crate::error::AppError;
use crate::ids::random_id;

/// Most tools a request may define (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// Longest tool name (OpenAI's limit).
pub const MAX_TOOL_NAME: usize = 64;

/// How a model writes its tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Any other model: the output is constrained by a grammar to
    /// `{"tool_call": {"name", "arguments"}}` (`{"tool_calls": [...]}` with
    /// parallel calls) or `{"response": "..."}`.
    Generic,
    /// Hermes 2 Pro, Qwen 2.5, Qwen 3: `<tool_call>{"name", "arguments"}</tool_call>`.
    Hermes,
    /// Llama 3.1 / 3.2 / 3.3: `{"name", "parameters"}`, and with `builtin`
    /// (the template knows `<|python_tag|>`) `name.call(arg=value)`.
    Llama3 {
        /// The template has `<|python_tag|>`: built-in tool calls are read too.
        builtin: bool,
    },
    /// Mistral Nemo: `[TOOL_CALLS][{"name", "arguments", "id"}]`.
    MistralNemo,
}

impl Format {
    /// The format of the model whose chat template is `template`, as
    /// llama.cpp's server detects it: from markers in the template's source,
    /// for templates that render the `tools` they are given; the generic
    /// format for any other template (and for llama.cpp's built-in
    /// formatter, which renders no tools).
    pub fn detect(template: &ChatTemplate) -> Format {
        if template.is_builtin() || !template.caps().tools {
            return Format::Generic;
        }
        let src = template.source();
        if src.contains(parse::HERMES_OPEN) {
            Format::Hermes
        } else if src.contains("[TOOL_CALLS]") {
            Format::MistralNemo
        } else if src.contains("<|start_header_id|>ipython<|end_header_id|>") {
            Format::Llama3 { builtin: src.contains("<|python_tag|>") }
        } else {
            Format::Generic
        }
    }
}

/// One function the model may call, validated.
#[derive(Clone, Debug)]
pub struct Tool {
    /// `function.name`.
    pub name: String,
    /// `function.parameters` (a JSON schema), if given.
    pub parameters: Option<OrderedJson>,
    /// The tool as the request gave it, for the template.
    pub definition: OrderedJson,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The model does not call tools (its output is not read for calls).
    None,
    /// The model chooses (the default).
    Auto,
    /// The model calls at least one tool.
    Required,
    /// The model calls this function.
    Named(String),
}

/// A request's tools: `tools`, `tool_choice`, `parallel_tool_calls`.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The tools, in the request's order.
    pub list: Vec<Tool>,
    /// `tool_choice` (default `auto`).
    pub choice: Choice,
    /// `parallel_tool_calls` (default false, as in llama.cpp; OpenAI's is
    /// true): whether the grammar lets the model call several tools at once.
    pub parallel: bool,
}

impl Tools {
    /// Validate a request's `tools`, `tool_choice` and `parallel_tool_calls`:
    /// `None` when it has no tools (an empty list is none).
    ///
    /// # Errors
    /// A 400 naming the field: a tool that is not `{"type": "function",
    /// "function": {"name", "description"?, "parameters"?}}`, a name that is
    /// not 1 to 64 of `a-z A-Z 0-9 _ - . :` or is defined twice, more than
    /// [`MAX_TOOLS`] tools, a `tool_choice` that is not `none`, `auto`,
    /// `required` or `{"type": "function", "function": {"name"}}` naming a
    /// defined tool, `required` or a named function without tools.
    pub fn from_request(
        tools: Option<&[OrderedJson]>,
        choice: Option<&OrderedJson>,
        parallel: Option<bool>,
    ) -> Result<Option<Tools>, AppError> {
        let tools = tools.unwrap_or_default();
        if tools.len() > MAX_TOOLS {
            return Err(AppError::invalid("tools", format!("at most {MAX_TOOLS} tools may be given")));
        }
        let mut list = Vec::with_capacity(tools.len());
        let mut names = HashSet::new();
        for (i, definition) in tools.iter().enumerate() {
            let tool = validate_tool(i, definition)?;
            if !names.insert(tool.name.clone()) {
                return Err(AppError::invalid(
                    format!("tools[{i}].function.name"),
                    format!("the tool name {:?} is defined twice", tool.name),
                ));
            }
            list.push(tool);
        }
        let choice = match choice {
            None | Some(OrderedJson::Null) => Choice::Auto,
            Some(c) => parse_choice(c, &names)?,
        };
        if list.is_empty() {
            return match choice {
                Choice::None | Choice::Auto => Ok(None),
                _ => Err(AppError::invalid("tool_choice", "`tool_choice` needs `tools`")),
            };
        }
        Ok(Some(Tools { list, choice, parallel: parallel.unwrap_or(false) }))
    }

    /// The tools' definitions, for the template's `tools` variable.
    pub fn definitions(&self) -> Vec<OrderedJson> {
        self.list.iter().map(|t| t.definition.clone()).collect()
    }
}

fn validate_tool(i: usize, definition: &OrderedJson) -> Result<Tool, AppError> {
    let at = |field: &str| if field.is_empty() { format!("tools[{i}]") } else { format!("tools[{i}].{field}") };
    let bad = |field: &str, what: &str| Err(AppError::invalid(at(field), format!("`{}` {what}", at(field))));
    let OrderedJson::Object(_) = definition else { return bad("", "must be an object") };
    match definition.get("type") {
        Some(OrderedJson::String(t)) if t == "function" => {}
        Some(OrderedJson::String(_)) => return bad("type", "must be \"function\" (the only tool type supported)"),
        Some(_) => return bad("type", "must be the string \"function\""),
        None => return bad("type", "is required"),
    }
    let function = match definition.get("function") {
        Some(f @ OrderedJson::Object(_)) => f,
        Some(_) => return bad("function", "must be an object"),
        None => return bad("function", "is required"),
    };
    let name = match function.get("name") {
        Some(OrderedJson::String(n)) => n,
        Some(_) => return bad("function.name", "must be a string"),
        None => return bad("function.name", "is required"),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if name.is_empty() || name.len() > MAX_TOOL_NAME || !name.chars().all(valid) {
        return bad("function.name", "must be 1 to 64 letters, digits, underscores, dashes, dots or colons");
    }
    if !matches!(function.get("description"), None | Some(OrderedJson::String(_))) {
        return bad("function.description", "must be a string");
    }
    if !matches!(function.get("strict"), None | Some(OrderedJson::Bool(_) | OrderedJson::Null)) {
        return bad("function.strict", "must be a boolean");
    }
    let parameters = match function.get("parameters") {
        None | Some(OrderedJson::Null) => None,
        Some(p @ OrderedJson::Object(_)) => Some(p.clone()),
        Some(_) => return bad("function.parameters", "must be a JSON schema object"),
    };
    Ok(Tool { name: name.clone(), parameters, definition: definition.clone() })
}

fn parse_choice(choice: &OrderedJson, names: &HashSet<String>) -> Result<Choice, AppError> {
    let expected = "`tool_choice` must be \"none\", \"auto\", \"required\" or \
                    {\"type\": \"function\", \"function\": {\"name\": ...}}";
    match choice {
        OrderedJson::String(s) => match s.as_str() {
            "none" => Ok(Choice::None),
            "auto" => Ok(Choice::Auto),
            "required" => Ok(Choice::Required),
            _ => Err(AppError::invalid("tool_choice", expected)),
        },
        OrderedJson::Object(_) => {
            if !matches!(choice.get("type"), Some(OrderedJson::String(t)) if t == "function") {
                return Err(AppError::invalid("tool_choice.type", expected));
            }
            let Some(OrderedJson::String(name)) = choice.get("function").and_then(|f| f.get("name")) else {
                return Err(AppError::invalid("tool_choice.function.name", expected));
            };
            if !names.contains(name) {
                return Err(AppError::invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice` names the function {name:?}, which is not in `tools`"),
                ));
            }
            Ok(Choice::Named(name.clone()))
        }
        _ => Err(AppError::invalid("tool_choice", expected)),
    }
}

/// A call read from the model's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// `call_…` (for Mistral's format the model's own nine-character id, as
    /// its template requires them).
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments as JSON text.
    pub arguments: String,
}

/// The assistant's message read from the whole output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The text around the calls (the whole output when there are none).
    pub content: String,
    /// The calls; a call that does not parse is left in `content` as text.
    pub calls: Vec<Call>,
}

/// Read a whole output written in `format`.
pub fn parse_output(format: Format, text: &str) -> Parsed {
    let scan = parse::scan(format, text, true);
    Parsed {
        content: scan.content(true),
        calls: scan
            .calls()
            .map(|c| Call {
                id: call_id(format, c.id.as_deref()),
                name: c.name.clone().unwrap_or_default(),
                arguments: c.arguments.clone(),
            })
            .collect(),
    }
}

/// The id of a call: `call_` and 24 random characters, as OpenAI's; for
/// Mistral's format the model's own id when it is nine letters and digits
/// (its template refuses anything else when the call comes back), else a
/// random one of that shape.
fn call_id(format: Format, from_model: Option<&str>) -> String {
    if format == Format::MistralNemo {
        return match from_model {
            Some(id) if id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()) => id.to_owned(),
            _ => random_id("")[..9].to_owned(),
        };
    }
    random_id("call_")
}

/// The readers of tool calls and the grammar builder, for the fuzz targets
/// (`llama-core/fuzz/model`: `tool_calls`, `tool_grammar`) and their corpus
/// replay. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use llama_core::json_schema::OrderedJson;

    pub use super::{Call, Format, Parsed, parse_output};

    /// A call's fragment in a stream: its index, on the first fragment its
    /// id and name, and more of its arguments.
    pub type CallFragment = (usize, Option<(String, String)>, String);

    /// The deltas a streamed output gives, piece by piece, then at its end:
    /// `Ok(text)` for `content`, `Err(fragment)` for a call's.
    pub fn stream(format: Format, pieces: &[&str]) -> Vec<Result<String, CallFragment>> {
        let mut reader = super::ToolStream::new(format);
        let mut deltas: Vec<super::StreamDelta> = pieces.iter().flat_map(|p| reader.push(p)).collect();
        deltas.extend(reader.finish());
        deltas
            .into_iter()
            .map(|d| match d {
                super::StreamDelta::Content(text) => Ok(text),
                super::StreamDelta::Call { index, head, arguments } => Err((index, head, arguments)),
            })
            .collect()
    }

    /// The grammar for a request's `tools`, `tool_choice` and
    /// `parallel_tool_calls` in `format` (`response`: a `response_format`
    /// schema), as a chat completion builds it: `Ok(None)` when the output
    /// is not constrained.
    ///
    /// # Errors
    /// The 400 message for fields `Tools::from_request`
    /// or the grammar builder refuse.
    pub fn grammar(
        format: Format,
        tools: &[OrderedJson],
        choice: Option<&OrderedJson>,
        parallel: Option<bool>,
        response: Option<&OrderedJson>,
    ) -> Result<Option<String>, String> {
        let Some(tools) = super::Tools::from_request(Some(tools), choice, parallel).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        super::tool_grammar(format, &tools, response).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> OrderedJson {
        serde_json::from_str(text).unwrap()
    }

    fn param_of(err: AppError) -> String {
        match err {
            AppError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn tools_are_validated_naming_the_field() {
        let weather =
            json(r#"{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}"#);
        let ok = Tools::from_request(Some(std::slice::from_ref(&weather)), None, None).unwrap().unwrap();
        assert_eq!((ok.list[0].name.as_str(), &ok.choice, ok.parallel), ("get_weather", &Choice::Auto, false));
        assert!(Tools::from_request(Some(&[]), None, None).unwrap().is_none());
        assert!(Tools::from_request(None, Some(&json(r#""none""#)), None).unwrap().is_none());

        let bad_tools = [
            (r#"5"#, "tools[0]"),
            (r#"{"function": {"name": "f"}}"#, "tools[0].type"),
            (r#"{"type": "custom", "function": {"name": "f"}}"#, "tools[0].type"),
            (r#"{"type": "function"}"#, "tools[0].function"),
            (r#"{"type": "function", "function": {}}"#, "tools[0].function.name"),
            (r#"{"type": "function", "function": {"name": "a b"}}"#, "tools[0].function.name"),
            (r#"{"type": "function", "function": {"name": ""}}"#, "tools[0].function.name"),
            (r#"{"type": "function", "function": {"name": "f", "parameters": "x"}}"#, "tools[0].function.parameters"),
            (r#"{"type": "function", "function": {"name": "f", "description": 1}}"#, "tools[0].function.description"),
        ];
        for (tool, param) in bad_tools {
            let err = Tools::from_request(Some(&[json(tool)]), None, None).unwrap_err();
            assert_eq!(param_of(err), param, "{tool}");
        }
        let twice = Tools::from_request(Some(&[weather.clone(), weather.clone()]), None, None).unwrap_err();
        assert_eq!(param_of(twice), "tools[1].function.name");
        let many = vec![weather.clone(); MAX_TOOLS + 1];
        assert_eq!(param_of(Tools::from_request(Some(&many), None, None).unwrap_err()), "tools");

        let tools = std::slice::from_ref(&weather);
        let choice = |c: &str| Tools::from_request(Some(tools), Some(&json(c)), Some(true));
        assert_eq!(choice(r#""required""#).unwrap().unwrap().choice, Choice::Required);
        assert_eq!(choice(r#""none""#).unwrap().unwrap().choice, Choice::None);
        assert_eq!(
            choice(r#"{"type": "function", "function": {"name": "get_weather"}}"#).unwrap().unwrap().choice,
            Choice::Named("get_weather".into())
        );
        for (c, param) in [
            (r#""sometimes""#, "tool_choice"),
            ("3", "tool_choice"),
            (r#"{"type": "function", "function": {"name": "other"}}"#, "tool_choice.function.name"),
            (r#"{"type": "function"}"#, "tool_choice.function.name"),
            (r#"{"type": "allowed_tools"}"#, "tool_choice.type"),
        ] {
            assert_eq!(param_of(choice(c).unwrap_err()), param, "{c}");
        }
        let without = Tools::from_request(None, Some(&json(r#""required""#)), None).unwrap_err();
        assert_eq!(param_of(without), "tool_choice");
    }

    #[test]
    fn formats_are_detected_from_the_template() {
        let detect = |src: &str| Format::detect(&ChatTemplate::new(src, "", "").unwrap());
        let renders_tools = "{% for t in tools or [] %}{{ t.function.name }}{% endfor %}";
        assert_eq!(detect(llama_core::CHATML_TEMPLATE), Format::Generic);
        assert_eq!(detect(&format!("{renders_tools}<tool_call>")), Format::Hermes);
        // The marker alone is not enough: the template must render the tools.
        assert_eq!(detect("{{ '<tool_call>' }}"), Format::Generic);
        assert_eq!(detect(&format!("{renders_tools}[TOOL_CALLS]")), Format::MistralNemo);
        assert_eq!(
            detect(&format!("{renders_tools}<|start_header_id|>ipython<|end_header_id|><|python_tag|>")),
            Format::Llama3 { builtin: true }
        );
        assert_eq!(
            detect(&format!("{renders_tools}<|start_header_id|>ipython<|end_header_id|>")),
            Format::Llama3 { builtin: false }
        );
        assert_eq!(detect(renders_tools), Format::Generic);
    }

    #[test]
    fn outputs_parse_into_calls_with_ids() {
        let p = parse_output(Format::Hermes, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>");
        assert_eq!(p.content, "");
        assert_eq!((p.calls[0].name.as_str(), p.calls[0].arguments.as_str()), ("f", "{\"a\": 1}"));
        assert!(p.calls[0].id.starts_with("call_") && p.calls[0].id.len() == 29, "{}", p.calls[0].id);
        let m = parse_output(
            Format::MistralNemo,
            r#"[{"name": "f", "arguments": {}, "id": "abcDEF123"}, {"name": "g", "arguments": {}, "id": "call_x"}]"#,
        );
        assert_eq!(m.calls[0].id, "abcDEF123");
        assert!(m.calls[1].id.len() == 9 && m.calls[1].id.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
