//! Fuzz target `server_flags`: any argv through the server's flag parsing
//! (`Args::try_parse_argv`: llama.cpp's flag table classified before clap,
//! multi-letter shorts, `--flag=value`, `--a_b` spellings, then clap) gives
//! parsed arguments or clap's typed error, never a panic; arguments that
//! parse then give settings (a physical batch of 1 to the logical one, at least one
//! slot) or an `ArgsError` from `Args::validate`. The
//! `LLAMA_ARG_*` variables are read from the process environment, as the
//! server reads them.
//!
//! Input: the arguments after the program name, separated by NUL bytes
//! (each may be any bytes: arguments that are not UTF-8 are kept so).
//! `validate` reads the files that some flags name (`--chat-template-file`,
//! ...); it runs only when no argument holds a `/`, so that an input cannot
//! name a device such as `/dev/zero` or `/dev/stdin` and hang the run.
//!
//! Compiled into the model fuzz crate and into llama-server's corpus-replay
//! test (it names only `llama_server`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// Run one input.
pub fn server_flags(data: &[u8]) {
    let mut argv = vec![OsString::from("llama-server")];
    if !data.is_empty() {
        argv.extend(data.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec())));
    }
    let args = match llama_server::Args::try_parse_argv(argv) {
        Ok(args) => args,
        Err(e) => {
            // The message clap prints (and `--help`'s text) renders.
            let _ = e.render().to_string();
            return;
        }
    };
    if !data.contains(&b'/') {
        match args.validate() {
            Ok(settings) => {
                assert!(settings.ubatch_size >= 1 && settings.ubatch_size <= settings.batch_size);
                assert!(settings.parallel >= 1);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
