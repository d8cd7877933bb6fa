//! A GBNF grammar parser in safe Rust that decides, before llama.cpp sees a
//! grammar, whether llama.cpp will accept it — and refuses the grammars on
//! which llama.cpp would crash, hang or exhaust memory instead.
//!
//! llama.cpp parses GBNF with a recursive-descent parser (one pair of stack
//! frames per nested group) and then checks the rules for left recursion
//! with a depth-first search that recurses through rule references without
//! memoising. Unbounded input therefore overflows the stack (aborting the
//! whole process), and some small grammars make it loop forever or allocate
//! without bound. [`validate`] reads the same language with the same
//! acceptance rules, computes what llama.cpp would build from it (its
//! expansion of `{m,n}` into rules, its symbol numbering, its left-recursion
//! graph) without recursing on anything unbounded, and refuses with a typed
//! [`GbnfError`] whatever llama.cpp would refuse, plus whatever exceeds the
//! [`Limits`].
//!
//! ```
//! use llama_core::gbnf;
//!
//! gbnf::validate("root ::= \"yes\" | \"no\"")?;
//! let err = gbnf::validate("root ::= item\n").unwrap_err();
//! assert_eq!(err.line, 1);
//! assert!(err.to_string().contains("`item`"));
//! # Ok::<(), gbnf::GbnfError>(())
//! ```
//!
//! # The language
//!
//! A grammar is a list of rules `name ::= alternatives`. Names are made of
//! ASCII letters, digits and `-`. Alternatives are separated by `|`; each is
//! a sequence of items, and each item is one atom followed by any number of
//! repetition operators (`*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`). Atoms are
//! string literals `"..."`, character classes `[...]` / `[^...]` (with
//! ranges `a-z`), `.` (any character), rule names, groups `( ... )`, and
//! tokens `<[id]>` / `<text>` (negated with a leading `!`). Escapes, in
//! literals and classes alike, are `\xHH`, `\uHHHH`, `\UHHHHHHHH`, `\t`,
//! `\n`, `\r`, `\\`, `\"`, `\[`, `\]` and `\-`. `#` starts a comment that
//! runs to the end of the line. Spaces and tabs separate items; a newline
//! ends a rule, except after `::=` or `|` and anywhere inside parentheses.
//!
//! The quirks of llama.cpp that decide acceptance are reproduced: a later
//! definition of a name replaces an earlier one; a repetition operator needs
//! something before it that produced at least one element (so `"" *` and
//! `x{0}*` are errors); `{m,n}` with `n` above 2000 means `{m,}`; `m` above
//! 2000 is an error, and so is a repetition whose expansion multiplies to
//! more than 2000 generated rules (counted the way llama.cpp counts them,
//! which includes rule names first mentioned inside a repeated group); a
//! rule is empty-able for llama.cpp's left-recursion check only when one
//! of its alternatives is literally empty. The left recursion that check
//! misses (through a rule like `e ::= "x"?`, which matches the empty string
//! only indirectly) makes llama.cpp loop until memory runs out when a
//! recursive reference has something after it, so that is refused here
//! too (`("a"?)*`, where it has not, is accepted, as llama.cpp copes).
//!
//! What this module cannot decide is whether a `<text>` token is a single
//! token of the model's vocabulary; llama.cpp checks that (and refuses with
//! an error). An empty grammar text is refused here (it has no `root`),
//! while llama.cpp's `llama_sampler_init_grammar` reads it as "no grammar".
#![forbid(unsafe_code)]

mod analyze;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

/// Most bytes of grammar text accepted ([`Limits::max_bytes`]).
pub const MAX_BYTES: usize = 256 << 10;

/// Deepest nesting of groups `( ... )` accepted ([`Limits::max_nesting`]).
/// llama.cpp's parser recurses twice per level; generated JSON-schema
/// grammars nest a handful of levels.
pub const MAX_NESTING: usize = 64;

/// Most rules llama.cpp may build from a grammar, counting the ones it
/// generates for groups and repetitions ([`Limits::max_rules`]).
pub const MAX_RULES: usize = 1 << 16;

/// Most grammar elements (characters, ranges, references, alternative and
/// rule ends) llama.cpp may build from a grammar after expanding every
/// repetition ([`Limits::max_elements`]). llama.cpp keeps about three
/// copies of 8 bytes each, so this bounds its memory to tens of MiB.
pub const MAX_ELEMENTS: usize = 1 << 20;

/// Longest chain of leftmost rule references accepted
/// ([`Limits::max_ref_depth`]): llama.cpp's left-recursion check recurses
/// once per link.
pub const MAX_REF_DEPTH: usize = 1024;

