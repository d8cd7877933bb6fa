//! Model downloads (`-hf`, `-mu`, `--offline`, `llama pull`) against a mock
//! Hugging Face hub on a loopback socket: an axum server that answers
//! `GET /api/models/{user}/{model}` (the listing, with `lfs.sha256`) and
//! `GET /{user}/{model}/resolve/{rev}/{file}` (the bytes, with `Range`,
//! `X-Linked-Etag`, and switches that cut the connection mid-file or flip a
//! byte). Every file it serves is the default model, read once per test
//! binary and shared; each test has its own mock and its own cache in a
//! temporary directory, so tests run in parallel without touching the
//! environment of this process. The last tests start the real
//! `llama-server` and `llama` binaries with `HF_ENDPOINT` and `LLAMA_CACHE`
//! pointing at them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llama_e2e::http::{self, Request as HttpRequest};
use llama_server::hub::{self, HubError, Options, RepoSpec, Source, Token};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const COMMIT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const NAME: &str = "SmolLM2-135M-Instruct-Q4_1.gguf";

/// The default model's bytes and sha256, read once per test binary.
fn model() -> &'static (Bytes, String) {
    static MODEL: OnceLock<(Bytes, String)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bytes = std::fs::read(llama_e2e::paths::model_path()).expect("the default model");
        let sha = hex(&Sha256::digest(&bytes));
        (Bytes::from(bytes), sha)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request the mock saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct MockState {
    /// repo → file names, each served with the model's bytes.
    repos: HashMap<String, Vec<String>>,
    /// When set, requests without `Authorization: Bearer {token}` get 401.
    token: Option<String>,
    /// Cut the next download after this many body bytes.
    cut_next_at: Mutex<Option<usize>>,
    /// Serve the model with one byte flipped (the listing keeps the true sha256).
    corrupt: AtomicBool,
    /// Ignore `Range` (answer 200 with the whole file).
    no_ranges: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

/// A mock hub on its own thread and runtime; stopped when dropped.
struct Mock {
    base: String,
    state: Arc<MockState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mock {
    fn start(repos: &[(&str, &[&str])], token: Option<&str>) -> Mock {
        let state = Arc::new(MockState {
            repos: repos
                .iter()
                .map(|(r, files)| (r.to_string(), files.iter().map(|f| f.to_string()).collect()))
                .collect(),
            token: token.map(str::to_string),
            ..MockState::default()
        });
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the mock hub");
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().fallback(serve).with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Mock { base, state, stop: Some(stop), thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn downloads(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.contains("/resolve/")).collect()
    }

    /// Options for a cache in `dir`: no progress bar, quick retries.
    fn options(&self, dir: &Path) -> Options {
        Options {
            progress: false,
            retry_delay: Duration::from_millis(20),
            read_timeout: Duration::from_secs(20),
            ..Options::new(self.base.clone(), dir)
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open connections are not waited for: the test is over.
        drop(self.thread.take());
    }
}

async fn serve(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers();
    let text = |h: &HeaderMap, name| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (range, auth) = (text(headers, header::RANGE), text(headers, header::AUTHORIZATION));
    state.seen.lock().unwrap().push(Seen { path: path.clone(), range: range.clone(), auth: auth.clone() });
    if let Some(token) = &state.token
        && auth.as_deref() != Some(&format!("Bearer {token}"))
    {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"Invalid credentials"}"#).into_response();
    }
    let (bytes, sha) = model();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/models/{user}/{model}
    if let ["api", "models", user, name] = parts[..] {
        let Some(files) = state.repos.get(&format!("{user}/{name}")) else {
            return (StatusCode::NOT_FOUND, r#"{"error":"Repository not found"}"#).into_response();
        };
        let siblings: Vec<Value> = files
            .iter()
            .map(|f| {
                json!({"rfilename": f, "size": bytes.len(), "blobId": "0123456789abcdef0123456789abcdef01234567",
                       "lfs": {"sha256": sha, "size": bytes.len(), "pointerSize": 134}})
            })
            .collect();
        return axum::Json(json!({"id": format!("{user}/{name}"), "sha": COMMIT, "siblings": siblings}))
            .into_response();
    }
    // /{user}/{model}/resolve/{rev}/{file...}
    if parts.len() >= 5 && parts[2] == "resolve" {
        let repo = format!("{}/{}", parts[0], parts[1]);
        let file = parts[4..].join("/");
        if !state.repos.get(&repo).is_some_and(|files| files.contains(&file)) {
            return (StatusCode::NOT_FOUND, "Entry not found").into_response();
        }
        let body: Bytes = if state.corrupt.load(Ordering::SeqCst) {
            let mut copy = bytes.to_vec();
            copy[5000] ^= 0xff;
            copy.into()
        } else {
            bytes.clone()
        };
        let total = body.len();
        let start = range
            .as_deref()
            .filter(|_| !state.no_ranges.load(Ordering::SeqCst))
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        let (status, body) = match start {
            Some(s) if s < total => (StatusCode::PARTIAL_CONTENT, body.slice(s..)),
            Some(_) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
            None => (StatusCode::OK, body),
        };
        let len = body.len();
        let cut = state.cut_next_at.lock().unwrap().take();
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..len)
            .step_by(1 << 20)
            .map(|at| body.slice(at..(at + (1 << 20)).min(len)))
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                match cut {
                    Some(c) if *sent > c => None,
                    _ => Some(Ok(chunk)),
                }
            })
            .chain(cut.map(|_| Err(std::io::Error::other("cut"))))
            .collect();
        let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(header::CONTENT_LENGTH, len.into());
        h.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
        h.insert("x-linked-etag", format!("\"{sha}\"").parse().unwrap());
        if status == StatusCode::PARTIAL_CONTENT {
            let from = total - len;
            h.insert(header::CONTENT_RANGE, format!("bytes {from}-{}/{total}", total - 1).parse().unwrap());
        }
        return response;
    }
    StatusCode::NOT_FOUND.into_response()
}

fn hf(spec: &str) -> Source {
    Source::Hub { repo: RepoSpec::parse(spec).unwrap(), file: None }
}

fn sha_of(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_repo_is_downloaded_checked_and_then_served_from_the_cache() {
    let mock = Mock::start(&[("u/smol", &["README.md", NAME])], None);
    let cache = tempfile::tempdir().unwrap();
    let options = mock.options(cache.path());
    let path = hub::resolve_blocking(&hf("u/smol:q4_1"), &options).unwrap();
    let snapshot = cache.path().join("models--u--smol/snapshots").join(COMMIT);
    assert_eq!(path, snapshot.join(NAME));
    assert_eq!(sha_of(&path), model().1);
    // The hub's layout: the bytes in blobs/{sha256}, a relative link in the snapshot, refs/main.
    assert_eq!(
        tree(&cache.path().join("models--u--smol")),
        [format!("blobs/{}", model().1), "refs/main".to_string(), format!("snapshots/{COMMIT}/{NAME}")]
    );
    #[cfg(unix)]
    assert!(std::fs::read_link(&path).unwrap().starts_with("../../blobs"));
    assert_eq!(std::fs::read_to_string(cache.path().join("models--u--smol/refs/main")).unwrap(), COMMIT);
    assert_eq!(mock.downloads().len(), 1);
    assert_eq!(mock.seen()[0].path, "/api/models/u/smol");

    // Again: listed, not downloaded.
    assert_eq!(hub::resolve_blocking(&hf("u/smol:Q4_1"), &options).unwrap(), path);
    assert_eq!(mock.downloads().len(), 1);
    assert_eq!(hub::cached_models(cache.path()), ["u/smol:Q4_1"]);

    // The hub down: the cache still answers (llama.cpp's fallback).
    drop(mock);
    assert_eq!(hub::resolve_blocking(&hf("u/smol:Q4_1"), &options).unwrap(), path);
}

#[test]
fn a_cut_download_resumes_with_range() {
    let mock = Mock::start(&[("u/smol", &[NAME])], None);
    let cache = tempfile::tempdir().unwrap();
    let cut = 10 << 20;

    // One try only: the cut is an error, and the bytes received stay in the .part file.
    *mock.state.cut_next_at.lock().unwrap() = Some(cut);
    let options = Options { attempts: 1, ..mock.options(cache.path()) };
    let err = hub::resolve_blocking(&hf("u/smol"), &options).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(err.to_string().contains("the next run resumes"), "{err}");
    let part = cache.path().join("models--u--smol/blobs").join(format!("{}.part", model().1));
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept <= cut as u64, "{kept}");

    // The next run asks for the rest only.
    let path = hub::resolve_blocking(&hf("u/smol"), &mock.options(cache.path())).unwrap();
    assert_eq!(sha_of(&path), model().1);
    let downloads = mock.downloads();
    assert_eq!(downloads.len(), 2);
    assert_eq!(downloads[1].range.as_deref(), Some(format!("bytes={kept}-").as_str()));
    assert!(!part.exists());

    // Within one run: cut, then resumed by the next try.
    let cache = tempfile::tempdir().unwrap();
    *mock.state.cut_next_at.lock().unwrap() = Some(cut);
    let path = hub::resolve_blocking(&hf("u/smol"), &mock.options(cache.path())).unwrap();
    assert_eq!(sha_of(&path), model().1);
    let downloads = mock.downloads();
    assert_eq!(downloads.len(), 4);
    assert!(downloads[3].range.as_deref().is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"), "{downloads:?}");

    // A server that ignores Range: the download starts over and still ends right.
    let cache = tempfile::tempdir().unwrap();
    *mock.state.cut_next_at.lock().unwrap() = Some(cut);
    mock.state.no_ranges.store(true, Ordering::SeqCst);
    let path = hub::resolve_blocking(&hf("u/smol"), &mock.options(cache.path())).unwrap();
    assert_eq!(sha_of(&path), model().1);
}

#[test]
fn a_corrupted_byte_is_refused_and_nothing_is_kept() {
    let mock = Mock::start(&[("u/smol", &[NAME])], None);
    let cache = tempfile::tempdir().unwrap();
    mock.state.corrupt.store(true, Ordering::SeqCst);
    let err = hub::resolve_blocking(&hf("u/smol"), &mock.options(cache.path())).unwrap_err();
    let HubError::Checksum { expected, actual, .. } = &err else { panic!("{err}") };
    assert_eq!(expected, &model().1);
    assert_ne!(actual, &model().1);
    assert!(err.to_string().contains("the download was deleted"), "{err}");
    let left = tree(cache.path());
    assert!(left.iter().all(|f| !f.contains("blobs/") && !f.contains("snapshots/")), "{left:?}");

    // A URL download checks the sha256 of the X-Linked-Etag header.
    let url = format!("{}/u/smol/resolve/main/{NAME}", mock.base);
    let err =
        hub::resolve_blocking(&Source::Url { url: url.clone(), path: None }, &mock.options(cache.path())).unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    assert!(!cache.path().join(NAME).exists());

    mock.state.corrupt.store(false, Ordering::SeqCst);
    let path = hub::resolve_blocking(&Source::Url { url, path: None }, &mock.options(cache.path())).unwrap();
    assert_eq!(path, cache.path().join(NAME));
    assert_eq!(sha_of(&path), model().1);
}

#[test]
fn offline_uses_only_the_cache() {
    let mock = Mock::start(&[("u/smol", &[NAME])], None);
    let cache = tempfile::tempdir().unwrap();
    let offline = Options { offline: true, ..mock.options(cache.path()) };
    let err = hub::resolve_blocking(&hf("u/smol"), &offline).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("u/smol is not in the cache"), "{err}");
    let url = Source::Url { url: format!("{}/x/{NAME}", mock.base), path: None };
    assert!(matches!(hub::resolve_blocking(&url, &offline), Err(HubError::NotCached { .. })));
    assert!(mock.seen().is_empty(), "offline touched the network: {:?}", mock.seen());

    let online = hub::resolve_blocking(&hf("u/smol"), &mock.options(cache.path())).unwrap();
    let before = mock.seen().len();
    assert_eq!(hub::resolve_blocking(&hf("u/smol"), &offline).unwrap(), online);
    assert_eq!(hub::resolve_blocking(&hf("u/smol:Q4_1"), &offline).unwrap(), online);
    assert!(matches!(hub::resolve_blocking(&hf("u/smol:Q8_0"), &offline), Err(HubError::NotCached { .. })));
    assert_eq!(mock.seen().len(), before);
}

#[test]
fn the_quant_tag_and_hf_file_choose_among_names() {
    let files = [
        "README.md",
        "mmproj-Smol-Q4_K_M.gguf",
        "Smol-F16.gguf",
        "Smol-Q8_0.gguf",
        "Smol-Q4_K_M.gguf",
        "Smol-q4_1.gguf",
        "sub/Smol-IQ4_XS.gguf",
    ];
    let mock = Mock::start(&[("u/many", &files), ("u/two", &["b-F16.gguf", "a-Q8_0.gguf"])], None);
    let cache = tempfile::tempdir().unwrap();
    let options = mock.options(cache.path());
    let name = |spec: &str| {
        let p = hub::resolve_blocking(&hf(spec), &options).unwrap();
        let folder = format!("models--{}", spec.split(':').next().unwrap().replace('/', "--"));
        p.strip_prefix(cache.path().join(folder).join("snapshots").join(COMMIT)).unwrap().to_owned()
    };
    assert_eq!(name("u/many"), Path::new("Smol-Q4_K_M.gguf"));
    assert_eq!(name("u/many:Q4_1"), Path::new("Smol-q4_1.gguf"));
    assert_eq!(name("u/many:f16"), Path::new("Smol-F16.gguf"));
    assert_eq!(name("u/many:iq4_xs"), Path::new("sub/Smol-IQ4_XS.gguf"));
    assert_eq!(name("u/two"), Path::new("a-Q8_0.gguf"));
    let with_file = Source::Hub { repo: RepoSpec::parse("u/many:F16").unwrap(), file: Some("Smol-Q8_0.gguf".into()) };
    assert!(hub::resolve_blocking(&with_file, &options).unwrap().ends_with("Smol-Q8_0.gguf"));
    // Every name is the same bytes: one blob and one download per repository.
    assert_eq!(mock.downloads().len(), 2);

    let err = hub::resolve_blocking(&hf("u/many:Q2_K"), &options).unwrap_err();
    assert!(matches!(err, HubError::NoModelFile { .. }), "{err}");
    assert!(err.to_string().contains("Smol-Q4_K_M.gguf") && !err.to_string().contains("README"), "{err}");
    let missing = Source::Hub { repo: RepoSpec::parse("u/many").unwrap(), file: Some("nope.gguf".into()) };
    assert!(matches!(hub::resolve_blocking(&missing, &options), Err(HubError::FileNotInRepo { .. })));
    let err = hub::resolve_blocking(&hf("u/none"), &options).unwrap_err();
    assert!(matches!(err, HubError::Status { status: 404, .. }), "{err}");
}

#[test]
fn hf_token_is_sent_as_a_bearer_token_and_never_shown() {
    const SECRET: &str = "hf_test_secret_token_0123456789abcdefghij";
    let mock = Mock::start(&[("u/gated", &[NAME])], Some(SECRET));
    let cache = tempfile::tempdir().unwrap();
    let err = hub::resolve_blocking(&hf("u/gated"), &mock.options(cache.path())).unwrap_err();
    assert!(matches!(err, HubError::Status { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let options = Options { token: Token::new(SECRET), ..mock.options(cache.path()) };
    let path = hub::resolve_blocking(&hf("u/gated"), &options).unwrap();
    assert_eq!(sha_of(&path), model().1);
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in &seen[1..] {
        assert_eq!(s.auth.as_deref(), Some(format!("Bearer {SECRET}").as_str()), "{}", s.path);
    }
    assert!(!format!("{options:?}").contains(SECRET));
}

// ---- the binaries

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A command with the hub and the cache of this test, and none of the
/// caller's download settings.
fn with_hub(binary: impl AsRef<std::ffi::OsStr>, mock: &Mock, cache: &Path) -> Command {
    let mut c = Command::new(binary);
    for var in
        ["HF_TOKEN", "MODEL_ENDPOINT", "LLAMA_ARG_MODEL", "LLAMA_MODEL", "LLAMA_ARG_HF_REPO", "LLAMA_ARG_OFFLINE"]
    {
        c.env_remove(var);
    }
    c.env("HF_ENDPOINT", &mock.base).env("LLAMA_CACHE", cache).env_remove("RUST_LOG").stdin(Stdio::null());
    c
}

#[test]
fn llama_server_dash_hf_downloads_then_serves() {
    const SECRET: &str = "hf_server_secret_0123456789abcdefghijklmn";
    let mock = Mock::start(&[("u/smol", &[NAME])], Some(SECRET));
    let cache = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("stderr.log");
    let port = free_port();
    let child = with_hub(env!("CARGO_BIN_EXE_llama-server"), &mock, cache.path())
        .args(["-hf", "u/smol:q4_1", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", "512", "-np", "1", "-t", "2", "-tb", "2"])
        .env("HF_TOKEN", SECRET)
        .env("RUST_LOG", "debug,llama_cpp=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = Instant::now();
    loop {
        if let Ok(r) = http::send(addr, &HttpRequest::get("/health"), Duration::from_secs(5))
            && r.status() == 200
        {
            break;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("llama-server exited with {status}:\n{}", log());
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not healthy in time:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let expected = cache.path().join("models--u--smol/snapshots").join(COMMIT).join(NAME);
    let props = http::send(addr, &HttpRequest::get("/props"), Duration::from_secs(30)).unwrap().json().unwrap();
    assert_eq!(props["model_path"], expected.display().to_string());
    let body = json!({"prompt": "The capital of France is", "n_predict": 4, "temperature": 0});
    let r = http::send(addr, &HttpRequest::post_json("/completion", &body), Duration::from_secs(60)).unwrap();
    assert_eq!(r.status(), 200, "{}", r.describe());
    let completion = r.json().unwrap();
    assert!(completion["content"].as_str().is_some_and(|c| !c.is_empty()), "{completion}");
    assert!(mock.seen().iter().all(|s| s.auth.as_deref() == Some(&format!("Bearer {SECRET}"))));
    drop(server);
    let log = log();
    assert!(!log.contains(SECRET), "the token is in the log:\n{log}");
    assert!(log.contains("sha256") && log.contains("verified"), "{log}");

    // --cache-list sees it; offline with a model that is not cached is one line, exit 1.
    let out = with_hub(env!("CARGO_BIN_EXE_llama-server"), &mock, cache.path()).arg("--cache-list").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("number of models in cache: 1") && text.contains("   1. u/smol:Q4_1"), "{text}");
    let out = with_hub(env!("CARGO_BIN_EXE_llama-server"), &mock, cache.path())
        .args(["-hf", "u/other", "--offline", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("llama-server: error: u/other is not in the cache"), "{err}");
}

#[test]
fn llama_pull_prints_the_path_and_generate_takes_dash_hf() {
    let mock = Mock::start(&[("u/smol", &[NAME])], None);
    let cache = tempfile::tempdir().unwrap();
    let llama = llama_e2e::paths::cli_binary();
    let out = with_hub(&llama, &mock, cache.path()).args(["pull", "u/smol:Q4_1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = cache.path().join("models--u--smol/snapshots").join(COMMIT).join(NAME);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", expected.display()));
    assert!(out.stderr.is_empty(), "no progress bar off a terminal: {}", String::from_utf8_lossy(&out.stderr));

    let before = mock.seen().len();
    let out = with_hub(&llama, &mock, cache.path())
        .args(["generate", "-hf", "u/smol:q4_1", "--offline", "-n", "4", "-t", "1", "-c", "256", "--temp", "0"])
        .arg("The capital of France is")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
    assert_eq!(mock.seen().len(), before, "--offline touched the network");

    let out = with_hub(&llama, &mock, cache.path()).args(["pull", "--offline", "u/other"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: u/other is not in the cache"), "{err}");
}
