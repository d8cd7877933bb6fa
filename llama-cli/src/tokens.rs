//! `llama tokenize` and `llama detokenize`. Both load only the vocabulary.

use llama_runtime::{LlamaModel, ModelFacade};
use serde_json::json;

use crate::cli::{DetokenizeArgs, TokenizeArgs};
use crate::generate::read_text;
use crate::{Outcome, load, output};

/// Run `llama tokenize`. Without flags the text is tokenized exactly as
/// `llama generate` tokenizes a prompt (BOS as the model wants, special-token
/// text like `<|im_start|>` parsed), so the counts match `--json`'s usage.
pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<Outcome> {
    let text = read_text("text", args.text.as_deref(), None)?;
    let model = LlamaModel::new(load::load_vocab_only(&args.model)?);
    let ids = model.tokenize(&text, !args.no_add_special, true)?;
    if args.pieces {
        let pieces: Vec<(i32, String)> =
            ids.iter().map(|&id| (id, String::from_utf8_lossy(&model.token_piece(id)).into_owned())).collect();
        if args.json {
            let list: Vec<_> = pieces.iter().map(|(id, piece)| json!({ "id": id, "piece": piece })).collect();
            output::print_json(&serde_json::Value::Array(list))?;
        } else {
            for (id, piece) in &pieces {
                // Debug formatting quotes the piece and escapes newlines,
                // so every token stays on its own line.
                output::print_line(&format!("{id}\t{piece:?}"))?;
            }
        }
    } else if args.json {
        output::print_json(&json!(ids))?;
    } else {
        let line: Vec<String> = ids.iter().map(ToString::to_string).collect();
        output::print_line(&line.join(" "))?;
    }
    Ok(Outcome::Done)
}

/// Run `llama detokenize`: ids to text, printed as is (plus a newline on a
/// terminal, like `generate`).
pub fn detokenize(args: DetokenizeArgs) -> anyhow::Result<Outcome> {
    let model = LlamaModel::new(load::load_vocab_only(&args.model)?);
    // Every id is checked against the vocabulary first.
    let text = model.detokenize(&args.ids, args.remove_special, true)?;
    let mut out = output::TextOut::stdout();
    out.write(&text).map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?;
    out.finish().map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?;
    Ok(Outcome::Done)
}
