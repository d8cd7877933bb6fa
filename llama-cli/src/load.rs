//! Loading the model, with a progress bar on a terminal.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llama_core::{Model, ModelParams};

use crate::cli::ModelArgs;
use crate::{model_path, output};

/// Resolve the model path (see [`model_path::resolve`]) and load it. On a
/// terminal, stderr shows a progress bar while the weights load; piped or
/// redirected stderr stays silent.
pub fn load(args: &ModelArgs) -> anyhow::Result<Arc<Model>> {
    let path = model_path::resolve(args)?;
    let params = ModelParams::default();
    let started = Instant::now();
    let model = if output::stderr_is_tty() {
        load_with_bar(&path, &params)
    } else {
        Model::load(&path, &params).map_err(|e| describe(e, &path))
    }?;
    tracing::info!(path = %path.display(), elapsed = ?started.elapsed(), "model loaded");
    Ok(Arc::new(model))
}

/// Load only the vocabulary (fast: no weights), for tokenize/detokenize.
pub fn load_vocab_only(args: &ModelArgs) -> anyhow::Result<Arc<Model>> {
    let path = model_path::resolve(args)?;
    let params = ModelParams { vocab_only: true, ..ModelParams::default() };
    Ok(Arc::new(Model::load(&path, &params).map_err(|e| describe(e, &path))?))
}

fn load_with_bar(path: &Path, params: &ModelParams) -> anyhow::Result<Model> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    // The template is a constant; failing to parse it would be a bug caught
    // by the first run on a terminal, so fall back to the default style.
    let style = ProgressStyle::with_template("{spinner} loading {msg} [{bar:30}] {percent:>3}%")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar =
        ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr()).with_style(style).with_message(name);
    bar.tick();
    let updater = bar.clone();
    let result = Model::load_with_progress(path, params, move |fraction| {
        updater.set_position((fraction.clamp(0.0, 1.0) * 100.0).round() as u64);
        true
    });
    match result {
        Ok(model) => {
            // Draw the final state (so that a recording of the terminal shows
            // 100%), then leave the screen to the command's own output.
            bar.finish();
            bar.finish_and_clear();
            Ok(model)
        }
        Err(e) => {
            bar.abandon();
            bar.finish_and_clear();
            Err(describe(e, path))
        }
    }
}

/// One line that names the file (once) and the reason.
pub fn describe(e: impl std::fmt::Display, path: &Path) -> anyhow::Error {
    let text = e.to_string();
    let shown = path.display().to_string();
    if text.contains(&shown) { anyhow::anyhow!("{text}") } else { anyhow::anyhow!("{shown}: {text}") }
}
