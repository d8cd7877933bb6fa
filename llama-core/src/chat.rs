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
//! `raise_exception(msg)`, `strftime_now(format)` and `tojson`.
#![forbid(unsafe_code)]

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

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
            return crate::model::apply_builtin_chat_template(&self.source, &pairs, add_generation_prompt)?
                .ok_or_else(|| Error::Template("llama.cpp no longer knows this built-in format".into()));
        };
        let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        let input: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum();
        let limit = MAX_OUTPUT_BASE_BYTES.saturating_add(input.saturating_mul(2));
        let mut out = CappedWriter { buf: Vec::new(), limit, exceeded: false };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
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
