//! Tool calls in the model's output, one reader per format.
//!
//! Each reader scans the whole output so far and says what it holds: text,
//! and calls with their name and arguments. It runs in two modes. At the
//! end of generation (`done`), a call that does not parse becomes text
//! again. While streaming, it holds back what could still become a call
//! (a prefix of `<tool_call>`, a JSON object not yet known to be one) and
//! reports a call as soon as its name is known, with the arguments that
//! have arrived so far; those are the raw text of the arguments object, so
//! later scans only append to it, and the fragments a stream sends add up
//! to the final `arguments`.

use super::Format;
use super::json_scan::{End, skip_ws, string_end, string_prefix, value_end};

/// The Hermes 2 Pro / Qwen tags around a call.
pub(crate) const HERMES_OPEN: &str = "<tool_call>";
/// See [`HERMES_OPEN`].
pub(crate) const HERMES_CLOSE: &str = "</tool_call>";
/// Llama 3.x's tag before a call (a control token: the engine does not
/// print it, so calls are also read without it).
const PYTHON_TAG: &str = "<|python_tag|>";
/// Mistral Nemo's tag before its list of calls (a control token too).
const MISTRAL_TAG: &str = "[TOOL_CALLS]";
/// Keys that hold a call's arguments (`parameters` in Llama 3.x's format).
const ARGUMENT_KEYS: &[&str] = &["arguments", "parameters"];

/// A call found in the output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FoundCall {
    /// The function's name; `None` while it has not been read yet.
    pub name: Option<String>,
    /// The arguments as JSON text: complete, or while streaming the raw
    /// text that has arrived (when `streamable`).
    pub arguments: String,
    /// `arguments` is the raw text of an object, so it only grows by
    /// appending; otherwise it is known only once the call is complete.
    pub streamable: bool,
    /// The whole call has been read.
    pub complete: bool,
    /// The id the model gave the call (Mistral's format has one).
    pub id: Option<String>,
}

/// One piece of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Text for the message's `content`.
    Text(String),
    /// A tool call.
    Call(FoundCall),
}

/// What a reader found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Text and calls, in output order.
    pub items: Vec<Item>,
}

impl Scan {
    fn text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        if let Some(Item::Text(last)) = self.items.last_mut() {
            last.push_str(t);
        } else {
            self.items.push(Item::Text(t.to_owned()));
        }
    }

    fn call(&mut self, c: FoundCall) {
        self.items.push(Item::Call(c));
    }

    /// The message's content: the text around the calls, without leading
    /// whitespace; while streaming without trailing whitespace either (it
    /// may turn out to precede a call), at the end without it when there
    /// are calls. So what a stream sent is always a prefix of the end's.
    pub(crate) fn content(&self, done: bool) -> String {
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Text(t) => Some(t.as_str()),
                Item::Call(_) => None,
            })
            .collect();
        if done && !self.has_calls() {
            return text.trim_start().to_owned();
        }
        text.trim().to_owned()
    }

    /// The calls, in order.
    pub(crate) fn calls(&self) -> impl Iterator<Item = &FoundCall> {
        self.items.iter().filter_map(|i| match i {
            Item::Call(c) => Some(c),
            Item::Text(_) => None,
        })
    }

    fn has_calls(&self) -> bool {
        self.calls().next().is_some()
    }
}

/// Read `text` (the output so far; all of it when `done`) as `format`.
pub(crate) fn scan(format: Format, text: &str, done: bool) -> Scan {
    let mut out = Scan::default();
    match format {
        Format::Generic => generic(text, done, &mut out),
        Format::Hermes => hermes(text, done, &mut out),
        Format::Llama3 { builtin } => llama3(text, done, builtin, &mut out),
        Format::MistralNemo => mistral(text, done, &mut out),
    }
    // Streaming, a call whose name is not known yet is not reported; it
    // holds back what follows it too.
    if !done && let Some(cut) = out.items.iter().position(|i| matches!(i, Item::Call(c) if c.name.is_none())) {
        out.items.truncate(cut);
    }
    out
}

