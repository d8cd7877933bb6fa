//! `gbnf::validate` against llama.cpp's own GBNF parser and grammar
//! initialisation (`llama_sampler_init_grammar`, with the default model's
//! vocabulary): on every grammar within the Rust limits, the Rust side
//! accepts exactly when llama.cpp returns a sampler. Grammars the Rust side
//! refuses as over a limit (or as ones llama.cpp would crash or hang on)
//! are never handed to llama.cpp.

use std::ffi::{CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llama_core::gbnf::{self, Alternative, Atom, Limits, TokenRef};
use llama_core::{Error, Model, ModelParams, Sampler, SamplingParams};
use llama_sys as sys;
use proptest::prelude::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The default model's vocabulary (a vocab-only load, kept for the whole
/// run).
#[derive(Clone, Copy)]
struct Vocab(*const sys::llama_vocab);

// SAFETY: the vocab-only model is loaded once and never freed, and
// llama.cpp only reads a vocabulary (tokenizing, grammar parsing), so it
// may be used from any thread.
unsafe impl Send for Vocab {}
// SAFETY: as above.
unsafe impl Sync for Vocab {}

unsafe extern "C" fn quiet(_level: sys::ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

fn vocab() -> Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    *VOCAB.get_or_init(|| {
        let path = CString::new(model_path().to_str().expect("UTF-8 path")).expect("no NUL in the path");
        // SAFETY: plain initialisation calls; a no-op logger (grammar
        // parse errors still go to stderr, printed by the parser itself).
        unsafe {
            sys::llama_backend_init();
            sys::llama_log_set(Some(quiet), std::ptr::null_mut());
        }
        // SAFETY: plain struct by value.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.vocab_only = true;
        // SAFETY: valid C string and params; the model is never freed.
        let model = unsafe { sys::llama_model_load_from_file(path.as_ptr(), params) };
        assert!(!model.is_null(), "the default model loads (make setup)");
        // SAFETY: live model.
        Vocab(unsafe { sys::llama_model_get_vocab(model) })
    })
}

/// Whether llama.cpp builds a grammar sampler for `src`, run on a thread
/// with `stack` bytes of stack.
fn llama_accepts_with_stack(src: &str, stack: usize) -> bool {
    let c = CString::new(src).expect("test grammars have no NUL");
    let v = vocab();
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let v = v;
            // SAFETY: live vocabulary; valid C strings.
            let p = unsafe { sys::llama_sampler_init_grammar(v.0, c.as_ptr(), c"root".as_ptr()) };
            if p.is_null() {
                return false;
            }
            // SAFETY: a sampler just created, freed once.
            unsafe { sys::llama_sampler_free(p) };
            true
        })
        .expect("spawn")
        .join()
        .expect("no panic")
}

fn llama_accepts(src: &str) -> bool {
    llama_accepts_with_stack(src, 8 << 20)
}

/// Whether `text` is exactly one token (what llama.cpp requires of `<text>`).
fn single_token(text: &str) -> bool {
    let mut out = [0i32; 2];
    let Ok(len) = i32::try_from(text.len()) else { return false };
    // SAFETY: live vocabulary; `text` is `len` bytes; `out` holds 2.
    let n = unsafe { sys::llama_tokenize(vocab().0, text.as_ptr().cast(), len, out.as_mut_ptr(), 2, false, true) };
    n == 1
}

fn text_tokens<'g>(alternatives: &'g [Alternative], out: &mut Vec<&'g str>) {
    for item in alternatives.iter().flat_map(|a| &a.items) {
        match &item.atom {
            Atom::Token(t) => {
                if let TokenRef::Text(text) = &t.token {
                    out.push(text);
                }
            }
            Atom::Group(inner) => text_tokens(inner, out),
            _ => {}
        }
    }
}

/// What the Rust side predicts: `None` when it refuses on a limit of its
/// own (llama.cpp is not asked), else whether llama.cpp will accept. The
/// `<text>` tokens are looked up in the vocabulary, as llama.cpp does.
fn predicted(src: &str) -> Option<Result<(), String>> {
    match gbnf::validate(src) {
        Err(e) if e.kind.is_limit() => None,
        Err(e) => Some(Err(e.to_string())),
        Ok(()) => {
            let grammar = gbnf::parse(src).expect("validated grammars parse");
            let mut texts = Vec::new();
            for rule in &grammar.rules {
                text_tokens(&rule.alternatives, &mut texts);
            }
            match texts.iter().find(|t| !single_token(t)) {
                Some(t) => Some(Err(format!("{t} is not a single token"))),
                None => Some(Ok(())),
            }
        }
    }
}

