//! `llama serve`: the HTTP server of `llama-server`, in this process, with
//! exactly its flags.

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::error::ErrorKind;

use crate::Outcome;
use crate::cli::{SERVE_EXAMPLES, ServeArgs};

/// Run `llama serve`. `verbose` is the global `-v` (which clap takes before
/// the server's own flags can see it); it is passed on as `--verbose`.
pub fn run(args: ServeArgs, verbose: u8) -> anyhow::Result<Outcome> {
    let mut argv: Vec<OsString> = vec!["llama serve".into()];
    if verbose > 0 {
        argv.push("--verbose".into());
    }
    argv.extend(args.args);
    let server_args = match llama_server::Args::try_parse_argv(argv) {
        Ok(a) => a,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            let rendered = e.render();
            let help = if std::io::stdout().is_terminal() {
                format!("{}\n{SERVE_EXAMPLES}", rendered.ansi())
            } else {
                format!("{rendered}\n{SERVE_EXAMPLES}")
            };
            crate::output::print_line(help.trim_end())?;
            return Ok(Outcome::Done);
        }
        // clap's own report (usage error: exit 2; --version: exit 0).
        Err(e) => e.exit(),
    };
    // The server installs its own log subscriber (it logs requests at info)
    // and its own SIGINT/SIGTERM handling with a graceful drain.
    llama_server::run(server_args)?;
    Ok(Outcome::Done)
}
