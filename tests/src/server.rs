//! A real `llama-server` process.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::http::{self, Request, Response};
use crate::paths;

/// Settings small enough for two shared cores: 4 slots of 512 tokens,
/// 2 threads, metrics on.
pub const SMALL: &[&str] = &["-c", "2048", "-np", "4", "-t", "2", "-tb", "2", "-b", "256", "-ub", "256", "--metrics"];

/// How long a fresh server may take to answer /health with 200.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `llama-server` child process. Killed (SIGKILL) on drop; if
/// the test process itself dies first, a watchdog (`sh`, holding the read
/// end of a pipe only this process writes to) kills it, so a server held
/// in a `static` never outlives its test binary. Its stdout and stderr go
/// to files in a temporary directory, removed on drop unless
/// `LLAMA_E2E_KEEP_LOGS` is set.
#[derive(Debug)]
pub struct ServerProcess {
    child: Mutex<Child>,
    pid: u32,
    addr: SocketAddr,
    dir: Option<TempDir>,
    binary: PathBuf,
    args: Vec<String>,
    watchdog: Option<(Child, ChildStdin)>,
    exit: Mutex<Option<ExitStatus>>,
}

/// How to start a `llama-server`: which binary and model, its flags and
/// environment. [`ServerProcess::start`] is `ServerCommand::new(args).start()`
/// that panics on failure.
#[derive(Debug, Clone, Default)]
pub struct ServerCommand {
    binary: Option<PathBuf>,
    model: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
}

impl ServerCommand {
    /// The server with `args` (plus `--port <free port>`, `--host 127.0.0.1`
    /// unless `--host` is given, and `-m <model>` unless `-m` is given).
    pub fn new<S: AsRef<str>>(args: &[S]) -> Self {
        ServerCommand { args: args.iter().map(|a| a.as_ref().to_string()).collect(), ..Default::default() }
    }

    /// Run this binary instead of [`paths::server_binary`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Use this model instead of [`paths::model_path`] (when the flags have no `-m`).
    pub fn model(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = Some(path.into());
        self
    }

    /// Set an environment variable of the server.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Do not pass this environment variable on to the server.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Start the process and return at once (it may still be loading, or
    /// about to fail); see [`ServerProcess::wait_listening`] and
    /// [`ServerProcess::wait_healthy`].
    pub fn spawn(&self) -> std::io::Result<ServerProcess> {
        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => paths::server_binary(),
        };
        let port = free_port();
        let dir = tempfile::Builder::new().prefix("llama-e2e-").tempdir()?;
        let log = File::create(dir.path().join("stderr.log"))?;
        let out = File::create(dir.path().join("stdout.log"))?;
        let mut all: Vec<String> = vec!["--port".into(), port.to_string()];
        if !self.args.iter().any(|a| a == "--host") {
            all.extend(["--host".into(), "127.0.0.1".into()]);
        }
        if !self.args.iter().any(|a| a == "-m" || a == "--model") {
            let model = self.model.clone().unwrap_or_else(paths::model_path);
            all.extend(["-m".into(), model.display().to_string()]);
        }
        all.extend(self.args.iter().cloned());
        let mut cmd = Command::new(&binary);
        cmd.args(&all).stdin(Stdio::null()).stdout(out).stderr(log);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child =
            cmd.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("spawning {}: {e}", binary.display())))?;
        let pid = child.id();
        Ok(ServerProcess {
            child: Mutex::new(child),
            pid,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir: Some(dir),
            binary,
            args: all,
            watchdog: spawn_watchdog(pid),
            exit: Mutex::new(None),
        })
    }

    /// Start the server and wait until `/health` answers 200, within
    /// [`STARTUP_TIMEOUT`]; up to 3 attempts (a port taken in between, a
    /// slow start). `Err` carries the last attempt's output.
    pub fn start(&self) -> Result<ServerProcess, String> {
        let mut last = String::new();
        for _attempt in 0..3 {
            match self.spawn() {
                Ok(server) => match server.wait_healthy(STARTUP_TIMEOUT) {
                    Ok(()) => return Ok(server),
                    Err(e) => last = e,
                },
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("llama-server did not become healthy (3 attempts); last output:\n{last}"))
    }
}

