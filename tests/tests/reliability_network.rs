//! Network-facing safety of the real `llama-server` process: the default
//! bind address, API keys (and keeping them out of logs), DNS-rebinding
//! protection through the `Host` header, CORS as llama.cpp does it (and narrowed when asked), and
//! `Retry-After` on every 503. Plus absurd command-line flags: a clean
//! non-zero exit with a short message, never an abort.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use llama_e2e::figures;
use llama_e2e::http::{self, Request};
use llama_e2e::load::is_error_shape;
use llama_e2e::server::{SMALL, ServerProcess, run_to_exit};
use serde_json::json;

/// Every route with a body that would succeed, for the auth sweep.
fn routes() -> Vec<Request> {
    vec![
        Request::get("/"),
        Request::get("/v1/models"),
        Request::get("/models"),
        Request::get("/props"),
        Request::get("/slots"),
        Request::get("/metrics"),
        Request::get("/openapi.json"),
        Request::post_json("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2})),
        Request::post_json("/completion", &json!({"prompt": "Hi", "n_predict": 2})),
        Request::post_json(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        ),
        Request::post_json("/tokenize", &json!({"content": "Hi"})),
        Request::post_json("/detokenize", &json!({"tokens": [1]})),
        Request::post_json("/apply-template", &json!({"messages": [{"role": "user", "content": "Hi"}]})),
        Request::post_json("/v1/embeddings", &json!({"input": "Hi"})),
        Request::get("/no/such/route"),
    ]
}

const KEY: &str = "sk-reliability-8c1f0e2b9a7d4e65";

#[test]
fn api_key_guards_everything_but_health_and_never_reaches_the_logs() {
    let mut args = SMALL.to_vec();
    args.extend(["--api-key", KEY, "-v"]);
    let s = ServerProcess::start(&args);
    let mut checked = 0;
    for req in routes() {
        let path = req.path.clone();
        for (label, r) in [
            ("no key", req.clone()),
            ("wrong key", req.clone().header("Authorization", "Bearer sk-wrong-0000")),
            ("key prefix", req.clone().header("Authorization", &format!("Bearer {}", &KEY[..KEY.len() - 1]))),
            ("key as basic auth", req.clone().header("Authorization", &format!("Basic {KEY}"))),
            ("empty bearer", req.clone().header("Authorization", "Bearer ")),
        ] {
            let resp = s.send(&r).expect("response");
            assert_eq!(resp.status(), 401, "{label} {path}: {}", resp.describe());
            assert!(is_error_shape(&resp.json()), "{label} {path}: {}", resp.describe());
            checked += 1;
        }
        for r in [req.clone().header("Authorization", &format!("Bearer {KEY}")), req.clone().header("x-api-key", KEY)] {
            let resp = s.send(&r).expect("response");
            assert_ne!(resp.status(), 401, "right key refused on {path}: {}", resp.describe());
            assert!(resp.status() < 500 || resp.status() == 501, "{path}: {}", resp.describe());
        }
    }
    for path in ["/health", "/v1/health"] {
        assert_eq!(s.get(path).status(), 200, "{path} must not need a key");
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log();
    assert!(!log.is_empty(), "-v should log something");
    assert!(!log.contains(KEY), "the API key appears in the server's log");
    assert!(!log.contains(&KEY[3..]), "part of the API key appears in the server's log");
    assert!(!log.contains("sk-wrong-0000"), "a presented (wrong) key appears in the server's log");
    assert!(!s.args().is_empty());
    figures::record("network_auth", json!({"unauthorized_checks": checked, "log_bytes": log.len()}));
}

#[test]
fn binds_loopback_by_default() {
    // Started by hand without --host (the harness always passes one); the
    // kernel's table of listening sockets says where it really listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let port_s = port.to_string();
    let bin = llama_e2e::paths::server_binary();
    let mut child = std::process::Command::new(bin)
        .args(["-m", llama_e2e::paths::model_path().to_str().expect("utf-8 path"), "--port", &port_s])
        .args(SMALL)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut listening = None;
    for _ in 0..600 {
        if http::send(addr, &Request::get("/health"), Duration::from_secs(2)).is_ok() {
            listening = Some(listening_addresses(port));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("the server never answered on 127.0.0.1");
    assert!(!listening.is_empty(), "no LISTEN socket found for port {port}");
    for a in &listening {
        assert_eq!(a, "0100007F", "the server listens on {a} (hex) for port {port}, not only 127.0.0.1");
    }
}

/// Local addresses (hex, as in /proc/net/tcp{,6}) with a LISTEN socket on `port`.
fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3
                && cols[3] == "0A"
                && let Some((ip, p)) = cols[1].split_once(':')
                && u16::from_str_radix(p, 16).ok() == Some(port)
            {
                out.push(ip.to_string());
            }
        }
    }
    out
}

#[test]
fn dns_rebinding_host_check_and_cors() {
    let s = ServerProcess::start(SMALL);
    let port = s.port();
    for host in [
        "evil.example",
        "evil.example:80",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
        "127.0.0.1.nip.io",
    ] {
        for path in ["/health", "/v1/models"] {
            let resp = s.send(&Request::get(path).header("Host", host)).expect("response");
            assert_eq!(resp.status(), 403, "Host {host} {path}: {}", resp.describe());
            assert!(is_error_shape(&resp.json()), "{}", resp.describe());
        }
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "localhost".into(), format!("[::1]:{port}")]
    {
        let resp = s.send(&Request::get("/v1/models").header("Host", &host)).expect("response");
        assert_eq!(resp.status(), 200, "Host {host}: {}", resp.describe());
    }
    // CORS by default is llama.cpp's: the Origin is reflected, with
    // credentials, on a simple request and a preflight.
    for req in [
        Request::get("/v1/models").header("Origin", "https://app.example"),
        Request::new("OPTIONS", "/v1/chat/completions")
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization,content-type"),
    ] {
        let resp = s.send(&req).expect("response");
        assert_eq!(
            (resp.head.header("access-control-allow-origin"), resp.head.header("access-control-allow-credentials")),
            (Some("https://app.example"), Some("true")),
            "{} {}: {:?}",
            req.method,
            req.path,
            resp.head.headers
        );
    }
    drop(s);

    let mut args = SMALL.to_vec();
    args.extend(["--cors-origins", "https://good.example"]);
    let s = ServerProcess::start(&args);
    let pre = |origin: &str| {
        s.send(
            &Request::new("OPTIONS", "/v1/chat/completions")
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST"),
        )
        .expect("response")
    };
    let good = pre("https://good.example");
    assert_eq!(
        good.head.header("access-control-allow-origin"),
        Some("https://good.example"),
        "{:?}",
        good.head.headers
    );
    let evil = pre("https://evil.example");
    assert_ne!(evil.head.header("access-control-allow-origin"), Some("https://evil.example"));
    assert_ne!(evil.head.header("access-control-allow-origin"), Some("*"));
}

/// An overloaded server answers 503 with `Retry-After`, and every 503 it
/// gives carries one.
#[test]
fn overload_503s_carry_retry_after() {
    let s = ServerProcess::start(&["-c", "512", "-np", "1", "-t", "2", "-tb", "2", "--queue-size", "1", "--metrics"]);
    let addr = s.addr();
    let body = json!({"prompt": "Count slowly from one to one hundred:", "max_tokens": 48, "ignore_eos": true, "temperature": 0});
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                http::send(addr, &Request::post_json("/v1/completions", &body), Duration::from_secs(120))
            })
        })
        .collect();
    let mut n503 = 0;
    let mut n200 = 0;
    for t in threads {
        let resp = t.join().expect("thread").expect("response");
        match resp.status() {
            200 => n200 += 1,
            503 => {
                n503 += 1;
                let ra = resp.head.header("retry-after").unwrap_or_default();
                assert!(ra.parse::<u32>().is_ok(), "503 without a valid Retry-After: {:?}", resp.head.headers);
                assert!(is_error_shape(&resp.json()), "{}", resp.describe());
            }
            other => panic!("unexpected {other}: {}", resp.describe()),
        }
    }
    assert!(n200 >= 1, "nothing was served");
    assert!(n503 >= 1, "8 concurrent requests on 1 slot + 1 queue place gave no 503");
    // `/slots?fail_on_no_slot=1` while busy is a designed 503 too.
    figures::record("network_overload", json!({"ok": n200, "overloaded_503": n503}));
}

