//! Fuzz target `hub_inputs`: what the Hugging Face hub (or whoever answers
//! at `HF_ENDPOINT`) and the user give the model downloader
//! (`llama_server::hub`): the `-hf <user>/<model>[:quant]` spec, the
//! `GET /api/models/{repo}?blobs=true` listing JSON (`sha`, `siblings`,
//! `rfilename`, `blobId`, `size`, `lfs.sha256`, `lfs.size`), and the
//! `X-Linked-Etag` / `ETag` headers the sha256 of a download is read from.
//! Never a panic; a value or a typed error. What is accepted is safe to use:
//! a spec prints back to itself; a listing's commit is 40 hex digits, its
//! file names are safe relative paths (no empty, `.` or `..` component, no
//! backslash or NUL), its hashes lower-case hex of the right length (the
//! blob name, joined under the cache, is one of them); a header's sha256 is
//! 64 lower-case hex digits.
//!
//! Input: byte 0 picks the parser (modulo 3): 0, the rest is a spec (lossy
//! UTF-8); 1, the rest is a listing body; 2, the rest is the two header
//! values separated by the first `\n` (`X-Linked-Etag`, then `ETag`; an
//! empty one is absent).
//!
//! Compiled into the model fuzz crate and into llama-server's corpus-replay
//! test (it names only `llama_server`).

use llama_server::hub::{RepoSpec, fuzzing};

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn non_empty(v: &[u8]) -> Option<&[u8]> {
    (!v.is_empty()).then_some(v)
}

/// Run one input.
pub fn hub_inputs(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => spec(&String::from_utf8_lossy(rest)),
        1 => listing(rest),
        _ => {
            let (linked, etag) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            if let Some(sha) = fuzzing::sha256_from_headers(non_empty(linked), non_empty(etag)) {
                assert!(is_lower_hex(&sha, 64), "{sha:?}");
            }
        }
    }
}

fn spec(text: &str) {
    match RepoSpec::parse(text) {
        Ok(spec) => {
            assert_eq!(spec.repo.matches('/').count(), 1, "{spec:?}");
            assert!(fuzzing::is_valid_repo_path(&spec.repo), "{spec:?}");
            assert!(!spec.repo.contains(['\\', ':', '\0']), "{spec:?}");
            assert!(spec.tag.as_deref().is_none_or(|t| !t.is_empty() && !t.contains([':', '/'])), "{spec:?}");
            let again = RepoSpec::parse(&spec.to_string()).expect("a parsed spec prints back to a spec");
            assert_eq!(again, spec);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn listing(body: &[u8]) {
    match fuzzing::read_listing(body) {
        Ok((commit, files)) => {
            assert!(is_lower_hex(&commit.to_ascii_lowercase(), 40), "{commit:?}");
            for (path, oid, sha256, _size) in &files {
                assert!(fuzzing::is_valid_repo_path(path), "{path:?}");
                assert!(!path.starts_with('/') && !path.contains(['\\', '\0']), "{path:?}");
                assert!(path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{path:?}");
                if let Some(h) = sha256 {
                    assert!(is_lower_hex(h, 64), "{h:?}");
                }
                if let Some(o) = oid {
                    assert!(is_lower_hex(o, 40) || is_lower_hex(o, 64), "{o:?}");
                    assert!(sha256.is_none() || sha256.as_ref() == Some(o));
                }
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}