fn free_port() -> u16 {
    // Bind-then-release: the kernel does not hand the same ephemeral
    // port out again at once; a rare clash is retried by `start`.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Run the server binary with `args` (plus `-m <default model>` unless
/// `-m` is given) and wait for it to exit, with a time limit: for flag
/// tests. Returns the exit status (None if it had to be killed) and the
/// combined output.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
    let bin = paths::server_binary();
    let mut log = tempfile::tempfile().expect("creating the log file");
    let mut cmd = Command::new(&bin);
    if !args.iter().any(|a| *a == "-m" || *a == "--model") {
        cmd.arg("-m").arg(paths::model_path());
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating a file handle"))
        .stderr(log.try_clone().expect("duplicating a file handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    let status = crate::wait_or_kill(&mut child, timeout);
    let mut output = String::new();
    let _ = log.seek(SeekFrom::Start(0)).and_then(|_| log.read_to_string(&mut output));
    (status, output)
}

impl ServerProcess {
    /// Start a server on a free loopback port with the default model and
    /// `args`, and wait until `/health` answers 200.
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let cmd = env.iter().fold(ServerCommand::new(args), |c, (k, v)| c.env(k, v));
        cmd.start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until the process accepts TCP connections on its port (before
    /// the model has loaded). `Err` with its output if it exits first or
    /// `timeout` passes.
    pub fn wait_listening(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!("exited with {status} before listening:\n{}", self.log()));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not listening within {timeout:?}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `/health` answers 200. `Err` with its output if the
    /// process exits first or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!("exited with {status} during startup:\n{}", self.log()));
            }
            if let Ok(r) = http::send(self.addr, &Request::get("/health"), Duration::from_secs(5))
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no healthy /health within {timeout:?}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:<port>`, for HTTP client libraries.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The binary and its arguments, as one line (for reports).
    pub fn command_line(&self) -> String {
        std::iter::once(self.binary.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The command line it was started with (without the binary).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Everything the server wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        let Some(dir) = &self.dir else { return String::new() };
        let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        let out = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default();
        format!("{out}{err}")
    }

    /// The last `n` lines of [`log`](Self::log), for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Send a request, with a 60 s per-read timeout.
    pub fn send(&self, req: &Request) -> std::io::Result<Response> {
        http::send(self.addr, req, Duration::from_secs(60))
    }

    /// `POST path` with a JSON body; panics on a transport error.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.send(&Request::post_json(path, body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}\nserver log:\n{}", self.log_tail(30)))
    }

    /// `GET path`; panics on a transport error.
    pub fn get(&self, path: &str) -> Response {
        self.send(&Request::get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}\nserver log:\n{}", self.log_tail(30)))
    }

    /// Whether the process is alive and `/health` answers 200.
    pub fn healthy(&self) -> bool {
        matches!(http::send(self.addr, &Request::get("/health"), Duration::from_secs(10)), Ok(r) if r.status() == 200)
    }

    /// Panic (with the log tail) unless the server is healthy.
    pub fn assert_healthy(&self, after: &str) {
        assert!(self.healthy(), "server unhealthy after {after}; log tail:\n{}", self.log_tail(40));
    }

    /// Resident set size in KiB (`VmRSS` from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Peak resident set size so far in KiB (`VmHWM`).
    pub fn hwm_kib(&self) -> Option<u64> {
        crate::bench::proc::vm_hwm(self.pid())
    }

    /// The value of one Prometheus sample (`name value`), from `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.get("/metrics").text(), name)
    }

    /// Send SIGTERM (by pid, with the `kill` utility: this crate has no unsafe code).
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {} failed", self.pid());
    }

    /// The exit status, if the process has exited (reaped here).
    pub fn try_exit(&self) -> Option<ExitStatus> {
        // A poisoned lock only means a panic elsewhere while it was held;
        // the child handle and the status are still valid.
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none()
            && let Ok(Some(status)) = self.child.lock().unwrap_or_else(|p| p.into_inner()).try_wait()
        {
            *exit = Some(status);
        }
        *exit
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((mut dog, stdin)) = self.watchdog.take() {
            // Tell the watchdog to stand down (it reads "0" and exits without killing).
            let mut stdin = stdin;
            let _ = stdin.write_all(b"0\n");
            drop(stdin);
            let _ = dog.wait();
        }
        if let Some(dir) = self.dir.take()
            && std::env::var_os("LLAMA_E2E_KEEP_LOGS").is_some()
        {
            eprintln!("llama-e2e: server logs kept in {}", dir.keep().display());
        }
    }
}

/// A `sh` that waits on a pipe from this process: a line "0" means the
/// server was stopped normally; EOF without it means this process died,
/// and the server (checked by pid and name) is killed.
fn spawn_watchdog(pid: u32) -> Option<(Child, ChildStdin)> {
    let script = format!(
        "read -r line; if [ \"$line\" != 0 ] && grep -q llama-server /proc/{pid}/cmdline 2>/dev/null; \
         then kill -KILL {pid}; fi"
    );
    let mut dog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = dog.stdin.take()?;
    Some((dog, stdin))
}

/// `VmRSS` of a process in KiB ([`crate::bench::proc::vm_rss`]).
pub fn rss_kib(pid: u32) -> Option<u64> {
    crate::bench::proc::vm_rss(pid)
}

/// The value of the first sample named exactly `name` (no labels) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}