/// Compare on `src`; returns whether llama.cpp was asked.
fn agree(src: &str) -> bool {
    // llama.cpp reads an empty text as "no grammar".
    if src.is_empty() {
        return false;
    }
    let Some(ours) = predicted(src) else { return false };
    let theirs = llama_accepts(src);
    assert_eq!(ours.is_ok(), theirs, "Rust says {ours:?}, llama.cpp accepts = {theirs}, for\n{src:?}");
    true
}

/// Grammars that pin down the quirks of llama.cpp's parser.
const CASES: &[&str] = &[
    "root ::= \"a\"",
    "root ::= \"a\"\n",
    "root ::= \"a\" # comment",
    "# \"\nroot ::= \"a\"",
    "root ::=\n \"a\" |\n \"b\"",
    "root ::= \"a\"\n| \"b\"",
    "root ::= ( \"a\"\n | \"b\" )",
    "root ::= \"a\"\r\nb ::= \"b\"\r\n",
    "root ::= \"a\"\rb ::= \"b\"",
    "root \n::= \"a\"",
    "root::=\"a\"",
    "root ::= \"\\x41\\u00e9\\U0001F600\\t\\n\\r\\\\\\\"\\[\\]\\-\"",
    "root ::= \"\\q\"",
    "root ::= \"\\/\"",
    "root ::= \"\\x4\"",
    "root ::= \"\\u00G0\"",
    "root ::= \"abc",
    "root ::= [a-z-] [-a] [a--] [^\\]] [\\UFFFFFFFF] [z-a]",
    "root ::= [a-",
    "root ::= [",
    "root ::= [] [^] \"\"",
    "root ::= []*",
    "root ::= \"\"*",
    "root ::= *",
    "root ::= \"a\" | +",
    "root ::= \"a\"{0}",
    "root ::= \"a\"{0}*",
    "root ::= \"a\"{0,0}?",
    "root ::= \"a\"{ 2 , 3 }",
    "root ::= \"a\"{2,}",
    "root ::= \"a\"{,2}",
    "root ::= \"a\"{2",
    "root ::= \"a\"{2,3",
    "root ::= \"a\"{2000}",
    "root ::= \"a\"{2001}",
    "root ::= \"a\"{0,2001}",
    "root ::= [a-z]{0,4096}",
    "root ::= \"a\"{99999999999999999999}",
    "root ::= \"a\"{18446744073709551615}",
    "root ::= \"x\"{10}{10}{10}",
    "root ::= \"x\"{10}{10}{10}{10}",
    "root ::= (a b c){700}\na ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"",
    "a ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"\nroot ::= (a b c){700}",
    "root ::= \"a\"?*",
    "root ::= \"a\"+{2}? \"b\"*{3}",
    "root ::= (\"\")*",
    "root ::= (\"\"){2}",
    "root ::= root \"a\" | \"b\"",
    "root ::= \"b\" root | \"a\"",
    "root ::= e root \"a\" | \"b\"\ne ::= \"x\" |",
    "root ::= e root \"a\" | \"b\"\ne ::= \"x\"?",
    "root ::= (x \"a\")\nx ::= \"b\" | root",
    "root ::= e root \"a\" | \"b\"\ne ::= f\nf ::= \"\" | \"x\"",
    "root ::= e root | \"b\"\ne ::= f\nf ::= \"\" | \"x\"",
    "root ::= (\"a\"?)* \"b\"",
    "root ::= (\"a\" | \"b\"?)+",
    "root ::= (\"a\"?){2}+",
    "root ::= root \"a\"\nroot ::= \"b\"",
    "root ::= \"y\"\na ::= zzz\na ::= \"x\"",
    "a ::= zzz\na ::= \"x\"\nroot ::= \"y\"",
    "root ::= undefined",
    "root ::= undefined_rule",
    "item ::= \"a\"",
    "   \n# nothing\n",
    "nonsense",
    "root ::= (",
    "root ::= )",
    "root ::= \"a\" )",
    "root ::= <[12]> !<[3]> <[0042]>",
    "root ::= <[4294967295]>",
    "root ::= <[4294967296]>",
    "root ::= <[99999999999999999999]>",
    "root ::= <[x]>",
    "root ::= <[1] >",
    "root ::= <[1]",
    "root ::= <|im_start|> \"x\" <|im_end|>",
    "root ::= !<|im_end|>* <|im_end|>",
    "root ::= <think>",
    "root ::= <|im_start|",
    "root ::= !\"a\"",
    "root ::= . . .* \"日本\" [é-ü]",
    "-1 ::= \"a\"\nroot ::= -1 --",
    "-- ::= \"\"\nroot ::= -1 --\n-1 ::= \"a\"",
];

