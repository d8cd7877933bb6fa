//! Tool calls while they stream: after each piece of output, what to add
//! to the message, as OpenAI streams it (text as `content`, each call
//! first with its index, id and name, then its `arguments` in fragments).
//!
//! Each piece re-reads the whole output so far (outputs are bounded by the
//! slot's context) and sends the difference with what was sent. What was
//! sent stays sent: if the output later stops agreeing with it (a call
//! that turns out malformed), nothing more is sent for that choice but its
//! end. A call cut short by `max_tokens` therefore streams as a call with
//! incomplete arguments and `finish_reason: "length"`, as OpenAI's do,
//! where the whole response gives its text as `content`.

use super::parse::{FoundCall, scan};
use super::{Format, call_id};

/// What one piece of output adds to the streamed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StreamDelta {
    /// More `content`.
    Content(String),
    /// A call's first fragment (`head`: its id and name) or more of its
    /// `arguments`.
    Call {
        /// The call's position among the message's calls.
        index: usize,
        /// On the first fragment: the call's id and function name.
        head: Option<(String, String)>,
        /// The next piece of the arguments' JSON text (may be empty).
        arguments: String,
    },
}

/// The streaming reader of one choice's output.
#[derive(Debug)]
pub(crate) struct ToolStream {
    format: Format,
    text: String,
    content: String,
    calls: Vec<Sent>,
    /// The output stopped agreeing with what was sent.
    stuck: bool,
}

/// A call as far as it was sent.
#[derive(Debug)]
struct Sent {
    name: String,
    arguments: String,
}

impl ToolStream {
    /// A reader of output written in `format`.
    pub(crate) fn new(format: Format) -> ToolStream {
        ToolStream { format, text: String::new(), content: String::new(), calls: Vec::new(), stuck: false }
    }

    /// The next piece of output: what it adds.
    pub(crate) fn push(&mut self, piece: &str) -> Vec<StreamDelta> {
        self.text.push_str(piece);
        if self.stuck || piece.is_empty() {
            return Vec::new();
        }
        self.advance(false)
    }

    /// The end of the output: what is left to send.
    pub(crate) fn finish(&mut self) -> Vec<StreamDelta> {
        if self.stuck {
            return Vec::new();
        }
        self.advance(true)
    }

