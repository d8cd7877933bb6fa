//! Keeps "Where the unsafe is" (README.md, the crate doc) true: every
//! source file of llama-core outside the audited list says
//! `#![forbid(unsafe_code)]`, so the compiler proves it has no `unsafe`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// The files that may contain `unsafe`, as the README lists them. `lib.rs`
/// cannot forbid unsafe code for its own module without forbidding it for
/// the whole crate; it holds only module declarations and re-exports.
const AUDITED: [&str; 7] = ["backend.rs", "batch.rs", "context.rs", "ffi.rs", "model.rs", "sampler.rs", "vocab.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_but_the_audited_ones_forbids_unsafe_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut audited_seen = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&src).expect("under src/").to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(path).expect("readable source");
        let forbids = text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]");
        if AUDITED.contains(&name.as_str()) {
            assert!(!forbids, "{name} is listed as audited but forbids unsafe code: update AUDITED and the README");
            audited_seen.push(name);
        } else if name == "lib.rs" {
            let mut code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            assert!(
                code.all(|l| !l.contains("unsafe") || l.contains("unsafe_op_in_unsafe_fn")),
                "lib.rs holds only module declarations and re-exports; put unsafe code in an audited file"
            );
        } else {
            assert!(
                forbids,
                "{name} must say #![forbid(unsafe_code)] (or be added to the audited list and the README)"
            );
        }
    }
    assert_eq!(audited_seen.len(), AUDITED.len(), "an audited file is missing: {audited_seen:?}");
}
