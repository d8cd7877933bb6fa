//! `llama pull`: download a model into the cache and print its path.

use llama_server::hub::{RepoSpec, Source};

use crate::cli::PullArgs;
use crate::{Outcome, model_path, output};

/// Run `llama pull`: a repository (`USER/MODEL[:QUANT]`, `--hf-file`) or an
/// http(s) URL. stdout gets the cached path and nothing else.
pub fn run(args: PullArgs) -> anyhow::Result<Outcome> {
    let source = if args.model.starts_with("http://") || args.model.starts_with("https://") {
        if args.hf_file.is_some() {
            anyhow::bail!("--hf-file goes with a repository, not a URL");
        }
        Source::Url { url: args.model, path: None }
    } else {
        Source::Hub { repo: RepoSpec::parse(&args.model)?, file: args.hf_file }
    };
    let path = model_path::fetch(&source, &args.download)?;
    output::print_line(&path.display().to_string())?;
    Ok(Outcome::Done)
}
