//! `TokenDecoder`: however the bytes of a text are cut into pieces, what it
//! streams (then `finish`es) is exactly `String::from_utf8_lossy` of the
//! whole, and it never holds back more than an incomplete character. Pure
//! Rust: `make miri` runs this file under Miri (with `PROPTEST_CASES` low).

use llama_core::TokenDecoder;
use proptest::prelude::*;

fn stream(bytes: &[u8], cuts: &[usize]) -> String {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.sort_unstable();
    let mut d = TokenDecoder::new();
    let mut out = String::new();
    let mut start = 0;
    for end in cuts.into_iter().chain([bytes.len()]) {
        out.push_str(&d.push(&bytes[start..end]));
        // At most the start of one character (up to 3 bytes) waits.
        assert!(d.pending().len() <= 3, "{:?} pending", d.pending());
        start = end;
    }
    out + &d.finish()
}

#[test]
fn characters_split_at_every_byte() {
    for text in ["é", "日本", "😀👍🏽", "a\u{10FFFF}b"] {
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(stream(bytes, &[cut]), text);
        }
        let every: Vec<usize> = (0..=bytes.len()).collect();
        assert_eq!(stream(bytes, &every), text);
    }
}

#[test]
fn invalid_bytes_become_replacement_characters_like_from_utf8_lossy() {
    for bytes in [
        &b"\xff"[..],
        b"a\xc3",
        b"\xc3a",
        b"\xed\xa0\x80",
        b"\xc0\x80",
        b"\xf0\x9f\x98",
        b"\xf0\x9f\x98A",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
    ] {
        let want = String::from_utf8_lossy(bytes);
        for cut in 0..=bytes.len() {
            assert_eq!(stream(bytes, &[cut]), want, "{bytes:?} cut at {cut}");
        }
    }
}

#[test]
fn reset_forgets_held_bytes() {
    let mut d = TokenDecoder::new();
    assert_eq!(d.push(b"x\xe6\x97"), "x");
    assert_eq!(d.pending(), b"\xe6\x97");
    d.reset();
    assert_eq!(d.push("本".as_bytes()), "本");
    assert_eq!(d.finish(), "");
}

proptest! {
    #[test]
    fn streaming_equals_lossy_whole(
        bytes in prop::collection::vec(prop_oneof![any::<u8>(), 0x80u8..0xc0, 0xc2u8..0xf5], 0..64),
        cuts in prop::collection::vec(0usize..64, 0..12),
    ) {
        prop_assert_eq!(stream(&bytes, &cuts), String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn valid_text_is_streamed_unchanged(text in "\\PC{0,24}", cuts in prop::collection::vec(0usize..96, 0..12)) {
        prop_assert_eq!(stream(text.as_bytes(), &cuts), text);
    }
}
