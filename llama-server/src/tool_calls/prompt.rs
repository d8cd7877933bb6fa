//! What the chat template gets when tools are involved: the messages as
//! JSON (assistant `tool_calls` with object arguments, `tool` results with
//! their call's id and function name), the `tools` variable, and for
//! templates that do not render tools or calls the same information
//! written into the conversation, as llama.cpp's generic format does.

use llama_core::TemplateCaps;
use llama_core::json_schema::OrderedJson;

use super::{Choice, Format, Tools};
use crate::openai::messages::Message;

/// The template's input for a conversation with tools.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TemplateInput {
    /// The `messages` variable.
    pub messages: Vec<OrderedJson>,
    /// The `tools` variable (`None` when the template does not render it,
    /// or there are no tools).
    pub tools: Option<Vec<OrderedJson>>,
}

/// The template input for `messages` with `tools`, for a template with
/// `caps` whose model writes calls in `format`:
///
/// - assistant `tool_calls` go to templates that render them, with their
///   `arguments` as objects (as Hugging Face templates expect); other
///   templates get them in the content, as the generic format writes them
///   (`{"tool_call": {"name": ..., "arguments": ...}}`);
/// - `tool` messages carry `tool_call_id` and the function's `name` (from
///   the call they answer); templates that do not render them get a `user`
///   message `{"tool_response": {"tool", "tool_call_id", "content"}}`;
/// - in the generic format (unless `tool_choice` is `none`), a system
///   message says how to answer in JSON, and describes the tools when the
///   template does not.
pub(crate) fn template_input(
    messages: &[Message],
    tools: Option<&Tools>,
    format: Format,
    caps: TemplateCaps,
) -> TemplateInput {
    let mut out: Vec<OrderedJson> = messages.iter().map(|m| message_json(m, messages, caps)).collect();
    if let Some(tools) = tools
        && format == Format::Generic
        && tools.choice != Choice::None
    {
        add_system(&mut out, &instructions(tools, !caps.tools));
    }
    TemplateInput { messages: out, tools: tools.filter(|_| caps.tools).map(Tools::definitions) }
}

fn string(s: &str) -> OrderedJson {
    OrderedJson::String(s.to_owned())
}

fn object(entries: Vec<(&str, OrderedJson)>) -> OrderedJson {
    OrderedJson::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A call's arguments for a template: the object they encode, or the text
/// itself when it is not one.
fn arguments_value(arguments: &str) -> OrderedJson {
    match serde_json::from_str::<OrderedJson>(arguments) {
        Ok(v @ OrderedJson::Object(_)) => v,
        _ => string(arguments),
    }
}

fn message_json(m: &Message, all: &[Message], caps: TemplateCaps) -> OrderedJson {
    let mut role = m.role.clone();
    let mut content = m.content.clone();
    let mut extra: Vec<(&str, OrderedJson)> = Vec::new();
    if !m.tool_calls.is_empty() {
        if caps.tool_calls {
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    let mut entries = Vec::new();
                    if let Some(id) = &c.id {
                        entries.push(("id", string(id)));
                    }
                    entries.push(("type", string("function")));
                    entries.push((
                        "function",
                        object(vec![("name", string(&c.name)), ("arguments", arguments_value(&c.arguments))]),
                    ));
                    object(entries)
                })
                .collect();
            extra.push(("tool_calls", OrderedJson::Array(calls)));
        } else {
            let call = |c: &crate::openai::messages::CallIn| {
                object(vec![("name", string(&c.name)), ("arguments", arguments_value(&c.arguments))])
            };
            let written = match m.tool_calls.as_slice() {
                [one] => object(vec![("tool_call", call(one))]),
                many => object(vec![("tool_calls", OrderedJson::Array(many.iter().map(call).collect()))]),
            };
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&python_json(&written));
        }
    }
    if role == "tool" {
        let name = m.name.clone().or_else(|| {
            let id = m.tool_call_id.as_deref()?;
            all.iter().flat_map(|a| &a.tool_calls).find(|c| c.id.as_deref() == Some(id)).map(|c| c.name.clone())
        });
        if caps.tool_responses {
            if let Some(id) = &m.tool_call_id {
                extra.push(("tool_call_id", string(id)));
            }
            if let Some(name) = &name {
                extra.push(("name", string(name)));
            }
        } else {
            let mut response = Vec::new();
            if let Some(name) = &name {
                response.push(("tool", string(name)));
            }
            if let Some(id) = &m.tool_call_id {
                response.push(("tool_call_id", string(id)));
            }
            response.push(("content", string(&content)));
            role = "user".into();
            content = python_json(&object(vec![("tool_response", object(response))]));
        }
    } else if let Some(name) = &m.name {
        extra.push(("name", string(name)));
    }
    let mut entries = vec![("role", string(&role)), ("content", string(&content))];
    entries.extend(extra);
    object(entries)
}

/// Append `text` to the first message when it is a system message, else
/// put a system message with it first.
fn add_system(messages: &mut Vec<OrderedJson>, text: &str) {
    if let Some(OrderedJson::Object(entries)) = messages.first_mut()
        && entries.iter().any(|(k, v)| k == "role" && *v == string("system"))
    {
        for (k, v) in entries.iter_mut() {
            if k == "content"
                && let OrderedJson::String(c) = v
            {
                if !c.is_empty() {
                    c.push_str("\n\n");
                }
                c.push_str(text);
            }
        }
        return;
    }
    messages.insert(0, object(vec![("role", string("system")), ("content", string(text))]));
}

