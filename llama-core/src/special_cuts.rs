//! Where a long text can be cut at special-token strings so that
//! tokenizing the pieces one by one gives the same tokens as one call:
//! [`Specials`], used by [`Vocab::tokenize`](crate::Vocab::tokenize).
//! Pure string work; the strings come from the vocabulary
//! (`Vocab::special_strings` in `vocab.rs`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};

/// The strings of a vocabulary's special tokens (attribute CONTROL,
/// USER_DEFINED or UNKNOWN: exactly the ones llama.cpp's special-token
/// partition looks for), to cut long texts where tokenizing the pieces
/// separately gives the same tokens as one call.
///
/// Why a cut at `p`, right after an occurrence `[s, p)` of special `S`,
/// is exact when (1) no other occurrence of any special overlaps `[s, p)`,
/// (2) `S` neither starts nor ends with whitespace, and (3) `S` has no
/// RSTRIP attribute or the byte at `p` is not whitespace:
///
/// llama.cpp (`tokenizer_st_partition` in `llama-vocab.cpp`) takes the
/// specials longest first; for each, it scans every remaining raw-text
/// fragment left to right for non-overlapping occurrences, replaces each
/// with the token and keeps the text on either side as raw fragments,
/// minus adjacent whitespace if the special has LSTRIP/RSTRIP.
/// - By (1), no occurrence of any special crosses `p`, so no special
///   matched before `S` splits text across `p`, and the scans of the part
///   before and after `p` find the same occurrences whether they run on the
///   whole text or on the two pieces; by (1) again `[s, p)` is never
///   consumed by another match, so `S` matches there in both.
/// - By (2), whitespace stripping of neighbouring specials stops at `S`'s
///   first and last bytes, so it never reaches across `p` either, and by
///   (3) `S`'s own RSTRIP strips nothing after `p`.
///
/// So the fragments of the whole text are the fragments of the left piece
/// followed by those of the right piece. Each fragment is then tokenized on
/// its own: BPE and UGM keep no state between fragments; SPM prefixes a
/// space to a raw fragment at the start or after a special token, and the
/// right piece starts right after the special `S`, so that is unchanged.
/// Other tokenizer types (WPM, RWKV, PLaMo-2) are not cut. BOS/EOS are
/// added once around the whole text, as llama.cpp does.
pub(crate) struct Specials {
    /// Every special string (deduplicated), standard semantics so that
    /// overlapping occurrences can be listed.
    matcher: AhoCorasick,
    /// Per pattern: condition (2) holds.
    edges_ok: Vec<bool>,
    /// Per pattern: some token with this text has RSTRIP.
    rstrip: Vec<bool>,
    /// The longest pattern, in bytes.
    max_len: usize,
}

impl std::fmt::Debug for Specials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Specials").field("patterns", &self.edges_ok.len()).finish_non_exhaustive()
    }
}

impl Specials {
    /// From each distinct special string and whether any of its tokens has
    /// RSTRIP.
    pub(crate) fn from_patterns(by_text: BTreeMap<Vec<u8>, bool>) -> Option<Specials> {
        if by_text.is_empty() {
            return None;
        }
        let max_len = by_text.keys().map(Vec::len).max().unwrap_or(0);
        let edges_ok = by_text
            .keys()
            .map(|t| !t.first().is_none_or(|&b| is_c_space(b)) && !t.last().is_none_or(|&b| is_c_space(b)))
            .collect();
        let rstrip = by_text.values().copied().collect();
        let matcher = AhoCorasick::builder().match_kind(MatchKind::Standard).build(by_text.keys()).ok()?;
        Some(Specials { matcher, edges_ok, rstrip, max_len })
    }

    /// Byte offsets (increasing, char boundaries, inside the text) where
    /// `text` can be cut, about every `per_chunk` special strings.
    pub(crate) fn cuts(&self, text: &str, per_chunk: usize) -> Vec<usize> {
        let bytes = text.as_bytes();
        let mut cuts = Vec::new();
        let mut since_cut = 0usize;
        for m in self.matcher.find_iter(bytes) {
            since_cut += 1;
            let (s, p, id) = (m.start(), m.end(), m.pattern().as_usize());
            if since_cut < per_chunk || p >= bytes.len() || !text.is_char_boundary(p) || !self.edges_ok[id] {
                continue;
            }
            if self.rstrip[id] && is_c_space(bytes[p]) {
                continue;
            }
            // Condition (1): every occurrence overlapping [s, p) lies in
            // this window; the only one allowed is [s, p) itself.
            let w0 = (s + 1).saturating_sub(self.max_len);
            let w1 = (p + self.max_len - 1).min(bytes.len());
            let isolated = self
                .matcher
                .find_overlapping_iter(&bytes[w0..w1])
                .map(|o| (o.start() + w0, o.end() + w0))
                .all(|(os, oe)| (os, oe) == (s, p) || oe <= s || os >= p);
            if isolated {
                cuts.push(p);
                since_cut = 0;
            }
        }
        cuts
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp's lstrip/rstrip use.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials(patterns: &[(&str, bool)]) -> Specials {
        Specials::from_patterns(patterns.iter().map(|(t, r)| (t.as_bytes().to_vec(), *r)).collect()).unwrap()
    }

    #[test]
    fn cuts_need_an_isolated_occurrence() {
        let sp = specials(&[("<a>", false), ("a>x", false), ("<b>", false)]);
        // "<a>" overlaps "a>x" in "<a>x": no cut after it; "<b>" is alone.
        assert_eq!(sp.cuts("<a>x<b>y", 1), vec![7]);
        assert_eq!(sp.cuts("<a>z<b>y", 1), vec![3, 7]);
        // One occurrence inside another (a longer special containing it).
        let sp = specials(&[("<s>", false), ("<s>!", false)]);
        assert_eq!(sp.cuts("<s>!.<s>.", 1), vec![8]);
        // Overlapping occurrences of the same special.
        let sp = specials(&[("aXa", false)]);
        assert_eq!(sp.cuts("aXaXa.", 1), Vec::<usize>::new());
        assert_eq!(sp.cuts("aXa.aXa.", 1), vec![3, 7]);
    }

    #[test]
    fn cuts_respect_whitespace_stripping() {
        // RSTRIP: a cut is fine only when no whitespace follows.
        let sp = specials(&[("<r>", true), ("<n>", false)]);
        assert_eq!(sp.cuts("<r> x<r>x<n> x", 1), vec![8, 12]);
        assert_eq!(sp.cuts("<r>\u{b}x<r>\tx", 1), Vec::<usize>::new());
        // Specials that start or end with whitespace are never cut after.
        let sp = specials(&[(" <w>", false), ("<w>\n", false), ("<k>", false)]);
        assert_eq!(sp.cuts("a <w>b<w>\nc<k>d", 1), vec![14]);
    }

    #[test]
    fn cuts_come_every_so_many_specials_and_only_at_char_boundaries() {
        let sp = specials(&[("<e>", false)]);
        let text = "<e>é".repeat(10);
        let cuts = sp.cuts(&text, 3);
        assert_eq!(cuts, vec![13, 28, 43]);
        assert!(cuts.iter().all(|&c| text.is_char_boundary(c)));
        // A special string that ends inside a character is not a cut point.
        let sp = Specials::from_patterns([(vec![b'<', 0xC3], false)].into_iter().collect()).unwrap();
        assert!(sp.cuts("<é<é", 1).is_empty());
    }
}
