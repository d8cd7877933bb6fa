//! Where the CLI and the server find their model when none is given.

use std::path::{Path, PathBuf};

/// The model that `make setup` (vendor/setup.sh) fetches, relative to the
/// repository root: what `llama` and `llama-server` load without `-m`.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// [`DEFAULT_MODEL`] was in none of the directories searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the default model {DEFAULT_MODEL} was not found (looked in {})", display_dirs(.searched))]
pub struct DefaultModelMissing {
    /// The directories searched, in order.
    pub searched: Vec<PathBuf>,
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directory: neither the current directory nor the executable's is known".to_owned();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Find [`DEFAULT_MODEL`] for a process that was given no model.
///
/// Search order, first hit wins:
/// 1. the current directory (`./models/...`);
/// 2. the directory of the executable, then each of its ancestors, nearest
///    first (so that `target/debug/llama`, run from anywhere, finds the
///    repository's `models/`).
///
/// # Errors
///
/// [`DefaultModelMissing`], with the directories searched, when the file is
/// in none of them.
pub fn find_default_model() -> Result<PathBuf, DefaultModelMissing> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    find_default_model_from(cwd.as_deref(), exe.as_deref())
}

/// [`find_default_model`] with the current directory and the executable's
/// path given (either may be unknown).
///
/// # Errors
///
/// [`DefaultModelMissing`] as for [`find_default_model`].
pub fn find_default_model_from(cwd: Option<&Path>, exe: Option<&Path>) -> Result<PathBuf, DefaultModelMissing> {
    let dirs = cwd.into_iter().chain(exe.into_iter().flat_map(|e| e.ancestors().skip(1)));
    let mut searched = Vec::new();
    for dir in dirs {
        let path = dir.join(DEFAULT_MODEL);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(dir.to_path_buf());
    }
    Err(DefaultModelMissing { searched })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llama-runtime-default-model-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn current_directory_first_then_above_the_executable() {
        let root = scratch("exe");
        std::fs::create_dir_all(root.join("models")).expect("mkdir");
        std::fs::write(root.join(DEFAULT_MODEL), b"x").expect("write");
        let exe = root.join("target/debug/llama");
        let elsewhere = scratch("cwd");
        assert_eq!(find_default_model_from(Some(&elsewhere), Some(&exe)), Ok(root.join(DEFAULT_MODEL)));
        // The current directory is tried first.
        std::fs::create_dir_all(elsewhere.join("models")).expect("mkdir");
        std::fs::write(elsewhere.join(DEFAULT_MODEL), b"x").expect("write");
        assert_eq!(find_default_model_from(Some(&elsewhere), Some(&exe)), Ok(elsewhere.join(DEFAULT_MODEL)));
    }

    #[test]
    fn nothing_found_lists_the_directories_in_order() {
        let d = scratch("none");
        let err = find_default_model_from(Some(&d), Some(&d.join("bin/llama"))).unwrap_err();
        assert_eq!(err.searched[..3], [d.clone(), d.join("bin"), d.clone()]);
        assert!(err.to_string().contains(DEFAULT_MODEL), "{err}");
        let none = find_default_model_from(None, None).unwrap_err();
        assert!(none.searched.is_empty() && none.to_string().contains("no directory"), "{none}");
    }
}