/// How to answer in the generic format, and the tools when `describe`.
fn instructions(tools: &Tools, describe: bool) -> String {
    let mut text = String::new();
    if describe {
        text.push_str("You can call these tools (`parameters` is the JSON schema of a tool's `arguments`):\n");
        for tool in &tools.list {
            if let Some(function) = tool.definition.get("function") {
                text.push_str(&python_json(function));
                text.push('\n');
            }
        }
        text.push('\n');
    }
    let name = match &tools.choice {
        Choice::Named(name) => name.as_str(),
        _ => tools.list.first().map_or("", |t| t.name.as_str()),
    };
    let call = format!("{{\"name\": {}, \"arguments\": {{...}}}}", python_json(&string(name)));
    let (key, what, example) = if tools.parallel {
        ("tool_calls", "a list of requests to call tools", format!("{{\"tool_calls\": [{call}]}}"))
    } else {
        ("tool_call", "a request to call a tool", format!("{{\"tool_call\": {call}}}"))
    };
    match &tools.choice {
        Choice::Auto => text.push_str(&format!(
            "Respond in JSON format, either with `{key}` ({what}) or with `response` (your reply to the user), \
             for example:\n{example}\n{{\"response\": \"...\"}}"
        )),
        Choice::Named(name) => text.push_str(&format!(
            "Respond in JSON format with `{key}` ({what}), calling `{name}`, for example:\n{example}"
        )),
        Choice::Required | Choice::None => {
            text.push_str(&format!("Respond in JSON format with `{key}` ({what}), for example:\n{example}"))
        }
    }
    text
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "`), the way
/// the templates' own `tojson` writes it.
pub(crate) fn python_json(v: &OrderedJson) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &OrderedJson, out: &mut String) {
    match v {
        OrderedJson::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(item, out);
            }
            out.push(']');
        }
        OrderedJson::Object(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&string(k).to_json_text());
                out.push_str(": ");
                write(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_json_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::messages::CallIn;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into(), ..Message::default() }
    }

    fn tools(choice: Choice) -> Tools {
        let def: OrderedJson = serde_json::from_str(
            r#"{"type": "function", "function": {"name": "get_weather", "description": "Weather now.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}"#,
        )
        .unwrap();
        let mut t = Tools::from_request(Some(&[def]), None, None).unwrap().unwrap();
        t.choice = choice;
        t
    }

    fn conversation() -> Vec<Message> {
        vec![
            msg("user", "Weather in Paris?"),
            Message {
                tool_calls: vec![CallIn {
                    id: Some("call_1".into()),
                    name: "get_weather".into(),
                    arguments: r#"{"city": "Paris"}"#.into(),
                }],
                ..msg("assistant", "")
            },
            Message { tool_call_id: Some("call_1".into()), ..msg("tool", "Sunny") },
        ]
    }

    fn caps(tools: bool, tool_calls: bool, tool_responses: bool) -> TemplateCaps {
        let mut caps = TemplateCaps::default();
        (caps.tools, caps.tool_calls, caps.tool_responses) = (tools, tool_calls, tool_responses);
        caps
    }

    fn texts(input: &TemplateInput) -> Vec<String> {
        input.messages.iter().map(python_json).collect()
    }

    #[test]
    fn templates_that_render_tools_get_them_as_they_are() {
        let caps = caps(true, true, true);
        let t = tools(Choice::Auto);
        let input = template_input(&conversation(), Some(&t), Format::Hermes, caps);
        assert_eq!(
            texts(&input),
            [
                r#"{"role": "user", "content": "Weather in Paris?"}"#,
                r#"{"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}"#,
                r#"{"role": "tool", "content": "Sunny", "tool_call_id": "call_1", "name": "get_weather"}"#,
            ]
        );
        assert_eq!(input.tools.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn templates_that_ignore_tools_get_them_written_in() {
        let caps = caps(false, false, true);
        let input = template_input(&conversation(), Some(&tools(Choice::Auto)), Format::Generic, caps);
        assert_eq!(input.tools, None);
        let all = texts(&input);
        assert!(all[0].starts_with(r#"{"role": "system", "content": "You can call these tools"#), "{}", all[0]);
        assert!(all[0].contains(r#"{\"name\": \"get_weather\", \"description\": \"Weather now.\""#), "{}", all[0]);
        assert!(all[0].contains("either with `tool_call`"), "{}", all[0]);
        assert_eq!(
            all[2],
            r#"{"role": "assistant", "content": "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}"}"#
        );
        assert_eq!(all[3], r#"{"role": "tool", "content": "Sunny", "tool_call_id": "call_1", "name": "get_weather"}"#);

        // No tool messages either: they become user messages.
        let input =
            template_input(&conversation(), Some(&tools(Choice::Required)), Format::Generic, TemplateCaps::default());
        let all = texts(&input);
        assert!(all[0].contains("Respond in JSON format with `tool_call`"), "{}", all[0]);
        assert_eq!(
            all[3],
            r#"{"role": "user", "content": "{\"tool_response\": {\"tool\": \"get_weather\", \"tool_call_id\": \"call_1\", \"content\": \"Sunny\"}}"}"#
        );
        // A system message of the conversation gets the instructions appended.
        let mut with_system = conversation();
        with_system.insert(0, msg("system", "Be brief."));
        let input = template_input(&with_system, Some(&tools(Choice::Auto)), Format::Generic, caps);
        assert_eq!(input.messages.len(), 4);
        assert!(texts(&input)[0].starts_with(r#"{"role": "system", "content": "Be brief.\n\nYou can call"#));
        // tool_choice none: no instructions.
        let input = template_input(&conversation(), Some(&tools(Choice::None)), Format::Generic, caps);
        assert_eq!(input.messages.len(), 3);
    }
}
