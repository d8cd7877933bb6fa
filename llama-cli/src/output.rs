//! Writing to stdout like a Unix tool: unbuffered streaming of generated
//! text, and a closed pipe (`llama generate | head -c 10`) treated as the
//! reader having had enough — a clean stop, never a panic (`print!` would
//! panic on EPIPE, so nothing here uses it).

use std::io::{self, IsTerminal, Write};

/// Whether stdout is still accepting output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Open,
    /// The reader went away (broken pipe): stop producing, exit successfully.
    Closed,
}

/// Streams text to stdout, flushing every piece so that it appears as it
/// is generated, and remembering how the text ended so that a terminal gets
/// its final newline while a pipe gets exactly the model's bytes.
#[derive(Debug)]
pub struct TextOut {
    out: io::Stdout,
    is_tty: bool,
    at_line_start: bool,
    closed: bool,
}

impl TextOut {
    /// A writer on the process's stdout.
    pub fn stdout() -> TextOut {
        let out = io::stdout();
        let is_tty = out.is_terminal();
        TextOut { out, is_tty, at_line_start: true, closed: false }
    }

    /// Write and flush `text`. A broken pipe turns into [`Flow::Closed`];
    /// other I/O errors (disk full, ...) are real errors.
    pub fn write(&mut self, text: &str) -> io::Result<Flow> {
        if self.closed {
            return Ok(Flow::Closed);
        }
        if text.is_empty() {
            return Ok(Flow::Open);
        }
        let mut lock = self.out.lock();
        match lock.write_all(text.as_bytes()).and_then(|()| lock.flush()) {
            Ok(()) => {
                self.at_line_start = text.ends_with('\n');
                Ok(Flow::Open)
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(Flow::Closed)
            }
            Err(e) => Err(e),
        }
    }

    /// End the output: on a terminal, make sure the shell prompt starts on
    /// a fresh line; on a pipe or file, add nothing.
    pub fn finish(&mut self) -> io::Result<Flow> {
        if self.is_tty && !self.at_line_start { self.write("\n") } else { Ok(Flow::Open) }
    }

    /// Start a new line if the cursor is not at the start of one (terminal
    /// or not): used between chat turns.
    pub fn ensure_newline(&mut self) -> io::Result<Flow> {
        if self.at_line_start { Ok(Flow::Open) } else { self.write("\n") }
    }
}

/// Print `text` plus a newline on stdout; a closed pipe is not an error.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
        _ => Ok(()),
    }
}

/// Print a JSON value on one line of stdout.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print_line(&value.to_string())
}

/// Whether stderr is a terminal (progress bars and prompts go there only then).
pub fn stderr_is_tty() -> bool {
    io::stderr().is_terminal()
}

/// Whether stdin is a terminal (an interactive user rather than a pipe).
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}