/// Most element visits llama.cpp's left-recursion check may make
/// ([`Limits::max_left_recursion_work`]). It re-walks a rule each time
/// a leftmost reference reaches it, so a few dozen rules that each refer
/// twice to the next take longer than the age of the universe.
pub const MAX_LEFT_RECURSION_WORK: u64 = 1 << 24;

/// llama.cpp's own repetition threshold: `{m,...}` with `m` above it is an
/// error, `{m,n}` with `n` above it means `{m,}`, and one repetition may not
/// multiply to more generated rules than this. Not a [`Limits`] knob: it is
/// part of the language llama.cpp accepts.
pub const LLAMA_REPETITION_THRESHOLD: u64 = 2000;

/// The bounds [`validate_with`] and [`parse_with`] enforce. The defaults
/// are the `MAX_*` constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of grammar text.
    pub max_bytes: usize,
    /// Deepest nesting of groups.
    pub max_nesting: usize,
    /// Most rules after llama.cpp's expansion (named and generated).
    pub max_rules: usize,
    /// Most elements after llama.cpp's expansion.
    pub max_elements: usize,
    /// Longest chain of leftmost rule references.
    pub max_ref_depth: usize,
    /// Most element visits of llama.cpp's left-recursion check.
    pub max_left_recursion_work: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: MAX_BYTES,
            max_nesting: MAX_NESTING,
            max_rules: MAX_RULES,
            max_elements: MAX_ELEMENTS,
            max_ref_depth: MAX_REF_DEPTH,
            max_left_recursion_work: MAX_LEFT_RECURSION_WORK,
        }
    }
}

/// A parsed grammar: its rule definitions in source order (a name defined
/// twice appears twice; llama.cpp uses the later definition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    /// The rule definitions, in source order.
    pub rules: Vec<Rule>,
}

/// One rule definition `name ::= alternatives`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// Its alternatives, at least one (possibly empty).
    pub alternatives: Vec<Alternative>,
    /// Byte offset of the name in the source.
    pub offset: usize,
}

/// One alternative: a sequence of items, matched one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The items, in order; empty matches the empty string.
    pub items: Vec<Item>,
}

/// An atom and the repetition operators written after it, applied in order
/// (`x?*` is `(x?)*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What is matched.
    pub atom: Atom,
    /// Repetition operators, in source order.
    pub repetitions: Vec<Repetition>,
    /// Byte offset of the atom in the source.
    pub offset: usize,
}

/// What one item matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// A string literal, as code points (escapes resolved; `\U` escapes
    /// may give values that are not Unicode scalar values).
    Literal(Vec<u32>),
    /// A character class.
    Class(CharClass),
    /// `.`: any one character.
    Any,
    /// A reference to the rule of this name.
    Rule(String),
    /// A parenthesised group of alternatives.
    Group(Vec<Alternative>),
    /// A tokenizer token.
    Token(TokenMatch),
}

/// A character class `[...]` or `[^...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharClass {
    /// `[^...]`: matches any character not listed.
    pub negated: bool,
    /// The characters and ranges listed (may be empty: `[]` and `[^]`
    /// match the empty string in llama.cpp).
    pub items: Vec<ClassItem>,
}

/// One entry of a character class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassItem {
    /// A single code point.
    Char(u32),
    /// An inclusive range of code points (`z-a` is accepted and empty).
    Range(u32, u32),
}

/// A token match `<[id]>`, `<text>`, or either negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    /// `!<...>`: any token but this one.
    pub negated: bool,
    /// Which token.
    pub token: TokenRef,
}

/// How a token is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    /// `<[id]>`: by id (any `u32`; ids outside the vocabulary never match).
    Id(u32),
    /// `<text>`: by its text, angle brackets included (`"<think>"`).
    /// llama.cpp refuses the grammar unless the text is exactly one token
    /// of the model's vocabulary; this module cannot check that.
    Text(String),
}

/// A repetition operator, as written: `*` is `{0,}`, `+` is `{1,}` and
/// `?` is `{0,1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repetition {
    /// Least number of times.
    pub min: u64,
    /// Most number of times, `None` for no bound. llama.cpp treats a bound
    /// above [`LLAMA_REPETITION_THRESHOLD`] as no bound.
    pub max: Option<u64>,
    /// Byte offset of the operator in the source.
    pub offset: usize,
}

/// What llama.cpp builds from a grammar that [`validate_with`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Rules after expansion (named and generated).
    pub rules: usize,
    /// Elements after expansion, counting every one llama.cpp builds on
    /// the way (including those of definitions replaced later).
    pub elements: usize,
    /// Deepest nesting of groups.
    pub nesting: usize,
    /// Longest chain of leftmost rule references.
    pub ref_depth: usize,
    /// Element visits of llama.cpp's left-recursion check.
    pub left_recursion_work: u64,
    /// Number of `<text>` tokens, which llama.cpp must still look up in
    /// the vocabulary (and may refuse).
    pub text_tokens: usize,
}

