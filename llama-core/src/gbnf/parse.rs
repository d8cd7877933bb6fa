//! The GBNF syntax: text to [`Grammar`], following the control flow of
//! llama.cpp's parser so that exactly the same texts are accepted.
//!
//! Recursion happens only at groups, and is bounded by
//! [`Limits::max_nesting`] before it happens; everything else is a loop.
#![forbid(unsafe_code)]

use super::{
    Alternative, Atom, CharClass, ClassItem, GbnfError, GbnfErrorKind as K, Grammar, Item, LLAMA_REPETITION_THRESHOLD,
    Limits, Repetition, Rule, TokenMatch, TokenRef,
};

/// Parse `src`; also returns the deepest group nesting seen.
pub(super) fn parse(src: &str, limits: &Limits) -> Result<(Grammar, usize), GbnfError> {
    if src.len() > limits.max_bytes {
        return Err(GbnfError::at(src, limits.max_bytes, K::TooLong { len: src.len(), max: limits.max_bytes }));
    }
    if let Some(at) = src.bytes().position(|b| b == 0) {
        return Err(GbnfError::at(src, at, K::NulByte));
    }
    let mut p = Parser { src, bytes: src.as_bytes(), pos: 0, depth: 0, deepest: 0, max_nesting: limits.max_nesting };
    let mut rules = Vec::new();
    p.skip_space(true);
    while p.peek().is_some() {
        rules.push(p.rule()?);
    }
    Ok((Grammar { rules }, p.deepest))
}

/// Name characters: `[a-zA-Z0-9-]`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Groups open around `pos`.
    depth: usize,
    deepest: usize,
    max_nesting: usize,
}

