//! The `llama-server` binary: parse llama.cpp-compatible flags and run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = llama_server::Args::parse_env();
    match llama_server::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llama-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
