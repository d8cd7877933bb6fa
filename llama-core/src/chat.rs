//! Chat templates: the Jinja template a GGUF ships in `tokenizer.chat_template`,
//! rendered with minijinja in a sandbox.
//!
//! Templates come from model files, which may be hostile (the attack behind
//! CVE-2024-34359 was a GGUF chat template that ran code through an
//! unsandboxed Jinja engine). minijinja cannot touch the host: it has no
//! Python objects to escape through, and here it also gets no template loader
//! (so `{% include %}`, `{% import %}` and `{% extends %}` find nothing), a fuel
//! limit (every instruction costs fuel, so endless loops stop), a recursion
//! limit, and a cap on the rendered output.
//!
//! minijinja itself may panic on some input (2.24 does on reverse slices of
//! empty strings and lists: `{{ ''[::-1] }}`); compiling and rendering run
//! under `catch_unwind`, so such a template is an [`Error::Template`] too.
//!
//! What it cannot bound is memory held by intermediate values: an expression
//! may build one string of up to minijinja's limit for repetition (100 MB),
//! and repeated concatenation can grow it further within the fuel budget.
//! Templates are read from model files the operator chose to load, never from
//! requests.
//!
//! The environment mirrors the one Hugging Face `transformers` renders chat
//! templates with: `trim_blocks` and `lstrip_blocks` on, loop controls,
//! Python string and dict methods (`.strip()`, `.split()`, `.items()`, ...),
//! `raise_exception(msg)`, `strftime_now(format)` and `tojson`, which writes
//! what Python's `json.dumps` writes (as `transformers` defines it:
//! `ensure_ascii=False`, `", "` and `": "` separators, `indent`,
//! `separators` and `sort_keys` arguments) rather than minijinja's
//! HTML-safe JSON.
//!
//! [`ChatTemplate::render_with`] also passes what tool-calling templates
//! read: the `tools` list, messages with `tool_calls` and `tool_call_id`,
//! and extra variables (`enable_thinking`, ...), all with their object keys
//! in the order they were given, as Python dicts keep them.
#![forbid(unsafe_code)]

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectExt, ObjectRepr, Rest, Value, ValueKind, from_args};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::json_schema::OrderedJson;
use crate::{Error, Model, Result, Token};

/// ChatML, the template [`ChatTemplate::for_model`] falls back to when a
/// model has none (as llama.cpp does); also the server's built-in
/// `--chat-template chatml`.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
     {%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// Largest template source accepted, in bytes. Real templates are a few KiB;
/// the largest tool-calling templates stay well below 100 KiB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Fuel for one render: roughly the number of template instructions it may
/// execute. A 1000-message conversation through a tool-calling template uses
/// a few hundred thousand.
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Nesting limit for loops, conditions and macro calls during a render.
pub const TEMPLATE_RECURSION_LIMIT: usize = 100;
/// Output allowed beyond twice the size of the messages, in bytes. The
/// output cap of a render is `MAX_OUTPUT_BASE_BYTES + 2 * input bytes`, so a
/// template can add markup around the conversation but cannot amplify it.
pub const MAX_OUTPUT_BASE_BYTES: usize = 1 << 20;

/// The name the template has inside its environment (it shows in errors).
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template, ready to turn conversations into prompts.
///
/// ```
/// use llama_core::{ChatMessage, ChatTemplate};
///
/// let template = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{{ eos_token }}\n{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}",
///     "<s>",
///     "</s>",
/// )?;
/// let prompt = template.render(&[ChatMessage::new("user", " Hi! ")], true)?;
/// assert_eq!(prompt, "<|user|>Hi!</s>\n<|assistant|>");
/// # Ok::<(), llama_core::Error>(())
/// ```
pub struct ChatTemplate {
    /// The Jinja environment; `None` for llama.cpp's built-in formatter.
    env: Option<Environment<'static>>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: Option<String>,
    /// What the template does with tools, found on first use.
    caps: OnceLock<TemplateCaps>,
}

/// What a template does with tool calling, found by rendering small probe
/// conversations (as llama.cpp finds its templates' capabilities): a
/// template that ignores `tools` needs the caller to describe them another
/// way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TemplateCaps {
    /// It renders the `tools` it is given.
    pub tools: bool,
    /// It renders the `tool_calls` of assistant messages.
    pub tool_calls: bool,
    /// It renders the content of `tool` messages.
    pub tool_responses: bool,
}

