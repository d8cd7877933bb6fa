//! `llama generate`: one prompt in, generated text streamed out.

use std::io::Read;
use std::path::Path;

use llama_core::{ChatMessage, Model};
use llama_runtime::{Collector, Done, FinishReason, Prompt, Request};
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::output::{self, Flow, TextOut};
use crate::session::{self, End};
use crate::{Outcome, load};

/// Run `llama generate`.
pub fn run(args: GenerateArgs, verbose: u8) -> anyhow::Result<Outcome> {
    // Everything that can be refused without the model is refused first.
    let prompt = read_prompt(args.prompt.as_deref(), args.file.as_deref())?;
    let seed = args.sampling.seed.unwrap_or_else(session::random_seed);
    let sampling = args.sampling.to_params(seed)?;

    let model = load::load(&args.model)?;
    let text = if args.chat { render_chat(&model, args.system.as_deref(), &prompt)? } else { prompt };
    if verbose > 0 {
        eprintln!("seed: {seed}");
    }

    let engine = session::start_engine(model, &args.run)?;
    let mut request = Request::new(Prompt::Text(text));
    request.sampling = sampling;
    request.max_tokens = args.max_tokens;
    request.stop = args.stop;
    request.ignore_eos = args.ignore_eos;
    request.context_shift = args.run.context_shift();
    // One request alone in a fixed batch shape: with --seed, the output is
    // the same byte for byte on every run.
    request.deterministic = true;
    let handle = engine.submit(request).map_err(session::rejected)?;

    let rt = session::runtime()?;
    let result = if args.json {
        rt.block_on(collect_json(handle, seed))
    } else {
        let mut out = TextOut::stdout();
        let end = rt.block_on(session::drive(handle, |t| out.write(&t.text)));
        // Whatever happened, a terminal gets its prompt back on a fresh line.
        let _ = out.finish();
        end.map(|end| match end {
            End::Finished(done) => {
                if verbose > 0 {
                    print_timings(&done);
                }
                if matches!(done.finish_reason, FinishReason::ContextFull) {
                    tracing::warn!("stopped: the context is full (pass a larger -c/--ctx-size)");
                }
                Outcome::Done
            }
            End::Closed => Outcome::Done,
            End::Interrupted => Outcome::Interrupted,
        })
    };
    engine.shutdown_blocking(session::SHUTDOWN_DRAIN);
    result
}

/// `--json`: gather the whole answer, print one object.
async fn collect_json(handle: llama_runtime::Handle, seed: u32) -> anyhow::Result<Outcome> {
    let mut collector = Collector::default();
    let end = session::drive(handle, |t| {
        collector.push_token(t.clone());
        Ok(Flow::Open)
    })
    .await?;
    let out = match end {
        End::Finished(done) => collector.finish(done),
        // An interrupted run prints nothing: half a JSON document helps no one.
        End::Interrupted => return Ok(Outcome::Interrupted),
        End::Closed => return Ok(Outcome::Done),
    };
    let (finish_reason, stop_word) = match &out.finish_reason {
        FinishReason::Eos => ("eos", None),
        FinishReason::Stop { word } => ("stop", Some(word.clone())),
        FinishReason::MaxTokens => ("length", None),
        FinishReason::ContextFull => ("context_full", None),
        other => (other.openai_str(), None),
    };
    let t = &out.timings;
    let u = &out.usage;
    let value = json!({
        "text": out.text,
        "tokens": out.tokens(),
        "finish_reason": finish_reason,
        "stop_word": stop_word,
        "seed": seed,
        "usage": {
            "prompt_tokens": u.prompt_tokens,
            "cached_tokens": u.cached_tokens,
            "completion_tokens": u.completion_tokens,
        },
        "timings": {
            "queued_ms": t.queued.as_secs_f64() * 1e3,
            "prefill_ms": t.prefill.as_secs_f64() * 1e3,
            "decode_ms": t.decode.as_secs_f64() * 1e3,
            "first_token_ms": t.first_token.map(|d| d.as_secs_f64() * 1e3),
            "prompt_tokens_per_s": session::rate(u.prompt_tokens - u.cached_tokens, t.prefill),
            "generation_tokens_per_s": session::rate(u.completion_tokens, t.decode),
        },
    });
    output::print_json(&value)?;
    Ok(Outcome::Done)
}

