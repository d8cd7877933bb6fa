//! `llama`: run llama.cpp models from the command line.
//!
//! Each subcommand lives in its own module; this file parses the command
//! line, sets up logging, runs the command and turns the outcome into an
//! exit code: 0 on success (a closed stdout pipe included), 1 on an error
//! (one `error: ...` line on stderr), 2 on a usage error (clap), 130 when
//! Ctrl-C stopped the command.
#![forbid(unsafe_code)]

mod bench;
mod chat;
mod cli;
mod embed;
mod generate;
mod info;
mod load;
mod model_path;
mod output;
mod pull;
mod serve;
mod session;
mod tokens;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked (or its reader closed the pipe).
    Done,
    /// Ctrl-C stopped it; the shell convention is exit code 128 + SIGINT.
    Interrupted,
}

fn main() -> ExitCode {
    install_panic_hook();
    // llama.cpp's `-hf`, `-hff`, `-hft`, `-mu` spelled long for clap.
    let cli = Cli::parse_from(cli::normalize_argv(std::env::args_os()));
    // The server sets up its own logging (it logs at info by default).
    if !matches!(cli.command, Command::Serve(_)) {
        init_tracing(cli.global.verbose);
    }
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            // `{:#}` puts the whole cause chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let verbose = cli.global.verbose;
    match cli.command {
        Command::Generate(args) => generate::run(args, verbose),
        Command::Chat(args) => chat::run(args, verbose),
        Command::Embed(args) => embed::run(args),
        Command::Tokenize(args) => tokens::tokenize(args),
        Command::Detokenize(args) => tokens::detokenize(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args, verbose),
        Command::Pull(args) => pull::run(args),
    }
}

/// A panic is a bug, never an answer to bad input; should one happen, the
/// user still gets one `error:` line rather than a Rust panic report. With
/// RUST_BACKTRACE set (a developer debugging), the default report stays.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        // (`payload_as_str` would do this, but needs Rust 1.91; MSRV is 1.89.)
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown cause");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error (a bug in llama; please report it): {what}{at}");
    }));
}

/// Logs go to stderr. llama.cpp's own log (target `llama_cpp`, routed
/// through `tracing` by llama-core) stays hidden by default; `-v` shows its
/// warnings, `-vv` all of it. RUST_LOG, when set, replaces the whole filter.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // llama.cpp's errors are off too: every failure reaches the user as
        // our own one-line error, and -v shows llama.cpp's side of it.
        0 => "warn,llama_cpp=off",
        // -v is about timings and what went wrong: llama.cpp's warnings,
        // not its pages of loader chatter (that is -vv).
        1 => "info,llama_cpp=warn",
        2 => "debug,llama_cpp=debug",
        _ => "trace,llama_cpp=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // `try_init` fails only if a subscriber is already set, which cannot
    // happen here: this is the first thing main does after parsing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(output::stderr_is_tty())
        .try_init();
}