/// What [`ChatTemplate::render_with`] gives the template besides the messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions<'a> {
    /// Append the header that starts the assistant's turn
    /// (`add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// The template's `tools` variable: the tools the model may call, each
    /// as OpenAI and Hugging Face write them
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`).
    /// `None` renders `tools` as `none`, as `transformers` passes it.
    pub tools: Option<&'a [OrderedJson]>,
    /// Extra template variables (llama.cpp's `--chat-template-kwargs`, such
    /// as `enable_thinking`). The variables the render sets itself
    /// (`messages`, `tools`, `add_generation_prompt`, `bos_token`,
    /// `eos_token`) win over these.
    pub kwargs: &'a [(String, OrderedJson)],
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("builtin", &self.env.is_none())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source`, with the texts the template sees as `bos_token` and `eos_token`.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] if the source is larger than `MAX_TEMPLATE_BYTES` (1 MiB)
    /// or does not compile (or minijinja panics compiling it).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::Template(format!(
                "the template is {} bytes long, more than the limit of {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", python_tojson);
        // No loader is ever set: this template is the only one the
        // environment knows, so include/import/extends cannot reach files.
        // A panic leaves `env` half-built; it is dropped with the error.
        catch_unwind(AssertUnwindSafe(|| env.add_template_owned(TEMPLATE_NAME, source.to_owned())))
            .map_err(engine_panic)?
            .map_err(template_error)?;
        Ok(ChatTemplate {
            env: Some(env),
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            fallback: None,
            caps: OnceLock::new(),
        })
    }

    /// The chat template for `model`, with its BOS and EOS token texts: the
    /// one place the CLI and the server choose a template.
    ///
    /// - `explicit` (a Jinja source the user gave, e.g. the server's
    ///   `--chat-template`) wins, and must compile.
    /// - Else the model's own (`tokenizer.chat_template`).
    /// - Else, when the model has none or its template does not compile,
    ///   [`CHATML_TEMPLATE`], as llama.cpp falls back to ChatML;
    ///   [`fallback`](ChatTemplate::fallback) then says why, for the caller
    ///   to log.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] if `explicit` does not compile; an error from
    /// `Vocab::token_to_piece` if the BOS
    /// or EOS token has no text.
    pub fn for_model(model: &Model, explicit: Option<&str>) -> Result<ChatTemplate> {
        let (bos, eos) = special_texts(model)?;
        if let Some(source) = explicit {
            return ChatTemplate::new(source, &bos, &eos);
        }
        let why = match model.chat_template() {
            Some(source) => match ChatTemplate::new(&source, &bos, &eos) {
                Ok(template) => return Ok(template),
                Err(e) => format!("the model's chat template does not compile ({e})"),
            },
            None => "the model has no chat template".to_owned(),
        };
        let mut chatml = ChatTemplate::new(CHATML_TEMPLATE, &bos, &eos)?;
        chatml.fallback = Some(why);
        Ok(chatml)
    }

    /// llama.cpp's built-in formatter (no Jinja) for `template`: a name from
    /// [`builtin_chat_templates`](crate::builtin_chat_templates) (`llama3`,
    /// `mistral-v7`, ...), or a Jinja source whose markers llama.cpp
    /// recognizes — what llama.cpp's `--no-jinja` does with a model's
    /// template.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when llama.cpp has no format by that name and
    /// recognizes none in the source.
    pub fn builtin(template: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        if template.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::Template(format!("the template is more than {MAX_TEMPLATE_BYTES} bytes long")));
        }
        if crate::model::apply_builtin_chat_template(template, &[("user", "x")], true)?.is_none() {
            let shown: String = template.chars().take(40).collect();
            return Err(Error::Template(format!(
                "llama.cpp has no built-in chat format named or matching {shown:?} (known: {})",
                crate::builtin_chat_templates().join(", ")
            )));
        }
        Ok(ChatTemplate {
            env: None,
            source: template.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            fallback: None,
            caps: OnceLock::new(),
        })
    }

    /// [`for_model`](ChatTemplate::for_model) with llama.cpp's built-in
    /// formatter instead of Jinja (llama.cpp's `--no-jinja`): `name` if
    /// given, else the format llama.cpp recognizes in the model's template,
    /// else ChatML.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when `name` is no built-in format.
    pub fn builtin_for_model(model: &Model, name: Option<&str>) -> Result<ChatTemplate> {
        let (bos, eos) = special_texts(model)?;
        if let Some(name) = name {
            return ChatTemplate::builtin(name, &bos, &eos);
        }
        let why = match model.chat_template() {
            Some(source) => match ChatTemplate::builtin(&source, &bos, &eos) {
                Ok(template) => return Ok(template),
                Err(_) => "llama.cpp recognizes no built-in format in the model's chat template".to_owned(),
            },
            None => "the model has no chat template".to_owned(),
        };
        let mut chatml = ChatTemplate::builtin("chatml", &bos, &eos)?;
        chatml.fallback = Some(why);
        Ok(chatml)
    }

    /// Whether this is llama.cpp's built-in formatter (not Jinja).
    pub fn is_builtin(&self) -> bool {
        self.env.is_none()
    }

    /// Why [`for_model`](ChatTemplate::for_model) fell back to
    /// [`CHATML_TEMPLATE`] (the model has none, or it does not compile);
    /// `None` for any other template.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text the template sees as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The text the template sees as `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Render a conversation into a prompt. With `add_generation_prompt`, the
    /// template appends the header that starts the assistant's turn.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] if rendering fails: the template called
    /// `raise_exception` (its message is kept), ran out of fuel, recursed
    /// too deeply, produced more than `MAX_OUTPUT_BASE_BYTES + 2 × input` bytes,
    /// or minijinja panicked.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let Some(env) = &self.env else {
            let pairs: Vec<(&str, &str)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
            return self.render_builtin(&pairs, add_generation_prompt);
        };
        let input: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        render_jinja(env, ctx, input)
    }

    /// Render a conversation given as JSON messages, with tools and extra
    /// variables: what tool-calling templates need. Each message is an
    /// object as OpenAI and Hugging Face write them: `role`, `content`
    /// (a string, `null` or a list of parts), and where they apply
    /// `tool_calls` (`[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`, `arguments` preferably an object, as Hugging Face
    /// templates expect), `tool_call_id` and `name`. Object keys keep their
    /// order.
    ///
    /// llama.cpp's built-in formatter (see [`is_builtin`](Self::is_builtin))
    /// sees only each message's role and text content; it ignores tools and
    /// variables.
    ///
    /// # Errors
    ///
    /// As [`render`](Self::render).
    pub fn render_with(&self, messages: &[OrderedJson], options: &RenderOptions<'_>) -> Result<String> {
        let Some(env) = &self.env else {
            let texts: Vec<(String, String)> = messages
                .iter()
                .map(|m| {
                    let role = match m.get("role") {
                        Some(OrderedJson::String(r)) => r.clone(),
                        _ => String::new(),
                    };
                    (role, m.get("content").map(content_text).unwrap_or_default())
                })
                .collect();
            let pairs: Vec<(&str, &str)> = texts.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
            return self.render_builtin(&pairs, options.add_generation_prompt);
        };
        let mut input = json_size(messages.iter());
        let mut ctx: Vec<(String, Value)> = Vec::with_capacity(options.kwargs.len() + 5);
        for (key, value) in options.kwargs {
            input = input.saturating_add(key.len()).saturating_add(json_size(std::iter::once(value)));
            ctx.push((key.clone(), to_value(value)));
        }
        let tools = match options.tools {
            Some(tools) => {
                input = input.saturating_add(json_size(tools.iter()));
                Value::from(tools.iter().map(to_value).collect::<Vec<_>>())
            }
            None => Value::from(()),
        };
        ctx.push(("messages".into(), Value::from(messages.iter().map(to_value).collect::<Vec<_>>())));
        ctx.push(("tools".into(), tools));
        ctx.push(("add_generation_prompt".into(), Value::from(options.add_generation_prompt)));
        ctx.push(("bos_token".into(), Value::from(self.bos_token.as_str())));
        ctx.push(("eos_token".into(), Value::from(self.eos_token.as_str())));
        render_jinja(env, Value::from_object(JsonMap::new(ctx)), input)
    }

    /// What this template does with tools (computed once, by rendering
    /// probe conversations; a probe the template refuses counts as "no").
    pub fn caps(&self) -> TemplateCaps {
        *self.caps.get_or_init(|| probe_caps(self))
    }

    fn render_builtin(&self, pairs: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        crate::model::apply_builtin_chat_template(&self.source, pairs, add_generation_prompt)?
            .ok_or_else(|| Error::Template("llama.cpp no longer knows this built-in format".into()))
    }
}

