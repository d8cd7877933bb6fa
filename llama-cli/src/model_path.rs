//! Which model file to use when `-m` is not given.

use std::path::{Path, PathBuf};

/// The model that `make setup` (vendor/setup.sh) fetches, relative to the
/// repository root.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model to use: `-m`/`LLAMA_MODEL` if given (clap merges the two), else
/// [`DEFAULT_MODEL`] found relative to the current directory or to one of the
/// executable's ancestor directories (so that `target/debug/llama` run from
/// anywhere finds the repository's `models/`).
pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        // Existence and format are checked by the loader, which gives the
        // precise error (not found / not a GGUF file).
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    find_default(cwd.as_deref(), exe.as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "no model given and the default model {DEFAULT_MODEL} was not found (looked in the current directory and \
             above the executable); run `make setup` (or vendor/setup.sh) to fetch it, or pass -m FILE / set LLAMA_MODEL"
        )
    })
}

fn find_default(cwd: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    let from_cwd = cwd.map(|d| d.join(DEFAULT_MODEL));
    let from_exe = exe.into_iter().flat_map(|e| e.ancestors().skip(1)).map(|d| d.join(DEFAULT_MODEL));
    from_cwd.into_iter().chain(from_exe).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llama-cli-model-path-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn explicit_path_wins_even_if_missing() {
        let p = resolve(Some(Path::new("/nonexistent/x.gguf"))).expect("explicit path is returned");
        assert_eq!(p, Path::new("/nonexistent/x.gguf"));
    }

    #[test]
    fn found_above_the_executable() {
        let root = scratch("exe");
        std::fs::create_dir_all(root.join("models")).expect("mkdir");
        std::fs::write(root.join(DEFAULT_MODEL), b"x").expect("write");
        let exe = root.join("target/debug/llama");
        let elsewhere = scratch("cwd");
        assert_eq!(find_default(Some(&elsewhere), Some(&exe)), Some(root.join(DEFAULT_MODEL)));
        // The current directory is tried first.
        std::fs::create_dir_all(elsewhere.join("models")).expect("mkdir");
        std::fs::write(elsewhere.join(DEFAULT_MODEL), b"x").expect("write");
        assert_eq!(find_default(Some(&elsewhere), Some(&exe)), Some(elsewhere.join(DEFAULT_MODEL)));
    }

    #[test]
    fn nothing_found() {
        let d = scratch("none");
        assert_eq!(find_default(Some(&d), Some(&d.join("bin/llama"))), None);
    }
}
