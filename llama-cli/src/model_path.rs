//! Which model file to use: `-hf`/`-mu` (downloaded into the cache, or
//! found there), else `-m`, else the default model.

use std::path::{Path, PathBuf};

use llama_runtime::{DEFAULT_MODEL, find_default_model};
use llama_server::hub::{self, RepoSpec, Source};

use crate::cli::{DownloadArgs, ModelArgs};

/// The model to use, as llama.cpp picks it: `-hf` (wins over `-m`), else
/// `-mu` (saved to `-m` when given), else `-m`/`LLAMA_MODEL` (clap merges
/// the two), else [`DEFAULT_MODEL`] as llama-runtime's
/// [`find_default_model`] finds it (the current directory, then the
/// executable's directory and its ancestors; the server searches the same
/// way).
pub fn resolve(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    if let Some(spec) = &args.hf_repo {
        let source = Source::Hub { repo: RepoSpec::parse(spec)?, file: args.hf_file.clone() };
        return fetch(&source, &args.download);
    }
    if let Some(url) = &args.model_url {
        return fetch(&Source::Url { url: url.clone(), path: args.model.clone() }, &args.download);
    }
    resolve_local(args.model.as_deref())
}

/// `source` from the cache, downloaded first when it is not there (with a
/// progress bar when stderr is a terminal).
pub fn fetch(source: &Source, download: &DownloadArgs) -> anyhow::Result<PathBuf> {
    let mut options = hub::Options::from_env()?;
    options.offline = download.offline;
    if let Some(token) = download.hf_token.clone().and_then(hub::Token::new) {
        options.token = Some(token);
    }
    let path = hub::resolve_blocking(source, &options)?;
    tracing::info!(path = %path.display(), "model {source}");
    Ok(path)
}

/// `-m` if given, else the default model.
pub fn resolve_local(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
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
        let p = resolve_local(Some(Path::new("/nonexistent/x.gguf"))).expect("explicit path is returned");
        assert_eq!(p, Path::new("/nonexistent/x.gguf"));
    }

    #[test]
    fn a_bad_repo_is_one_line_before_any_network() {
        let args = ModelArgs {
            model: None,
            hf_repo: Some("not-a-repo".into()),
            hf_file: None,
            model_url: None,
            download: DownloadArgs { hf_token: None, offline: true },
        };
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("invalid Hugging Face repository \"not-a-repo\"") && !e.contains('\n'), "{e}");
    }
}
