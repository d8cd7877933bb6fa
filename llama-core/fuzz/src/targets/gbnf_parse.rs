//! Fuzz target `gbnf_parse`: any text through llama-core's GBNF parser
//! (`gbnf::parse`, `gbnf::validate`, and `validate_with` under tight
//! limits). Never a panic or a hang (every step is bounded by `Limits`);
//! errors point inside the text; what validates also parses. Whether
//! llama.cpp agrees is the parser's own differential test's business
//! (`llama-core/tests/grammar_differential.rs`).
//!
//! Input: the grammar text (lossy UTF-8).
//!
//! Compiled into the fuzz crate and into llama-core's corpus-replay test;
//! the includer provides `crate::gbnf` (llama-core's `gbnf` module).

use crate::gbnf::{self, GbnfError, Limits};

/// Limits small enough for a 4 KiB input to reach each of them.
const TIGHT: Limits = Limits {
    max_bytes: 2048,
    max_nesting: 8,
    max_rules: 64,
    max_elements: 512,
    max_ref_depth: 16,
    max_left_recursion_work: 4096,
};

/// Run one input.
pub fn gbnf_parse(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let parsed = gbnf::parse(&src);
    let validated = gbnf::validate(&src);
    let tight = gbnf::validate_with(&src, &TIGHT);
    for e in [parsed.as_ref().err(), validated.as_ref().err(), tight.as_ref().err()].into_iter().flatten() {
        check_error(&src, e);
    }
    if validated.is_ok() {
        assert!(parsed.is_ok(), "validates but does not parse");
    }
    if tight.is_ok() {
        assert!(validated.is_ok(), "passes tight limits but not the default ones: {:?}", validated.err());
    }
}

fn check_error(src: &str, e: &GbnfError) {
    assert!(e.offset <= src.len(), "offset {} past the end ({})", e.offset, src.len());
    let before = &src.as_bytes()[..e.offset];
    assert_eq!(e.line, 1 + before.iter().filter(|&&b| b == b'\n').count(), "line of {e}");
    assert!(e.column >= 1);
    assert!(!e.to_string().is_empty());
}
