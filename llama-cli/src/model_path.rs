//! Which model file to use when `-m` is not given.

use std::path::{Path, PathBuf};

use llama_runtime::{DEFAULT_MODEL, find_default_model};

/// The model to use: `-m`/`LLAMA_MODEL` if given (clap merges the two), else
/// [`DEFAULT_MODEL`] as llama-runtime's [`find_default_model`] finds it (the
/// current directory, then the executable's directory and its ancestors; the
/// server searches the same way).
pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        // Existence and format are checked by the loader, which gives the
        // precise error (not found / not a GGUF file).
        return Ok(path.to_path_buf());
    }
    find_default_model().map_err(|_| {
        anyhow::anyhow!(
            "no model given and the default model {DEFAULT_MODEL} was not found (looked in the current directory and \
             above the executable); run `make setup` (or vendor/setup.sh) to fetch it, or pass -m FILE / set LLAMA_MODEL"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins_even_if_missing() {
        let p = resolve(Some(Path::new("/nonexistent/x.gguf"))).expect("explicit path is returned");
        assert_eq!(p, Path::new("/nonexistent/x.gguf"));
    }
}