    /// Whether a call was sent (the choice then finishes with `tool_calls`).
    pub(crate) fn has_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    fn advance(&mut self, done: bool) -> Vec<StreamDelta> {
        let scan = scan(self.format, &self.text, done);
        let mut out = Vec::new();
        if scan.calls().count() < self.calls.len() {
            // A call that was sent is not one any more.
            self.stuck = true;
            return out;
        }
        let content = scan.content(done);
        match content.strip_prefix(self.content.as_str()) {
            Some("") => {}
            Some(more) => {
                out.push(StreamDelta::Content(more.to_owned()));
                self.content = content;
            }
            None => {
                self.stuck = true;
                return out;
            }
        }
        for (index, call) in scan.calls().enumerate() {
            if let Some(sent) = self.calls.get_mut(index) {
                let FoundCall { name, arguments, .. } = call;
                let more = arguments.strip_prefix(sent.arguments.as_str());
                match more {
                    Some(more) if name.as_deref() == Some(sent.name.as_str()) => {
                        if !more.is_empty() {
                            out.push(StreamDelta::Call { index, head: None, arguments: more.to_owned() });
                            sent.arguments.clone_from(arguments);
                        }
                    }
                    _ => {
                        self.stuck = true;
                        return out;
                    }
                }
                continue;
            }
            // A new call goes out once its name is known and its arguments
            // can only grow (or are whole); the ones after it wait.
            let Some(name) = &call.name else { break };
            if !call.streamable && !call.complete {
                break;
            }
            let id = call_id(self.format, call.id.as_deref());
            out.push(StreamDelta::Call { index, head: Some((id, name.clone())), arguments: call.arguments.clone() });
            self.calls.push(Sent { name: name.clone(), arguments: call.arguments.clone() });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool_calls::parse_output;

    /// Stream `text` in pieces of `n` characters; the deltas, merged.
    fn stream(format: Format, text: &str, n: usize) -> (String, Vec<(String, String)>, ToolStream) {
        let mut s = ToolStream::new(format);
        let chars: Vec<char> = text.chars().collect();
        let mut deltas = Vec::new();
        for piece in chars.chunks(n) {
            deltas.extend(s.push(&piece.iter().collect::<String>()));
        }
        deltas.extend(s.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for d in deltas {
            match d {
                StreamDelta::Content(c) => content.push_str(&c),
                StreamDelta::Call { index, head: Some((id, name)), arguments } => {
                    assert_eq!(index, calls.len());
                    assert!(id.starts_with("call_") || (format == Format::MistralNemo && id.len() == 9), "{id}");
                    calls.push((name, arguments));
                }
                StreamDelta::Call { index, head: None, arguments } => calls[index].1.push_str(&arguments),
            }
        }
        (content, calls, s)
    }

    #[test]
    fn streamed_deltas_add_up_to_the_whole_response() {
        let cases = [
            (
                Format::Hermes,
                "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>",
            ),
            (Format::Hermes, "No tools needed: 2 + 2 = 4.\n"),
            (
                Format::Generic,
                "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par\\u00eds\"}}}",
            ),
            (Format::Generic, "{\"response\": \"It is \\\"sunny\\\" in Paris.\"}"),
            (
                Format::Generic,
                "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": \"{}\"}]}",
            ),
            (Format::Llama3 { builtin: true }, "<|python_tag|>brave_search.call(query=\"rust\")"),
            (Format::Llama3 { builtin: false }, "{\"name\": \"f\", \"parameters\": {\"a\": true}}"),
            (Format::MistralNemo, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"abcdefghi\"}]"),
        ];
        for (format, text) in cases {
            let whole = parse_output(format, text);
            let want: Vec<(String, String)> =
                whole.calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect();
            for n in [1, 2, 3, 7, 1000] {
                let (content, calls, s) = stream(format, text, n);
                assert_eq!(content, whole.content, "{text} by {n}");
                assert_eq!(calls, want, "{text} by {n}");
                assert_eq!(s.has_calls(), !want.is_empty());
            }
        }
    }

    #[test]
    fn arguments_stream_in_fragments() {
        let mut s = ToolStream::new(Format::Hermes);
        assert_eq!(s.push("<tool_call>\n{\"name\": \"get_"), vec![]);
        let first = s.push("weather\", \"arguments\": {\"ci");
        let [StreamDelta::Call { index: 0, head: Some((id, name)), arguments }] = &first[..] else {
            panic!("{first:?}")
        };
        assert!(id.starts_with("call_"), "{id}");
        assert_eq!((name.as_str(), arguments.as_str()), ("get_weather", "{\"ci"));
        let more = s.push("ty\": \"Paris\"}}");
        assert_eq!(more, vec![StreamDelta::Call { index: 0, head: None, arguments: "ty\": \"Paris\"}".into() }]);
        assert_eq!(s.push("\n</tool_call>"), vec![]);
        assert_eq!(s.finish(), vec![]);
    }

    #[test]
    fn a_call_that_goes_wrong_after_it_started_stops_the_stream() {
        let mut s = ToolStream::new(Format::Hermes);
        let first = s.push("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": ");
        assert!(
            matches!(&first[..], [StreamDelta::Call { index: 0, head: Some((_, name)), arguments }] if name == "f" && arguments == "{\"a\": ")
        );
        // Not JSON after all: nothing more is sent, whatever follows.
        assert_eq!(s.push("oops} more text"), vec![]);
        assert_eq!(s.finish(), vec![]);
        assert!(s.has_calls());
    }
}