/// `-v`: one line of speed figures on stderr, like llama.cpp's.
fn print_timings(done: &Done) {
    let u = &done.usage;
    let t = &done.timings;
    let processed = u.prompt_tokens - u.cached_tokens;
    eprintln!(
        "prompt: {} tokens ({} cached) in {:.1} ms, {:.1} tokens/s | generation: {} tokens in {:.1} ms, {:.1} \
         tokens/s | first token after {}",
        u.prompt_tokens,
        u.cached_tokens,
        t.prefill.as_secs_f64() * 1e3,
        session::rate(processed, t.prefill),
        u.completion_tokens,
        t.decode.as_secs_f64() * 1e3,
        session::rate(u.completion_tokens, t.decode),
        t.first_token.map_or_else(|| "-".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
    );
}

/// The prompt from the argument, `-f FILE`, or stdin (`-`, or no argument
/// while stdin is not a terminal). An argument is used exactly as given;
/// text from a file or stdin loses one trailing line ending (see
/// [`strip_one_line_ending`]).
pub fn read_prompt(arg: Option<&str>, file: Option<&Path>) -> anyhow::Result<String> {
    read_text("prompt", arg, file)
}

/// [`read_prompt`] for any kind of input text, named `what` in messages.
pub fn read_text(what: &str, arg: Option<&str>, file: Option<&Path>) -> anyhow::Result<String> {
    let text = match (arg, file) {
        (_, Some(path)) => strip_one_line_ending(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {what} file {}: {e}", path.display()))?,
        ),
        (Some("-"), None) => strip_one_line_ending(read_stdin(what)?),
        (Some(text), None) => text.to_owned(),
        (None, None) if !output::stdin_is_tty() => strip_one_line_ending(read_stdin(what)?),
        (None, None) => anyhow::bail!("no {what}: pass it as an argument or pipe it on stdin (see --help)"),
    };
    if text.is_empty() {
        anyhow::bail!("the {what} is empty");
    }
    Ok(text)
}

/// Drop one trailing `\n` or `\r\n` (and no more): `echo "x" | llama
/// generate` must see the prompt `llama generate "x"` sees, as llama.cpp's
/// `-f` drops a file's last newline. Text ending in two line endings keeps
/// one.
pub fn strip_one_line_ending(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn read_stdin(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read the {what} from stdin: {e}"))?;
    Ok(text)
}

/// Wrap one user message (and an optional system message) in the model's
/// chat template, ready for the assistant's answer.
fn render_chat(model: &std::sync::Arc<Model>, system: Option<&str>, user: &str) -> anyhow::Result<String> {
    let template = crate::session::chat_template(model)?;
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage { role: "system".into(), content: system.into() });
    }
    messages.push(ChatMessage { role: "user".into(), content: user.trim_end().into() });
    Ok(template.render(&messages, true)?)
}

#[cfg(test)]
mod tests {
    use super::strip_one_line_ending as strip;

    #[test]
    fn exactly_one_trailing_line_ending_is_dropped() {
        for (input, want) in [
            ("x\n", "x"),
            ("x\r\n", "x"),
            ("x", "x"),
            ("x\n\n", "x\n"),
            ("x\r\n\r\n", "x\r\n"),
            ("x\n\r\n", "x\n"),
            ("x\r", "x\r"),
            ("\n", ""),
            ("", ""),
            ("a\nb\n", "a\nb"),
        ] {
            assert_eq!(strip(input.to_owned()), want, "{input:?}");
        }
    }
}