/// Render `ctx` with the environment's template, under the output cap for
/// `input` bytes of conversation.
fn render_jinja(env: &Environment<'static>, ctx: Value, input: usize) -> Result<String> {
    let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
    let limit = MAX_OUTPUT_BASE_BYTES.saturating_add(input.saturating_mul(2));
    let mut out = CappedWriter { buf: Vec::new(), limit, exceeded: false };
    // The environment is only read while rendering; a panic leaves `out`
    // half-written, and it is dropped with the error.
    let rendered = catch_unwind(AssertUnwindSafe(|| template.render_captured_to(ctx, &mut out)));
    if let Err(e) = rendered.map_err(engine_panic)? {
        return Err(if out.exceeded {
            Error::Template(format!("the rendered prompt exceeds the limit of {limit} bytes"))
        } else {
            template_error(e)
        });
    }
    // minijinja writes only `str` data, so this cannot fail; report rather than panic.
    String::from_utf8(out.buf).map_err(|_| Error::Template("the rendered prompt is not valid UTF-8".into()))
}

/// The text of a message's `content`: a string, `null` (empty), or the
/// concatenated `text` of its parts.
fn content_text(content: &OrderedJson) -> String {
    match content {
        OrderedJson::String(s) => s.clone(),
        OrderedJson::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("text") {
                Some(OrderedJson::String(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect(),
        _ => String::new(),
    }
}

/// Bytes of JSON text `values` take, roughly (for the output cap).
fn json_size<'a>(values: impl Iterator<Item = &'a OrderedJson>) -> usize {
    fn size(v: &OrderedJson) -> usize {
        match v {
            OrderedJson::Null | OrderedJson::Bool(_) => 5,
            OrderedJson::Number(_) => 8,
            OrderedJson::String(s) => s.len() + 2,
            OrderedJson::Array(items) => items.iter().map(size).fold(2, usize::saturating_add),
            OrderedJson::Object(entries) => entries
                .iter()
                .map(|(k, v)| k.len().saturating_add(4).saturating_add(size(v)))
                .fold(2, usize::saturating_add),
        }
    }
    values.map(size).fold(0, usize::saturating_add)
}

/// A JSON value as a template value; objects keep their key order.
fn to_value(v: &OrderedJson) -> Value {
    match v {
        OrderedJson::Null => Value::from(()),
        OrderedJson::Bool(b) => Value::from(*b),
        OrderedJson::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        OrderedJson::String(s) => Value::from(s.as_str()),
        OrderedJson::Array(items) => Value::from(items.iter().map(to_value).collect::<Vec<_>>()),
        OrderedJson::Object(entries) => {
            Value::from_object(JsonMap::new(entries.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()))
        }
    }
}

/// A map that keeps its keys in insertion order (minijinja's own maps sort
/// them unless built with `preserve_order`), as Python dicts do: templates
/// iterate tool parameters and print `tojson` of them.
#[derive(Debug)]
struct JsonMap {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl JsonMap {
    /// Later duplicates of a key win, keeping the first one's place.
    fn new(entries: Vec<(String, Value)>) -> JsonMap {
        let mut kept: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        let mut index = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            match index.get(&k) {
                Some(&i) => kept[i] = (k, v),
                None => {
                    index.insert(k.clone(), kept.len());
                    kept.push((k, v));
                }
            }
        }
        JsonMap { entries: kept, index }
    }
}

impl Object for JsonMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.index.get(key).map(|&i| self.entries[i].1.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.entries.iter().map(|(k, _)| Value::from(k.as_str()))))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Sentinels of the capability probes: names no real conversation uses.
const PROBE_TOOL: &str = "llamars_probe_tool";
const PROBE_CALL: &str = "llamars_probe_call";
const PROBE_RESULT: &str = "llamars_probe_result";

/// Find what `template` does with tools by rendering probe conversations
/// and looking for their sentinels in the output.
fn probe_caps(template: &ChatTemplate) -> TemplateCaps {
    let json = |text: &str| -> OrderedJson { serde_json::from_str(text).unwrap_or(OrderedJson::Null) };
    let tools = [json(&format!(
        r#"{{"type": "function", "function": {{"name": "{PROBE_TOOL}", "description": "A tool.",
            "parameters": {{"type": "object", "properties": {{"arg": {{"type": "string"}}}}, "required": ["arg"]}}}}}}"#
    ))];
    let user = json(r#"{"role": "user", "content": "Question?"}"#);
    let render = |messages: &[OrderedJson], with_tools: bool| {
        let options =
            RenderOptions { add_generation_prompt: false, tools: with_tools.then_some(&tools[..]), kwargs: &[] };
        template.render_with(messages, &options).ok()
    };
    let mut caps = TemplateCaps {
        tools: render(std::slice::from_ref(&user), true).is_some_and(|out| out.contains(PROBE_TOOL)),
        ..TemplateCaps::default()
    };
    // Templates take `arguments` as an object (Hugging Face's convention)
    // or as the JSON string OpenAI sends: try both.
    for arguments in [r#"{"arg": "value"}"#, r#""{"arg": "value"}""#] {
        let conversation = [
            user.clone(),
            json(&format!(
                r#"{{"role": "assistant", "content": "", "tool_calls": [{{"id": "call00001", "type": "function",
                    "function": {{"name": "{PROBE_CALL}", "arguments": {arguments}}}}}]}}"#
            )),
            json(&format!(
                r#"{{"role": "tool", "content": "{PROBE_RESULT}", "tool_call_id": "call00001", "name": "{PROBE_CALL}"}}"#
            )),
        ];
        if let Some(out) = render(&conversation, true) {
            caps.tool_calls = out.contains(PROBE_CALL);
            caps.tool_responses = out.contains(PROBE_RESULT);
            if caps.tool_calls {
                break;
            }
        }
    }
    if !caps.tool_responses {
        let conversation = [
            user,
            json(r#"{"role": "assistant", "content": "Answer."}"#),
            json(&format!(r#"{{"role": "tool", "content": "{PROBE_RESULT}", "tool_call_id": "call00001"}}"#)),
        ];
        caps.tool_responses = render(&conversation, false).is_some_and(|out| out.contains(PROBE_RESULT));
    }
    caps
}

/// Which chat template a model is used with: the one choice the CLI and the
/// server make ([`ChatTemplate::select`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateSpec<'a> {
    /// The model's own Jinja template, else ChatML.
    Model,
    /// A Jinja source the user gave.
    Jinja(&'a str),
    /// llama.cpp's built-in formatter (its `--no-jinja`): the named format,
    /// or with `None` the one it recognizes in the model's template.
    Builtin(Option<&'a str>),
}

impl ChatTemplate {
    /// The template `spec` asks for on `model`: [`for_model`](Self::for_model)
    /// or [`builtin_for_model`](Self::builtin_for_model).
    ///
    /// # Errors
    ///
    /// [`Error::Template`] for a source that does not compile or a name
    /// llama.cpp does not know.
    pub fn select(model: &Model, spec: TemplateSpec<'_>) -> Result<ChatTemplate> {
        match spec {
            TemplateSpec::Model => ChatTemplate::for_model(model, None),
            TemplateSpec::Jinja(source) => ChatTemplate::for_model(model, Some(source)),
            TemplateSpec::Builtin(name) => ChatTemplate::builtin_for_model(model, name),
        }
    }
}

/// The texts of the model's BOS and EOS tokens (empty when it has none).
fn special_texts(model: &Model) -> Result<(String, String)> {
    let vocab = model.vocab();
    let text = |token: Option<Token>| -> Result<String> {
        match token {
            None => Ok(String::new()),
            Some(t) => Ok(String::from_utf8_lossy(&vocab.token_to_piece(t, true)?).into_owned()),
        }
    };
    Ok((text(vocab.bos())?, text(vocab.eos())?))
}

/// An in-memory sink that refuses to grow past `limit` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("chat template output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A minijinja error as [`Error::Template`]: its message, and the root cause
/// when it wraps one (an error inside an include or a macro).
fn template_error(e: minijinja::Error) -> Error {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut root = None;
    let mut source = e.source();
    while let Some(cause) = source {
        root = Some(cause);
        source = cause.source();
    }
    if let Some(root) = root {
        msg.push_str(": ");
        msg.push_str(&root.to_string());
    }
    Error::Template(msg)
}

/// A panic inside minijinja as [`Error::Template`], with its message.
fn engine_panic(payload: Box<dyn Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::Template(format!("the template engine failed on this template (a minijinja bug): {message}"))
}

/// `raise_exception(message)`: templates call it to reject a conversation
/// (for example, roles that do not alternate).
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current date and time (UTC), formatted with
/// the common `strftime` directives.
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    strftime(&format, secs).map_err(|d| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported directive %{d}"))
    })
}

/// `tojson`, as Hugging Face `transformers` defines it for chat templates:
/// Python's `json.dumps(value, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, the four also positional in that
/// order. Unlike minijinja's own filter it does not escape `<`, `>`, `&`
/// and `'`, and it separates items with `", "` and keys with `": "` (`","`
/// between items when indenting), which templates rely on to reproduce the
/// prompts their models were trained on.
fn python_tojson(value: &Value, args: Rest<Value>) -> std::result::Result<Value, minijinja::Error> {
    let (positional, kwargs): (&[Value], Kwargs) = from_args(&args)?;
    if positional.len() > 4 {
        return Err(minijinja::Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let arg = |i: usize, name: &str| -> std::result::Result<Option<Value>, minijinja::Error> {
        let named: Option<Value> = kwargs.get(name)?;
        Ok(named.or_else(|| positional.get(i).cloned()).filter(|v| !v.is_none() && !v.is_undefined()))
    };
    let ensure_ascii = arg(0, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(1, "indent")? {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => {
            let n = i64::try_from(v)?;
            Some(" ".repeat(n.clamp(0, 64) as usize))
        }
    };
    let (item_sep, key_sep) = match arg(2, "separators")? {
        None => (if indent.is_some() { "," } else { ", " }.to_owned(), ": ".to_owned()),
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                    (a.as_str().unwrap_or_default().to_owned(), b.as_str().unwrap_or_default().to_owned())
                }
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ));
                }
            }
        }
    };
    let sort_keys = arg(3, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = JsonStyle { indent, item_sep, key_sep, ensure_ascii, sort_keys };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// How [`write_json`] lays out JSON (the arguments of Python's `json.dumps`).
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

/// Nesting [`write_json`] follows before giving up (Python stops at its
/// recursion limit; values built from JSON nest at most serde_json's 128).
const MAX_JSON_DEPTH: usize = 128;

/// Write `value` as Python's `json.dumps` would.
fn write_json(
    value: &Value,
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: the value is nested too deeply"));
    }
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(value.clone())?));
            }
        }
        ValueKind::String => write_json_string(value.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, depth, ('[', ']'), &items, |item, out| {
                write_json(item, style, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let name = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                    ValueKind::None | ValueKind::Undefined => "null".to_owned(),
                    ValueKind::Bool | ValueKind::Number => {
                        let mut s = String::new();
                        write_json(&key, style, depth + 1, &mut s)?;
                        s
                    }
                    _ => {
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson: keys must be strings, numbers, booleans or none",
                        ));
                    }
                };
                let item = value.get_item(&key)?;
                keys.push((name, item));
            }
            if style.sort_keys {
                keys.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, style, depth, ('{', '}'), &keys, |(k, v), out| {
                write_json_string(k, style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                write_json(v, style, depth + 1, out)
            })?;
        }
        ValueKind::Bytes => {
            let text = String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into_owned();
            write_json_string(&text, style.ensure_ascii, out);
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a {} cannot be written as JSON", value.kind()),
            ));
        }
    }
    Ok(())
}