/// A call object `{"name": ..., "arguments": {...}}` starting at `start`
/// (a `{`): the call and where it ends, the call so far, or `None` if it is
/// not a call.
enum CallObject {
    Done(FoundCall, usize),
    Partial(FoundCall),
}

fn call_object(s: &str, start: usize) -> Option<CallObject> {
    let b = s.as_bytes();
    let mut call = FoundCall::default();
    let mut args_done = false;
    let mut i = start + 1;
    let mut first = true;
    loop {
        i = skip_ws(s, i);
        let Some(&c) = b.get(i) else { return Some(CallObject::Partial(call)) };
        if c == b'}' && first {
            return None;
        }
        if c != b'"' {
            return None;
        }
        let key_end = match string_end(s, i) {
            End::Complete(e) => e,
            End::Incomplete => return Some(CallObject::Partial(call)),
            End::Invalid => return None,
        };
        let key: String = serde_json::from_str(&s[i..key_end]).ok()?;
        i = skip_ws(s, key_end);
        let Some(&c) = b.get(i) else { return Some(CallObject::Partial(call)) };
        if c != b':' {
            return None;
        }
        i = skip_ws(s, i + 1);
        if i >= b.len() {
            return Some(CallObject::Partial(call));
        }
        let value_start = i;
        let end = value_end(s, value_start);
        let is_args = ARGUMENT_KEYS.contains(&key.as_str());
        match end {
            End::Invalid => return None,
            End::Incomplete => {
                if is_args && call.name.is_some() && b[value_start] == b'{' {
                    call.streamable = true;
                    call.arguments = s[value_start..].to_owned();
                }
                return Some(CallObject::Partial(call));
            }
            End::Complete(e) => {
                let value = &s[value_start..e];
                match key.as_str() {
                    "name" => call.name = Some(serde_json::from_str::<String>(value).ok()?),
                    "id" => call.id = serde_json::from_str::<String>(value).ok(),
                    k if ARGUMENT_KEYS.contains(&k) => {
                        if b[value_start] == b'"' {
                            // Arguments given as a JSON string: their text,
                            // which must be JSON too (else the call stays text).
                            call.arguments = serde_json::from_str::<String>(value).ok()?;
                            serde_json::from_str::<serde::de::IgnoredAny>(&call.arguments).ok()?;
                            call.streamable = false;
                        } else {
                            call.streamable = call.name.is_some() && b[value_start] == b'{';
                            call.arguments = value.to_owned();
                        }
                        args_done = true;
                    }
                    _ => {}
                }
                i = e;
            }
        }
        i = skip_ws(s, i);
        let Some(&c) = b.get(i) else { return Some(CallObject::Partial(call)) };
        match c {
            b',' => {
                i += 1;
                first = false;
            }
            b'}' => {
                if call.name.as_deref().is_none_or(str::is_empty) {
                    return None;
                }
                if !args_done {
                    call.arguments = "{}".into();
                }
                call.complete = true;
                return Some(CallObject::Done(call, i + 1));
            }
            _ => return None,
        }
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// `tag` (text that may be the start of the tag).
fn partial_tag(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

/// Hermes 2 Pro, Qwen 2.5, Qwen 3: `<tool_call>{"name": ..., "arguments": ...}</tool_call>`,
/// any number of them, text around them.
fn hermes(s: &str, done: bool, out: &mut Scan) {
    let mut pos = 0;
    loop {
        let Some(found) = s[pos..].find(HERMES_OPEN) else {
            let rest = &s[pos..];
            let keep = if done { rest.len() } else { rest.len() - partial_tag(rest, HERMES_OPEN) };
            out.text(&rest[..keep]);
            return;
        };
        let tag = pos + found;
        out.text(&s[pos..tag]);
        let j = skip_ws(s, tag + HERMES_OPEN.len());
        if j == s.len() {
            if done {
                out.text(&s[tag..]);
            }
            return;
        }
        if s.as_bytes()[j] != b'{' {
            // Not a call after all: the tag is text.
            out.text(HERMES_OPEN);
            pos = tag + HERMES_OPEN.len();
            continue;
        }
        match call_object(s, j) {
            Some(CallObject::Done(call, end)) => {
                out.call(call);
                let k = skip_ws(s, end);
                if s[k..].starts_with(HERMES_CLOSE) {
                    pos = k + HERMES_CLOSE.len();
                } else if !done && HERMES_CLOSE.starts_with(&s[k..]) {
                    return;
                } else {
                    // A missing closing tag (the output was cut there, or
                    // the model went on): the call stands.
                    pos = end;
                }
            }
            Some(CallObject::Partial(call)) => {
                if done {
                    out.text(&s[tag..]);
                } else {
                    out.call(call);
                }
                return;
            }
            None => {
                out.text(&s[tag..]);
                return;
            }
        }
    }
}

/// Llama 3.x: one JSON call `{"name": ..., "parameters": ...}` (optionally
/// `"type": "function"`) at the start of the output, after an optional
/// `<|python_tag|>`; with `builtin`, also `<|python_tag|>name.call(arg=value, ...)`.
fn llama3(s: &str, done: bool, builtin: bool, out: &mut Scan) {
    let mut j = skip_ws(s, 0);
    let rest = &s[j..];
    if !done && (rest.is_empty() || (PYTHON_TAG.starts_with(rest) && rest.len() < PYTHON_TAG.len())) {
        return;
    }
    if rest.starts_with(PYTHON_TAG) {
        j = skip_ws(s, j + PYTHON_TAG.len());
        if ran_out(s, j, done, out) {
            return;
        }
    }
    let b = s.as_bytes();
    if b.get(j) == Some(&b'{') {
        match call_object(s, j) {
            Some(CallObject::Done(call, end)) => {
                out.call(call);
                out.text(&s[end..]);
            }
            Some(CallObject::Partial(call)) => {
                if done {
                    out.text(s);
                } else {
                    out.call(call);
                }
            }
            None => out.text(s),
        }
        return;
    }
    if builtin {
        match builtin_call(s, j) {
            Builtin::Call(call, end) => {
                out.call(call);
                out.text(&s[end..]);
                return;
            }
            Builtin::Maybe if !done => return,
            Builtin::Maybe | Builtin::No => {}
        }
    }
    out.text(s);
}

enum Builtin {
    Call(FoundCall, usize),
    /// The output so far could still become one.
    Maybe,
    No,
}

/// `name.call(arg=value, ...)` at `start`, values in JSON.
fn builtin_call(s: &str, start: usize) -> Builtin {
    let b = s.as_bytes();
    let ident_end = |from: usize| {
        let mut i = from;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        i
    };
    let name_end = ident_end(start);
    if name_end == start || b[start].is_ascii_digit() {
        return Builtin::No;
    }
    const CALL: &str = ".call(";
    let after = &s[name_end..];
    if !after.starts_with(CALL) {
        return if CALL.starts_with(after) { Builtin::Maybe } else { Builtin::No };
    }
    let mut args: Vec<(String, String)> = Vec::new();
    let mut i = skip_ws(s, name_end + CALL.len());
    loop {
        let Some(&c) = b.get(i) else { return Builtin::Maybe };
        if c == b')' && args.is_empty() {
            break;
        }
        let key_end = ident_end(i);
        if key_end == i {
            return Builtin::No;
        }
        let key = s[i..key_end].to_owned();
        i = skip_ws(s, key_end);
        match b.get(i) {
            None => return Builtin::Maybe,
            Some(b'=') => i = skip_ws(s, i + 1),
            Some(_) => return Builtin::No,
        }
        if i >= b.len() {
            return Builtin::Maybe;
        }
        match value_end(s, i) {
            End::Complete(e) => {
                args.push((key, s[i..e].to_owned()));
                i = skip_ws(s, e);
            }
            End::Incomplete => return Builtin::Maybe,
            End::Invalid => return Builtin::No,
        }
        match b.get(i) {
            None => return Builtin::Maybe,
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b')') => break,
            Some(_) => return Builtin::No,
        }
    }
    let body: Vec<String> =
        args.iter().map(|(k, v)| format!("{}: {v}", serde_json::Value::String(k.clone()))).collect();
    let call = FoundCall {
        name: Some(s[start..name_end].to_owned()),
        arguments: format!("{{{}}}", body.join(", ")),
        streamable: false,
        complete: true,
        id: None,
    };
    Builtin::Call(call, i + 1)
}

/// Mistral Nemo: `[TOOL_CALLS][{"name": ..., "arguments": ..., "id": ...}, ...]`,
/// text before the tag; without the tag (the engine does not print control
/// tokens), a list of call objects at the start of the output.
fn mistral(s: &str, done: bool, out: &mut Scan) {
    let (before, list) = match s.find(MISTRAL_TAG) {
        Some(t) => (&s[..t], skip_ws(s, t + MISTRAL_TAG.len())),
        None => {
            let j = skip_ws(s, 0);
            let rest = &s[j..];
            let k = skip_ws(s, j + 1);
            if rest.starts_with('[') && (k == s.len() || s.as_bytes()[k] == b'{') {
                if k == s.len() && !done {
                    return;
                }
                ("", j)
            } else if !done && rest.is_empty() {
                return;
            } else {
                let keep = if done { s.len() } else { s.len() - partial_tag(s, MISTRAL_TAG) };
                out.text(&s[..keep]);
                return;
            }
        }
    };
    out.text(before);
    let whole = &s[before.len()..];
    let mut calls = Vec::new();
    let b = s.as_bytes();
    if list == s.len() {
        if done {
            out.text(whole);
        }
        return;
    }
    if b[list] != b'[' {
        out.text(whole);
        return;
    }
    let mut i = skip_ws(s, list + 1);
    loop {
        match b.get(i) {
            None => break,
            Some(b'{') => {}
            Some(_) => {
                out.text(whole);
                return;
            }
        }
        match call_object(s, i) {
            Some(CallObject::Done(call, end)) => {
                calls.push(call);
                i = skip_ws(s, end);
                match b.get(i) {
                    Some(b',') => i = skip_ws(s, i + 1),
                    Some(b']') => {
                        for c in calls {
                            out.call(c);
                        }
                        out.text(&s[i + 1..]);
                        return;
                    }
                    None => break,
                    Some(_) => {
                        out.text(whole);
                        return;
                    }
                }
            }
            Some(CallObject::Partial(call)) => {
                calls.push(call);
                break;
            }
            None => {
                out.text(whole);
                return;
            }
        }
    }
    // The output stops inside the list.
    if done {
        out.text(whole);
    } else {
        for c in calls {
            out.call(c);
        }
    }
}

/// The generic format (any other model, with the output constrained by a
/// grammar): `{"tool_calls": [{"name", "arguments"}, ...]}`,
/// `{"tool_call": {"name", "arguments"}}` or `{"response": "..."}`. A
/// `response` that is not a string (a `response_format` schema) is its
/// Whether the output ran out at `pos` (nothing more to read): then it is
/// text when the output is complete, and undecided while it streams.
fn ran_out(s: &str, pos: usize, done: bool, out: &mut Scan) -> bool {
    if pos < s.len() {
        return false;
    }
    if done {
        out.text(s);
    }
    true
}

/// JSON text.
fn generic(s: &str, done: bool, out: &mut Scan) {
    let b = s.as_bytes();
    let j = skip_ws(s, 0);
    if ran_out(s, j, done, out) {
        return;
    }
    if b[j] != b'{' {
        out.text(s);
        return;
    }
    let i = skip_ws(s, j + 1);
    if ran_out(s, i, done, out) {
        return;
    }
    if b[i] != b'"' {
        out.text(s);
        return;
    }
    let key_end = match string_end(s, i) {
        End::Complete(e) => e,
        End::Incomplete if !done => return,
        _ => {
            out.text(s);
            return;
        }
    };
    let Ok(key) = serde_json::from_str::<String>(&s[i..key_end]) else {
        out.text(s);
        return;
    };
    let colon = skip_ws(s, key_end);
    if ran_out(s, colon, done, out) {
        return;
    }
    if b[colon] != b':' {
        out.text(s);
        return;
    }
    let v = skip_ws(s, colon + 1);
    if ran_out(s, v, done, out) {
        return;
    }
    // Where the value ends, if it does, and whether the object closes after it.
    let closes = |end: usize| -> Option<usize> {
        let k = skip_ws(s, end);
        match b.get(k) {
            Some(b'}') => Some(k + 1),
            None => Some(s.len()),
            Some(_) => None,
        }
    };
    match key.as_str() {
        "response" => {
            if b[v] == b'"' {
                match string_prefix(s, v) {
                    // A reply cut short (by `max_tokens`) is still the reply.
                    Some((text, None)) => out.text(&text),
                    Some((text, Some(end))) => match closes(end) {
                        Some(after) => {
                            out.text(&text);
                            out.text(&s[after..]);
                        }
                        None => out.text(s),
                    },
                    None => out.text(s),
                }
            } else {
                match value_end(s, v) {
                    End::Complete(end) => match closes(end) {
                        Some(after) => {
                            out.text(&s[v..end]);
                            out.text(&s[after..]);
                        }
                        None => out.text(s),
                    },
                    End::Incomplete if !done => {}
                    _ => out.text(s),
                }
            }
        }
        "tool_call" => {
            if b[v] != b'{' {
                out.text(s);
                return;
            }
            match call_object(s, v) {
                Some(CallObject::Done(call, end)) => match closes(end) {
                    Some(after) => {
                        out.call(call);
                        out.text(&s[after..]);
                    }
                    None => out.text(s),
                },
                Some(CallObject::Partial(call)) => {
                    if done {
                        out.text(s);
                    } else {
                        out.call(call);
                    }
                }
                None => out.text(s),
            }
        }
        "tool_calls" => {
            if b[v] != b'[' {
                out.text(s);
                return;
            }
            let mut calls = Vec::new();
            let mut i = skip_ws(s, v + 1);
            let mut partial = false;
            loop {
                match b.get(i) {
                    None => {
                        partial = true;
                        break;
                    }
                    Some(b'{') => {}
                    Some(_) => {
                        out.text(s);
                        return;
                    }
                }
                match call_object(s, i) {
                    Some(CallObject::Done(call, end)) => {
                        calls.push(call);
                        i = skip_ws(s, end);
                        match b.get(i) {
                            Some(b',') => i = skip_ws(s, i + 1),
                            Some(b']') => break,
                            None => {
                                partial = true;
                                break;
                            }
                            Some(_) => {
                                out.text(s);
                                return;
                            }
                        }
                    }
                    Some(CallObject::Partial(call)) => {
                        calls.push(call);
                        partial = true;
                        break;
                    }
                    None => {
                        out.text(s);
                        return;
                    }
                }
            }
            if partial {
                if done {
                    out.text(s);
                } else {
                    for c in calls {
                        out.call(c);
                    }
                }
                return;
            }
            match closes(i + 1) {
                Some(after) => {
                    for c in calls {
                        out.call(c);
                    }
                    out.text(&s[after..]);
                }
                None => out.text(s),
            }
        }
        _ => out.text(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final reading: content and `(name, arguments)` pairs.
    fn done(format: Format, text: &str) -> (String, Vec<(String, String)>) {
        let found = scan(format, text, true);
        let calls = found
            .calls()
            .map(|c| {
                assert!(c.complete, "{text}: {c:?}");
                (c.name.clone().unwrap(), c.arguments.clone())
            })
            .collect();
        (found.content(true), calls)
    }

    fn call(name: &str, args: &str) -> (String, String) {
        (name.to_owned(), args.to_owned())
    }

    /// Streaming `text` one byte-ish piece at a time: every scan extends the
    /// one before (content and arguments only grow), and the last one
    /// agrees with the final reading.
    fn check_stream(format: Format, text: &str) {
        let mut content = String::new();
        let mut calls: Vec<(String, String, bool)> = Vec::new();
        let cuts: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &cut in &cuts {
            let found = scan(format, &text[..cut], false);
            let now = found.content(false);
            assert!(now.starts_with(&content), "{text:?} at {cut}: content {now:?} after {content:?}");
            content = now;
            for (i, c) in found.calls().enumerate() {
                let name = c.name.clone().unwrap();
                if let Some((n, args, streamable)) = calls.get_mut(i) {
                    assert_eq!(*n, name, "{text:?} at {cut}");
                    if *streamable {
                        assert!(c.arguments.starts_with(args.as_str()), "{text:?} at {cut}: {c:?} after {args:?}");
                    }
                    *args = c.arguments.clone();
                } else {
                    calls.push((name, c.arguments.clone(), c.streamable));
                }
            }
        }
        let (final_content, final_calls) = done(format, text);
        assert!(final_content.starts_with(&content), "{text:?}: {final_content:?} vs streamed {content:?}");
        assert_eq!(calls.len(), final_calls.len(), "{text:?}");
        for ((n, args, _), (fn_, fa)) in calls.iter().zip(&final_calls) {
            assert_eq!((n, args), (fn_, fa), "{text:?}");
        }
    }

    #[test]
    fn hermes_calls() {
        let f = Format::Hermes;
        let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert_eq!(done(f, one), (String::new(), vec![call("get_weather", r#"{"city": "Paris"}"#)]));
        let two = format!("Let me check.\n{one}\n<tool_call>{{\"arguments\": {{}}, \"name\": \"now\"}}</tool_call>");
        assert_eq!(
            done(f, &two),
            ("Let me check.".into(), vec![call("get_weather", r#"{"city": "Paris"}"#), call("now", "{}")])
        );
        // Arguments as a JSON string, a missing closing tag, no arguments.
        let odd = r#"<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}"#;
        assert_eq!(done(f, odd), (String::new(), vec![call("f", r#"{"a": 1}"#)]));
        assert_eq!(done(f, r#"<tool_call>{"name": "g"}</tool_call>"#).1, vec![call("g", "{}")]);
        for text in [one, two.as_str(), odd, "plain <tool text", "a <tool_call> b"] {
            check_stream(f, text);
        }
    }

    #[test]
    fn malformed_and_truncated_hermes_calls_are_text() {
        let f = Format::Hermes;
        for text in [
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\" \"Paris\"}}</tool_call>",
            "<tool_call>{\"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",
            "<tool_call>{}</tool_call>",
            "<tool_call>",
            "Sure <tool_call>{\"name\": \"x\", \"arguments\": {\"a\": [1, 2}}</tool_call>",
        ] {
            let (content, calls) = done(f, text);
            assert!(calls.is_empty(), "{text}");
            assert_eq!(content, text, "{text}");
        }
        // Those never reported as calls while streaming stream as the text
        // they end as (a call cut short streams as a call: see stream.rs).
        for text in
            ["<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>{\"name\": 3}", "<tool_call>{}", "<tool_call>"]
        {
            check_stream(f, text);
        }
        // The tag with no JSON after it is text, and later calls still count.
        let (content, calls) = done(f, "a <tool_call> b <tool_call>{\"name\": \"x\"}</tool_call>");
        assert_eq!((content.as_str(), calls), ("a <tool_call> b", vec![call("x", "{}")]));
    }

    #[test]
    fn hermes_streams_arguments_as_they_come() {
        let f = Format::Hermes;
        let found = scan(f, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci", false);
        let c = found.calls().next().unwrap();
        assert_eq!((c.name.as_deref(), c.arguments.as_str(), c.streamable), (Some("get_weather"), "{\"ci", true));
        // Text that may be the start of a tag is held back; so is trailing space.
        assert_eq!(scan_content(f, "Hi <tool_"), "Hi");
        assert_eq!(scan_content(f, "Hi <b>"), "Hi <b>");
        // Name after arguments: nothing to report until the object is whole.
        assert_eq!(scan(f, "<tool_call>{\"arguments\": {\"a\": 1}, \"na", false).calls().count(), 0);
    }

    fn scan_content(f: Format, text: &str) -> String {
        scan(f, text, false).content(false)
    }

    #[test]
    fn llama3_calls() {
        let f = Format::Llama3 { builtin: true };
        let json = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
        assert_eq!(done(f, json).1, vec![call("get_weather", r#"{"city": "Paris"}"#)]);
        let typed = r#"<|python_tag|>{"type": "function", "name": "f", "parameters": {}}"#;
        assert_eq!(done(f, typed).1, vec![call("f", "{}")]);
        let builtin = r#"<|python_tag|>brave_search.call(query="llama.rs", count=3)"#;
        assert_eq!(done(f, builtin).1, vec![call("brave_search", r#"{"query": "llama.rs", "count": 3}"#)]);
        assert_eq!(done(f, "wolfram_alpha.call()").1, vec![call("wolfram_alpha", "{}")]);
        // A call only counts at the start; anything else is text.
        for text in
            ["The answer is {\"name\": \"f\"}", "{\"a\": 1}", "Hello there", "x.call(1)", "{\"name\": \"f\", \"par"]
        {
            assert_eq!(done(f, text), (text.to_owned(), vec![]), "{text}");
        }
        for text in [json, typed, builtin, "Hello there", "{\"a\": 1}", "brave"] {
            check_stream(f, text);
        }
        assert_eq!(done(Format::Llama3 { builtin: false }, "f.call(a=1)").1, vec![]);
    }

    #[test]
    fn mistral_calls() {
        let f = Format::MistralNemo;
        let tagged = r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123XYZ"}]"#;
        let found = scan(f, tagged, true);
        let c = found.calls().next().unwrap();
        assert_eq!(
            (c.name.as_deref(), c.arguments.as_str(), c.id.as_deref()),
            (Some("get_weather"), r#"{"city": "Paris"}"#, Some("abc123XYZ"))
        );
        // Without the tag (a control token the engine does not print).
        let bare = r#"[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]"#;
        assert_eq!(done(f, bare).1, vec![call("a", "{}"), call("b", r#"{"x": 1}"#)]);
        for text in
            ["[1] is a citation", "Sure.", "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {", "[TOOL_CALLS]oops"]
        {
            assert_eq!(done(f, text), (text.to_owned(), vec![]), "{text}");
        }
        for text in [tagged, bare, "[1] is a citation", "Sure. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]"] {
            check_stream(f, text);
        }
    }

    #[test]
    fn generic_calls_and_responses() {
        let f = Format::Generic;
        let one = r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#;
        assert_eq!(done(f, one), (String::new(), vec![call("get_weather", r#"{"city": "Paris"}"#)]));
        let many = r#"{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": [1]}}]}"#;
        assert_eq!(done(f, many).1, vec![call("a", "{}"), call("b", r#"{"x": [1]}"#)]);
        assert_eq!(done(f, r#"{"response": "Hi \"you\"\n"}"#), ("Hi \"you\"\n".into(), vec![]));
        assert_eq!(done(f, r#"{"response": {"answer": "yes"}}"#), (r#"{"answer": "yes"}"#.into(), vec![]));
        // A reply cut by max_tokens is the reply so far; a cut call is text.
        assert_eq!(done(f, r#"{"response": "Hello wor"#).0, "Hello wor");
        let cut = r#"{"tool_call": {"name": "get_weather", "arguments": {"ci"#;
        assert_eq!(done(f, cut), (cut.to_owned(), vec![]));
        for text in [
            "plain text",
            r#"{"other": 1}"#,
            r#"{"tool_call": 5}"#,
            r#"{"tool_calls": [1]}"#,
            "{\"tool_call\": {\"name\": \"f\"} x",
        ] {
            assert_eq!(done(f, text), (text.to_owned(), vec![]), "{text}");
        }
        for text in [one, many, r#"{"response": "Hi \u00e9 \"you\""}"#, "plain", r#"{"response": [1, 2]}"#] {
            check_stream(f, text);
        }
        // Streaming a reply: its decoded text so far.
        assert_eq!(scan_content(f, r#"{"response": "Hello\nwor"#), "Hello\nwor");
    }
}
