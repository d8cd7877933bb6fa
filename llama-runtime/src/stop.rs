//! Stop strings matched on streamed text across token boundaries.

/// What pushing a piece of text released.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// No stop string matched; `released` is safe to emit.
    Continue {
        /// Text that can no longer be part of a stop string.
        released: String,
    },
    /// A stop string matched: emit `released` (the text before it) and end.
    Stopped {
        /// Text before the stop string.
        released: String,
        /// The stop string.
        word: String,
    },
}

/// Holds back the longest tail of the text that could still grow into a stop
/// string, so that a stop string is never emitted, even when it is spread
/// over several tokens.
#[derive(Debug, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// `stops` must not contain empty strings (checked at submit).
    pub(crate) fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops, held: String::new() }
    }

    /// Feed the next piece of decoded text.
    pub(crate) fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue { released: text.to_owned() };
        }
        self.held.push_str(text);
        // Earliest match wins; at the same position, the longest stop string.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, std::cmp::Reverse(s.len()), s)))
            .min();
        if let Some((at, _, word)) = found {
            let word = word.clone();
            let mut released = std::mem::take(&mut self.held);
            released.truncate(at);
            return StopOutcome::Stopped { released, word };
        }
        let keep = self.partial_suffix_len();
        let released = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        StopOutcome::Continue { released }
    }

    /// Everything still held back (generation ended without a match).
    pub(crate) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some
    /// stop string (always on a character boundary of `held`).
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for stop in &self.stops {
            let max = (stop.len() - 1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start) && stop.as_bytes().starts_with(&held.as_bytes()[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue { released } => out.push_str(&released),
                StopOutcome::Stopped { released, word } => {
                    out.push_str(&released);
                    return (out, Some(word));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn stop_across_tokens() {
        assert_eq!(run(&["END"], &["hello E", "N", "D more"]), ("hello ".into(), Some("END".into())));
        assert_eq!(run(&["END"], &["hello E", "N", "x"]), ("hello ENx".into(), None));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), Some("\n\n".into())));
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut m = StopMatcher::new(vec!["abc".into()]);
        assert_eq!(m.push("xxab"), StopOutcome::Continue { released: "xx".into() });
        assert_eq!(m.push("d"), StopOutcome::Continue { released: "abd".into() });
    }

    #[test]
    fn earliest_then_longest() {
        assert_eq!(run(&["bc", "abc"], &["xabcd"]), ("x".into(), Some("abc".into())));
        assert_eq!(run(&["b", "abc"], &["xab"]), ("xa".into(), Some("b".into())));
    }

    #[test]
    fn multibyte() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), Some("é!".into())));
        assert_eq!(run(&["日本"], &["日", "x"]), ("日x".into(), None));
    }

    proptest! {
        /// Streaming matches the one-shot answer for any split of the text.
        #[test]
        fn streaming_equals_whole(text in "[ab\n]{0,40}", stop in "[ab\n]{1,4}", cuts in prop::collection::vec(0usize..40, 0..8)) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&text[last..c]); last = c; }
            pieces.push(&text[last..]);
            let got = run(&[stop.as_str()], &pieces);
            let want = match text.find(&stop) {
                Some(at) => (text[..at].to_string(), Some(stop.clone())),
                None => (text.clone(), None),
            };
            prop_assert_eq!(got, want);
        }
    }
}
