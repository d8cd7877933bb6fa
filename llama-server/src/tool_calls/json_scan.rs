//! A small JSON scanner for model output that may stop anywhere: where a
//! value ends, that it has not ended yet, or that it can never be JSON.
//! serde_json has the last word on every value that looks complete.

use serde::de::IgnoredAny;

/// Where a JSON value ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It ends before this byte offset.
    Complete(usize),
    /// The text ends inside it (more output may complete it).
    Incomplete,
    /// No continuation can make it JSON.
    Invalid,
}

/// Deepest nesting followed (serde_json's own limit).
const MAX_DEPTH: usize = 128;

/// The offset of the first byte at or after `i` that is not JSON whitespace.
pub(crate) fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// What the scanner expects next.
#[derive(Clone, Copy)]
enum Want {
    Value,
    ValueOrClose,
    KeyOrClose,
    Key,
    Colon,
    After,
}

/// Where the JSON value that starts at `start` (a non-whitespace byte) ends.
pub(crate) fn value_end(s: &str, start: usize) -> End {
    let b = s.as_bytes();
    let mut closers: Vec<u8> = Vec::new();
    let mut want = Want::Value;
    let mut i = start;
    loop {
        if matches!(want, Want::After) && closers.is_empty() {
            return match serde_json::from_str::<IgnoredAny>(&s[start..i]) {
                Ok(_) => End::Complete(i),
                Err(_) => End::Invalid,
            };
        }
        i = skip_ws(s, i);
        let Some(&c) = b.get(i) else { return End::Incomplete };
        match want {
            Want::Value => match c {
                b'{' | b'[' => {
                    if closers.len() >= MAX_DEPTH {
                        return End::Invalid;
                    }
                    closers.push(if c == b'{' { b'}' } else { b']' });
                    want = if c == b'{' { Want::KeyOrClose } else { Want::ValueOrClose };
                    i += 1;
                }
                b'"' => match string_end(s, i) {
                    End::Complete(e) => {
                        i = e;
                        want = Want::After;
                    }
                    other => return other,
                },
                b't' | b'f' | b'n' => {
                    let word: &[u8] = match c {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    let have = &b[i..(i + word.len()).min(b.len())];
                    if have != &word[..have.len()] {
                        return End::Invalid;
                    }
                    if have.len() < word.len() {
                        return End::Incomplete;
                    }
                    i += word.len();
                    want = Want::After;
                }
                b'-' | b'0'..=b'9' => {
                    while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                        i += 1;
                    }
                    // A number at the end of the text may go on.
                    if i == b.len() {
                        return End::Incomplete;
                    }
                    want = Want::After;
                }
                _ => return End::Invalid,
            },
            Want::ValueOrClose => {
                if c == b']' {
                    closers.pop();
                    i += 1;
                    want = Want::After;
                } else {
                    want = Want::Value;
                }
            }
            Want::KeyOrClose | Want::Key => match c {
                b'}' if matches!(want, Want::KeyOrClose) => {
                    closers.pop();
                    i += 1;
                    want = Want::After;
                }
                b'"' => match string_end(s, i) {
                    End::Complete(e) => {
                        i = e;
                        want = Want::Colon;
                    }
                    other => return other,
                },
                _ => return End::Invalid,
            },
            Want::Colon => {
                if c != b':' {
                    return End::Invalid;
                }
                i += 1;
                want = Want::Value;
            }
            Want::After => match (c, closers.last()) {
                (b',', Some(b'}')) => {
                    i += 1;
                    want = Want::Key;
                }
                (b',', Some(_)) => {
                    i += 1;
                    want = Want::Value;
                }
                (b'}' | b']', Some(&close)) if c == close => {
                    closers.pop();
                    i += 1;
                }
                _ => return End::Invalid,
            },
        }
    }
}

/// Where the string that starts at `start` (a `"`) ends; its escapes are
/// checked by serde_json once the whole value is there.
pub(crate) fn string_end(s: &str, start: usize) -> End {
    let b = s.as_bytes();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return End::Complete(i + 1),
            c if c < 0x20 => return End::Invalid,
            _ => i += 1,
        }
    }
    End::Incomplete
}

