//! Running a child process while measuring it: wall time to the first byte
//! on stdout and to exit, and its peak resident set (VmHWM).
//!
//! A process's memory is gone once it has exited, so `/proc/<pid>/status` is
//! polled while it runs. VmHWM is a high-water mark — it never goes down —
//! so the last value read before the exit is the peak, give or take what the
//! process allocated in its final few milliseconds (models and contexts are
//! allocated at start-up and held to the end, so nothing is missed there).

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How often the peak RSS of a running child is read.
const POLL: Duration = Duration::from_millis(5);

/// What one measured run produced.
#[derive(Debug)]
pub struct Measured {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything the child wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the child wrote to stderr.
    pub stderr: Vec<u8>,
    /// From just before spawning to stdout's end of file (the child's exit).
    pub wall: Duration,
    /// From just before spawning to the first byte on stdout, if any.
    pub first_stdout: Option<Duration>,
    /// Peak resident set size in KiB, if it could be read.
    pub vm_hwm_kib: Option<u64>,
}

impl Measured {
    /// Stdout as UTF-8 (lossy), for parsing JSON a child printed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Fail with the child's stderr unless it exited successfully.
    pub fn check(self, what: &str) -> anyhow::Result<Measured> {
        if self.status.success() {
            Ok(self)
        } else {
            let err = String::from_utf8_lossy(&self.stderr);
            let tail: String = err.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("{what} failed ({}):\n{tail}", self.status)
        }
    }
}

/// Run `cmd` to completion (killing it after `timeout`), measuring it.
pub fn run_measured(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Measured> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id();
    let (stdout_rx, stderr_rx) = drain_pipes(&mut child, start);

    let mut vm_hwm_kib = None;
    let status = loop {
        if let Some(kib) = vm_hwm(pid) {
            vm_hwm_kib = Some(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(POLL);
    };
    let (stdout, first_stdout, eof) = stdout_rx.recv().context("stdout reader thread died")?;
    let stderr = stderr_rx.recv().context("stderr reader thread died")?;
    Ok(Measured { status, stdout, stderr, wall: eof.unwrap_or_else(|| start.elapsed()), first_stdout, vm_hwm_kib })
}

type StdoutResult = (Vec<u8>, Option<Duration>, Option<Duration>);

/// Read both pipes on their own threads (a full pipe would block the child),
/// noting when stdout's first byte and its end arrive.
fn drain_pipes(child: &mut Child, start: Instant) -> (mpsc::Receiver<StdoutResult>, mpsc::Receiver<Vec<u8>>) {
    let (otx, orx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let mut first = None;
            let mut chunk = [0u8; 8192];
            loop {
                match out.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(|| start.elapsed());
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            let _ = otx.send((buf, first, Some(start.elapsed())));
        });
    } else {
        let _ = otx.send((Vec::new(), None, None));
    }
    if let Some(mut err) = child.stderr.take() {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            let _ = etx.send(buf);
        });
    } else {
        let _ = etx.send(Vec::new());
    }
    (orx, erx)
}

/// VmHWM of a live process in KiB (`None` once it has exited).
pub fn vm_hwm(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// VmRSS of a live process in KiB.
pub fn vm_rss(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// This process's own peak RSS in KiB.
pub fn self_vm_hwm() -> Option<u64> {
    status_field("/proc/self/status", "VmHWM:")
}

fn status_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_peak_rss_is_readable() {
        assert!(self_vm_hwm().is_some_and(|k| k > 0));
    }

    #[test]
    fn measures_a_real_child() -> anyhow::Result<()> {
        let m = run_measured(Command::new("sh").args(["-c", "sleep 0.05; echo hi"]), Duration::from_secs(10))?;
        let m = m.check("sh")?;
        assert_eq!(m.stdout_text(), "hi\n");
        assert!(m.first_stdout.is_some_and(|t| t >= Duration::from_millis(50)));
        assert!(m.wall >= m.first_stdout.unwrap_or_default());
        Ok(())
    }

    #[test]
    fn failing_child_is_an_error_with_its_stderr() -> anyhow::Result<()> {
        let m = run_measured(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]), Duration::from_secs(10))?;
        let err = m.check("sh").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("oops"), "{err}");
        Ok(())
    }
}
