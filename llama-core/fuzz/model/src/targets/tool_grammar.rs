//! Fuzz target `tool_grammar`: any request fields `tools`, `tool_choice`,
//! `parallel_tool_calls` and a `response_format` schema through the
//! server's validation of tools and its tools → GBNF grammar builder
//! (`llama-server/src/tool_calls/grammar.rs`, over llama-core's JSON schema
//! converter), in every format. Never a panic; a grammar or a 400 message;
//! a grammar passes llama-core's GBNF parser (`gbnf::validate`: llama.cpp
//! accepts it and reads it as written).
//!
//! Input: byte 0 picks the format (as `tool_calls`: bits 0–2, modulo 5);
//! the rest is a JSON object `{"tools": [...], "tool_choice": ...,
//! "parallel_tool_calls": bool, "response": schema}` (missing fields are
//! absent; anything else is ignored).
//!
//! Compiled into the model fuzz crate and into llama-server's corpus-replay
//! test (it names only `llama_server` and `llama_core`).

use llama_core::json_schema::OrderedJson;
use llama_server::tool_calls_fuzzing::grammar;

/// Run one input.
pub fn tool_grammar(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let format = super::tool_calls::format(flags);
    let Ok(OrderedJson::Object(fields)) = serde_json::from_slice::<OrderedJson>(rest) else { return };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let tools = match field("tools") {
        Some(OrderedJson::Array(tools)) => tools.as_slice(),
        _ => &[],
    };
    let parallel = match field("parallel_tool_calls") {
        Some(OrderedJson::Bool(b)) => Some(*b),
        _ => None,
    };
    match grammar(format, tools, field("tool_choice"), parallel, field("response")) {
        Ok(Some(g)) => {
            assert!(!g.is_empty());
            if let Err(e) = llama_core::gbnf::validate(&g) {
                panic!("{format:?}: the tools' grammar does not parse: {e}\n{g}");
            }
        }
        Ok(None) => {}
        Err(message) => assert!(!message.is_empty()),
    }
}
