//! Replaying a fuzz target's committed corpus (`corpus/<target>/`) and the
//! inputs of its fixed findings (`regressions/<target>/`) without libFuzzer.
//! Compiled into the fuzz crate (for `make miri`) and, by `#[path]`, into
//! the workspace's `tests/fuzz_corpus_replay.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The input files of `target` under `fuzz_dir` (this crate's directory),
/// sorted by name.
pub fn inputs(fuzz_dir: &Path, target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [fuzz_dir.join("corpus").join(target), fuzz_dir.join("regressions").join(target)] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

/// Run `target`'s function over `files`; panic naming the files on which it
/// panicked. Returns how many ran.
pub fn replay_files(target: &str, files: &[PathBuf], run: fn(&[u8])) -> usize {
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: {} of {} inputs failed:\n{}", failed.len(), files.len(), failed.join("\n"));
    files.len()
}

/// Run `target`'s function over all its inputs (see [`inputs`]).
pub fn replay(fuzz_dir: &Path, target: &str, run: fn(&[u8])) -> usize {
    replay_files(target, &inputs(fuzz_dir, target), run)
}