/// The `.gbnf` files of the vendored llama.cpp (none at this version) and
/// the grammars of its GBNF guide.
fn vendor_grammars() -> Vec<String> {
    let dir = repo_root().join("vendor/llama.cpp/grammars");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("vendor/llama.cpp/grammars") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "gbnf") {
            out.push(std::fs::read_to_string(&path).expect("UTF-8 grammar"));
        }
    }
    let guide = std::fs::read_to_string(dir.join("README.md")).expect("the GBNF guide");
    for block in guide.split("```").skip(1).step_by(2).filter(|b| b.contains("::=")) {
        out.push(block.split_once('\n').map_or(block, |(_, rest)| rest).to_string());
    }
    out
}

/// Grammars of the kind llama-server's JSON-schema converter writes.
const JSON_LIKE: &str = r#"root ::= "{" ws "\"name\"" ws ":" ws string ws "," ws "\"tags\"" ws ":" ws tags ws "}"
tags ::= "[" ws ( string ws ( "," ws string ws ){0,7} )? "]"
ws ::= | " " | "\n" [ \t]{0,20}
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
boolean ::= "true" | "false"
null ::= "null"
"#;

fn known_grammars() -> Vec<String> {
    let mut all: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    all.extend(vendor_grammars());
    all.push(JSON_LIKE.to_string());
    all
}

#[test]
fn known_grammars_agree() {
    let all = known_grammars();
    let asked = all.iter().filter(|g| agree(g)).count();
    eprintln!("{asked} of {} known grammars compared with llama.cpp", all.len());
    assert!(asked + 5 >= all.len(), "only {asked} of {} compared", all.len());
}

/// The deepest grammars `validate` lets through need little stack in
/// llama.cpp: they run on 512 KiB (the sampler gives it 8 MiB).
#[test]
fn worst_accepted_grammars_fit_in_a_small_stack() {
    let nest = gbnf::MAX_NESTING;
    let nested = format!("root ::= {}\"a\"{}", "(\"x\" | ".repeat(nest), ")".repeat(nest));
    // root -> r0 -> ... -> r{links} -> 64 nested groups: the longest
    // chain of leftmost references allowed.
    let links = gbnf::MAX_REF_DEPTH - 2 - nest;
    let mut chain = String::from("root ::= r0\n");
    for i in 0..links {
        chain += &format!("r{i} ::= r{} \"x\" | (((\"y\")))\n", i + 1);
    }
    chain += &format!("r{links} ::= {}\"end\"{}\n", "(".repeat(nest), ")".repeat(nest));
    for (src, depth) in [(&nested, nest + 1), (&chain, gbnf::MAX_REF_DEPTH)] {
        let stats = gbnf::validate_with(src, &Limits::default()).expect("within the limits");
        assert_eq!((stats.nesting, stats.ref_depth), (nest, depth));
        assert!(llama_accepts_with_stack(src, 512 << 10));
    }
}

/// The issue's grammar: refused by `SamplingParams::validate` as too deeply
/// nested, before llama.cpp sees it; a good grammar still makes a sampler
/// (through the parsing thread).
#[test]
fn sampling_params_refuse_the_hostile_grammar() {
    let hostile = format!("# \"\nroot ::= {} \"a\" {}", "(".repeat(100_000), ")".repeat(100_000));
    let params = SamplingParams { grammar: Some(hostile), ..SamplingParams::greedy() };
    match params.validate() {
        Err(Error::Grammar(msg)) => assert!(msg.contains("nest"), "{msg}"),
        other => panic!("expected a nesting error, got {other:?}"),
    }
    let model = Arc::new(Model::load(model_path(), &ModelParams::default()).expect("default model"));
    assert!(matches!(Sampler::new(&model, &params), Err(Error::Grammar(_))));
    let good = SamplingParams { grammar: Some(JSON_LIKE.to_string()), ..SamplingParams::greedy() };
    Sampler::new(&model, &good).expect("a good grammar makes a sampler");
    let refused = SamplingParams { grammar: Some("root ::= <not-one-token>".into()), ..SamplingParams::greedy() };
    assert!(matches!(Sampler::new(&model, &refused), Err(Error::Grammar(_))));
}

