//! Shared helpers for the end-to-end suites of llama.rs: they run the real
//! binaries against the real default model over real loopback sockets.
//!
//! - [`paths`]: the workspace, the default model, and the `llama-server`
//!   binary of the current cargo profile (built on demand).
//! - [`server`]: [`server::ServerProcess`], one real `llama-server` process on
//!   a free loopback port, killed when the test process goes away.
//! - [`http`]: a small blocking HTTP/1.1 client over `std::net::TcpStream`.
//!   It is hand-written on purpose: the suites send bytes no well-behaved
//!   client would (invalid UTF-8, huge headers, a wrong `Host`) and hang up
//!   at chosen points, which a full client library does not allow.
//! - [`load`]: a bounded, self-terminating load generator with latency
//!   percentiles.
//! - [`figures`]: suite size knobs (`RELIABILITY_SCALE=ci|long`) and the
//!   figures each suite records under `target/reliability/`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Wait for `child` to exit for at most `timeout`; past it, kill and reap
/// it and return `None`.
pub fn wait_or_kill(child: &mut std::process::Child, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub mod paths {
    //! Where things are.

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Mutex, OnceLock};
    use std::time::SystemTime;

    /// The workspace root (the parent of this crate).
    pub fn workspace_root() -> PathBuf {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        // `tests/` always sits directly under the workspace root.
        here.parent().map_or_else(|| here.to_path_buf(), Path::to_path_buf)
    }

    /// The default model every suite uses.
    pub fn model_path() -> PathBuf {
        let path = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.is_file(),
            "the default model is missing at {}; run `make setup` (vendor/setup.sh)",
            path.display()
        );
        path
    }

    /// `target/<profile>` of the running test binary
    /// (`…/target/debug/deps/reliability_x-hash` → `…/target/debug`).
    pub fn profile_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary knows its own path");
        let dir = exe.parent().expect("an executable lives in a directory").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.parent().map_or(dir.clone(), Path::to_path_buf)
        } else {
            dir
        }
    }

    /// `target/reliability`, where suites write their figures.
    pub fn report_dir() -> PathBuf {
        let profile = profile_dir();
        let target = profile.parent().map_or(profile.clone(), Path::to_path_buf);
        target.join("reliability")
    }

    fn newest_source_mtime() -> Option<SystemTime> {
        fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, newest);
                } else if path.extension().is_some_and(|e| e == "rs" || e == "toml")
                    && let Ok(m) = entry.metadata().and_then(|m| m.modified())
                {
                    *newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
                }
            }
        }
        let mut newest = None;
        for krate in ["llama-server", "llama-runtime", "llama-core"] {
            walk(&workspace_root().join(krate).join("src"), &mut newest);
            walk(&workspace_root().join(krate).join("Cargo.toml"), &mut newest);
        }
        newest
    }

    /// The `llama-server` binary of the current profile. Integration tests of
    /// this crate cannot use `CARGO_BIN_EXE_*` for another package's binary,
    /// so when the binary is missing or older than the server's, runtime's or
    /// core's sources, it is built here, once per test process, with the
    /// same profile (`cargo build -p llama-server`).
    pub fn server_binary() -> PathBuf {
        binary("llama-server", "llama-server")
    }

    /// The `llama` CLI binary of the current profile, built like [`server_binary`].
    pub fn cli_binary() -> PathBuf {
        binary("llama", "llama-cli")
    }

    fn binary(name: &str, package: &str) -> PathBuf {
        static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
        let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
        // A poisoned lock only means another test panicked while building;
        // the list itself is still valid.
        let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
        let profile = profile_dir();
        let bin = profile.join(name);
        if built.iter().any(|b| b == name) {
            return bin;
        }
        let stale = match (std::fs::metadata(&bin).and_then(|m| m.modified()), newest_source_mtime()) {
            (Err(_), _) => true,
            (Ok(bin_time), Some(src)) => src > bin_time,
            (Ok(_), None) => false,
        };
        if stale || std::env::var_os("LLAMA_E2E_REBUILD").is_some() {
            let profile_name = profile.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
            let target_dir = profile.parent().map_or(profile.clone(), Path::to_path_buf);
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(workspace_root()).args(["build", "-p", package]).env("CARGO_TARGET_DIR", &target_dir);
            match profile_name.as_str() {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            eprintln!(
                "llama-e2e: {} is {}; building it with `cargo build -p {package}` ({profile_name} profile)",
                bin.display(),
                if bin.exists() { "older than its sources" } else { "missing" }
            );
            let status = cmd.status().unwrap_or_else(|e| panic!("could not run {cargo}: {e}"));
            assert!(
                status.success() && bin.is_file(),
                "building {name} failed ({status}); run `cargo build -p {package}` to see why"
            );
        }
        built.push(name.to_string());
        bin
    }
}

