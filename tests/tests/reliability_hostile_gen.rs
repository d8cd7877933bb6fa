//! Generated hostile requests against the real `llama-server` process, for
//! every route that takes a body or a query string.
//!
//! Each route has one or two valid base bodies that use every field it
//! reads. From each base, families of hostile bodies are generated:
//!
//! - **deep**: every node of the body (every field, every array element,
//!   every nested field: messages, content parts, stop, logit_bias, schemas,
//!   response_format, tools, prompts, token lists) replaced by arrays or
//!   objects nested 10 000 and 100 000 deep;
//! - **string**: every string replaced by NUL bytes (escaped, and raw, which
//!   is not JSON), invalid UTF-8 (stray, truncated, overlong, encoded
//!   surrogates), lone and mismatched surrogate escapes; every object key
//!   likewise;
//! - **number**: every number, and every numeric field the route reads,
//!   set to each integer boundary (i32/u32/i64/u64 min/max ±1, 2^53 ± 1),
//!   -0, f32 and f64 extremes, 1e309, and floats where integers belong;
//! - **grammar**: GBNF that hides nesting behind comments, repeats 10⁹ or
//!   2⁶⁴ times, repeats `{m,n}` with m > n, chains 12 000 rules, matches
//!   nothing, names tokens outside the vocabulary... (own server: a crash
//!   there must not hide the other families' results);
//! - **schema**: JSON schemas that nest 10 000 deep through properties,
//!   items and anyOf, refer to themselves, chain 1000 refs, list 100 000
//!   enum values or 10 000 required names, have keys that look like GBNF,
//!   at `json_schema`, `response_format.json_schema.schema` and
//!   `response_format.schema`;
//! - **query**: hostile query strings on every GET route (and on the POST
//!   routes, which ignore them).
//!
//! Every response must be a 4xx in the OpenAI error shape or a normal answer
//! (2xx, well formed; a stream ends properly), never a 5xx (but a 503 with
//! `Retry-After`) and never a dropped connection; the process must stay
//! alive, and `/health` must answer 200 after every batch of cases. A case
//! that kills the server is reported with the server's log, and a fresh
//! server takes over so that one crash does not hide the rest.
//!
//! CI runs the cases that once found a bug ([`PINNED`]) and a seeded,
//! stratified sample of the others: 80 per route
//! (`RELIABILITY_HOSTILE_GEN_PER_ROUTE`), every family represented, seed
//! `RELIABILITY_HOSTILE_GEN_SEED`; the grammars on all but the alias
//! routes. `RELIABILITY_SCALE=long` runs every case.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use llama_e2e::figures::{self, knob};
use llama_e2e::http::{self, Request, Response};
use llama_e2e::load::{Rng, is_error_shape};
use llama_e2e::server::{SMALL, ServerProcess};
use serde_json::{Value, json};

/// A placeholder string that no base body contains: it marks where the raw
/// hostile bytes go.
const HOLE: &str = "@@HOSTILE-HOLE@@";

/// Cases between two `/health` checks.
const BATCH: usize = 25;

/// A case that takes longer than this is a failure (a hang in the making).
const SLOW: Duration = Duration::from_secs(20);

/// Server flags: every generation capped at one token (`-n 1`) so that
/// accepted cases are cheap, a 4 MiB body limit (the deepest bodies are
/// ~0.6 MB), embeddings on so that their routes do more than 501.
fn server_args() -> Vec<&'static str> {
    let mut args = SMALL.to_vec();
    args.extend(["-n", "1", "--max-body", "4194304", "--embeddings"]);
    args
}

/// Start a server and cap its address space, so that a case that makes it
/// allocate without bound fails inside the server (and shows up here) rather
/// than taking memory from everything else on the machine.
fn start_server() -> ServerProcess {
    let s = ServerProcess::start(&server_args());
    let capped = std::process::Command::new("prlimit")
        .args(["--pid", &s.pid().to_string(), "--as=8589934592:8589934592"])
        .status()
        .is_ok_and(|st| st.success());
    if !capped {
        eprintln!("prlimit unavailable: the server's address space is not capped");
    }
    s
}

// ------------------------------------------------------------------ paths

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

type Path = Vec<Step>;

fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Every node below the root, parents before children.
fn nodes(v: &Value) -> Vec<Path> {
    fn walk(v: &Value, at: &mut Path, out: &mut Vec<Path>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    at.push(Step::Key(k.clone()));
                    out.push(at.clone());
                    walk(child, at, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(Step::Index(i));
                    out.push(at.clone());
                    walk(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn get<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

/// Set the value at `path` (inserting the last key if absent).
fn set(v: &mut Value, path: &[Step], new: Value) {
    let Some((last, parent)) = path.split_last() else {
        *v = new;
        return;
    };
    let mut node = v;
    for step in parent {
        node = match step {
            Step::Key(k) => match node.get_mut(k) {
                Some(n) => n,
                None => return,
            },
            Step::Index(i) => match node.get_mut(*i) {
                Some(n) => n,
                None => return,
            },
        };
    }
    match (last, node) {
        (Step::Key(k), Value::Object(map)) => {
            map.insert(k.clone(), new);
        }
        (Step::Index(i), Value::Array(items)) if *i < items.len() => items[*i] = new,
        _ => {}
    }
}

/// Rename the key at `path` (its last step) to the placeholder.
fn rename_key(v: &mut Value, path: &[Step]) {
    let Some((Step::Key(k), parent)) = path.split_last() else { return };
    let mut node = v;
    for step in parent {
        node = match step {
            Step::Key(k) => match node.get_mut(k) {
                Some(n) => n,
                None => return,
            },
            Step::Index(i) => match node.get_mut(*i) {
                Some(n) => n,
                None => return,
            },
        };
    }
    if let Value::Object(map) = node
        && let Some(value) = map.remove(k)
    {
        map.insert(HOLE.to_string(), value);
    }
}

/// The JSON text of `v` with the placeholder string replaced by `raw`.
fn splice(v: &Value, raw: &[u8]) -> Vec<u8> {
    let text = v.to_string();
    let hole = format!("\"{HOLE}\"");
    match text.find(&hole) {
        Some(i) => [&text.as_bytes()[..i], raw, &text.as_bytes()[i + hole.len()..]].concat(),
        None => text.into_bytes(),
    }
}

/// `base` with the value at `path` replaced by the raw bytes `raw`.
fn with_raw(base: &Value, path: &[Step], raw: &[u8]) -> Vec<u8> {
    let mut b = base.clone();
    set(&mut b, path, Value::String(HOLE.into()));
    splice(&b, raw)
}

/// `base` with the key at `path` replaced by the raw bytes `raw`.
fn with_raw_key(base: &Value, path: &[Step], raw: &[u8]) -> Vec<u8> {
    let mut b = base.clone();
    rename_key(&mut b, path);
    splice(&b, raw)
}

// ------------------------------------------------------------------ values

fn deep_array(depth: usize) -> Vec<u8> {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

fn deep_object(depth: usize) -> Vec<u8> {
    format!("{}0{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)).into_bytes()
}

/// Raw JSON strings that are hostile as text: NULs, invalid UTF-8, bad
/// surrogates. Some are not valid JSON at all (that is the point).
fn hostile_strings() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("escaped NUL", br#""\u0000""#.to_vec()),
        ("NUL inside", br#""a\u0000b""#.to_vec()),
        ("1000 NULs", format!("\"{}\"", r"\u0000".repeat(1000)).into_bytes()),
        ("raw NUL byte", b"\"a\x00b\"".to_vec()),
        ("stray 0xFF 0xFE", b"\"\xff\xfe\"".to_vec()),
        ("truncated UTF-8", b"\"\xe2\x82\"".to_vec()),
        ("overlong UTF-8", b"\"\xc0\xaf\"".to_vec()),
        ("UTF-8-encoded surrogate", b"\"\xed\xa0\x80\"".to_vec()),
        ("lone high surrogate", br#""\ud800""#.to_vec()),
        ("lone low surrogate", br#""\udc00""#.to_vec()),
        ("high surrogate then letter", br#""\ud800\u0041""#.to_vec()),
        ("two high surrogates", br#""\ud800\ud800""#.to_vec()),
        ("U+10FFFF as a pair", br#""\udbff\udfff""#.to_vec()),
        ("noncharacters", br#""\uffff\ufffe""#.to_vec()),
        ("bad escape", br#""\x41""#.to_vec()),
        ("unterminated", b"\"abc".to_vec()),
    ]
}

/// Raw JSON object keys (with their quotes).
fn hostile_keys() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty key", br#""""#.to_vec()),
        ("NUL key", br#""\u0000""#.to_vec()),
        ("raw NUL key", b"\"k\x00\"".to_vec()),
        ("invalid UTF-8 key", b"\"\xff\"".to_vec()),
        ("lone surrogate key", br#""\ud800""#.to_vec()),
    ]
}

/// Raw JSON numbers at every boundary a field might be converted through.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "-1",
    "1.0",
    "0.5",
    "1e2",
    "1E+2",
    "-2147483649",
    "-2147483648",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740992",
    "9007199254740993",
    "-9223372036854775809",
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "100000000000000000000000000000",
    "3.4028235e38",
    "3.5e38",
    "1.1754944e-38",
    "1e-45",
    "5e-324",
    "1e308",
    "-1e308",
    "1e309",
];

/// Sampling fields every generation route reads (llama.cpp takes its
/// sampling knobs on the OpenAI routes too).
const SAMPLING_NUMBERS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "xtc_probability",
    "xtc_threshold",
    "min_keep",
    "seed",
    // llama.cpp fields this server ignores: must not matter.
    "n_keep",
    "n_discard",
    "id_slot",
    "n_indent",
    "t_max_predict_ms",
];

/// The grammar from the issue, exactly: a comment whose quote made the
/// nesting check take the 100 000 parentheses for the inside of a string.
fn issue_grammar() -> String {
    format!("# \"\nroot ::= {} \"a\" {}", "(".repeat(100_000), ")".repeat(100_000))
}

fn grammars() -> Vec<(String, String)> {
    let parens = |n: usize| format!("{}\"a\"{}", "(".repeat(n), ")".repeat(n));
    let mut chain = String::from("root ::= r0\n");
    for i in 0..12_000 {
        chain.push_str(&format!("r{i} ::= r{}\n", i + 1));
    }
    chain.push_str("r12000 ::= \"a\"\n");
    let alternatives = format!("root ::= {}", (0..40_000).map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(" | "));
    let mut v: Vec<(String, String)> = vec![
        // The issue's case: the checker took the comment's quote for a string.
        ("comment quote hides 100000 parens (the issue's)".into(), issue_grammar()),
        ("comment quote hides 100000 parens".into(), format!("# \"\nroot ::= {}", parens(100_000))),
        ("comment bracket hides 100000 parens".into(), format!("# [\nroot ::= {}", parens(100_000))),
        ("comment backslash then 100000 parens".into(), format!("# \\\nroot ::= {}", parens(100_000))),
        ("trailing comment quote, 100000 parens".into(), format!("root ::= x # \"\nx ::= {}", parens(100_000))),
        ("100000 parens".into(), format!("root ::= {}", parens(100_000))),
        ("65 parens".into(), format!("root ::= {}", parens(65))),
        ("64 parens".into(), format!("root ::= {}", parens(64))),
        ("escaped quote, then 100000 parens".into(), format!("root ::= \"\\\"\" {}", parens(100_000))),
        ("escaped backslash, then 100000 parens".into(), format!("root ::= \"\\\\\" {}", parens(100_000))),
        ("class with quote, then 100000 parens".into(), format!("root ::= [\"] {}", parens(100_000))),
        ("class with escaped bracket, then 100000 parens".into(), format!("root ::= [\\]\"] {}", parens(100_000))),
        ("unterminated string, then parens".into(), format!("root ::= \"abc {}", "(".repeat(100_000))),
        ("unterminated class, then parens".into(), format!("root ::= [abc {}", "(".repeat(100_000))),
        ("12000-rule chain".into(), chain),
        ("40000 alternatives".into(), alternatives),
        ("empty literal".into(), "root ::= \"\"".into()),
        ("matches nothing".into(), r"root ::= [^\x00-\U0010FFFF]".into()),
        ("invalid code point".into(), r#"root ::= "\U7FFFFFFF""#.into()),
        ("range past U+10FFFF".into(), r"root ::= [\U00110000-\U7FFFFFFF]".into()),
        ("incomplete hex escape".into(), r#"root ::= "\x""#.into()),
        ("token id 2^32".into(), "root ::= <[4294967296]>".into()),
        ("token id 10^12".into(), "root ::= <[999999999999]>".into()),
        ("token id outside the vocabulary".into(), "root ::= <[99999999]>".into()),
        ("unknown token".into(), "root ::= <nonexistent>".into()),
        ("negated token".into(), "root ::= !<[0]> \"a\"".into()),
        ("mutual left recursion".into(), "root ::= a\na ::= b \"x\"\nb ::= a \"y\" | \"z\"".into()),
        ("left recursion through an empty rule".into(), "root ::= e root | \"a\"\ne ::= \"\"".into()),
        ("only a comment".into(), "# nothing here".into()),
        ("no rule body".into(), "root ::=".into()),
        ("no root".into(), "other ::= \"a\"".into()),
        ("NUL".into(), "root ::= \"a\u{0}\"".into()),
    ];
    for (name, rep) in [
        ("{1000000000}", "{1000000000}"),
        ("{0,1000000000}", "{0,1000000000}"),
        ("{2^32}", "{4294967296}"),
        ("{u64::MAX}", "{18446744073709551615}"),
        ("{2^64}", "{18446744073709551616}"),
        ("{10^26}", "{99999999999999999999999999}"),
        ("{2000}", "{2000}"),
        ("{2001}", "{2001}"),
        ("{1999,2000}", "{1999,2000}"),
        ("{5,2} (min > max)", "{5,2}"),
        ("{2000,1} (min > max)", "{2000,1}"),
        ("{1,0} (min > max)", "{1,0}"),
        ("{0,0}", "{0,0}"),
        ("{,5}", "{,5}"),
        ("{ 3 , }", "{ 3 , }"),
        ("{-1}", "{-1}"),
        ("*{3}", "*{3}"),
    ] {
        v.push((format!("repeat {name}"), format!("root ::= \"a\"{rep}")));
    }
    v.push(("nested repeats 45 x 45".into(), "root ::= (\"a\"{45}){45}".into()));
    v.push(("nested repeats 12 x 12 x 12".into(), "root ::= ((\"a\"{12}){12}){12}".into()));
    v.push(("nested repeats {5,2} inside {3}".into(), "root ::= (\"a\"{5,2}){3}".into()));
    v
}

fn schemas() -> Vec<(String, Vec<u8>)> {
    let nest = |depth: usize, open: &str, close: &str| {
        format!("{}{{\"type\":\"string\"}}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    };
    let props = |depth| nest(depth, r#"{"type":"object","properties":{"a":"#, "}}");
    let items = |depth| nest(depth, r#"{"type":"array","items":"#, "}");
    let any_of = |depth| nest(depth, r#"{"anyOf":["#, "]}");
    let mut ref_chain = serde_json::Map::new();
    for i in 0..1000 {
        ref_chain.insert(format!("d{i}"), json!({"$ref": format!("#/$defs/d{}", i + 1)}));
    }
    ref_chain.insert("d1000".into(), json!({"type": "string"}));
    let gbnf_keys: serde_json::Map<String, Value> =
        ["::=", "\"", "\\", "\n", "# \"", "[", "\u{0}", "<|im_end|>", &"(".repeat(10_000), &"\"(".repeat(5_000)]
            .iter()
            .map(|k| (k.to_string(), json!({"type": "string", "maxLength": 2})))
            .collect();
    let j = |v: Value| v.to_string().into_bytes();
    vec![
        ("properties nested 17".into(), props(17)),
        ("properties nested 10000".into(), props(10_000)),
        ("items nested 10000".into(), items(10_000)),
        ("anyOf nested 10000".into(), any_of(10_000)),
        ("anyOf nested 100000".into(), any_of(100_000)),
        ("self reference".into(), j(json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}))),
        (
            "mutual references".into(),
            j(json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}})),
        ),
        (
            "recursive array".into(),
            j(json!({"$ref": "#/$defs/n", "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}})),
        ),
        ("1000-ref chain".into(), j(json!({"$ref": "#/$defs/d0", "$defs": ref_chain}))),
        ("ref of 100000 bytes".into(), j(json!({"$ref": format!("#/$defs/{}", "a".repeat(100_000))}))),
        ("enum of 100000".into(), j(json!({"enum": (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>()}))),
        ("anyOf of 5000".into(), j(json!({"anyOf": vec![json!({"type": "string"}); 5000]}))),
        ("const of 200 KB".into(), j(json!({"const": "x".repeat(200_000)}))),
        (
            "10000 required names".into(),
            j(
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": (0..10_000).map(|i| format!("k{i}")).collect::<Vec<_>>()}),
            ),
        ),
        ("keys that look like GBNF".into(), j(json!({"type": "object", "properties": gbnf_keys}))),
        ("type list of 100".into(), j(json!({"type": vec!["string"; 100]}))),
        ("true".into(), b"true".to_vec()),
        ("false".into(), b"false".to_vec()),
        ("null".into(), b"null".to_vec()),
        ("empty array".into(), b"[]".to_vec()),
        ("a string".into(), br#""string""#.to_vec()),
        ("-0".into(), b"-0".to_vec()),
    ]
}

/// Query strings (after `?`), percent-encoded where a real client would.
fn hostile_queries() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("valid".into(), "fail_on_no_slot=1".into()),
        ("NUL".into(), "fail_on_no_slot=%00".into()),
        ("NUL key".into(), "%00=1".into()),
        ("invalid UTF-8".into(), "fail_on_no_slot=%FF%FE".into()),
        ("encoded surrogate".into(), "fail_on_no_slot=%ED%A0%80".into()),
        ("bad percent escape".into(), "fail_on_no_slot=%zz".into()),
        ("lone percent".into(), "fail_on_no_slot=%".into()),
        ("duplicate key".into(), "fail_on_no_slot=1&fail_on_no_slot=0".into()),
        ("array syntax".into(), "fail_on_no_slot[]=1".into()),
        ("10000 nested brackets".into(), format!("fail_on_no_slot{}=1", "[a]".repeat(10_000))),
        ("only separators".into(), "&&&&==&=".into()),
        ("empty key and value".into(), "=".into()),
        ("5000 parameters".into(), (0..5_000).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&")),
        ("value of 30 KB".into(), format!("fail_on_no_slot={}", "1".repeat(30_000))),
        ("plus and spaces".into(), "fail_on_no_slot=+1+".into()),
    ];
    for n in ["-1", "2147483648", "18446744073709551616", "1e309", "-0"] {
        v.push((format!("number {n}"), format!("fail_on_no_slot={n}")));
    }
    v
}

// ------------------------------------------------------------------ routes

/// A route and one valid body for it.
struct Base {
    route: &'static str,
    body: Value,
    /// Top-level numeric fields the route reads, tried at every boundary
    /// (besides the numbers the body holds).
    numeric: Vec<&'static str>,
    /// Constraint fields are tried on a copy without the others (only one
    /// of grammar, json_schema and response_format is allowed at once).
    constraints: bool,
}

fn chat_messages() -> Value {
    json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
    ])
}

fn schema_value() -> Value {
    json!({
        "type": "object",
        "properties": {
            "a": {"type": "string", "minLength": 1, "maxLength": 8},
            "b": {"type": "array", "items": {"type": "integer"}, "minItems": 0, "maxItems": 2},
            "c": {"enum": ["x", "y"]},
            "d": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/n"}]},
        },
        "required": ["a"],
        "$defs": {"n": {"type": "null"}},
    })
}

fn bases() -> Vec<Base> {
    let mut numeric_openai: Vec<&'static str> = SAMPLING_NUMBERS.to_vec();
    numeric_openai.extend(["max_tokens", "max_completion_tokens", "n", "top_logprobs", "logprobs", "best_of"]);
    let mut numeric_native: Vec<&'static str> = SAMPLING_NUMBERS.to_vec();
    numeric_native.extend(["n_predict", "max_tokens", "n_probs"]);
    let chat_a = json!({
        "model": "",
        "messages": chat_messages(),
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "n": 1,
        "stop": ["\n\n", "END"],
        "logprobs": true,
        "top_logprobs": 1,
        "seed": 7,
        "temperature": 0,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "repeat_last_n": 32,
        "logit_bias": {"1": -1, "2": 0.5},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema_value()}},
        "tools": [],
        "stream": false,
        "user": "u",
    });
    let chat_b = json!({
        "messages": chat_messages(),
        "max_tokens": 1,
        "stream": true,
        "stream_options": {"include_usage": true},
        "mirostat": 2,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "dry_multiplier": 0.5,
        "dry_base": 1.75,
        "dry_allowed_length": 2,
        "dry_penalty_last_n": 64,
        "dry_sequence_breakers": ["\n", ":"],
        "response_format": {"type": "json_object", "schema": schema_value()},
    });
    let completions_a = json!({
        "model": "",
        "prompt": ["Hello", "World"],
        "max_tokens": 1,
        "n": 1,
        "best_of": 1,
        "stop": "\n",
        "logprobs": 2,
        "echo": false,
        "suffix": "",
        "seed": 3,
        "temperature": 0.7,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "frequency_penalty": 0.2,
        "logit_bias": {"1": -100},
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema_value()}},
    });
    let completions_b = json!({
        "prompt": [[1, 2, 3], [4, 5]],
        "max_tokens": 1,
        "stream": true,
        "stream_options": {"include_usage": true},
        "echo": true,
        "xtc_probability": 0.5,
        "xtc_threshold": 0.1,
        "typical_p": 0.9,
        "min_keep": 2,
        "ignore_eos": true,
        "cache_prompt": false,
    });
    let native_a = json!({
        "prompt": [1, "Hello", 2],
        "n_predict": 1,
        "n_probs": 2,
        "stop": ["\n"],
        "grammar": "root ::= [a-z]+",
        "return_tokens": true,
        "logit_bias": [[1, -1.0], ["Hello", false], [2, 0.5]],
        "dry_multiplier": 0.8,
        "dry_penalty_last_n": 128,
        "dry_sequence_breakers": ["\n", ":", "\"", "*"],
        "repeat_penalty": 1.2,
        "repeat_last_n": 16,
        "seed": 42,
        "model": "",
    });
    let native_b = json!({
        "prompt": "Hello",
        "max_tokens": 1,
        "stream": true,
        "json_schema": schema_value(),
        "temperature": 0.5,
        "mirostat": 1,
        "mirostat_tau": 3.0,
        "mirostat_eta": 0.2,
    });
    let embed_openai_a =
        json!({"model": "", "input": ["Hello", "World"], "encoding_format": "float", "dimensions": 576});
    let embed_openai_b = json!({"input": [[1, 2, 3]], "encoding_format": "base64"});
    let embed_native_a = json!({"content": "Hello", "embd_normalize": 2});
    let embed_native_b = json!({"input": [[1, 2], [3]], "embd_normalize": -1});
    let tokenize =
        json!({"content": "Hello <|im_end|> world", "add_special": true, "parse_special": true, "with_pieces": true});
    let detokenize = json!({"tokens": [1, 2, 3, 49151]});
    let template = json!({"messages": chat_messages()});

    let mut v = Vec::new();
    let mut add = |route, body: &Value, numeric: &[&'static str], constraints| {
        v.push(Base { route, body: body.clone(), numeric: numeric.to_vec(), constraints });
    };
    for route in ["/v1/chat/completions", "/chat/completions"] {
        add(route, &chat_a, &numeric_openai, true);
        add(route, &chat_b, &numeric_openai, false);
    }
    add("/v1/completions", &completions_a, &numeric_openai, true);
    add("/v1/completions", &completions_b, &numeric_openai, false);
    for route in ["/completion", "/completions"] {
        add(route, &native_a, &numeric_native, true);
        add(route, &native_b, &numeric_native, false);
    }
    add("/v1/embeddings", &embed_openai_a, &["dimensions"], false);
    add("/v1/embeddings", &embed_openai_b, &["dimensions"], false);
    for route in ["/embedding", "/embeddings"] {
        add(route, &embed_native_a, &["embd_normalize"], false);
        add(route, &embed_native_b, &["embd_normalize"], false);
    }
    add("/tokenize", &tokenize, &[], false);
    add("/detokenize", &detokenize, &[], false);
    add("/apply-template", &template, &[], false);
    v
}

// ------------------------------------------------------------------ cases

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A normal, well-formed answer (2xx).
    Accept,
    /// 2xx well formed, or 4xx in the error shape (503 with Retry-After).
    Handled,
    /// A 4xx in the error shape whose message or param mentions this.
    Reject(&'static str),
    /// A request target the HTTP layer itself may refuse (a bare 4xx, or
    /// the connection closed) or pass on (then as `Handled`); never a 5xx.
    Lenient,
}

#[derive(Debug, Clone)]
struct Case {
    route: &'static str,
    family: &'static str,
    name: String,
    req: Request,
    expect: Expect,
}

fn post(route: &'static str, family: &'static str, name: String, body: Vec<u8>, expect: Expect) -> Case {
    Case { route, family, name, req: Request::post_raw(route, body), expect }
}

/// The constraint-free copy of a body (for grammar and schema cases).
fn unconstrained(body: &Value) -> Value {
    let mut b = body.clone();
    if let Value::Object(map) = &mut b {
        for k in ["grammar", "json_schema", "response_format"] {
            map.remove(k);
        }
    }
    b
}

fn body_cases(base: &Base) -> Vec<Case> {
    let route = base.route;
    let mut out = Vec::new();
    let paths = nodes(&base.body);
    // deep: every node, arrays and objects, 10 000 and 100 000 deep. Tools
    // get a definition to nest into (so the nesting reaches the schema path).
    let mut deep_base = base.body.clone();
    if deep_base.get("tools").is_some() {
        set(
            &mut deep_base,
            &[Step::Key("tools".into())],
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        );
    }
    for path in nodes(&deep_base) {
        for depth in [10_000, 100_000] {
            for (kind, raw) in [("arrays", deep_array(depth)), ("objects", deep_object(depth))] {
                let name = format!("{} = {kind} nested {depth}", path_text(&path));
                out.push(post(route, "deep", name, with_raw(&deep_base, &path, &raw), Expect::Handled));
            }
        }
    }
    // string: every string value and every object key.
    for path in &paths {
        if get(&base.body, path).is_some_and(Value::is_string) {
            for (what, raw) in hostile_strings() {
                let name = format!("{} = {what}", path_text(path));
                out.push(post(route, "string", name, with_raw(&base.body, path, &raw), Expect::Handled));
            }
        }
        if matches!(path.last(), Some(Step::Key(_))) {
            for (what, raw) in hostile_keys() {
                let name = format!("key {} → {what}", path_text(path));
                out.push(post(route, "string", name, with_raw_key(&base.body, path, &raw), Expect::Handled));
            }
        }
    }
    // number: every number in the body, and every numeric field the route reads.
    let mut numeric: Vec<Path> =
        paths.iter().filter(|p| get(&base.body, p).is_some_and(Value::is_number)).cloned().collect();
    for field in &base.numeric {
        let path = vec![Step::Key((*field).into())];
        if !numeric.contains(&path) {
            numeric.push(path);
        }
    }
    for path in &numeric {
        for n in NUMBERS {
            let name = format!("{} = {n}", path_text(path));
            out.push(post(route, "number", name, with_raw(&base.body, path, n.as_bytes()), Expect::Handled));
        }
    }
    if base.constraints {
        let plain = unconstrained(&base.body);
        // grammar cases run in their own test (see `grammar_cases`).
        let schema_at: [(&str, Value, Path); 3] = [
            ("json_schema", Value::String(HOLE.into()), vec![Step::Key("json_schema".into())]),
            (
                "response_format.json_schema.schema",
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": HOLE}}),
                vec![Step::Key("response_format".into())],
            ),
            (
                "response_format.schema",
                json!({"type": "json_object", "schema": HOLE}),
                vec![Step::Key("response_format".into())],
            ),
        ];
        for (field, holder, path) in schema_at {
            if matches!(route, "/completion" | "/completions") && field != "json_schema" {
                continue; // the native route has no response_format
            }
            let mut b = plain.clone();
            set(&mut b, &path, holder);
            for (what, raw) in schemas() {
                out.push(post(route, "schema", format!("{field} = {what}"), splice(&b, &raw), Expect::Handled));
            }
        }
    }
    out
}

/// Every hostile grammar on every route that takes one; on the main OpenAI
/// and native routes also streamed (a grammar that fails mid-output must
/// end the stream with an error event). The aliases `/chat/completions` and
/// `/completions` (the same handlers) only in the long run.
fn grammar_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let aliases = figures::long();
    for base in bases().iter().filter(|b| b.constraints) {
        if !aliases && matches!(base.route, "/chat/completions" | "/completions") {
            continue;
        }
        let plain = unconstrained(&base.body);
        let streams: &[bool] =
            if matches!(base.route, "/v1/chat/completions" | "/completion") { &[false, true] } else { &[false] };
        for &stream in streams {
            for (name, g) in grammars() {
                let mut b = plain.clone();
                set(&mut b, &[Step::Key("grammar".into())], Value::String(g));
                set(&mut b, &[Step::Key("stream".into())], Value::Bool(stream));
                out.push(Case {
                    route: base.route,
                    family: "grammar",
                    name: format!("grammar = {name}{}", if stream { ", streamed" } else { "" }),
                    req: Request::post_json(base.route, &b),
                    expect: Expect::Handled,
                });
            }
        }
    }
    out
}

fn query_cases() -> Vec<Case> {
    let gets = ["/slots", "/health", "/v1/health", "/props", "/v1/models", "/models", "/metrics", "/", "/openapi.json"];
    let mut out = Vec::new();
    for (name, q) in hostile_queries() {
        for route in gets {
            out.push(Case {
                route,
                family: "query",
                name: format!("?{name}"),
                req: Request::get(&format!("{route}?{q}")),
                expect: Expect::Handled,
            });
        }
        out.push(Case {
            route: "/tokenize",
            family: "query",
            name: format!("?{name} on a POST"),
            req: Request::post_json(&format!("/tokenize?{q}"), &json!({"content": "hi"})),
            expect: Expect::Handled,
        });
    }
    // Bytes no client should put in a request target: the HTTP layer may
    // refuse them before any route sees them.
    // hyper answers a bare 414 past 65 534 bytes of request target.
    let too_long = format!("/slots?{}", (0..10_000).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&"));
    for (name, target) in [
        ("raw 0xFF", "/slots?x=\u{ff}".to_string()),
        ("raw space", "/slots?x= y".to_string()),
        ("raw NUL", "/slots?x=\u{0}".to_string()),
        ("10000 parameters (over 64 KiB)", too_long),
    ] {
        out.push(Case {
            route: "/slots",
            family: "query",
            name: format!("request target with {name}"),
            req: Request::get(&target),
            expect: Expect::Lenient,
        });
    }
    out
}

/// Cases that found a bug: always run, whatever the sample size.
const PINNED: &[&str] = &[
    // llama.cpp allocated and zeroed a 2^31-token ring buffer (8 GiB): 33 s
    // for the penalties, the server killed for DRY.
    "repeat_last_n = 2147483647",
    "dry_penalty_last_n = 2147483647",
];

/// The pinned cases, then up to `per_route` other cases of each route: a
/// seeded shuffle of each family, then families in turn, so that every
/// family is represented.
fn sample(cases: Vec<Case>, per_route: usize, seed: u64) -> Vec<Case> {
    let (mut out, cases): (Vec<Case>, Vec<Case>) =
        cases.into_iter().partition(|c| PINNED.iter().any(|p| c.name.contains(p)));
    let mut groups: BTreeMap<(&str, &str), Vec<Case>> = BTreeMap::new();
    for c in cases {
        groups.entry((c.route, c.family)).or_default().push(c);
    }
    let mut by_route: BTreeMap<&str, Vec<Vec<Case>>> = BTreeMap::new();
    for ((route, family), mut group) in groups {
        let mut rng = Rng::new(seed ^ hash(route) ^ hash(family).rotate_left(17));
        for i in (1..group.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            group.swap(i, j);
        }
        by_route.entry(route).or_default().push(group);
    }
    for (_, mut families) in by_route {
        let mut taken = 0;
        while taken < per_route && families.iter().any(|f| !f.is_empty()) {
            for f in &mut families {
                if taken < per_route
                    && let Some(c) = f.pop()
                {
                    out.push(c);
                    taken += 1;
                }
            }
        }
    }
    out
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

// ------------------------------------------------------------------ checks

fn check(c: &Case, resp: &Response) -> Result<(), String> {
    let status = resp.status();
    let fail = |why: &str| Err(format!("{} {}: {why}: {}", c.route, c.name, resp.describe()));
    if !resp.complete {
        return fail("response cut off");
    }
    let body = resp.json();
    if c.expect == Expect::Lenient && (400..500).contains(&status) {
        return Ok(());
    }
    match status {
        200..=299 => {
            if let Expect::Reject(_) = c.expect {
                return fail("expected a 4xx");
            }
            let sse = resp.head.header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
            if sse {
                let data = resp.sse_data();
                let Some((last, rest)) = data.split_last() else { return fail("empty stream") };
                for d in rest {
                    match serde_json::from_str::<Value>(d) {
                        Ok(v) if v.get("error").is_some() && !is_error_shape(&Some(v.clone())) => {
                            return fail("malformed error event");
                        }
                        Ok(_) => {}
                        Err(_) => return fail("non-JSON event"),
                    }
                }
                let ends = last == "[DONE]"
                    || serde_json::from_str::<Value>(last).is_ok_and(|v| v["stop"] == true || v.get("error").is_some());
                if !ends {
                    return fail("stream does not end properly");
                }
            } else if c.route == "/metrics" {
                if resp.text().is_empty() {
                    return fail("empty metrics");
                }
            } else if body.is_none() {
                return fail("2xx body is not JSON");
            }
        }
        _ if c.expect == Expect::Accept => return fail("expected a 2xx"),
        400..=499 => {
            if !is_error_shape(&body) {
                return fail("4xx without the OpenAI error shape");
            }
            if body.as_ref().and_then(|b| b["error"]["code"].as_u64()) != Some(u64::from(status)) {
                return fail("error.code is not the HTTP status");
            }
            if let Expect::Reject(word) = c.expect {
                let b = body.as_ref().map(|b| format!("{} {}", b["error"]["message"], b["error"]["param"]));
                if !b.unwrap_or_default().to_ascii_lowercase().contains(word) {
                    return fail(&format!("the error does not name `{word}`"));
                }
            }
        }
        503 if resp.head.header("retry-after").is_some() && is_error_shape(&body) => {}
        _ => return fail("a 5xx"),
    }
    Ok(())
}

/// Run `cases` against a server of their own; returns the failures and
/// figures. A case that kills the server (or makes it unhealthy) is a
/// failure, reported with the log tail; a fresh server takes over.
fn run_cases(suite: &str, cases: Vec<Case>) -> Vec<String> {
    let started = Instant::now();
    let mut server = start_server();
    let mut failures = Vec::new();
    let mut restarts = 0;
    let mut per_route: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    let n = cases.len();
    for (i, c) in cases.iter().enumerate() {
        let t = Instant::now();
        let result = http::send(server.addr(), &c.req, SLOW + Duration::from_secs(10));
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, format!("{} {}", c.route, c.name));
        }
        let key = match &result {
            Ok(r) => format!("{}", r.status()),
            Err(_) => "no response".to_string(),
        };
        *per_route.entry(c.route).or_default().entry(format!("{}:{key}", c.family)).or_default() += 1;
        let mut broken = false;
        match result {
            Ok(resp) => {
                if let Err(e) = check(c, &resp) {
                    failures.push(e);
                }
            }
            Err(e) if c.expect == Expect::Lenient && server.healthy() => {
                eprintln!("{}: connection closed ({e})", c.name);
            }
            Err(e) => {
                failures.push(format!("{} {}: no response ({e})", c.route, c.name));
                broken = true;
            }
        }
        if took > SLOW {
            failures.push(format!("{} {}: took {took:?}", c.route, c.name));
        }
        if broken || (i + 1) % BATCH == 0 || i + 1 == n {
            let alive = server.rss_kib().is_some();
            if !alive || !server.healthy() {
                failures.push(format!(
                    "server {} after {} {} (or the batch before it); log tail:\n{}",
                    if alive { "unhealthy" } else { "dead" },
                    c.route,
                    c.name,
                    server.log_tail(15)
                ));
                restarts += 1;
                assert!(
                    restarts <= 10,
                    "{suite}: more than 10 server deaths; stopping. Failures:\n{}",
                    failures.join("\n")
                );
                server = start_server();
            }
        }
    }
    figures::record(
        suite,
        json!({
            "cases": n,
            "failures": failures.len(),
            "server_restarts": restarts,
            "seconds": started.elapsed().as_secs_f64(),
            "slowest_case": {"ms": slowest.0.as_millis() as u64, "case": slowest.1},
            "statuses_by_route": per_route,
        }),
    );
    failures
}

fn per_route() -> usize {
    knob("hostile_gen_per_route", 80, usize::MAX)
}

fn seed() -> u64 {
    knob("hostile_gen_seed", 1, 1) as u64
}

/// Deep nesting, hostile strings and keys, boundary numbers and hostile
/// schemas in every field of every route that takes a body, and hostile
/// query strings on every route: never a 5xx, never a dropped connection,
/// never a dead or unhealthy server.
#[test]
fn generated_hostile_requests_never_5xx_or_kill_the_server() {
    let mut cases: Vec<Case> = bases().iter().flat_map(body_cases).collect();
    cases.extend(query_cases());
    let total = cases.len();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        *counts.entry(c.route).or_default() += 1;
    }
    // Every base body first: each must be accepted, so that every case
    // differs from a valid request in one place only.
    let valid = bases().into_iter().map(|b| Case {
        route: b.route,
        family: "base",
        name: "the valid base body".into(),
        req: Request::post_json(b.route, &b.body),
        expect: Expect::Accept,
    });
    let cases: Vec<Case> = valid.chain(sample(cases, per_route(), seed())).collect();
    eprintln!(
        "{} base bodies and {} of {total} generated cases (all per route: {counts:?})",
        bases().len(),
        cases.len() - bases().len()
    );
    let n = cases.len();
    let failures = run_cases("hostile_generated", cases);
    assert!(failures.is_empty(), "{} of {n} generated cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// Hostile GBNF grammars on every route that takes one. Its own server:
/// until the grammar checker is a real parser, some of these may still
/// crash it, and that must not hide the other families.
#[test]
fn generated_hostile_grammars_never_5xx_or_kill_the_server() {
    let cases = grammar_cases();
    let n = cases.len();
    let failures = run_cases("hostile_generated_grammars", cases);
    assert!(failures.is_empty(), "{} of {n} grammar cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// The grammar from the issue: a comment whose quote made the nesting
/// check think the 100 000 parentheses were inside a string, so llama.cpp's
/// recursive parser got them and overflowed its stack. A 400, and the
/// server keeps serving.
#[test]
fn nesting_hidden_behind_a_comment_is_a_400() {
    let g = issue_grammar();
    let case = Case {
        route: "/completion",
        family: "grammar",
        name: "comment-hidden nesting".into(),
        req: Request::post_json("/completion", &json!({"prompt": "hi", "n_predict": 2, "grammar": g})),
        expect: Expect::Reject("grammar"),
    };
    let failures = run_cases("hostile_comment_grammar", vec![case]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