/// Pieces of GBNF for random texts.
const PIECES: &[&str] = &[
    "root",
    "a",
    "b",
    "c",
    "x-1",
    " ::= ",
    "::=",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "|",
    " | ",
    "(",
    ")",
    "\"x\"",
    "\"é\"",
    "\"\"",
    "\"",
    "[",
    "]",
    "[a-z]",
    "[^",
    "-",
    "\\",
    "\\x41",
    "\\x4",
    "\\u00e9",
    "\\n",
    "\\q",
    "*",
    "+",
    "?",
    "{",
    "}",
    ",",
    "{2}",
    "{0,3}",
    "{1,}",
    "{0}",
    "{2001}",
    "{0,2500}",
    ".",
    "#",
    "# c\n",
    "<[5]>",
    "<",
    ">",
    "!",
    "<|im_end|>",
    "0",
    "5",
];

/// Random grammars over the rules `root`, `a`, `b` and `c` (each defined
/// once, in random order), plus up to two more definitions (replacing one,
/// or defining `zz`, which is otherwise undefined).
fn grammar_text() -> impl Strategy<Value = String> {
    let names = &["root", "a", "b", "c"][..];
    let reference = prop_oneof![30 => prop::sample::select(names), 1 => Just("zz")].prop_map(String::from);
    let leaf = prop_oneof![
        60 => "[a-c]{1,3}".prop_map(|s| format!("\"{s}\"")),
        60 => prop::sample::select(
            &["\"\\n\\x41\\u00e9\"", "[a-z]", "[^\"\\\\]", "[a-]", "[\\x00-\\x1F]", ".", "<[5]>", "!<[7]>", "<|im_start|>", "!<|im_end|>"][..]
        )
        .prop_map(String::from),
        // Rarer: what matches nothing, and a text that is no single token.
        1 => prop::sample::select(&["\"\"", "[]", "[^]", "<nope>"][..]).prop_map(String::from),
        12 => reference,
    ];
    // Items: an atom and at most one repetition (`x?*`-like stacks are
    // left-recursive for llama.cpp and are covered by the known cases).
    let rep = prop_oneof![
        400 => prop::sample::select(&["", "", "", "", "", "", "", "", "*", "+", "?", "{2}", "{0,3}", "{1,}", "{0,2500}"][..]),
        1 => prop::sample::select(&["{0}", "{2,1}", "{2001}"][..]),
    ];
    let item = (leaf, rep.clone()).prop_map(|(a, r)| format!("{a}{r}"));
    let atom = item.prop_recursive(2, 12, 3, move |inner| {
        let group = prop::collection::vec(prop::collection::vec(inner, 1..3), 1..3).prop_map(|alts| {
            let alts: Vec<String> = alts.iter().map(|a| a.join(" ")).collect();
            format!("({})", alts.join(" | "))
        });
        (group, rep.clone()).prop_map(|(g, r)| format!("{g}{r}"))
    });
    // Top-level alternatives are not empty: an empty one at the end of a
    // line lets the newline after `::=` or `|` pull the next line in.
    let alternative = prop::collection::vec(atom, 1..3).prop_map(|items| items.join(" "));
    let body = prop::collection::vec(alternative, 1..3).prop_map(|alts| alts.join(" | "));
    let extra = (prop::sample::select(&["root", "a", "b", "c", "zz"][..]), body.clone());
    (prop::collection::vec(body, 4), Just(names.to_vec()).prop_shuffle(), prop::collection::vec(extra, 0..3)).prop_map(
        |(bodies, order, extras)| {
            let mut text = String::new();
            for (name, body) in order.iter().zip(&bodies) {
                text += &format!("{name} ::= {body}\n");
            }
            for (name, body) in extras {
                text += &format!("{name} ::= {body}\n");
            }
            text
        },
    )
}

/// One edit of a text: delete a character, insert a piece, or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, &'static str),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        (any::<prop::sample::Index>(), prop::sample::select(PIECES)).prop_map(|(i, p)| Edit::Insert(i, p)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(src: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for e in edits {
        match e {
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Insert(i, piece) => {
                let at = i.index(chars.len() + 1);
                chars.splice(at..at, piece.chars());
            }
            Edit::Truncate(i) if !chars.is_empty() => chars.truncate(i.index(chars.len())),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_pieces_agree(pieces in prop::collection::vec(prop::sample::select(PIECES), 1..24), rooted: bool) {
        let body = pieces.concat();
        let src = if rooted { format!("root ::= {body}") } else { body };
        agree(&src);
    }

    #[test]
    fn generated_grammars_agree(src in grammar_text(), edits in prop::collection::vec(edit(), 0..2)) {
        agree(&apply(&src, &edits));
    }

    #[test]
    fn mutated_known_grammars_agree(which: prop::sample::Index, edits in prop::collection::vec(edit(), 1..4)) {
        let all = known_grammars();
        let src = &all[which.index(all.len())];
        agree(&apply(src, &edits));
    }
}