pub mod http {
    //! A blocking HTTP/1.1 client that can send anything and stop anywhere.

    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// One request. `Host`, `Content-Length` and `Connection: close` are
    /// added unless set explicitly.
    #[derive(Debug, Clone)]
    pub struct Request {
        /// Method, e.g. `POST`.
        pub method: String,
        /// Path and query.
        pub path: String,
        /// Headers in order; duplicates allowed.
        pub headers: Vec<(String, String)>,
        /// Body bytes, sent as they are.
        pub body: Vec<u8>,
    }

    impl Request {
        /// A request with no headers and no body.
        pub fn new(method: &str, path: &str) -> Self {
            Request { method: method.into(), path: path.into(), headers: Vec::new(), body: Vec::new() }
        }

        /// `GET path`.
        pub fn get(path: &str) -> Self {
            Request::new("GET", path)
        }

        /// `POST path` with a JSON body.
        pub fn post_json(path: &str, body: &Value) -> Self {
            Request::post_raw(path, body.to_string().into_bytes())
        }

        /// `POST path` with these exact body bytes, labelled as JSON.
        pub fn post_raw(path: &str, body: impl Into<Vec<u8>>) -> Self {
            Request::new("POST", path).header("Content-Type", "application/json").body(body)
        }

        /// Add a header.
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }

        /// Set the body.
        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.body = body.into();
            self
        }

        fn has(&self, name: &str) -> bool {
            self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        }

        /// The bytes on the wire.
        pub fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
            let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
            if !self.has("host") {
                head.push_str(&format!("Host: {addr}\r\n"));
            }
            if !self.has("content-length") && (!self.body.is_empty() || self.method == "POST") {
                head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
            if !self.has("connection") {
                head.push_str("Connection: close\r\n");
            }
            for (n, v) in &self.headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            out.extend_from_slice(&self.body);
            out
        }
    }

    /// How the body of a response is delimited.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Framing {
        Length(usize),
        Chunked,
        UntilEof,
    }

    /// Status line and headers.
    #[derive(Debug, Clone)]
    pub struct Head {
        /// The status code.
        pub status: u16,
        /// Headers, names lower-cased.
        pub headers: Vec<(String, String)>,
        framing: Framing,
    }

    impl Head {
        /// The first header of that name.
        pub fn header(&self, name: &str) -> Option<&str> {
            let name = name.to_ascii_lowercase();
            self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
        }
    }

    /// A whole response.
    #[derive(Debug, Clone)]
    pub struct Response {
        /// Status and headers.
        pub head: Head,
        /// The body (de-chunked).
        pub body: Vec<u8>,
        /// Whether the body ended properly (all of `Content-Length`, or the
        /// final zero-length chunk) rather than with the connection dropping.
        pub complete: bool,
        /// Time to the status line.
        pub time_to_head: Duration,
        /// Time to the end of the body.
        pub elapsed: Duration,
    }

    impl Response {
        /// The status code.
        pub fn status(&self) -> u16 {
            self.head.status
        }

        /// The body as (lossy) text.
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body as JSON, if it is JSON.
        pub fn json(&self) -> Option<Value> {
            serde_json::from_slice(&self.body).ok()
        }

        /// The `data:` payloads of a server-sent-events body, in order.
        pub fn sse_data(&self) -> Vec<String> {
            sse_data(&self.text())
        }

        /// A one-line description for assertion messages.
        pub fn describe(&self) -> String {
            let text = self.text();
            let cut: String = text.chars().take(300).collect();
            format!("{} (complete: {}) {cut}", self.head.status, self.complete)
        }
    }

    /// The `data:` payloads of a server-sent-events text, in order.
    pub fn sse_data(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for event in text.split("\n\n") {
            let mut data: Vec<&str> = Vec::new();
            for line in event.lines() {
                if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }

    /// One open connection.
    #[derive(Debug)]
    pub struct Conn {
        reader: BufReader<TcpStream>,
        addr: SocketAddr,
        started: Instant,
    }

    impl Conn {
        /// Connect with `timeout` for the connect and for every read and write.
        pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
            let stream = TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.set_nodelay(true)?;
            Ok(Conn { reader: BufReader::new(stream), addr, started: Instant::now() })
        }

        /// Wrap a stream connected by other means (e.g. with socket options set).
        pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Conn> {
            let addr = stream.peer_addr()?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.set_nodelay(true)?;
            Ok(Conn { reader: BufReader::new(stream), addr, started: Instant::now() })
        }

        /// Change the per-read timeout.
        pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
            self.reader.get_ref().set_read_timeout(Some(timeout))
        }

        /// Write a request.
        pub fn send(&mut self, req: &Request) -> io::Result<()> {
            self.started = Instant::now();
            let bytes = req.to_bytes(self.addr);
            self.write_raw(&bytes)
        }

        /// Write raw bytes.
        pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
            let s = self.reader.get_mut();
            s.write_all(bytes)?;
            s.flush()
        }

        /// Read the status line and headers.
        pub fn read_head(&mut self) -> io::Result<Head> {
            let mut line = String::new();
            let mut head_bytes = 0usize;
            let mut read_line = |reader: &mut BufReader<TcpStream>, line: &mut String| -> io::Result<()> {
                line.clear();
                let n = reader.read_line(line)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the response head"));
                }
                head_bytes += n;
                if head_bytes > 1 << 20 {
                    return Err(io::Error::other("response head over 1 MiB"));
                }
                Ok(())
            };
            read_line(&mut self.reader, &mut line)?;
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
            let mut headers = Vec::new();
            loop {
                read_line(&mut self.reader, &mut line)?;
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    break;
                }
                if let Some((n, v)) = l.split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let framing = if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
                Framing::Chunked
            } else if let Some(len) = get("content-length").and_then(|v| v.parse().ok()) {
                Framing::Length(len)
            } else if status == 204 || status == 304 || (100..200).contains(&status) {
                Framing::Length(0)
            } else {
                Framing::UntilEof
            };
            Ok(Head { status, headers, framing })
        }

        /// Read the body to its end. `Ok((body, complete))`; an error or EOF
        /// part-way gives `complete == false` with what arrived.
        pub fn read_body(&mut self, head: &Head) -> (Vec<u8>, bool) {
            let mut body = Vec::new();
            let mut reader = BodyReader::new(head);
            loop {
                match reader.next_piece(self) {
                    Ok(Some(piece)) => body.extend_from_slice(&piece),
                    Ok(None) => return (body, true),
                    Err(_) => return (body, false),
                }
            }
        }

        /// Time since the request was sent.
        pub fn elapsed(&self) -> Duration {
            self.started.elapsed()
        }

        /// Close both directions now (a client hanging up).
        pub fn hang_up(self) {
            let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }

    /// Reads a body piece by piece (one chunk at a time for chunked bodies).
    #[derive(Debug)]
    pub struct BodyReader {
        framing: Framing,
        done: bool,
    }

    impl BodyReader {
        /// A reader for the body that follows `head`.
        pub fn new(head: &Head) -> Self {
            BodyReader { framing: head.framing, done: false }
        }

        /// The next piece; `Ok(None)` once the body has properly ended.
        pub fn next_piece(&mut self, conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
            if self.done {
                return Ok(None);
            }
            let r = &mut conn.reader;
            match &mut self.framing {
                Framing::Length(remaining) => {
                    if *remaining == 0 {
                        self.done = true;
                        return Ok(None);
                    }
                    let mut buf = vec![0u8; (*remaining).min(64 << 10)];
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body shorter than Content-Length"));
                    }
                    *remaining -= n;
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Framing::UntilEof => {
                    let mut buf = vec![0u8; 64 << 10];
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        self.done = true;
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Framing::Chunked => {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed between chunks"));
                    }
                    let size_text = line.trim().split(';').next().unwrap_or("");
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        loop {
                            line.clear();
                            if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                                break;
                            }
                        }
                        self.done = true;
                        return Ok(None);
                    }
                    let mut buf = vec![0u8; size];
                    r.read_exact(&mut buf)?;
                    let mut crlf = [0u8; 2];
                    r.read_exact(&mut crlf)?;
                    Ok(Some(buf))
                }
            }
        }
    }

    /// Send `req` on a fresh connection and read the whole response.
    /// `timeout` bounds each read and write, not the whole exchange.
    pub fn send(addr: SocketAddr, req: &Request, timeout: Duration) -> io::Result<Response> {
        let mut conn = Conn::open(addr, timeout)?;
        conn.send(req)?;
        let head = conn.read_head()?;
        let time_to_head = conn.elapsed();
        let (body, complete) = conn.read_body(&head);
        Ok(Response { head, body, complete, time_to_head, elapsed: conn.elapsed() })
    }
}

