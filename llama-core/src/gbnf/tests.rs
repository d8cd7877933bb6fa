#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

fn kind(src: &str) -> GbnfErrorKind {
    match validate(src) {
        Ok(()) => panic!("accepted: {src:.80}"),
        Err(e) => e.kind,
    }
}

fn ok(src: &str) {
    if let Err(e) = validate(src) {
        panic!("refused {src:.200}: {e}");
    }
}

/// Grammars written for these tests, covering the whole syntax.
const CORPUS: &[&str] = &[
    // JSON-ish, with groups spanning lines and comments between them.
    r#"# a JSON value
root   ::= value
value  ::= obj | arr | str | num | ("true" | "false" | "null") sp
obj    ::= "{" sp (
             str ":" sp value ("," sp str ":" sp value)*
           )? "}" sp
arr    ::= "[" sp ( value ( "," sp value )* )? "]" sp
str    ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" sp
num    ::= "-"? ( [0-9] | [1-9] [0-9]{1,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? sp
sp     ::= | " " | "\n" [ \t]{0,20}
"#,
    // Arithmetic, with alternatives continued after `|` on the next line.
    "root ::= expr\nexpr ::= term (sp [-+] sp term)*\nterm ::= factor (sp [*/] sp factor)*\n\
     factor ::= num | \"(\" sp expr sp \")\" |\n  \"-\" factor\nnum ::= [0-9]+ (\".\" [0-9]+)?\nsp ::= [ ]*\n",
    // A move list, CRLF line endings and a trailing comment without newline.
    "root ::= (move \" \"){1,40} move?\r\nmove ::= piece? [a-h] [1-8] | \"O-O\" \"-O\"?\r\n\
     piece ::= [KQRBN]\r\n# done",
    // Every escape, ranges with escapes, non-ASCII, and `.`.
    "root ::= \"\\x41\\u00e9\\U0001F600\\t\\n\\r\\\\\\\"\\[\\]\\-\" [\\x00-\\x1f\\u2028-\\u2029é-ü] . [^\\]] \"日本\"\n",
    // Tokens.
    "root ::= <[1]> think <[2]> .*\nthink ::= !<[2]>*\n",
    // Rule names with digits and dashes, and a repetition chain.
    "root ::= a-1 2b\na-1 ::= \"x\"{2}{3} \"y\"{0,3}?\n2b ::= (\"z\" | [0-9]){2,}\n",
    // Empty alternatives and an empty class (llama.cpp accepts both).
    "root ::= | \"a\" | [] | [^] \"b\" |\n",
    // Repetition bounds above llama.cpp's threshold mean "no bound".
    "root ::= [a-z]{0,4096} [0-9]{3,5000}\n",
];

#[test]
fn corpus_validates() {
    for src in CORPUS {
        ok(src);
    }
}

/// The checkout's root: the nearest directory above this crate's with
/// `vendor/llama.cpp` (llama-core's parent; the fuzz crate, which compiles
/// this module too, is deeper).
fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().find(|d| d.join("vendor/llama.cpp").is_dir()).unwrap_or(here).to_path_buf()
}

/// The `.gbnf` files of the vendored llama.cpp (none at this version, but
/// any that come with an update must pass), and the grammars in the code
/// blocks of its GBNF guide.
#[test]
fn vendor_grammars_parse() {
    let dir = repo_root().join("vendor/llama.cpp/grammars");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("vendor/llama.cpp/grammars exists") {
        let path = entry.expect("readable directory").path();
        if path.extension().is_some_and(|e| e == "gbnf") {
            let src = std::fs::read_to_string(&path).expect("UTF-8 grammar file");
            if let Err(e) = validate(&src) {
                panic!("{}: {e}", path.display());
            }
            files += 1;
        }
    }
    let guide = std::fs::read_to_string(dir.join("README.md")).expect("the GBNF guide");
    let blocks: Vec<&str> = guide.split("```").skip(1).step_by(2).filter(|b| b.contains("::=")).collect();
    assert!(blocks.len() >= 5, "only {} grammar blocks in the guide", blocks.len());
    for block in &blocks {
        // Drop the info string after the opening fence.
        let src = block.split_once('\n').map_or(*block, |(_, rest)| rest);
        let grammar = parse(src).unwrap_or_else(|e| panic!("{e} in\n{src}"));
        assert!(!grammar.rules.is_empty());
        // Fragments may use rules defined elsewhere in the guide.
        if grammar.rules.iter().any(|r| r.name == "root")
            && let Err(e) = validate(src)
        {
            assert!(matches!(e.kind, GbnfErrorKind::UndefinedRule(_)), "{e} in\n{src}");
        }
    }
    eprintln!("{files} .gbnf files, {} guide blocks", blocks.len());
}

/// The issue's grammar: a `"` inside a comment hid 100 000 nested
/// parentheses from the old bracket counter.
#[test]
fn comment_trick_is_refused_as_too_deep() {
    let src = format!("# \"\nroot ::= {} \"a\" {}", "(".repeat(100_000), ")".repeat(100_000));
    let e = validate(&src).unwrap_err();
    assert_eq!(e.kind, GbnfErrorKind::TooDeep { max: MAX_NESTING });
    assert!(e.to_string().contains("nest"), "{e}");
    // The first `(` is at column 10; the one too many is 64 further.
    assert_eq!((e.line, e.column), (2, 10 + MAX_NESTING));
}

#[test]
fn nesting_limit() {
    let nest = |n: usize| format!("root ::= {}\"a\"{}\n", "(\n".repeat(n), ")".repeat(n));
    let stats = validate_with(&nest(MAX_NESTING), &Limits::default()).unwrap();
    assert_eq!(stats.nesting, MAX_NESTING);
    assert_eq!(kind(&nest(MAX_NESTING + 1)), GbnfErrorKind::TooDeep { max: MAX_NESTING });
    let tight = Limits { max_nesting: 2, ..Limits::default() };
    assert!(validate_with(&nest(2), &tight).is_ok());
    assert!(validate_with(&nest(3), &tight).is_err());
}

#[test]
fn reference_chains() {
    // Leftmost references: llama.cpp's left-recursion check recurses once
    // per link.
    let left = |n: usize| {
        let mut s = String::from("root ::= r0\n");
        for i in 0..n {
            s += &format!("r{i} ::= r{} \"x\"\n", i + 1);
        }
        s + &format!("r{n} ::= \"end\"\n")
    };
    let stats = validate_with(&left(MAX_REF_DEPTH - 2), &Limits::default()).unwrap();
    assert_eq!(stats.ref_depth, MAX_REF_DEPTH);
    assert!(matches!(kind(&left(5000)), GbnfErrorKind::RefChainTooDeep { depth: 5002, .. }));
    // References after a terminal are not followed: any length is fine.
    let right: String = (0..5000).map(|i| format!("r{i} ::= \"x\" r{}\n", i + 1)).collect();
    ok(&format!("root ::= r0\n{right}r5000 ::= \"end\"\n"));
    // A chain through rules that may be empty continues to the next
    // reference: `x?{0,2000}` nests 2000 deep.
    assert!(matches!(kind("root ::= \"a\"?{0,2000}\n"), GbnfErrorKind::RefChainTooDeep { .. }));
    ok("root ::= \"a\"?{0,1000}\n");
}

#[test]
fn exponential_left_recursion_check_is_refused() {
    // Each rule refers twice to the next from the left: llama.cpp's check
    // would visit the last rule 2^60 times.
    let mut s = String::from("root ::= a0\n");
    for i in 0..60 {
        s += &format!("a{i} ::= a{j} | a{j}\n", j = i + 1);
    }
    s += "a60 ::= \"x\"\n";
    assert!(matches!(kind(&s), GbnfErrorKind::LeftRecursionCheckTooCostly { .. }));
    let stats = validate_with(&s, &Limits { max_left_recursion_work: u64::MAX, ..Limits::default() }).unwrap();
    assert!(stats.left_recursion_work > 1 << 60);
}

#[test]
fn repetition_limits() {
    use GbnfErrorKind as K;
    assert_eq!(kind("root ::= \"a\"{2001}"), K::TooManyRepetitions { min: 2001 });
    assert_eq!(kind("root ::= \"a\"{99999999999999999999}"), K::NumberTooLarge);
    assert_eq!(kind("root ::= \"a\"{5,3}"), K::InvertedRepetition { min: 5, max: 3 });
    assert_eq!(kind("root ::= \"a\"{1,0}"), K::InvertedRepetition { min: 1, max: 0 });
    ok("root ::= \"a\"{2000} \"b\"{0,2000} \"c\"{5,99999999}");
    // llama.cpp's product check: 10 * 10 * 10 * 10 generated rules.
    ok("root ::= \"x\"{10}{10}{10}");
    assert_eq!(kind("root ::= \"x\"{10}{10}{10}{10}"), K::RepetitionTooComplex);
    // Names first mentioned inside a repeated group count towards it.
    assert_eq!(kind("root ::= (a b c){700}\na ::= \"a\"\nb ::= \"b\"\nc ::= \"c\""), K::RepetitionTooComplex);
    ok("a ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"\nroot ::= (a b c){700}");
    // Elements: a long literal copied 2000 times.
    let long = format!("root ::= \"{}\"{{2000}}", "a".repeat(1000));
    assert_eq!(kind(&long), K::TooManyElements { max: MAX_ELEMENTS });
    // Rules: every `{0,2000}` generates 2000 of them.
    let many = format!("root ::= {}", "\"x\"{0,2000} ".repeat(33));
    assert_eq!(kind(&many), K::TooManyRules { max: MAX_RULES });
    let stats = validate_with(&format!("root ::= {}", "\"x\"{0,2000} ".repeat(32)), &Limits::default()).unwrap();
    assert_eq!(stats.rules, 1 + 32 * 2000);
}

#[test]
fn repetition_needs_something_before_it() {
    use GbnfErrorKind::RepetitionWithoutItem as R;
    for src in ["root ::= *", "root ::= \"\"*", "root ::= []+", "root ::= \"a\"{0}*", "root ::= \"a\" | ?"] {
        assert_eq!(kind(src), R, "{src}");
    }
    ok("root ::= \"a\"{0}");
    ok("root ::= \"a\"+{2}? \"b\"*{3}");
    // `x?*` is `S' ::= x? S' |`, where `x?` may be empty: left recursion
    // for llama.cpp.
    assert_eq!(kind("root ::= \"a\"?*"), GbnfErrorKind::LeftRecursion("root".into()));
    ok("root ::= (\"\"){2}");
}

#[test]
fn escapes_and_classes() {
    let g = parse("root ::= \"\\x41\\u00E9\\U0001F600\\t\\n\\r\\\\\\\"\\[\\]\\-é\"").unwrap();
    let Atom::Literal(chars) = &g.rules[0].alternatives[0].items[0].atom else { panic!("{g:?}") };
    let want: Vec<u32> = "Aé😀\t\n\r\\\"[]-é".chars().map(u32::from).collect();
    assert_eq!(chars, &want);
    let g = parse("root ::= [a-z-] [-a] [a--] [^\\]] [\\UFFFFFFFF]").unwrap();
    let classes: Vec<&CharClass> = g.rules[0].alternatives[0]
        .items
        .iter()
        .map(|i| match &i.atom {
            Atom::Class(c) => c,
            a => panic!("{a:?}"),
        })
        .collect();
    use ClassItem::{Char, Range};
    assert_eq!(classes[0].items, [Range(97, 122), Char(45)]);
    assert_eq!(classes[1].items, [Char(45), Char(97)]);
    assert_eq!(classes[2].items, [Range(97, 45)]);
    assert!(classes[3].negated);
    assert_eq!(classes[3].items, [Char(93)]);
    assert_eq!(classes[4].items, [Char(u32::MAX)]);
    use GbnfErrorKind as K;
    assert_eq!(kind("root ::= \"\\q\""), K::UnknownEscape);
    assert_eq!(kind("root ::= \"\\x4\""), K::BadHexEscape { digits: 2 });
    assert_eq!(kind("root ::= \"\\u12G4\""), K::BadHexEscape { digits: 4 });
    assert_eq!(kind("root ::= \"abc"), K::UnexpectedEnd);
    assert_eq!(kind("root ::= [abc"), K::UnexpectedEnd);
    assert_eq!(kind("root ::= [a-"), K::UnexpectedEnd);
    assert_eq!(kind("root ::= \"\\"), K::UnknownEscape);
}

#[test]
fn comments_and_newlines() {
    ok("# leading comment\n\n  root ::= \"a\" # trailing \" ( [\n# more\n");
    ok("root ::=\n  \"a\" |\n  \"b\"\n");
    ok("root ::= (\n  \"a\"\n  | \"b\" # inside\n)\n");
    ok("root ::= \"a\"\r\n\r\nb ::= \"b\"");
    // A newline at depth 0 ends the rule: `|` cannot start the next line.
    assert_eq!(kind("root ::= \"a\"\n| \"b\"\n"), GbnfErrorKind::Expected("a rule name"));
    // Nor can a repetition or anything else but a rule.
    assert_eq!(kind("root ::= \"a\"\n  *\n"), GbnfErrorKind::Expected("a rule name"));
    assert_eq!(kind("root ::= \"a\" )"), GbnfErrorKind::Expected("a newline or the end of the grammar"));
    assert_eq!(kind("root \n::= \"a\""), GbnfErrorKind::Expected("`::=`"));
    assert_eq!(kind("root ::= (\"a\""), GbnfErrorKind::Expected("`)`"));
}

#[test]
fn rules_roots_and_recursion() {
    use GbnfErrorKind as K;
    assert_eq!(kind(""), K::NoRules);
    assert_eq!(kind("  # nothing\n"), K::NoRules);
    assert_eq!(kind("item ::= \"a\""), K::MissingRoot);
    let e = validate("root ::= \"a\" ws\nws ::= sp\n").unwrap_err();
    assert_eq!(e.kind, K::UndefinedRule("sp".into()));
    assert_eq!((e.line, e.column, e.offset), (2, 8, 23));
    assert_eq!(kind("root ::= root \"a\" | \"b\""), K::LeftRecursion("root".into()));
    assert_eq!(kind("root ::= (x \"a\")\nx ::= \"b\" | root"), K::LeftRecursion("root".into()));
    // Through a rule with an empty alternative the reference after it is
    // leftmost too...
    assert_eq!(kind("root ::= e root \"a\" | \"b\"\ne ::= \"x\" |"), K::LeftRecursion("root".into()));
    // ...but llama.cpp's check does not look through `e ::= "x"?` (no
    // alternative of `e` itself is empty), and its stack expansion then
    // loops forever: refused as a limit of ours.
    let src = "root ::= e root \"a\" | \"b\"\ne ::= \"x\"?";
    assert_eq!(kind(src), K::HiddenLeftRecursion("root".into()));
    assert!(K::HiddenLeftRecursion(String::new()).is_limit());
    // Nullable only through two levels, and right recursion through a
    // nullable rule, are fine.
    ok("root ::= e \"a\" root | \"b\"\ne ::= f\nf ::= \"\" | \"x\"");
    let hidden = "root ::= e root \"a\" | \"b\"\ne ::= f\nf ::= \"\" | \"x\"";
    assert_eq!(kind(hidden), K::HiddenLeftRecursion("root".into()));
    // When the recursive reference ends its alternative, llama.cpp's stack
    // expansion comes back to a stack it has seen and stops: accepted.
    ok("root ::= e root | \"b\"\ne ::= f\nf ::= \"\" | \"x\"");
    ok("root ::= (\"a\"?)* \"b\"");
    ok("root ::= (\"a\" | \"b\"?)+");
    // Redefinition: the later definition wins.
    ok("root ::= root \"a\"\nroot ::= \"b\"");
    // A name used only in a replaced definition is no rule, but llama.cpp
    // only complains when its index falls inside the rule table.
    ok("root ::= \"y\"\na ::= zzz\na ::= \"x\"");
    assert_eq!(kind("a ::= zzz\na ::= \"x\"\nroot ::= \"y\""), K::UndefinedRule("zzz".into()));
    // `root` named only in a replaced definition: llama.cpp would index
    // past its rule table.
    assert_eq!(kind("a ::= root\na ::= \"x\""), K::RootOnlyInReplacedRule);
    assert!(K::RootOnlyInReplacedRule.is_limit());
    assert!(!K::MissingRoot.is_limit());
}

#[test]
fn tokens() {
    let g = parse("root ::= <[12]> !<[3]> <think> !</think> <[0042]>").unwrap();
    let tokens: Vec<&TokenMatch> = g.rules[0].alternatives[0]
        .items
        .iter()
        .map(|i| match &i.atom {
            Atom::Token(t) => t,
            a => panic!("{a:?}"),
        })
        .collect();
    assert_eq!(tokens[0], &TokenMatch { negated: false, token: TokenRef::Id(12) });
    assert_eq!(tokens[1], &TokenMatch { negated: true, token: TokenRef::Id(3) });
    assert_eq!(tokens[2], &TokenMatch { negated: false, token: TokenRef::Text("<think>".into()) });
    assert_eq!(tokens[3], &TokenMatch { negated: true, token: TokenRef::Text("</think>".into()) });
    assert_eq!(tokens[4].token, TokenRef::Id(42));
    let stats = validate_with("root ::= <a b\nc> <[1]>", &Limits::default()).unwrap();
    assert_eq!(stats.text_tokens, 1);
    use GbnfErrorKind as K;
    assert_eq!(kind("root ::= <[4294967296]>"), K::TokenIdTooLarge);
    ok("root ::= <[4294967295]>");
    assert_eq!(kind("root ::= <[x]>"), K::Expected("an integer"));
    assert_eq!(kind("root ::= <[1] >"), K::Expected("`>` after the token id"));
    assert_eq!(kind("root ::= !\"a\""), K::Expected("`<` after `!`"));
    assert_eq!(kind("root ::= <abc"), K::Expected("`>` to end the token"));
}

#[test]
fn size_and_nul() {
    let big = format!("root ::= \"{}\"", "a".repeat(MAX_BYTES));
    assert!(matches!(kind(&big), GbnfErrorKind::TooLong { max: MAX_BYTES, .. }));
    assert_eq!(kind("root ::= \"a\0\""), GbnfErrorKind::NulByte);
}

#[test]
fn positions_count_characters() {
    let e = validate("root ::= \"é\" [\nx").unwrap_err();
    assert_eq!((e.line, e.column), (2, 2));
    let e = validate("root ::= \"日本\" ?? %").unwrap_err();
    assert_eq!((e.line, e.column, e.offset), (1, 18, 21));
}

/// Pieces of GBNF to build random texts from.
const ALPHABET: &[&str] = &[
    "root",
    " ::= ",
    "::=",
    "a",
    "b-2",
    " ",
    "\n",
    "\r\n",
    "\t",
    "|",
    "(",
    ")",
    "\"x\"",
    "\"",
    "[",
    "]",
    "[^",
    "-",
    "\\",
    "\\x4",
    "\\u00e9",
    "\\n",
    "*",
    "+",
    "?",
    "{",
    "}",
    ",",
    "{2}",
    "{0,3}",
    "{3,1}",
    "{1,}",
    ".",
    "#",
    "<[5]>",
    "<",
    ">",
    "!",
    "é",
    "0",
    "99999999999999999999",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Never a panic, and the error (if any) points inside the text.
    #[test]
    fn random_text_never_panics(pieces in prop::collection::vec(prop::sample::select(ALPHABET), 0..40)) {
        let src: String = pieces.concat();
        if let Err(e) = validate(&src) {
            prop_assert!(e.offset <= src.len());
            prop_assert!(e.line >= 1 && e.column >= 1);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(src in ".{0,60}") {
        let _ = validate(&src);
        let _ = validate(&format!("root ::= {src}"));
    }
}
