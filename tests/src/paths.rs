//! Where things are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `tests/` always sits directly under the workspace root.
    here.parent().map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// The default model every suite uses.
pub fn model_path() -> PathBuf {
    let path = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "the default model is missing at {}; run `make setup` (vendor/setup.sh)", path.display());
    path
}

/// `target/<profile>` of the running test binary
/// (`…/target/debug/deps/reliability_x-hash` → `…/target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let dir = exe.parent().expect("an executable lives in a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().map_or(dir.clone(), Path::to_path_buf) } else { dir }
}

/// `target/reliability`, where suites write their figures.
pub fn report_dir() -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().map_or(profile.clone(), Path::to_path_buf);
    target.join("reliability")
}

fn newest_source_mtime() -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml")
                && let Ok(m) = entry.metadata().and_then(|m| m.modified())
            {
                *newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
            }
        }
    }
    let mut newest = None;
    for krate in ["llama-server", "llama-runtime", "llama-core"] {
        walk(&workspace_root().join(krate).join("src"), &mut newest);
        walk(&workspace_root().join(krate).join("Cargo.toml"), &mut newest);
    }
    newest
}

/// The `llama-server` binary of the current profile. Integration tests of
/// this crate cannot use `CARGO_BIN_EXE_*` for another package's binary,
/// so when the binary is missing or older than the server's, runtime's or
/// core's sources, it is built here, once per test process, with the
/// same profile (`cargo build -p llama-server`).
pub fn server_binary() -> PathBuf {
    binary("llama-server", "llama-server")
}

/// The `llama` CLI binary of the current profile, built like [`server_binary`].
pub fn cli_binary() -> PathBuf {
    binary("llama", "llama-cli")
}

fn binary(name: &str, package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    // A poisoned lock only means another test panicked while building;
    // the list itself is still valid.
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    let profile = profile_dir();
    let bin = profile.join(name);
    if built.iter().any(|b| b == name) {
        return bin;
    }
    let stale = match (std::fs::metadata(&bin).and_then(|m| m.modified()), newest_source_mtime()) {
        (Err(_), _) => true,
        (Ok(bin_time), Some(src)) => src > bin_time,
        (Ok(_), None) => false,
    };
    if stale || std::env::var_os("LLAMA_E2E_REBUILD").is_some() {
        let profile_name = profile.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
        let target_dir = profile.parent().map_or(profile.clone(), Path::to_path_buf);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(workspace_root()).args(["build", "-p", package]).env("CARGO_TARGET_DIR", &target_dir);
        match profile_name.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!(
            "llama-e2e: {} is {}; building it with `cargo build -p {package}` ({profile_name} profile)",
            bin.display(),
            if bin.exists() { "older than its sources" } else { "missing" }
        );
        let status = cmd.status().unwrap_or_else(|e| panic!("could not run {cargo}: {e}"));
        assert!(
            status.success() && bin.is_file(),
            "building {name} failed ({status}); run `cargo build -p {package}` to see why"
        );
    }
    built.push(name.to_string());
    bin
}