pub mod server {
    //! A real `llama-server` process.

    use std::fs::File;
    use std::io::Write as _;
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::path::PathBuf;
    use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::http::{self, Request, Response};
    use crate::paths;

    /// Settings small enough for two shared cores: 4 slots of 512 tokens,
    /// 2 threads, metrics on.
    pub const SMALL: &[&str] =
        &["-c", "2048", "-np", "4", "-t", "2", "-tb", "2", "-b", "256", "-ub", "256", "--metrics"];

    /// How long a fresh server may take to answer /health with 200.
    pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

    /// A running `llama-server` child process. Killed (SIGKILL) on drop; if
    /// the test process itself dies first, a watchdog (`sh`, holding the read
    /// end of a pipe only this process writes to) kills it, so a server held
    /// in a `static` never outlives its test binary.
    #[derive(Debug)]
    pub struct ServerProcess {
        child: Child,
        addr: SocketAddr,
        dir: PathBuf,
        args: Vec<String>,
        watchdog: Option<(Child, ChildStdin)>,
        exit: Option<ExitStatus>,
    }

    fn free_port() -> u16 {
        // Bind-then-release: the kernel does not hand the same ephemeral
        // port out again at once; a rare clash is retried by `start`.
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding an ephemeral loopback port")
    }

    fn scratch_dir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "llama-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        dir
    }

    /// Run the server binary with `args` (plus `-m <default model>` unless
    /// `-m` is given) and wait for it to exit, with a time limit: for flag
    /// tests. Returns the exit status (None if it had to be killed) and the
    /// combined output.
    pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
        let bin = paths::server_binary();
        let dir = scratch_dir();
        let log = dir.join("output.log");
        let file = File::create(&log).expect("creating the log file");
        let mut cmd = Command::new(&bin);
        if !args.iter().any(|a| *a == "-m" || *a == "--model") {
            cmd.arg("-m").arg(paths::model_path());
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("duplicating a file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let status = crate::wait_or_kill(&mut child, timeout);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
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
            let mut last_log = String::new();
            for _attempt in 0..3 {
                match Self::try_start(args, env) {
                    Ok(server) => return server,
                    Err(log) => last_log = log,
                }
            }
            panic!("llama-server did not become healthy (3 attempts); last output:\n{last_log}");
        }

        fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<ServerProcess, String> {
            let bin = paths::server_binary();
            let port = free_port();
            let dir = scratch_dir();
            let log = File::create(dir.join("stderr.log")).expect("creating the log file");
            let out = File::create(dir.join("stdout.log")).expect("creating the log file");
            let mut all: Vec<String> = vec!["--port".into(), port.to_string()];
            if !args.contains(&"--host") {
                all.extend(["--host".into(), "127.0.0.1".into()]);
            }
            if !args.iter().any(|a| *a == "-m" || *a == "--model") {
                all.push("-m".into());
                all.push(paths::model_path().display().to_string());
            }
            all.extend(args.iter().map(|s| s.to_string()));
            let mut cmd = Command::new(&bin);
            cmd.args(&all).stdin(Stdio::null()).stdout(out).stderr(log);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            let watchdog = spawn_watchdog(child.id());
            let mut server = ServerProcess {
                child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                dir,
                args: all,
                watchdog,
                exit: None,
            };
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                if let Some(status) = server.try_exit() {
                    return Err(format!("exited with {status} during startup:\n{}", server.log()));
                }
                if let Ok(r) = http::send(server.addr, &Request::get("/health"), Duration::from_secs(5))
                    && r.status() == 200
                {
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    return Err(format!("no healthy /health within {STARTUP_TIMEOUT:?}:\n{}", server.log()));
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
            self.child.id()
        }

        /// The command line it was started with (without the binary).
        pub fn args(&self) -> &[String] {
            &self.args
        }

        /// Everything the server wrote to stderr and stdout so far.
        pub fn log(&self) -> String {
            let err = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            let out = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
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
            self.send(&Request::get(path))
                .unwrap_or_else(|e| panic!("GET {path}: {e}\nserver log:\n{}", self.log_tail(30)))
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

        /// The value of one Prometheus sample (`name value`), from `/metrics`.
        pub fn metric(&self, name: &str) -> Option<f64> {
            metric_value(&self.get("/metrics").text(), name)
        }

        /// Send SIGTERM (by pid, with the `kill` utility: this crate has no unsafe code).
        pub fn sigterm(&self) {
            let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill -TERM {} failed", self.pid());
        }

        fn try_exit(&mut self) -> Option<ExitStatus> {
            if self.exit.is_none()
                && let Ok(Some(status)) = self.child.try_wait()
            {
                self.exit = Some(status);
            }
            self.exit
        }

        /// Wait up to `timeout` for the process to exit.
        pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
            if let Some((mut dog, stdin)) = self.watchdog.take() {
                // Tell the watchdog to stand down (it reads "0" and exits without killing).
                let mut stdin = stdin;
                let _ = stdin.write_all(b"0\n");
                drop(stdin);
                let _ = dog.wait();
            }
            if std::env::var_os("LLAMA_E2E_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_dir_all(&self.dir);
            } else {
                eprintln!("llama-e2e: server logs kept in {}", self.dir.display());
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

    /// `VmRSS` of a process in KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The value of the first sample named exactly `name` (no labels) in a
    /// Prometheus text exposition.
    pub fn metric_value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }
}

pub mod load {
    //! A bounded load generator: a fixed number of client threads, each
    //! sending a fixed number of requests, with a global deadline.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use crate::http::{self, Request, Response};

    /// A small deterministic PRNG (SplitMix64), so load mixes replay.
    #[derive(Debug, Clone)]
    pub struct Rng(u64);

    impl Rng {
        /// Seeded generator.
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }

        /// Next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n` (`n > 0`).
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
    }

    /// What the load consists of.
    #[derive(Debug, Clone)]
    pub struct LoadSpec {
        /// Concurrent client threads.
        pub clients: usize,
        /// Requests each client sends, one after another.
        pub requests_per_client: usize,
        /// `max_tokens` of each request.
        pub max_tokens: u32,
        /// Every this many requests, a long prompt (otherwise short).
        pub long_prompt_every: usize,
        /// Words in a long prompt.
        pub long_prompt_words: usize,
        /// Seed of the mix.
        pub seed: u64,
        /// Stop sending new requests after this long (the run is bounded).
        pub deadline: Duration,
        /// Per-read socket timeout.
        pub read_timeout: Duration,
    }

    impl Default for LoadSpec {
        fn default() -> Self {
            LoadSpec {
                clients: 16,
                requests_per_client: 10,
                max_tokens: 8,
                long_prompt_every: 5,
                long_prompt_words: 200,
                seed: 7,
                deadline: Duration::from_secs(600),
                read_timeout: Duration::from_secs(120),
            }
        }
    }

    /// How one request ended.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Outcome {
        /// 200 with a complete, well-formed response.
        Complete,
        /// A designed 503 (overloaded) carrying `Retry-After`.
        Overloaded,
        /// Any other 4xx (a bug in this generator or in the server's validation).
        ClientError(u16, String),
        /// A 5xx other than a designed 503, or a 503 without `Retry-After`.
        ServerError(u16, String),
        /// 200 but the body was cut off or malformed: a lost request.
        Incomplete(String),
        /// No response at all: connect, write or read failed.
        Transport(String),
    }

    /// One request's record.
    #[derive(Debug, Clone)]
    pub struct Record {
        /// Streaming or not.
        pub stream: bool,
        /// Long prompt or not.
        pub long_prompt: bool,
        /// How it ended.
        pub outcome: Outcome,
        /// Wall time of the whole exchange.
        pub latency: Duration,
    }

    /// What a run produced.
    #[derive(Debug, Clone, Default)]
    pub struct LoadReport {
        /// Every request sent.
        pub records: Vec<Record>,
        /// Wall time of the run.
        pub wall: Duration,
        /// Requests the deadline prevented from being sent.
        pub not_sent: usize,
    }

    impl LoadReport {
        /// Requests that ended with `pred`.
        pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
            self.records.iter().filter(|r| pred(&r.outcome)).count()
        }

        /// Completed requests.
        pub fn complete(&self) -> usize {
            self.count(|o| *o == Outcome::Complete)
        }

        /// Designed 503s.
        pub fn overloaded(&self) -> usize {
            self.count(|o| *o == Outcome::Overloaded)
        }

        /// Requests that ended neither complete nor with a designed 503.
        pub fn lost(&self) -> Vec<&Record> {
            self.records.iter().filter(|r| !matches!(r.outcome, Outcome::Complete | Outcome::Overloaded)).collect()
        }

        /// The `q`-quantile (0..=1) of the latencies of complete requests.
        pub fn latency_quantile(&self, q: f64) -> Duration {
            let mut l: Vec<Duration> =
                self.records.iter().filter(|r| r.outcome == Outcome::Complete).map(|r| r.latency).collect();
            quantile(&mut l, q)
        }
    }

    /// The `q`-quantile (nearest rank) of `values`; zero when empty.
    pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
        if values.is_empty() {
            return Duration::ZERO;
        }
        values.sort();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    /// A prompt of about `words` words, varied by `salt` so prefixes differ.
    pub fn prompt(words: usize, salt: u64) -> String {
        const WORDS: &[&str] = &[
            "river", "stone", "light", "garden", "window", "paper", "engine", "cloud", "market", "violin", "harbor",
            "lantern", "forest", "copper", "signal", "meadow",
        ];
        let mut rng = Rng::new(salt);
        let mut out = format!("Note {salt}:");
        for _ in 0..words {
            out.push(' ');
            out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        }
        out
    }

    /// A `/v1/completions` body.
    pub fn completion_body(prompt: &str, max_tokens: u32, stream: bool) -> Value {
        json!({"prompt": prompt, "max_tokens": max_tokens, "stream": stream, "temperature": 0, "cache_prompt": false})
    }

    /// Classify a `/v1/completions` or `/v1/chat/completions` response.
    pub fn classify(resp: &Response, stream: bool) -> Outcome {
        let status = resp.status();
        let brief = resp.describe();
        match status {
            200 => {}
            503 if resp.head.header("retry-after").is_some() && is_error_shape(&resp.json()) => {
                return Outcome::Overloaded;
            }
            400..=499 => return Outcome::ClientError(status, brief),
            _ => return Outcome::ServerError(status, brief),
        }
        if !resp.complete {
            return Outcome::Incomplete(format!("body cut off: {brief}"));
        }
        if stream {
            let data = resp.sse_data();
            let Some(last) = data.last() else { return Outcome::Incomplete(format!("no events: {brief}")) };
            if last != "[DONE]" {
                return Outcome::Incomplete(format!("stream does not end with [DONE]: {brief}"));
            }
            let finish = data.iter().rev().skip(1).find_map(|d| {
                let v: Value = serde_json::from_str(d).ok()?;
                v["choices"][0]["finish_reason"].as_str().map(str::to_string)
            });
            if finish.is_none() {
                return Outcome::Incomplete(format!("no event carries a finish_reason: {brief}"));
            }
            // Every payload but the marker must be JSON.
            if data[..data.len() - 1].iter().any(|d| serde_json::from_str::<Value>(d).is_err()) {
                return Outcome::Incomplete(format!("a non-JSON event: {brief}"));
            }
            Outcome::Complete
        } else {
            match resp.json() {
                Some(v) if v["choices"][0]["finish_reason"].is_string() => Outcome::Complete,
                _ => Outcome::Incomplete(format!("no finish_reason: {brief}")),
            }
        }
    }

    /// Whether a body has the OpenAI error shape `{"error": {"message": .., "type": .., "code": ..}}`.
    pub fn is_error_shape(body: &Option<Value>) -> bool {
        matches!(body, Some(v) if v["error"]["message"].is_string() && v["error"]["type"].is_string())
    }

    /// Run `spec` against `addr`: `/v1/completions`, half streaming, prompts
    /// short or (every `long_prompt_every`) long.
    pub fn run(addr: SocketAddr, spec: &LoadSpec) -> LoadReport {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..spec.clients)
            .map(|c| {
                let spec = spec.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut rng = Rng::new(spec.seed.wrapping_mul(1000).wrapping_add(c as u64));
                    let mut records = Vec::new();
                    let mut not_sent = 0;
                    for i in 0..spec.requests_per_client {
                        if stop.load(Ordering::Relaxed) || start.elapsed() > spec.deadline {
                            stop.store(true, Ordering::Relaxed);
                            not_sent += spec.requests_per_client - i;
                            break;
                        }
                        let stream = rng.below(2) == 0;
                        let long = spec.long_prompt_every > 0 && (i + c) % spec.long_prompt_every == 0;
                        let words = if long { spec.long_prompt_words } else { 4 + rng.below(8) as usize };
                        let body = completion_body(&prompt(words, rng.next_u64()), spec.max_tokens, stream);
                        let t0 = Instant::now();
                        let outcome =
                            match http::send(addr, &Request::post_json("/v1/completions", &body), spec.read_timeout) {
                                Ok(resp) => classify(&resp, stream),
                                Err(e) => Outcome::Transport(e.to_string()),
                            };
                        records.push(Record { stream, long_prompt: long, outcome, latency: t0.elapsed() });
                    }
                    (records, not_sent)
                })
            })
            .collect();
        let mut report = LoadReport::default();
        for t in threads {
            match t.join() {
                Ok((records, not_sent)) => {
                    report.records.extend(records);
                    report.not_sent += not_sent;
                }
                Err(_) => report.records.push(Record {
                    stream: false,
                    long_prompt: false,
                    outcome: Outcome::Transport("client thread panicked".into()),
                    latency: Duration::ZERO,
                }),
            }
        }
        report.wall = start.elapsed();
        report
    }
}