/// The decoded text of the string that starts at `start` (a `"`), as far
/// as it goes: `(text, Some(end))` when it is complete, `(prefix, None)`
/// when the output stops inside it (an escape sequence cut in the middle
/// is left out), `None` when it is not a valid JSON string.
pub(crate) fn string_prefix(s: &str, start: usize) -> Option<(String, Option<usize>)> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    while i < b.len() {
        match b[i] {
            b'"' => {
                out.push_str(&s[run..i]);
                return Some((out, Some(i + 1)));
            }
            b'\\' => {
                out.push_str(&s[run..i]);
                let Some(&e) = b.get(i + 1) else { return Some((out, None)) };
                let simple = match e {
                    b'"' => Some('"'),
                    b'\\' => Some('\\'),
                    b'/' => Some('/'),
                    b'b' => Some('\u{8}'),
                    b'f' => Some('\u{c}'),
                    b'n' => Some('\n'),
                    b'r' => Some('\r'),
                    b't' => Some('\t'),
                    b'u' => None,
                    _ => return None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    i += 2;
                } else {
                    match unicode_escape(s, i) {
                        Escape::Char(c, len) => {
                            out.push(c);
                            i += len;
                        }
                        Escape::Cut => return Some((out, None)),
                        Escape::Bad => return None,
                    }
                }
                run = i;
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    out.push_str(&s[run..]);
    Some((out, None))
}

enum Escape {
    Char(char, usize),
    Cut,
    Bad,
}

/// The `\uXXXX` escape (or surrogate pair) at `i`.
fn unicode_escape(s: &str, i: usize) -> Escape {
    // `None`: the text stops before four digits; `Some(None)`: not hex.
    let hex = |at: usize| -> Option<Option<u32>> {
        let digits = &s.as_bytes()[at.min(s.len())..(at + 4).min(s.len())];
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Some(None);
        }
        if digits.len() < 4 {
            return None;
        }
        Some(digits.iter().try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?)))
    };
    let Some(first) = hex(i + 2) else { return Escape::Cut };
    let Some(first) = first else { return Escape::Bad };
    if !(0xD800..0xDC00).contains(&first) {
        return char::from_u32(first).map_or(Escape::Bad, |c| Escape::Char(c, 6));
    }
    // A high surrogate needs its low half.
    let rest = &s.as_bytes()[(i + 6).min(s.len())..];
    if rest.len() < 2 {
        return if b"\\u".starts_with(rest) { Escape::Cut } else { Escape::Bad };
    }
    if &rest[..2] != b"\\u" {
        return Escape::Bad;
    }
    let Some(second) = hex(i + 8) else { return Escape::Cut };
    match second {
        Some(low) if (0xDC00..0xE000).contains(&low) => {
            let c = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
            char::from_u32(c).map_or(Escape::Bad, |c| Escape::Char(c, 12))
        }
        _ => Escape::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_ends() {
        let cases: &[(&str, End)] = &[
            (r#"{"a": [1, 2.5e3, "x\"}"], "b": {}} tail"#, End::Complete(34)),
            ("[]", End::Complete(2)),
            ("true,", End::Complete(4)),
            (r#""a\"b" x"#, End::Complete(6)),
            (r#"{"a": [1, 2"#, End::Incomplete),
            (r#"{"a"#, End::Incomplete),
            ("tr", End::Incomplete),
            ("12", End::Incomplete),
            ("{", End::Incomplete),
            (r#"{"a": 1,"#, End::Incomplete),
            (r#"{"a" 1}"#, End::Invalid),
            ("[1 2]", End::Invalid),
            ("{]", End::Invalid),
            ("tx", End::Invalid),
            ("[01]", End::Invalid),
            (r#"["\q"]"#, End::Invalid),
            ("[1,]", End::Invalid),
            ("\"a\nb\"", End::Invalid),
            ("hello", End::Invalid),
        ];
        for (text, want) in cases {
            assert_eq!(value_end(text, 0), *want, "{text}");
        }
        let deep = "[".repeat(200);
        assert_eq!(value_end(&deep, 0), End::Invalid);
    }

    #[test]
    fn string_prefixes() {
        let p = |s: &str| string_prefix(s, 0);
        assert_eq!(p(r#""ab\ncd" x"#), Some(("ab\ncd".into(), Some(8))));
        assert_eq!(p(r#""ab\"#), Some(("ab".into(), None)));
        assert_eq!(p(r#""a\u00e9b"#), Some(("aéb".into(), None)));
        assert_eq!(p(r#""a\u00"#), Some(("a".into(), None)));
        assert_eq!(p(r#""\ud83d\ude00!""#), Some(("😀!".into(), Some(15))));
        assert_eq!(p(r#""x\ud83d"#), Some(("x".into(), None)));
        assert_eq!(p(r#""x\ud83d\u"#), Some(("x".into(), None)));
        assert_eq!(p(r#""x\ud83dz"#), None);
        assert_eq!(p(r#""\q""#), None);
        assert_eq!(p(r#""\uzzzz""#), None);
        assert_eq!(p("\"é"), Some(("é".into(), None)));
    }
}