type Res<T> = Result<T, GbnfError>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.bytes.get(self.pos.saturating_add(k)).copied()
    }

    fn err<T>(&self, kind: K) -> Res<T> {
        self.err_at(self.pos, kind)
    }

    fn err_at<T>(&self, at: usize, kind: K) -> Res<T> {
        Err(GbnfError::at(self.src, at, kind))
    }

    /// Skip spaces, tabs and comments, and newlines too if `newline_ok`.
    /// A comment is skipped up to (not over) the newline that ends it.
    fn skip_space(&mut self, newline_ok: bool) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newline_ok => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\r' || c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// `[a-zA-Z0-9-]+`
    fn name(&mut self) -> Res<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word) {
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(K::Expected("a rule name"));
        }
        // ASCII only, so the slice is on character boundaries.
        Ok(self.src.get(start..self.pos).unwrap_or_default().to_string())
    }

    /// `[0-9]+` as a u64 (leading zeros allowed).
    fn integer(&mut self) -> Res<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            value = match value.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))) {
                Some(v) => v,
                None => return self.err_at(start, K::NumberTooLarge),
            };
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(K::Expected("an integer"));
        }
        Ok(value)
    }

    /// `name ::= alternatives` and the newline (or end) after it.
    fn rule(&mut self) -> Res<Rule> {
        let offset = self.pos;
        let name = self.name()?;
        self.skip_space(false);
        if self.bytes.get(self.pos..).is_none_or(|rest| !rest.starts_with(b"::=")) {
            return self.err(K::Expected("`::=`"));
        }
        self.pos += 3;
        self.skip_space(true);
        let alternatives = self.alternatives(false)?;
        match self.peek() {
            Some(b'\r') => self.pos += if self.peek_at(1) == Some(b'\n') { 2 } else { 1 },
            Some(b'\n') => self.pos += 1,
            None => {}
            Some(_) => return self.err(K::Expected("a newline or the end of the grammar")),
        }
        self.skip_space(true);
        Ok(Rule { name, alternatives, offset })
    }

    /// Sequences separated by `|` (a newline may follow each `|`).
    fn alternatives(&mut self, nested: bool) -> Res<Vec<Alternative>> {
        let mut alternatives = vec![self.sequence(nested)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.skip_space(true);
            alternatives.push(self.sequence(nested)?);
        }
        Ok(alternatives)
    }

    /// Items up to anything that cannot start one. Inside a group
    /// (`nested`) newlines separate items like spaces; outside they end
    /// the sequence.
    fn sequence(&mut self, nested: bool) -> Res<Alternative> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(b) = self.peek() {
            let offset = self.pos;
            let atom = match b {
                b'"' => self.literal()?,
                b'[' => self.class()?,
                b'<' | b'!' => self.token()?,
                b'(' => self.group()?,
                b'.' => {
                    self.pos += 1;
                    Atom::Any
                }
                b'*' | b'+' | b'?' | b'{' => {
                    let rep = self.repetition(nested)?;
                    match items.last_mut() {
                        Some(item) if produces_elements(item) => item.repetitions.push(rep),
                        _ => return self.err_at(offset, K::RepetitionWithoutItem),
                    }
                    continue;
                }
                b if is_word(b) => Atom::Rule(self.name()?),
                _ => break,
            };
            self.skip_space(nested);
            items.push(Item { atom, repetitions: Vec::new(), offset });
        }
        Ok(Alternative { items })
    }

    /// `"..."`
    fn literal(&mut self) -> Res<Atom> {
        self.pos += 1;
        let mut chars = Vec::new();
        loop {
            match self.peek() {
                None => return self.err(K::UnexpectedEnd),
                Some(b'"') => break,
                Some(_) => chars.push(self.char()?),
            }
        }
        self.pos += 1;
        Ok(Atom::Literal(chars))
    }

    /// `[...]` or `[^...]`. A `-` between two characters makes a range,
    /// except right before the closing `]`.
    fn class(&mut self) -> Res<Atom> {
        self.pos += 1;
        let negated = self.peek() == Some(b'^');
        if negated {
            self.pos += 1;
        }
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None => return self.err(K::UnexpectedEnd),
                Some(b']') => break,
                Some(_) => {}
            }
            let first = self.char()?;
            if self.peek() == Some(b'-') && self.peek_at(1) != Some(b']') {
                if self.peek_at(1).is_none() {
                    return self.err_at(self.pos + 1, K::UnexpectedEnd);
                }
                self.pos += 1;
                let last = self.char()?;
                items.push(ClassItem::Range(first, last));
            } else {
                items.push(ClassItem::Char(first));
            }
        }
        self.pos += 1;
        Ok(Atom::Class(CharClass { negated, items }))
    }

    /// One character of a literal or class: an escape or a UTF-8 character.
    fn char(&mut self) -> Res<u32> {
        let Some(b) = self.peek() else { return self.err(K::UnexpectedEnd) };
        if b != b'\\' {
            // `pos` is on a character boundary: it only ever advances over
            // ASCII bytes or whole characters.
            let Some(c) = self.src.get(self.pos..).and_then(|s| s.chars().next()) else {
                return self.err(K::UnexpectedEnd);
            };
            self.pos += c.len_utf8();
            return Ok(u32::from(c));
        }
        let start = self.pos;
        let simple = match self.peek_at(1) {
            Some(b'x') => return self.hex(2),
            Some(b'u') => return self.hex(4),
            Some(b'U') => return self.hex(8),
            Some(b't') => b'\t',
            Some(b'r') => b'\r',
            Some(b'n') => b'\n',
            Some(c @ (b'\\' | b'"' | b'[' | b']' | b'-')) => c,
            _ => return self.err_at(start, K::UnknownEscape),
        };
        self.pos += 2;
        Ok(u32::from(simple))
    }

    /// The `digits` hex digits after `\x`, `\u` or `\U` (at `pos`).
    fn hex(&mut self, digits: u8) -> Res<u32> {
        let start = self.pos;
        self.pos += 2;
        let mut value: u32 = 0;
        for _ in 0..digits {
            let Some(d) = self.peek().and_then(|b| char::from(b).to_digit(16)) else {
                return self.err_at(start, K::BadHexEscape { digits });
            };
            // At most 8 digits: fits in u32.
            value = (value << 4) | d;
            self.pos += 1;
        }
        Ok(value)
    }

    /// `<[id]>`, `<text>`, or either after `!`.
    fn token(&mut self) -> Res<Atom> {
        let negated = self.peek() == Some(b'!');
        if negated {
            self.pos += 1;
        }
        if self.peek() != Some(b'<') {
            return self.err(K::Expected("`<` after `!`"));
        }
        let start = self.pos;
        self.pos += 1;
        let token = if self.peek() == Some(b'[') {
            self.pos += 1;
            let at = self.pos;
            let id = self.integer()?;
            let Ok(id) = u32::try_from(id) else { return self.err_at(at, K::TokenIdTooLarge) };
            if self.peek() != Some(b']') {
                return self.err(K::Expected("`]` after the token id"));
            }
            self.pos += 1;
            if self.peek() != Some(b'>') {
                return self.err(K::Expected("`>` after the token id"));
            }
            self.pos += 1;
            TokenRef::Id(id)
        } else {
            match self.bytes.get(self.pos..).and_then(|rest| rest.iter().position(|&b| b == b'>')) {
                Some(len) => self.pos += len + 1,
                None => return self.err_at(self.bytes.len(), K::Expected("`>` to end the token")),
            }
            // Both ends are ASCII bytes, so on character boundaries.
            TokenRef::Text(self.src.get(start..self.pos).unwrap_or_default().to_string())
        };
        Ok(Atom::Token(TokenMatch { negated, token }))
    }

    /// `( alternatives )`, where newlines are spaces.
    fn group(&mut self) -> Res<Atom> {
        if self.depth >= self.max_nesting {
            return self.err(K::TooDeep { max: self.max_nesting });
        }
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        self.pos += 1;
        self.skip_space(true);
        let alternatives = self.alternatives(true)?;
        if self.peek() != Some(b')') {
            return self.err(K::Expected("`)`"));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(Atom::Group(alternatives))
    }

    /// `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`, and the space after it.
    fn repetition(&mut self, nested: bool) -> Res<Repetition> {
        let offset = self.pos;
        let op = self.peek();
        self.pos += 1;
        self.skip_space(nested);
        let (min, max) = match op {
            Some(b'*') => (0, None),
            Some(b'+') => (1, None),
            Some(b'?') => (0, Some(1)),
            _ => self.braces(nested)?,
        };
        if min > LLAMA_REPETITION_THRESHOLD {
            return self.err_at(offset, K::TooManyRepetitions { min });
        }
        if let Some(max) = max.filter(|&m| m <= LLAMA_REPETITION_THRESHOLD && m < min) {
            return self.err_at(offset, K::InvertedRepetition { min, max });
        }
        Ok(Repetition { min, max, offset })
    }

    /// The inside of `{...}` (the `{` and the space after it are read).
    fn braces(&mut self, nested: bool) -> Res<(u64, Option<u64>)> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return self.err(K::Expected("an integer after `{`"));
        }
        let min = self.integer()?;
        self.skip_space(nested);
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.skip_space(nested);
                Ok((min, Some(min)))
            }
            Some(b',') => {
                self.pos += 1;
                self.skip_space(nested);
                let mut max = None;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    max = Some(self.integer()?);
                    self.skip_space(nested);
                }
                if self.peek() != Some(b'}') {
                    return self.err(K::Expected("`}`"));
                }
                self.pos += 1;
                self.skip_space(nested);
                Ok((min, max))
            }
            _ => self.err(K::Expected("`,` or `}`")),
        }
    }
}

/// Whether llama.cpp has at least one element for `item` when the next
/// repetition operator comes: an empty literal or class produces none, and
/// neither does a repetition `{0}` / `{0,0}`. Any other repetition leaves a
/// reference (`min == 0`) or the item itself.
fn produces_elements(item: &Item) -> bool {
    if let Some(last) = item.repetitions.last() {
        return !(last.min == 0 && last.max == Some(0));
    }
    match &item.atom {
        Atom::Literal(chars) => !chars.is_empty(),
        Atom::Class(class) => !class.items.is_empty(),
        Atom::Any | Atom::Rule(_) | Atom::Group(_) | Atom::Token(_) => true,
    }
}