pub mod figures {
    //! Suite sizes and recorded figures.

    use std::io::Write as _;

    use serde_json::Value;

    use crate::paths;

    /// Whether `RELIABILITY_SCALE=long` (the `make reliability-long` sizes).
    pub fn long() -> bool {
        std::env::var("RELIABILITY_SCALE").is_ok_and(|v| v.eq_ignore_ascii_case("long"))
    }

    /// A suite size: `RELIABILITY_<NAME>` if set, else `long` under
    /// `RELIABILITY_SCALE=long`, else `ci`.
    pub fn knob(name: &str, ci: usize, long: usize) -> usize {
        let var = format!("RELIABILITY_{}", name.to_ascii_uppercase());
        match std::env::var(&var) {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
            Err(_) if self::long() => long,
            Err(_) => ci,
        }
    }

    /// Print the figures of a suite (one `RELIABILITY` line, visible with
    /// `--nocapture`) and write them to `target/reliability/<suite>.json`.
    pub fn record(suite: &str, figures: Value) {
        let scale = if long() { "long" } else { "ci" };
        let entry = serde_json::json!({ "suite": suite, "scale": scale, "figures": figures });
        println!("RELIABILITY {entry}");
        let dir = paths::report_dir();
        if std::fs::create_dir_all(&dir).is_ok()
            && let Ok(mut f) = std::fs::File::create(dir.join(format!("{suite}.{scale}.json")))
        {
            let _ = writeln!(f, "{}", serde_json::to_string_pretty(&entry).unwrap_or_default());
        }
    }
}