/// Absurd flags: the process exits by itself with a non-zero code and a
/// short message naming the flag; never a signal (GGML_ASSERT → SIGABRT).
#[test]
fn absurd_flags_exit_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7fjunk").expect("write");
    let truncated = dir.path().join("truncated.gguf");
    let real = std::fs::read(llama_e2e::paths::model_path()).expect("read model");
    std::fs::write(&truncated, &real[..real.len() / 3]).expect("write");
    drop(real);
    let bad_template = dir.path().join("bad.jinja");
    std::fs::write(&bad_template, "{% for %}{{ }").expect("write");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port().to_string();

    let g = garbage.to_str().expect("utf-8");
    let t = truncated.to_str().expect("utf-8");
    let bt = bad_template.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--ctx-size", "1"], "ctx-size"),
        (vec!["-np", "0"], "parallel"),
        (vec!["-np", "100000"], "parallel"),
        (vec!["--threads", "0"], "threads"),
        (vec!["--threads", "-7"], "threads"),
        (vec!["-tb", "0"], "threads-batch"),
        (vec!["--port", "70000"], "port"),
        (vec!["--port", "-1"], "port"),
        (vec!["--ctx-size", "99999999999"], "ctx-size"),
        (vec!["--ctx-size", "4000000000"], "ctx-size"),
        (vec!["-b", "0"], "batch-size"),
        (vec!["-ub", "0"], "ubatch-size"),
        (vec!["--timeout", "0"], "timeout"),
        (vec!["--max-body", "0"], "max-body"),
        (vec!["--queue-size", "0"], "queue-size"),
        (vec!["--host", "999.1.1.1"], "host"),
        (vec!["--host", "not a host"], "host"),
        (vec!["--temp", "-5"], "temp"),
        (vec!["--top-p", "7"], "top"),
        (vec!["--seed", "99999999999999999999"], "seed"),
        (vec!["--no-such-flag"], "no-such-flag"),
        (vec!["-m", "/nonexistent/model.gguf"], "model"),
        (vec!["-m", "/dev/null"], "model"),
        (vec!["-m", g], "model"),
        (vec!["-m", t], "model"),
        (vec!["--api-key-file", "/nonexistent/keys"], "api-key-file"),
        (vec!["--chat-template-file", bt], "template"),
        (vec!["--chat-template", "{% for %}"], "template"),
        (vec!["--host", "127.0.0.1", "--port", &taken_port], "listen"),
    ];
    let mut failures = Vec::new();
    for (args, word) in &cases {
        let (status, output) = run_to_exit(args, Duration::from_secs(60));
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        let describe = || format!("{args:?}: status {status:?}, output:\n{output}");
        match status {
            None => failures.push(format!("did not exit within 60 s: {}", describe())),
            Some(st) if st.signal().is_some() => failures.push(format!("killed by signal: {}", describe())),
            Some(st) if st.success() => failures.push(format!("exited 0: {}", describe())),
            Some(_) => {
                let error_lines: Vec<&&str> =
                    lines.iter().filter(|l| l.to_ascii_lowercase().contains("error")).collect();
                // The message names the flag, or at least the offending value
                // (clap: "unexpected argument '-1' found").
                let value = args.last().copied().unwrap_or_default().to_ascii_lowercase();
                let low = output.to_ascii_lowercase();
                if error_lines.is_empty() || !(low.contains(word) || low.contains(&format!("'{value}'"))) {
                    failures.push(format!("no error line naming `{word}` or `{value}`: {}", describe()));
                }
                for bad in ["GGML_ASSERT", "panicked", "abort", "RUST_BACKTRACE", "Segmentation"] {
                    if output.contains(bad) {
                        failures.push(format!("output contains {bad}: {}", describe()));
                    }
                }
                // "One line": the error itself, plus at most clap's usage hint lines.
                if error_lines.len() > 1 || lines.len() > 4 {
                    failures.push(format!("message is not short ({} lines): {}", lines.len(), describe()));
                }
            }
        }
    }
    drop(taken);
    figures::record("flags", json!({"cases": cases.len(), "failures": failures.len()}));
    assert!(failures.is_empty(), "{} of {} flag cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// Connection floods: hundreds of idle connections, slow-header
/// ("slowloris") connections, and more connections than the process may
/// hold file descriptors (its limit lowered to 128 with `prlimit`). The
/// server must keep serving others during the flood (except while it is
/// out of descriptors) and fully recover after it, without crashing.
#[test]
fn connection_floods_and_descriptor_exhaustion() {
    let s = ServerProcess::start(SMALL);
    let addr = s.addr();
    let ok = |label: &str| {
        let r =
            s.send(&Request::post_json("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0})));
        match r {
            Ok(r) if r.status() == 200 => {}
            other => panic!("{label}: a normal request failed: {other:?}\n{}", s.log_tail(20)),
        }
    };

    // 300 idle connections and 50 that dribble a header byte by byte.
    let idle = connect_many(addr, 300);
    let mut slow = connect_many(addr, 50);
    for (i, c) in slow.iter_mut().enumerate() {
        use std::io::Write as _;
        let _ = c.write_all(format!("GET /health HTTP/1.1\r\nX-Slow-{i}: ").as_bytes());
    }
    ok("with 350 idle and slow connections open");
    drop(idle);
    drop(slow);
    ok("after the idle flood");

    // Out of descriptors: lower the server's limit, then hold more
    // connections than it can accept.
    let status =
        std::process::Command::new("prlimit").args(["--pid", &s.pid().to_string(), "--nofile=128:128"]).status();
    let limited = status.is_ok_and(|st| st.success());
    let mut held = 0;
    let mut recovered_ms = None;
    if limited {
        let flood = connect_many(addr, 400);
        held = flood.len();
        // While it is out of descriptors, requests may fail; it must not crash.
        let _ = http::send(addr, &Request::get("/health"), Duration::from_secs(3));
        assert!(s.rss_kib().is_some(), "the server process died while out of file descriptors");
        drop(flood);
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if s.healthy() {
                recovered_ms = Some(t0.elapsed().as_millis() as u64);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(recovered_ms.is_some(), "the server did not recover within 30 s after the descriptor flood");
        ok("after the descriptor flood");
    } else {
        eprintln!("prlimit unavailable: descriptor exhaustion not tried");
    }
    figures::record(
        "network_floods",
        json!({"idle_connections": 300, "slow_header_connections": 50, "fd_limit_applied": limited,
               "connections_over_fd_limit": held, "recovered_ms": recovered_ms}),
    );
}

/// Open up to `n` connections, each with a 1 s connect timeout; stops at
/// the first that fails (a full accept backlog drops SYNs, and a plain
/// connect would then wait minutes).
fn connect_many(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(c) => out.push(c),
            Err(_) => break,
        }
    }
    out
}

/// Slowloris: a connection that never sends a request, and one that sends
/// half a header and then nothing, must be closed by the server after a
/// bounded time (hyper's usual header-read timeout is 30 s); otherwise a
/// client can hold every file descriptor of the server forever.
#[test]
fn idle_and_slow_header_connections_are_closed() {
    use std::io::{Read as _, Write as _};
    let s = ServerProcess::start(SMALL);
    let wait = Duration::from_secs(llama_e2e::figures::knob("idle_wait_s", 45, 45) as u64);
    let mut idle = std::net::TcpStream::connect(s.addr()).expect("connect");
    let mut partial = std::net::TcpStream::connect(s.addr()).expect("connect");
    partial.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").expect("write");
    let t0 = std::time::Instant::now();
    let mut closed = [None, None];
    for (k, c) in [&mut idle, &mut partial].into_iter().enumerate() {
        let left = wait.saturating_sub(t0.elapsed()).max(Duration::from_millis(10));
        c.set_read_timeout(Some(left)).expect("timeout");
        let mut buf = [0u8; 256];
        // EOF, a reset, or any response (a 408) all mean the server gave up
        // on it; only the read timing out means it is still held open.
        let gave_up = match c.read(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        };
        if gave_up {
            closed[k] = Some(t0.elapsed().as_secs_f64());
        }
    }
    figures::record(
        "network_slowloris",
        json!({"waited_s": wait.as_secs(), "idle_closed_after_s": closed[0], "partial_header_closed_after_s": closed[1]}),
    );
    assert!(closed[0].is_some(), "an idle connection (no request) is still open after {wait:?}");
    assert!(closed[1].is_some(), "a connection stuck in the middle of its headers is still open after {wait:?}");
    s.assert_healthy("slowloris");
}
