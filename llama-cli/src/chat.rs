//! `llama chat`: a multi-turn conversation on the terminal.
//!
//! Each turn resubmits the whole rendered conversation with
//! `cache_prompt`, so the engine's prefix reuse finds everything but the new
//! turn already in the KV cache: history costs no recomputation.

use std::io::{BufRead, Write};
use std::sync::Arc;

use llama_core::{ChatMessage, ChatTemplate, Model, SamplingParams};
use llama_runtime::{Engine, FinishReason, Prompt, Rejected, Request};
use tokio::sync::mpsc;

use crate::cli::ChatArgs;
use crate::output::{self, Flow, TextOut};
use crate::session::{self, End};
use crate::{Outcome, load};

/// What the user typed, as the stdin thread hands it over.
enum Input {
    Line(String),
    Eof,
    Failed(std::io::Error),
}

/// Run `llama chat`.
pub fn run(args: ChatArgs, verbose: u8) -> anyhow::Result<Outcome> {
    let seed = args.sampling.seed.unwrap_or_else(session::random_seed);
    let sampling = args.sampling.to_params(seed)?;
    let model = load::load(&args.model)?;
    let template = session::chat_template(&model)?;
    let engine = session::start_engine(Arc::clone(&model), &args.run)?;
    let interactive = output::stdin_is_tty();
    if interactive {
        eprintln!(
            "Chatting with {} ({}).\n/reset forgets the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer.",
            model_name(&model),
            model.description()
        );
    }
    let mut chat = Chat {
        engine: &engine,
        template,
        system: args.system,
        history: Vec::new(),
        verbose,
        interactive,
        context_shift: args.run.context_shift(),
    };
    let rt = session::runtime()?;
    let result = rt.block_on(chat.run_loop(&sampling, args.max_tokens));
    engine.shutdown_blocking(session::SHUTDOWN_DRAIN);
    result
}

struct Chat<'a> {
    engine: &'a Engine,
    template: ChatTemplate,
    system: Option<String>,
    history: Vec<ChatMessage>,
    verbose: u8,
    interactive: bool,
    context_shift: Option<llama_runtime::ContextShift>,
}

impl Chat<'_> {
    async fn run_loop(&mut self, sampling: &SamplingParams, max_tokens: Option<u32>) -> anyhow::Result<Outcome> {
        let mut lines = spawn_stdin_reader();
        let mut out = TextOut::stdout();
        // Ctrl-C at the prompt warns once; a second one in a row quits.
        let mut warned = false;
        loop {
            if self.interactive {
                prompt(">>> ");
            }
            let input = tokio::select! {
                biased;
                () = session::interrupted() => {
                    if warned {
                        eprintln!();
                        return Ok(Outcome::Interrupted);
                    }
                    warned = true;
                    eprintln!("\n(Ctrl-C again, /exit or Ctrl-D to quit)");
                    continue;
                }
                input = lines.recv() => input.unwrap_or(Input::Eof),
            };
            warned = false;
            let line = match input {
                Input::Line(line) => line,
                Input::Eof => {
                    if self.interactive {
                        eprintln!();
                    }
                    return Ok(Outcome::Done);
                }
                Input::Failed(e) => anyhow::bail!("cannot read stdin: {e}"),
            };
            let line = line.trim();
            match line {
                "" => continue,
                "/exit" | "/quit" | "/bye" => return Ok(Outcome::Done),
                "/reset" | "/clear" => {
                    self.history.clear();
                    if self.interactive {
                        eprintln!("(conversation forgotten)");
                    }
                    continue;
                }
                "/help" | "/?" => {
                    eprintln!("/reset forget the conversation · /exit quit · Ctrl-C stop an answer");
                    continue;
                }
                _ => {}
            }
            self.history.push(ChatMessage { role: "user".into(), content: line.to_owned() });
            match self.answer(&mut out, sampling, max_tokens).await? {
                Flow::Open => {}
                Flow::Closed => return Ok(Outcome::Done),
            }
        }
    }

    /// Generate the assistant's answer to the last user message, stream it
    /// to stdout and record it in the history (partial if interrupted).
    async fn answer(
        &mut self,
        out: &mut TextOut,
        sampling: &SamplingParams,
        max_tokens: Option<u32>,
    ) -> anyhow::Result<Flow> {
        let handle = loop {
            let mut request = Request::new(Prompt::Text(self.render()?));
            request.sampling = sampling.clone();
            request.max_tokens = max_tokens;
            request.cache_prompt = true;
            request.context_shift = self.context_shift;
            match self.engine.submit(request) {
                Ok(handle) => break handle,
                // Forget the oldest exchange and try again, while there is
                // something older than the current question to forget.
                Err(Rejected::PromptTooLong { .. }) if self.history.len() > 1 => {
                    let drop = self.history.iter().skip(1).position(|m| m.role == "user").map_or(1, |i| i + 1);
                    self.history.drain(..drop);
                    if self.interactive {
                        eprintln!("(context full: forgot the oldest turn)");
                    }
                }
                Err(Rejected::PromptTooLong { n_prompt, n_ctx }) => {
                    self.history.pop();
                    eprintln!(
                        "error: that message is {n_prompt} tokens, longer than the context ({n_ctx}); pass a larger \
                         -c/--ctx-size"
                    );
                    return Ok(Flow::Open);
                }
                Err(other) => return Err(session::rejected(other)),
            }
        };
        let mut answer = String::new();
        let end = session::drive(handle, |t| {
            answer.push_str(&t.text);
            out.write(&t.text)
        })
        .await?;
        self.history.push(ChatMessage { role: "assistant".into(), content: answer.trim().to_owned() });
        let flow = out.ensure_newline()?;
        match end {
            End::Finished(done) => {
                if self.verbose > 0 {
                    let u = &done.usage;
                    eprintln!(
                        "[{} prompt tokens, {} cached | {} generated, {:.1} tokens/s]",
                        u.prompt_tokens,
                        u.cached_tokens,
                        u.completion_tokens,
                        session::rate(u.completion_tokens, done.timings.decode)
                    );
                }
                if matches!(done.finish_reason, FinishReason::ContextFull) {
                    eprintln!("(the context is full; the oldest turns will be forgotten, or /reset)");
                }
                Ok(flow)
            }
            End::Interrupted => {
                eprintln!("(stopped)");
                Ok(flow)
            }
            End::Closed => Ok(Flow::Closed),
        }
    }

    fn render(&self) -> anyhow::Result<String> {
        let system = self.system.iter().map(|s| ChatMessage { role: "system".into(), content: s.clone() });
        let messages: Vec<ChatMessage> = system.chain(self.history.iter().cloned()).collect();
        Ok(self.template.render(&messages, true)?)
    }
}

/// The model's name from its metadata, else its file name.
fn model_name(model: &Model) -> String {
    model
        .meta("general.name")
        .or_else(|| model.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "the model".into())
}

fn prompt(text: &str) {
    // The prompt goes to stdout, where the answers are, so that they
    // interleave in order. A failed write shows up on the next answer.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Lines from stdin, read on a plain thread (reading stdin blocks, and a
/// blocked read must not keep Ctrl-C from being handled). The thread ends at
/// EOF or when the receiver is gone.
fn spawn_stdin_reader() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = String::new();
            let input = match lock.read_line(&mut line) {
                Ok(0) => Input::Eof,
                Ok(_) => Input::Line(line),
                Err(e) => Input::Failed(e),
            };
            let last = !matches!(input, Input::Line(_));
            if tx.blocking_send(input).is_err() || last {
                return;
            }
        }
    });
    rx
}