/// Why a grammar is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (line {line}, column {column}, byte {offset})")]
#[non_exhaustive]
pub struct GbnfError {
    /// What is wrong.
    pub kind: GbnfErrorKind,
    /// Byte offset in the source where the problem was found.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub column: usize,
}

impl GbnfError {
    /// An error of `kind` at byte `offset` of `src` (line and column are
    /// computed from `src`; an offset past the end is clamped).
    pub(crate) fn at(src: &str, offset: usize, kind: GbnfErrorKind) -> GbnfError {
        let bytes = src.as_bytes();
        let offset = offset.min(bytes.len());
        let before = bytes.get(..offset).unwrap_or(bytes);
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        // Count characters, not bytes: every byte but UTF-8 continuation
        // bytes starts one.
        let column = 1 + before.get(line_start..).unwrap_or(&[]).iter().filter(|&&b| b & 0xC0 != 0x80).count();
        GbnfError { kind, offset, line, column }
    }
}

/// What is wrong with a grammar. Most kinds are errors llama.cpp reports as
/// well; [`GbnfErrorKind::is_limit`] tells apart the ones only this module
/// raises.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GbnfErrorKind {
    /// A specific piece of syntax was expected here (the payload says which).
    Expected(&'static str),
    /// The text ends inside a literal, class or escape.
    UnexpectedEnd,
    /// A backslash followed by a character that is no escape.
    UnknownEscape,
    /// `\x`, `\u` or `\U` not followed by that many hex digits.
    BadHexEscape {
        /// How many hex digits the escape needs.
        digits: u8,
    },
    /// A repetition count that does not fit in 64 bits.
    NumberTooLarge,
    /// A token id above `u32::MAX`.
    TokenIdTooLarge,
    /// A repetition operator with nothing (or nothing left) before it.
    RepetitionWithoutItem,
    /// `{m,...}` with `m` above [`LLAMA_REPETITION_THRESHOLD`].
    TooManyRepetitions {
        /// The `m` written.
        min: u64,
    },
    /// A repetition that would generate more than
    /// [`LLAMA_REPETITION_THRESHOLD`] rules, as llama.cpp counts them.
    RepetitionTooComplex,
    /// A rule name used but never defined.
    UndefinedRule(String),
    /// No rule at all.
    NoRules,
    /// No rule named `root`.
    MissingRoot,
    /// A rule that can reach itself through leftmost references.
    LeftRecursion(String),
    /// A rule that can reach itself through leftmost references and rules
    /// that match the empty string only indirectly, which llama.cpp's
    /// left-recursion check does not see, with something after one of
    /// those references, in a rule `root` refers to (directly or not):
    /// llama.cpp's stack expansion would loop until memory runs out.
    HiddenLeftRecursion(String),
    /// More bytes than [`Limits::max_bytes`].
    TooLong {
        /// The grammar's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A NUL byte (llama.cpp would read the text only up to it).
    NulByte,
    /// Groups nested deeper than [`Limits::max_nesting`].
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// `{m,n}` with `n < m` (llama.cpp would loop until memory runs out).
    InvertedRepetition {
        /// The `m` written.
        min: u64,
        /// The `n` written.
        max: u64,
    },
    /// More rules after expansion than [`Limits::max_rules`].
    TooManyRules {
        /// The limit.
        max: usize,
    },
    /// More elements after expansion than [`Limits::max_elements`].
    TooManyElements {
        /// The limit.
        max: usize,
    },
    /// A chain of leftmost references longer than [`Limits::max_ref_depth`].
    RefChainTooDeep {
        /// The chain's length (in rules).
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// llama.cpp's left-recursion check would take more steps than
    /// [`Limits::max_left_recursion_work`].
    LeftRecursionCheckTooCostly {
        /// The limit.
        max: u64,
    },
    /// `root` is named only in a definition that a later one replaced, so
    /// it has no rule (llama.cpp would index past its rule table).
    RootOnlyInReplacedRule,
}

impl GbnfErrorKind {
    /// Whether this refusal is this module's own — a limit, or an input on
    /// which llama.cpp would crash, hang or exhaust memory rather than
    /// report an error. `false` means llama.cpp refuses the grammar too.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            GbnfErrorKind::TooLong { .. }
                | GbnfErrorKind::NulByte
                | GbnfErrorKind::TooDeep { .. }
                | GbnfErrorKind::InvertedRepetition { .. }
                | GbnfErrorKind::TooManyRules { .. }
                | GbnfErrorKind::TooManyElements { .. }
                | GbnfErrorKind::RefChainTooDeep { .. }
                | GbnfErrorKind::LeftRecursionCheckTooCostly { .. }
                | GbnfErrorKind::RootOnlyInReplacedRule
                | GbnfErrorKind::HiddenLeftRecursion(_)
        )
    }
}

