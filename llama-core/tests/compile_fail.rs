//! Compile-fail tests (trybuild): what the type system must refuse.
//! `Sampler`, `Context` and `Batch` are `!Sync` (E0277), and logits or
//! embeddings borrowed from a `Context` cannot be held across a decode
//! (E0502). The expected compiler output is in `tests/ui/*.stderr`; after an
//! intended change, regenerate it with `TRYBUILD=overwrite cargo test -p
//! llama-core --test compile_fail` and review the diff.
//!
//! trybuild checks the cases in a project of its own under
//! `<target>/tests/trybuild`, which would build llama.cpp again there; the
//! test re-runs itself with `LLAMA_CPP_BUILD_CACHE` pointing at the
//! workspace's cache (`<target>/llama.cpp-build`) so that the CMake build is
//! reused. The first run type-checks llama-core's dependencies (about a
//! minute); later runs take seconds.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn ui() {
    if std::env::var_os("LLAMA_CPP_BUILD_CACHE").is_some() {
        trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
        return;
    }
    // <target>/<profile>/deps/compile_fail-<hash>
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).map(PathBuf::from).expect("the target directory");
    let status = Command::new(&exe)
        .args(["ui", "--exact", "--nocapture", "--test-threads=1"])
        .env("LLAMA_CPP_BUILD_CACHE", target.join("llama.cpp-build"))
        .status()
        .expect("re-run the test binary");
    assert!(status.success(), "the compile-fail cases failed (output above)");
}
