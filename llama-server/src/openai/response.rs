//! What chat and text completions share: the envelope of a response and of
//! each streamed chunk (id, object, created, model, fingerprint, usage,
//! timings), and the end of a stream.

use std::collections::VecDeque;
use std::sync::Arc;

use llama_runtime::{Done, Usage as Counts};
use serde::{Deserialize, Serialize};

use super::usage::Usage;
use crate::ids::{random_id, unix_now};
use crate::sse::Frame;
use crate::state::{AppState, Ready};
use crate::timings::Timings;

/// Reported as `system_fingerprint`.
pub(crate) const FINGERPRINT: &str = concat!("llamars-", env!("CARGO_PKG_VERSION"));

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// The names that tell a chat completion from a text completion.
#[derive(Debug)]
pub(super) struct Names {
    /// Prefix of the response id.
    id_prefix: &'static str,
    /// `object` of the whole response.
    object: &'static str,
    /// `object` of each streamed chunk.
    chunk_object: &'static str,
}

pub(super) const CHAT: Names =
    Names { id_prefix: "chatcmpl-", object: "chat.completion", chunk_object: "chat.completion.chunk" };
pub(super) const TEXT: Names = Names { id_prefix: "cmpl-", object: "text_completion", chunk_object: "text_completion" };

/// A whole response or one streamed chunk, around its choices of type `C`.
#[derive(Debug, Serialize)]
pub(super) struct Envelope<'a, C> {
    choices: Vec<C>,
    created: u64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    system_fingerprint: &'static str,
    /// On the response, and on the chunk that ends the last choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
    /// Absent; or, when the client asked for usage, `null` on every chunk
    /// but the usage chunk at the end. Always there on a whole response.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// Common per-request settings after validation, and the parts of the
/// response that chat and text completions share.
#[derive(Debug)]
pub(super) struct Plan {
    pub ready: Arc<Ready>,
    names: &'static Names,
    id: String,
    created: u64,
    model: String,
    /// Choices in all.
    n: usize,
    include_usage: bool,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    pub logprobs: Option<u32>,
}

impl Plan {
    pub(super) fn new(
        names: &'static Names,
        state: &AppState,
        ready: Arc<Ready>,
        n: usize,
        logprobs: Option<u32>,
        stream_options: Option<&StreamOptions>,
    ) -> Plan {
        Plan {
            ready,
            names,
            id: random_id(names.id_prefix),
            created: unix_now(),
            model: state.model_id(),
            n,
            include_usage: stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            logprobs,
        }
    }

    fn envelope<C>(&self, object: &'static str, choices: Vec<C>) -> Envelope<'_, C> {
        Envelope {
            choices,
            created: self.created,
            id: &self.id,
            model: &self.model,
            object,
            system_fingerprint: FINGERPRINT,
            timings: None,
            usage: None,
        }
    }

    /// The whole response, when not streamed: `usage` of all choices, the
    /// `timings` of the first.
    pub(super) fn response<C>(&self, choices: Vec<C>, usage: &Counts, first: &Done) -> Envelope<'_, C> {
        Envelope {
            timings: Some(Timings::of(first)),
            usage: Some(Some(Usage::from(usage))),
            ..self.envelope(self.names.object, choices)
        }
    }

    /// One streamed chunk: the same id/created/model on every chunk, and
    /// `usage: null` until the last when the client asked for usage.
    pub(super) fn chunk<C>(&self, choice: C) -> Envelope<'_, C> {
        Envelope { usage: self.include_usage.then_some(None), ..self.envelope(self.names.chunk_object, vec![choice]) }
    }

    /// The last chunk of a choice, the `finished`th to end: the last of
    /// all carries llama.cpp's `timings`.
    pub(super) fn finish_frame<C: Serialize>(&self, mut chunk: Envelope<'_, C>, finished: usize, done: &Done) -> Frame {
        if finished == self.n {
            chunk.timings = Some(Timings::of(done));
        }
        Frame::json(&chunk)
    }

    /// The end of a stream: a chunk with `usage` and no choices when the
    /// client asked for one, then `[DONE]`.
    pub(super) fn end_stream(&self, usage: &Counts, out: &mut VecDeque<Frame>) {
        if self.include_usage {
            let last: Envelope<'_, ()> = Envelope {
                usage: Some(Some(Usage::from(usage))),
                ..self.envelope(self.names.chunk_object, Vec::new())
            };
            out.push_back(Frame::json(&last));
        }
        out.push_back(Frame::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    fn envelope(timings: Option<Timings>, usage: Option<Option<Usage>>) -> Envelope<'static, u32> {
        Envelope {
            choices: vec![1, 2],
            created: 3,
            id: "chatcmpl-x",
            model: "m",
            object: CHAT.object,
            system_fingerprint: FINGERPRINT,
            timings,
            usage,
        }
    }

    #[test]
    fn wire_order_and_usage_null() {
        let usage = Usage::from(&Counts::default());
        assert_wire_order(&envelope(None, None));
        assert_wire_order(&envelope(None, Some(None)));
        assert_wire_order(&envelope(None, Some(Some(usage))));
        let json = serde_json::to_string(&envelope(None, Some(None))).unwrap();
        assert!(json.ends_with(&format!(r#""system_fingerprint":"{FINGERPRINT}","usage":null}}"#)), "{json}");
        let json = serde_json::to_string(&envelope(None, None)).unwrap();
        assert!(!json.contains("usage") && !json.contains("timings"), "{json}");
    }
}