impl fmt::Display for GbnfErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GbnfErrorKind as K;
        let t = LLAMA_REPETITION_THRESHOLD;
        match self {
            K::Expected(what) => write!(f, "expected {what}"),
            K::UnexpectedEnd => write!(f, "unexpected end of the grammar"),
            K::UnknownEscape => write!(f, "unknown escape sequence"),
            K::BadHexEscape { digits } => write!(f, "this escape needs exactly {digits} hex digits"),
            K::NumberTooLarge => write!(f, "number too large"),
            K::TokenIdTooLarge => write!(f, "token id larger than {}", u32::MAX),
            K::RepetitionWithoutItem => write!(f, "repetition operator without anything before it to repeat"),
            K::TooManyRepetitions { min } => write!(f, "repetition of at least {min}; llama.cpp allows at most {t}"),
            K::RepetitionTooComplex => {
                write!(f, "repetition would make llama.cpp generate more than {t} rules; repeat less or simplify")
            }
            K::UndefinedRule(name) => write!(f, "rule `{name}` is used but never defined"),
            K::NoRules => write!(f, "the grammar defines no rules"),
            K::MissingRoot => write!(f, "the grammar has no `root` rule"),
            K::LeftRecursion(name) => {
                write!(f, "rule `{name}` is left-recursive (it can reach itself without matching anything)")
            }
            K::HiddenLeftRecursion(name) => write!(
                f,
                "rule `{name}` is left-recursive through rules that can match nothing (llama.cpp would not notice, and loop)"
            ),
            K::TooLong { len, max } => write!(f, "grammar is {len} bytes; at most {max}"),
            K::NulByte => write!(f, "grammar contains a NUL byte"),
            K::TooDeep { max } => write!(f, "groups nest more than {max} levels deep"),
            K::InvertedRepetition { min, max } => {
                write!(f, "repetition {{{min},{max}}} has its maximum below its minimum")
            }
            K::TooManyRules { max } => write!(f, "grammar expands to more than {max} rules"),
            K::TooManyElements { max } => write!(f, "grammar expands to more than {max} elements"),
            K::RefChainTooDeep { depth, max } => {
                write!(f, "a chain of {depth} leftmost rule references; at most {max}")
            }
            K::LeftRecursionCheckTooCostly { max } => {
                write!(f, "checking this grammar for left recursion would take more than {max} steps")
            }
            K::RootOnlyInReplacedRule => {
                write!(f, "`root` is only named in a rule definition that a later one replaces")
            }
        }
    }
}

/// Parse `src` into its rules, checking syntax and the [`Limits::default`]
/// bounds on size and nesting. This does not check that referenced rules
/// exist, that `root` does, nor anything about llama.cpp's expansion: use
/// [`validate`] for that.
///
/// # Errors
/// A [`GbnfError`] for the first syntax error, a NUL byte, text longer
/// than [`MAX_BYTES`], groups nested deeper than [`MAX_NESTING`], or a
/// repetition `{m,n}` that llama.cpp refuses (or would loop on).
pub fn parse(src: &str) -> Result<Grammar, GbnfError> {
    parse_with(src, &Limits::default())
}

/// [`parse()`] with explicit limits (only `max_bytes` and `max_nesting` apply).
///
/// # Errors
/// As [`parse()`], against `limits`.
pub fn parse_with(src: &str, limits: &Limits) -> Result<Grammar, GbnfError> {
    parse::parse(src, limits).map(|(grammar, _)| grammar)
}

/// Check that llama.cpp will accept `src` as a sampling grammar with start
/// rule `root`, within the [`Limits::default`] bounds.
///
/// # Errors
/// A [`GbnfError`] saying what is wrong and where: any error llama.cpp's
/// parser or grammar initialisation would report (syntax, undefined rules,
/// no `root`, left recursion, its repetition thresholds), and any excess
/// over the limits.
pub fn validate(src: &str) -> Result<(), GbnfError> {
    validate_with(src, &Limits::default()).map(|_| ())
}

/// [`validate`] with explicit limits, returning what llama.cpp would build.
///
/// # Errors
/// As [`validate`], against `limits`.
pub fn validate_with(src: &str, limits: &Limits) -> Result<Stats, GbnfError> {
    let (grammar, nesting) = parse::parse(src, limits)?;
    let mut stats = analyze::analyze(src, &grammar, limits)?;
    stats.nesting = nesting;
    Ok(stats)
}