/// `open items close`, with Python's separators and indentation.
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&T, &mut String) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, depth + 1);
        write_item(item, out)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// A JSON string as Python writes it: `\n`, `\r`, `\t`, `\b`, `\f`, `\"`
/// and `\\`, other control characters as `\u00XX`, and with `ensure_ascii`
/// everything outside ASCII as `\uXXXX` (surrogate pairs above U+FFFF).
fn write_json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it: `1.0`, `0.1`, `1e-05`, `1e+16`,
/// `NaN`, `Infinity`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
    if f.fract() == 0.0 { format!("{f:.1}") } else { format!("{f}") }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Format `unix_secs` (UTC) with `format`; `Err(c)` for an unsupported directive `%c`.
fn strftime(format: &str, unix_secs: u64) -> std::result::Result<String, char> {
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = ((days + 3) % 7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let piece = match d {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year % 100),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            '-' => match chars.next() {
                Some('d') => day.to_string(),
                Some('m') => month.to_string(),
                Some('H') => hour.to_string(),
                Some(other) => return Err(other),
                None => return Err('-'),
            },
            'B' => month_name.to_owned(),
            'b' | 'h' => month_name[..3].to_owned(),
            'A' => WEEKDAYS[weekday].to_owned(),
            'a' => WEEKDAYS[weekday][..3].to_owned(),
            'H' => format!("{hour:02}"),
            'I' => format!("{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_owned(),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'j' => format!("{day_of_year:03}"),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            '%' => "%".to_owned(),
            other => return Err(other),
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each
    // year, then split into 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01; inverse of [`civil_from_days`].
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * mp + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        // 2024-02-29 is day 19782; 2000-03-01 is day 11017.
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        for d in (0..200_000).step_by(37) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    /// minijinja 2.24 indexes out of bounds on reverse slices of empty
    /// sequences (found by the `chat_template` fuzz target).
    #[test]
    fn a_panic_in_minijinja_is_a_template_error() {
        for source in ["{{ ''[::-1] }}", "{{ [][::-2] }}"] {
            match ChatTemplate::new(source, "", "").and_then(|t| t.render(&[], false)) {
                Err(Error::Template(m)) => assert!(m.contains("minijinja"), "{source}: {m}"),
                other => panic!("{source}: {other:?}"),
            }
        }
        // The template stays usable after a render that panicked.
        let t = ChatTemplate::new("{{ messages[0].content[::-1] }}", "", "").unwrap();
        assert!(matches!(t.render(&[ChatMessage::new("user", "")], false), Err(Error::Template(_))));
        assert_eq!(t.render(&[ChatMessage::new("user", "ab")], false).unwrap(), "ba");
    }

    fn json(text: &str) -> OrderedJson {
        serde_json::from_str(text).unwrap()
    }

    fn render_json(source: &str, messages: &[OrderedJson], options: &RenderOptions<'_>) -> String {
        ChatTemplate::new(source, "<s>", "</s>").unwrap().render_with(messages, options).unwrap()
    }

    /// The expected texts are Python's: `json.dumps(v, ensure_ascii=False)`
    /// and friends, as `transformers` calls it.
    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let v = json(
            r#"{"b": [1, 2.5, null, true], "a": {"x": "<&>'\"\n\u00e9\ud83d\ude00\u007f\u0001"}, "f": 1e-5, "g": 1e16, "h": 1.0, "i": 123456789.125}"#,
        );
        let kwargs = [("v".to_owned(), v)];
        let options = RenderOptions { kwargs: &kwargs, ..RenderOptions::default() };
        let cases = [
            (
                "{{ v | tojson }}",
                "{\"b\": [1, 2.5, null, true], \"a\": {\"x\": \"<&>'\\\"\\né😀\u{7f}\\u0001\"}, \"f\": 1e-05, \"g\": 1e+16, \"h\": 1.0, \"i\": 123456789.125}",
            ),
            (
                "{{ v | tojson(ensure_ascii=true) }}",
                "{\"b\": [1, 2.5, null, true], \"a\": {\"x\": \"<&>'\\\"\\n\\u00e9\\ud83d\\ude00\\u007f\\u0001\"}, \"f\": 1e-05, \"g\": 1e+16, \"h\": 1.0, \"i\": 123456789.125}",
            ),
            ("{{ v.b | tojson(indent=2) }}", "[\n  1,\n  2.5,\n  null,\n  true\n]"),
            (
                "{{ v | tojson(separators=(',', ':'), sort_keys=true) }}",
                "{\"a\":{\"x\":\"<&>'\\\"\\né😀\u{7f}\\u0001\"},\"b\":[1,2.5,null,true],\"f\":1e-05,\"g\":1e+16,\"h\":1.0,\"i\":123456789.125}",
            ),
            ("{{ {'a': [], 'b': {}} | tojson(indent=2) }}", "{\n  \"a\": [],\n  \"b\": {}\n}"),
            ("{{ v.a | tojson(false, 1) }}", "{\n \"x\": \"<&>'\\\"\\né😀\u{7f}\\u0001\"\n}"),
            ("{{ 'a\\tb' | tojson }}{{ none | tojson }}{{ -0.5 | tojson }}", "\"a\\tb\"null-0.5"),
        ];
        for (source, want) in cases {
            assert_eq!(render_json(source, &[], &options), want, "{source}");
        }
        let bad = ChatTemplate::new("{{ v | tojson(bogus=1) }}", "", "").unwrap().render_with(&[], &options);
        assert!(matches!(bad, Err(Error::Template(_))), "{bad:?}");
    }

    #[test]
    fn python_floats() {
        for (f, want) in
            [(0.1, "0.1"), (1e-4, "0.0001"), (1.5e-7, "1.5e-07"), (2e300, "2e+300"), (-3.0, "-3.0"), (f64::NAN, "NaN")]
        {
            assert_eq!(python_float(f), want);
        }
    }

    #[test]
    fn render_with_passes_tools_messages_and_kwargs_in_order() {
        let source = "{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters.properties | tojson }};{% endfor %}\
            {% for m in messages %}[{{ m.role }}]{{ m.content }}{% for c in m.tool_calls or [] %}<{{ c.function.name }} {{ c.function.arguments | tojson }}>{% endfor %}\
            {% if m.tool_call_id %}({{ m.tool_call_id }}){% endif %}{% endfor %}\
            {% for k, v in extra.items() %}{{ k }}={{ v }} {% endfor %}{{ enable_thinking }}|{{ add_generation_prompt }}";
        let tools = [json(
            r#"{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}}"#,
        )];
        let messages = [
            json(r#"{"role": "user", "content": "Weather?"}"#),
            json(
                r#"{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"zeta": "Paris", "alpha": 2}}}]}"#,
            ),
            json(r#"{"role": "tool", "content": "Sunny", "tool_call_id": "call_1"}"#),
        ];
        let kwargs = [
            ("enable_thinking".to_owned(), OrderedJson::Bool(false)),
            ("extra".to_owned(), json(r#"{"z": 1, "a": 2}"#)),
            ("add_generation_prompt".to_owned(), OrderedJson::Bool(false)),
        ];
        let options = RenderOptions { add_generation_prompt: true, tools: Some(&tools), kwargs: &kwargs };
        assert_eq!(
            render_json(source, &messages, &options),
            "get_weather:{\"zeta\": {\"type\": \"string\"}, \"alpha\": {\"type\": \"integer\"}};\
             [user]Weather?[assistant]None<get_weather {\"zeta\": \"Paris\", \"alpha\": 2}>[tool]Sunny(call_1)z=1 a=2 False|True"
        );
        // Without tools, `tools` is none (as transformers passes it), not undefined.
        let plain = RenderOptions::default();
        assert_eq!(render_json("{{ tools is none }}", &[], &plain), "True");
    }

    #[test]
    fn caps_are_found_by_probing() {
        let ignores_tools = ChatTemplate::new(CHATML_TEMPLATE, "", "").unwrap();
        assert_eq!(ignores_tools.caps(), TemplateCaps { tools: false, tool_calls: false, tool_responses: true });
        let hermes = ChatTemplate::new(
            "{% for t in tools or [] %}{{ t | tojson }}{% endfor %}{% for m in messages %}{{ m.content }}\
             {% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(hermes.caps(), TemplateCaps { tools: true, tool_calls: true, tool_responses: true });
        let strict = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}{{ m.content }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(strict.caps(), TemplateCaps::default());
    }

    #[test]
    fn strftime_directives() {
        // 2024-07-04 13:05:09 UTC, a Thursday.
        let t = 1_720_098_309;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t).unwrap(), "2024-07-04 13:05:09");
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "04 Jul 2024");
        assert_eq!(strftime("%A, %B %-d (%a) %I %p %j %%", t).unwrap(), "Thursday, July 4 (Thu) 01 PM 186 %");
        assert_eq!(strftime("%F %T", t).unwrap(), "2024-07-04 13:05:09");
        assert_eq!(strftime("%Q", t), Err('Q'));
    }
}
