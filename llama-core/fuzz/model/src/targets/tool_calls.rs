//! Fuzz target `tool_calls`: any model output through the server's
//! tool-call readers (`llama-server/src/tool_calls/parse.rs`, `stream.rs`),
//! in every format: Hermes 2 Pro / Qwen `<tool_call>`, Llama 3.x JSON (and
//! `<|python_tag|>` built-ins), Mistral Nemo `[TOOL_CALLS]`, the generic
//! JSON. Never a panic; every call read has a name and arguments that are
//! JSON text (a model may give them as a JSON string, then its content must
//! be JSON); ids are `call_…` (Mistral: nine letters and digits).
//! The same output streamed in pieces never sends a fragment for a call it
//! has not announced, and announces calls in order with their name; when
//! the stream ends with as many calls as the whole output has, they have the
//! same names, and every call's streamed arguments are what the whole
//! output reads (a call sent early is never taken back).
//!
//! Input: byte 0 picks the format (bits 0–2, modulo 5: generic, Hermes,
//! Llama 3, Llama 3 with built-ins, Mistral Nemo) and the stream's piece
//! length (bits 3–7, plus 1, in characters); the rest is the output (lossy
//! UTF-8).
//!
//! Compiled into the model fuzz crate and into llama-server's corpus-replay
//! test (it names only `llama_server`).

use llama_server::tool_calls_fuzzing::{Format, parse_output, stream};

/// The format byte 0 names.
pub fn format(b: u8) -> Format {
    match (b & 7) % 5 {
        0 => Format::Generic,
        1 => Format::Hermes,
        2 => Format::Llama3 { builtin: false },
        3 => Format::Llama3 { builtin: true },
        _ => Format::MistralNemo,
    }
}

/// Run one input.
pub fn tool_calls(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let format = format(flags);
    let text = String::from_utf8_lossy(rest);
    let parsed = parse_output(format, &text);
    for call in &parsed.calls {
        assert!(!call.name.is_empty(), "{format:?} {text:?}: a call without a name");
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&call.arguments) {
            panic!("{format:?} {text:?}: arguments {:?} are not JSON: {e}", call.arguments);
        }
        if format == Format::MistralNemo {
            assert!(call.id.len() == 9 && call.id.chars().all(|c| c.is_ascii_alphanumeric()), "{:?}", call.id);
        } else {
            assert!(call.id.starts_with("call_"), "{:?}", call.id);
        }
    }

    // The same output in pieces of `len` characters.
    let len = usize::from(flags >> 3) + 1;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let pieces: Vec<&str> = chars
        .chunks(len)
        .map(|c| {
            let start = c[0].0;
            let end = c.last().map_or(start, |&(i, ch)| i + ch.len_utf8());
            &text[start..end]
        })
        .collect();
    let mut calls: Vec<(String, String)> = Vec::new();
    for delta in stream(format, &pieces) {
        let Err((index, head, arguments)) = delta else { continue };
        match head {
            Some((_id, name)) => {
                assert_eq!(index, calls.len(), "{format:?} {text:?}: calls announced out of order");
                assert!(!name.is_empty());
                calls.push((name, arguments));
            }
            None => {
                assert!(index < calls.len(), "{format:?} {text:?}: a fragment of call {index}, not announced");
                calls[index].1.push_str(&arguments);
            }
        }
    }
    if calls.len() == parsed.calls.len() {
        for ((name, arguments), call) in calls.iter().zip(&parsed.calls) {
            assert_eq!(name, &call.name, "{format:?} {text:?}");
            assert_eq!(arguments, &call.arguments, "{format:?} {text:?}");
        }
    }
}
