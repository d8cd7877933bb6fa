//! Model downloads: `-hf <user>/<model>[:quant]` from the Hugging Face hub,
//! `-mu URL` from anywhere, into a local cache, as llama.cpp does them.
//!
//! ```no_run
//! use llama_server::hub::{self, Options, RepoSpec, Source};
//!
//! let source = Source::Hub { repo: RepoSpec::parse("ggml-org/SmolLM2-135M-Instruct-GGUF:Q8_0")?, file: None };
//! let path = hub::resolve_blocking(&source, &Options::from_env()?)?;
//! println!("{}", path.display());
//! # Ok::<(), hub::HubError>(())
//! ```
//!
//! **Choosing the file.** The repository's files are listed with
//! `GET {endpoint}/api/models/{user}/{model}?blobs=true` (`siblings[].rfilename`,
//! each LFS file's `lfs.sha256` and `lfs.size`, the commit in `sha`). `-hff
//! FILE` names the file; otherwise the first GGUF model file (not `mmproj`,
//! `imatrix` or a speculative-decoding sidecar) whose path contains the quant
//! tag followed by `.` or `-`, case-insensitively: the tag given after `:`,
//! else `Q4_K_M`, then `Q8_0`, then (no tag given) the first model file. Of a
//! split model (`-00001-of-00003.gguf`) only the first part is picked, and
//! every part is downloaded. This is llama.cpp's `find_best_model`, with the
//! tag matched as text rather than as a regular expression.
//!
//! **The cache** is the Hugging Face hub's layout, shared with llama.cpp and
//! `huggingface_hub`: `models--{user}--{model}/blobs/{sha256}` holds the
//! bytes, `snapshots/{commit}/{file}` links to them, `refs/main` names the
//! commit. Its directory is `LLAMA_CACHE`, else `HF_HUB_CACHE`,
//! `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
//! `~/.cache/huggingface/hub` (llama.cpp's order). `-mu URL` files go flat
//! into llama.cpp's own cache directory (`LLAMA_CACHE`, else
//! `$XDG_CACHE_HOME/llama.cpp`, else `~/.cache/llama.cpp`) under the URL's
//! file name, or to `-m PATH` when given.
//!
//! **A download** goes to `{blob}.part` (locked, so that two processes do not
//! write it at once), resumes with an HTTP `Range` request after a cut (up to
//! [`Options::attempts`] tries per run; a later run resumes too), checks the
//! size and sha256 the hub announced (or an `ETag`/`X-Linked-Etag` that is a
//! sha256), checks the result with [`llama_core::gguf::validate`], and only
//! then is renamed into place: the cache never holds a partial or corrupt
//! file under its final name. A file that fails a check is deleted. Bodies
//! are streamed to disk; only the file listing is held in memory (at most
//! [`MAX_LISTING_BYTES`]). `HF_TOKEN` (or `--hf-token`) is sent as
//! `Authorization: Bearer`, to the hub only (never across a redirect to
//! another host), and is never logged.
//!
//! **Offline** ([`Options::offline`]): only the cache is read. Online, a
//! listing that fails (no network, hub down) falls back to the cache too,
//! with a warning, as llama.cpp does.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The quant tags tried, in order, when `-hf` names none.
pub const DEFAULT_TAGS: [&str; 2] = ["Q4_K_M", "Q8_0"];
/// Largest file listing read from the hub's API (real ones are kilobytes).
pub const MAX_LISTING_BYTES: usize = 32 << 20;
/// Longest repository id accepted (llama.cpp's limit).
pub const MAX_REPO_ID_LEN: usize = 256;

/// Why a model could not be downloaded or found in the cache. Messages are
/// one line, name the repository, file or URL, and never hold the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// `-hf` is not `<user>/<model>[:quant]`.
    #[error(
        "invalid Hugging Face repository {0:?}: expected <user>/<model>[:quant], e.g. ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"
    )]
    BadRepo(String),
    /// The hub listed a file name that is not a plain relative path (it
    /// would land outside the cache), or `-hff` / a URL names no usable file.
    #[error("refusing the file name {0:?}: not a relative path inside the repository")]
    BadFileName(String),
    /// The endpoint (`HF_ENDPOINT`) or `-mu` is not an http(s) URL.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token holds characters an HTTP header cannot carry.
    #[error("the Hugging Face token (HF_TOKEN or --hf-token) is not a valid header value")]
    BadToken,
    /// No cache directory: neither `LLAMA_CACHE` nor a home directory.
    #[error("no cache directory for downloads: set LLAMA_CACHE (or HOME)")]
    NoCacheDir,
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}{hint}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// What it probably means (may be empty).
        hint: &'static str,
    },
    /// The request failed: connection, timeout, a cut that retries could not
    /// get past.
    #[error("GET {url}: {reason}")]
    Network {
        /// The URL.
        url: String,
        /// The cause, with its chain.
        reason: String,
    },
    /// The hub's answer is not what its API documents.
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The repository has no GGUF model file for the tag.
    #[error("no GGUF model file{} in {repo} (GGUF files there: {})", tag.as_ref().map(|t| format!(" for quant {t}")).unwrap_or_default(), list(available))]
    NoModelFile {
        /// The repository.
        repo: String,
        /// The quant tag asked for, if any.
        tag: Option<String>,
        /// The `.gguf` files the repository has.
        available: Vec<String>,
    },
    /// `-hff` names a file the repository does not have.
    #[error("file {file:?} not found in {repo} (GGUF files there: {})", list(available))]
    FileNotInRepo {
        /// The repository.
        repo: String,
        /// The file asked for.
        file: String,
        /// The `.gguf` files the repository has.
        available: Vec<String>,
    },
    /// Offline, and the cache does not have it.
    #[error("{what} is not in the cache {} (offline mode: nothing is downloaded)", cache.display())]
    NotCached {
        /// The repository (with its tag or file) or URL.
        what: String,
        /// The cache directory looked in.
        cache: PathBuf,
    },
    /// The bytes received are not the ones the hub announced; the file was deleted.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the download was deleted")]
    Checksum {
        /// The file (repository path or URL).
        file: String,
        /// The announced sha256.
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
    },
    /// More or fewer bytes than announced; the file was deleted.
    #[error("size mismatch for {file}: expected {expected} bytes, got {actual}; the download was deleted")]
    Size {
        /// The file (repository path or URL).
        file: String,
        /// The announced size.
        expected: u64,
        /// What arrived (or was about to).
        actual: u64,
    },
    /// A file-system operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error (in the message, not a `source()`: errors here are one line).
        error: io::Error,
    },
    /// The downloaded file is not a GGUF model that llama.cpp can be given; it was deleted.
    #[error("{file} is not a valid GGUF file ({error}); the download was deleted")]
    Invalid {
        /// The file (repository path or URL).
        file: String,
        /// What [`llama_core::gguf::validate`] found.
        error: llama_core::gguf::GgufError,
    },
}

fn list(files: &[String]) -> String {
    if files.is_empty() { "none".to_string() } else { files.join(", ") }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HubError + '_ {
    move |error| HubError::Io { path: path.to_path_buf(), error }
}

/// `<user>/<model>[:quant]`, as `-hf` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// `<user>/<model>`.
    pub repo: String,
    /// The quant tag after `:` (matched case-insensitively), if any.
    pub tag: Option<String>,
}

impl RepoSpec {
    /// Parse `<user>/<model>[:quant]`. The repository id follows the hub's
    /// rules (letters, digits, `_`, and `-` `.` between them; one `/`).
    ///
    /// # Errors
    /// [`HubError::BadRepo`].
    pub fn parse(spec: &str) -> Result<RepoSpec, HubError> {
        let bad = || HubError::BadRepo(spec.to_string());
        // As llama.cpp: the tag is after the last ':'; the repo before the first.
        let mut parts = spec.split(':');
        let repo = parts.next().unwrap_or_default();
        let tag = spec.contains(':').then(|| spec.rsplit(':').next().unwrap_or_default());
        if !is_valid_repo_id(repo) {
            return Err(bad());
        }
        let tag = match tag {
            None | Some("") => None,
            // Tags are words such as Q4_K_M, IQ4_XS, BF16 or UD-Q4_K_XL.
            Some(t) if t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) => {
                Some(t.to_string())
            }
            Some(_) => return Err(bad()),
        };
        Ok(RepoSpec { repo: repo.to_string(), tag })
    }

    /// The cache folder of the repository: `models--{user}--{model}`.
    fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl FromStr for RepoSpec {
    type Err = HubError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoSpec::parse(s)
    }
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// llama.cpp's `is_valid_repo_id`: `[A-Za-z0-9_]` always, `/.-` only between
/// them, exactly one `/`, at most [`MAX_REPO_ID_LEN`] bytes.
fn is_valid_repo_id(id: &str) -> bool {
    if id.is_empty() || id.len() > MAX_REPO_ID_LEN {
        return false;
    }
    let mut slashes = 0;
    let mut after_special = true;
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            after_special = false;
        } else if matches!(c, '/' | '.' | '-') {
            if after_special {
                return false;
            }
            slashes += usize::from(c == '/');
            after_special = true;
        } else {
            return false;
        }
    }
    !after_special && slashes == 1
}

/// A path inside a repository that is safe to join under the cache: `/`
/// separated, no empty, `.` or `..` component, no backslash or NUL.
fn is_valid_repo_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 4096
        && !path.contains(['\\', '\0'])
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Hugging Face repository (`-hf`), and the file in it (`-hff`) if named.
    Hub {
        /// The repository and quant tag.
        repo: RepoSpec,
        /// The file's path in the repository; overrides the tag.
        file: Option<String>,
    },
    /// A plain URL (`-mu`), saved to `path` (`-m`) if given, else into the cache.
    Url {
        /// The URL.
        url: String,
        /// Where to save it.
        path: Option<PathBuf>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Hub { repo, file: Some(file) } => write!(f, "{}/{file}", repo.repo),
            Source::Hub { repo, file: None } => write!(f, "{repo}"),
            Source::Url { url, .. } => f.write_str(url),
        }
    }
}

/// A Hugging Face access token. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token; `None` for an empty or blank string.
    pub fn new(token: impl Into<String>) -> Option<Token> {
        let token = token.into().trim().to_string();
        (!token.is_empty()).then_some(Token(token))
    }

    fn header(&self) -> Result<HeaderValue, HubError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| HubError::BadToken)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where and how to download.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hub, without a trailing `/` (`MODEL_ENDPOINT`, else `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The hub cache (`models--*` folders).
    pub cache_dir: PathBuf,
    /// Where `-mu` files go when `-m` does not say.
    pub url_cache_dir: PathBuf,
    /// Sent as `Authorization: Bearer` (`HF_TOKEN`).
    pub token: Option<Token>,
    /// Use only the cache.
    pub offline: bool,
    /// A progress bar on stderr when it is a terminal (never otherwise).
    pub progress: bool,
    /// Connecting to a server.
    pub connect_timeout: Duration,
    /// The whole listing request.
    pub api_timeout: Duration,
    /// The longest wait for the next bytes of a download.
    pub read_timeout: Duration,
    /// Tries per file in one run (a cut connection resumes where it stopped).
    pub attempts: u32,
    /// Wait before the second try; doubled for each next one.
    pub retry_delay: Duration,
}

/// An environment variable, `None` when unset or empty.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn home_dir() -> Option<PathBuf> {
    env_path(if cfg!(windows) { "USERPROFILE" } else { "HOME" })
}

impl Options {
    /// Options with `endpoint` and the caches under `cache_dir` (both caches
    /// in the same directory, as with `LLAMA_CACHE`), no token, online, a
    /// progress bar on a terminal, and the default timeouts: 30 s to
    /// connect, 60 s for the listing, 60 s without bytes; 3 tries.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Options {
        let cache_dir = cache_dir.into();
        Options {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            url_cache_dir: cache_dir.clone(),
            cache_dir,
            token: None,
            offline: false,
            progress: true,
            connect_timeout: Duration::from_secs(30),
            api_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            attempts: 3,
            retry_delay: Duration::from_secs(1),
        }
    }

    /// Options from the environment, as llama.cpp reads it: `MODEL_ENDPOINT`
    /// or `HF_ENDPOINT`, `HF_TOKEN`, and the cache directories of the
    /// [module documentation](self).
    ///
    /// # Errors
    /// [`HubError::NoCacheDir`]: no `LLAMA_CACHE` and no home directory.
    pub fn from_env() -> Result<Options, HubError> {
        let endpoint = std::env::var("MODEL_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let home = home_dir();
        let cache_dir = env_path("LLAMA_CACHE")
            .or_else(|| env_path("HF_HUB_CACHE"))
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| env_path("HF_HOME").map(|p| p.join("hub")))
            .or_else(|| env_path("XDG_CACHE_HOME").map(|p| p.join("huggingface").join("hub")))
            .or_else(|| home.as_ref().map(|h| h.join(".cache").join("huggingface").join("hub")))
            .ok_or(HubError::NoCacheDir)?;
        let url_cache_dir = env_path("LLAMA_CACHE")
            .or_else(|| {
                if cfg!(target_os = "macos") {
                    home.as_ref().map(|h| h.join("Library").join("Caches").join("llama.cpp"))
                } else if cfg!(windows) {
                    env_path("LOCALAPPDATA").map(|p| p.join("llama.cpp"))
                } else {
                    env_path("XDG_CACHE_HOME")
                        .map(|p| p.join("llama.cpp"))
                        .or_else(|| home.as_ref().map(|h| h.join(".cache").join("llama.cpp")))
                }
            })
            .ok_or(HubError::NoCacheDir)?;
        let mut options = Options::new(endpoint, cache_dir);
        options.url_cache_dir = url_cache_dir;
        options.token = std::env::var("HF_TOKEN").ok().and_then(Token::new);
        Ok(options)
    }

    fn client(&self) -> Result<reqwest::Client, HubError> {
        reqwest::Client::builder()
            .user_agent(concat!("llama.rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .build()
            .map_err(|e| HubError::Network { url: self.endpoint.clone(), reason: chain(&e) })
    }

    fn endpoint_url(&self) -> Result<Url, HubError> {
        http_url(&self.endpoint)
    }
}

fn http_url(text: &str) -> Result<Url, HubError> {
    let url = Url::parse(text).map_err(|e| HubError::BadUrl { url: text.to_string(), reason: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(HubError::BadUrl { url: text.to_string(), reason: "not an http(s) URL".into() });
    }
    Ok(url)
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Download `source` unless the cache has it, and return the local path of
/// the model file (of a split model, its first part).
///
/// # Cancel safety
///
/// Dropping the future stops the download; what arrived stays in the
/// `.part` file, and the next call resumes it.
///
/// # Errors
/// [`HubError`]: a bad repository or URL, the hub's refusal (401/403 for a
/// gated repository without a token, 404), no matching file, a network
/// failure that retries did not get past, a checksum, size or GGUF check
/// that failed (the file is deleted), an I/O error in the cache, or, offline,
/// a file the cache does not have.
pub async fn resolve(source: &Source, options: &Options) -> Result<PathBuf, HubError> {
    match source {
        Source::Hub { repo, file } => resolve_hub(repo, file.as_deref(), options).await,
        Source::Url { url, path } => resolve_url(url, path.as_deref(), options).await,
    }
}

/// [`resolve`] on a tokio runtime of its own, for callers without one. Do
/// not call it from inside a tokio runtime (tokio panics); use [`resolve`].
///
/// # Errors
/// As [`resolve`]; [`HubError::Io`] if the runtime cannot start.
pub fn resolve_blocking(source: &Source, options: &Options) -> Result<PathBuf, HubError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| HubError::Io { path: PathBuf::from("(tokio runtime)"), error })?;
    runtime.block_on(resolve(source, options))
}

/// The models in the hub cache, as `user/model:TAG` (llama.cpp's
/// `--cache-list`): the first part of each GGUF model file with a quant tag,
/// once per repository and tag, sorted.
pub fn cached_models(cache_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(cache_dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(repo) = name.to_str().and_then(|n| n.strip_prefix("models--")).map(|r| r.replace("--", "/")) else {
            continue;
        };
        if !is_valid_repo_id(&repo) {
            continue;
        }
        let Some(snapshot) = cached_snapshot(&entry.path()) else { continue };
        for file in snapshot_files(&snapshot) {
            let split = SplitInfo::of(&file);
            if split.index == 1 && !split.tag.is_empty() && is_model_file(&file) {
                out.push(format!("{repo}:{}", split.tag));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---- choosing the file (llama.cpp's download.cpp)

/// A split GGUF file's parts: `{prefix}-{index:05}-of-{count:05}.gguf`;
/// `index` = `count` = 1 for a file that is not split.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SplitInfo {
    /// The path without `.gguf` and the split suffix.
    prefix: String,
    /// The quant tag at the end of the prefix (after `-` or `.`), upper case; empty if none.
    tag: String,
    index: u32,
    count: u32,
}

impl SplitInfo {
    /// llama.cpp's `get_gguf_split_info`.
    fn of(path: &str) -> SplitInfo {
        let Some(mut prefix) = path.strip_suffix(".gguf") else {
            return SplitInfo { prefix: String::new(), tag: String::new(), index: 0, count: 0 };
        };
        let (mut index, mut count) = (1, 1);
        // `-NNNNN-of-NNNNN` at the end, after at least one character.
        if prefix.len() > 15 && prefix.is_char_boundary(prefix.len() - 15) {
            let (head, tail) = prefix.split_at(prefix.len() - 15);
            let t = tail.as_bytes();
            let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
            if t[0] == b'-' && digits(1..6) && tail[6..10].eq_ignore_ascii_case("-of-") && digits(10..15) {
                index = tail[1..6].parse().unwrap_or(0);
                count = tail[10..15].parse().unwrap_or(0);
                prefix = head;
            }
        }
        let run = prefix.len() - prefix.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len();
        let before = prefix[..prefix.len() - run].chars().next_back();
        let tag = if run > 0 && matches!(before, Some('-' | '.')) {
            prefix[prefix.len() - run..].to_ascii_uppercase()
        } else {
            String::new()
        };
        SplitInfo { prefix: prefix.to_string(), tag, index, count }
    }
}

/// A GGUF file that is a model: not a projector, an importance matrix or a
/// speculative-decoding sidecar (llama.cpp's `gguf_filename_is_model`).
fn is_model_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.ends_with(".gguf")
        && !["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"].iter().any(|k| name.contains(k))
}

/// `path` holds `tag` followed by `.` or `-`, ignoring case.
fn has_tag(path: &str, tag: &str) -> bool {
    let (path, tag) = (path.to_ascii_lowercase(), tag.to_ascii_lowercase());
    path.match_indices(&tag).any(|(i, _)| matches!(path.as_bytes().get(i + tag.len()), Some(b'.' | b'-')))
}

/// llama.cpp's `find_best_model`: the first model file with the tag (the
/// given one, else [`DEFAULT_TAGS`] in order), the first part of a split
/// one; with no tag given, else the first model file.
fn pick_model<'a>(files: &'a [String], tag: Option<&str>) -> Option<&'a str> {
    let first_part = |f: &&String| {
        let s = SplitInfo::of(f);
        s.count <= 1 || s.index == 1
    };
    let tags: Vec<&str> = match tag {
        Some(t) => vec![t],
        None => DEFAULT_TAGS.to_vec(),
    };
    for t in tags {
        if let Some(f) = files.iter().filter(|f| is_model_file(f) && has_tag(f, t)).find(first_part) {
            return Some(f);
        }
    }
    if tag.is_none() {
        return files.iter().filter(|f| is_model_file(f)).find(first_part).map(String::as_str);
    }
    None
}

/// Every part of `primary`'s split model, in the listing's order (just
/// `primary` when it is not split).
fn split_parts<'a>(files: &'a [String], primary: &'a str) -> Vec<&'a str> {
    let split = SplitInfo::of(primary);
    if split.count <= 1 {
        return vec![primary];
    }
    let mut parts: Vec<&str> = files
        .iter()
        .filter(|f| {
            let s = SplitInfo::of(f);
            s.count == split.count && s.prefix == split.prefix
        })
        .map(String::as_str)
        .collect();
    parts.sort_by_key(|f| SplitInfo::of(f).index);
    parts
}

fn gguf_files(files: &[String]) -> Vec<String> {
    files.iter().filter(|f| f.ends_with(".gguf")).cloned().collect()
}

/// The file `-hff` names, or the one the tag picks.
fn choose(repo: &RepoSpec, file: Option<&str>, files: &[String]) -> Result<String, HubError> {
    match file {
        Some(file) => files.iter().find(|f| *f == file).cloned().ok_or_else(|| HubError::FileNotInRepo {
            repo: repo.repo.clone(),
            file: file.to_string(),
            available: gguf_files(files),
        }),
        None => pick_model(files, repo.tag.as_deref()).map(str::to_string).ok_or_else(|| HubError::NoModelFile {
            repo: repo.repo.clone(),
            tag: repo.tag.clone(),
            available: gguf_files(files),
        }),
    }
}

// ---- the cache

/// The snapshot `refs/main` names (else the first valid ref), if it exists.
fn cached_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let refs = repo_dir.join("refs");
    let read = |p: &Path| fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|c| is_commit(c));
    let commit = read(&refs.join("main")).or_else(|| {
        let mut names: Vec<PathBuf> = fs::read_dir(&refs).ok()?.flatten().map(|e| e.path()).collect();
        names.sort();
        names.iter().find_map(|p| read(p))
    })?;
    let snapshot = repo_dir.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// The files under a snapshot, as repository paths (`/`-separated), sorted.
fn snapshot_files(snapshot: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match entry.file_type() {
                Ok(t) if t.is_dir() && depth < 16 => walk(&entry.path(), &path, depth + 1, out),
                Ok(t) if t.is_file() || t.is_symlink() => out.push(path),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(snapshot, "", 0, &mut out);
    out.sort();
    out
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_commit(s: &str) -> bool {
    is_hex(s, 40)
}

/// `repo` from the cache alone.
fn from_cache(repo: &RepoSpec, file: Option<&str>, options: &Options) -> Result<PathBuf, HubError> {
    let what = || Source::Hub { repo: repo.clone(), file: file.map(str::to_string) }.to_string();
    let not_cached = || HubError::NotCached { what: what(), cache: options.cache_dir.clone() };
    let snapshot = cached_snapshot(&options.cache_dir.join(repo.folder())).ok_or_else(not_cached)?;
    let files = snapshot_files(&snapshot);
    let chosen = choose(repo, file, &files).map_err(|_| not_cached())?;
    // Every part must be there, and a link must point at a blob that is.
    let parts = split_parts(&files, &chosen);
    if parts.len() < SplitInfo::of(&chosen).count as usize || parts.iter().any(|p| !snapshot.join(p).is_file()) {
        return Err(not_cached());
    }
    Ok(snapshot.join(chosen))
}

/// Write `text` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, text: &str) -> Result<(), HubError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Put the blob at `link` in the snapshot: a relative symlink where the file
/// system has them, else the blob itself moves there (llama.cpp's
/// "degraded mode").
fn link_blob(blob: &Path, link: &Path, depth: usize) -> Result<(), HubError> {
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    #[cfg(unix)]
    {
        // snapshots/{commit}/{dirs...}/file → ../../{../ per dir}blobs/{oid}
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        match std::os::unix::fs::symlink(&target, link) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && link.is_file() => return Ok(()),
            Err(e) => tracing::warn!("cannot link {} to its blob ({e}); moving the file there", link.display()),
        }
    }
    #[cfg(not(unix))]
    let _ = depth;
    fs::rename(blob, link).map_err(io_err(link))
}

// ---- the hub

/// One file of the listing.
#[derive(Debug, Clone)]
struct RepoFile {
    path: String,
    /// The blob name: the LFS sha256, else the git blob id.
    oid: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: Option<String>,
    size: Option<u64>,
}

fn auth(request: reqwest::RequestBuilder, options: &Options) -> Result<reqwest::RequestBuilder, HubError> {
    Ok(match &options.token {
        Some(token) => request.header(header::AUTHORIZATION, token.header()?),
        None => request,
    })
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (a gated or private repository: set HF_TOKEN, or pass --hf-token, with access to it)",
        404 => " (no such repository or file; a private repository needs HF_TOKEN)",
        429 => " (rate limited: try again later, or set HF_TOKEN)",
        _ => "",
    }
}

/// `GET /api/models/{repo}?blobs=true`: the commit and the files.
async fn list_repo(
    client: &reqwest::Client,
    repo: &RepoSpec,
    options: &Options,
) -> Result<(String, Vec<RepoFile>), HubError> {
    let mut url = options.endpoint_url()?;
    url.path_segments_mut()
        .map_err(|()| HubError::BadUrl { url: options.endpoint.clone(), reason: "cannot hold a path".into() })?
        .pop_if_empty()
        .extend(["api", "models"])
        .extend(repo.repo.split('/'));
    url.set_query(Some("blobs=true"));
    let shown = url.to_string();
    let request =
        auth(client.get(url).header(header::ACCEPT, "application/json"), options)?.timeout(options.api_timeout);
    let network = |e: reqwest::Error| HubError::Network { url: shown.clone(), reason: chain(&e.without_url()) };
    let mut response = request.send().await.map_err(network)?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(HubError::Status { url: shown, status: status.as_u16(), hint: status_hint(status) });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        if body.len() + chunk.len() > MAX_LISTING_BYTES {
            return Err(HubError::BadResponse {
                url: shown,
                reason: format!("the listing is larger than {MAX_LISTING_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    read_listing(&repo.repo, &body).map_err(|reason| HubError::BadResponse { url: shown, reason })
}

/// The commit and the files of a listing's JSON `body`: files whose name is
/// not a safe repository path are skipped, hashes that are not hex dropped.
///
/// # Errors
/// Why the body is not a listing.
fn read_listing(repo: &str, body: &[u8]) -> Result<(String, Vec<RepoFile>), String> {
    let info: ModelInfo = serde_json::from_slice(body).map_err(|e| format!("not the model JSON: {e}"))?;
    let commit = info.sha.filter(|c| is_commit(c)).ok_or_else(|| "no commit (`sha`)".to_string())?;
    let mut files = Vec::with_capacity(info.siblings.len());
    for s in info.siblings {
        if !is_valid_repo_path(&s.rfilename) {
            tracing::warn!("{repo}: skipping the file name {:?}", s.rfilename);
            continue;
        }
        let sha256 = s.lfs.as_ref().and_then(|l| l.sha256.clone()).filter(|h| is_hex(h, 64)).map(|h| h.to_lowercase());
        let git_oid = s.blob_id.filter(|h| is_hex(h, 40) || is_hex(h, 64)).map(|h| h.to_lowercase());
        let size = s.lfs.as_ref().and_then(|l| l.size).or(s.size);
        files.push(RepoFile { path: s.rfilename, oid: sha256.clone().or(git_oid), sha256, size });
    }
    Ok((commit, files))
}

/// The hub module's parsers of what the hub sends, for the fuzz targets
/// (`llama-core/fuzz/model`) and their corpus replay. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use reqwest::header::{HeaderMap, HeaderValue};

    /// One file of a listing: path, blob name, LFS sha256, size.
    pub type ListedFile = (String, Option<String>, Option<String>, Option<u64>);

    /// A listing's JSON body read as the download reads it: the commit and
    /// the files.
    ///
    /// # Errors
    /// Why the body is not a listing.
    pub fn read_listing(body: &[u8]) -> Result<(String, Vec<ListedFile>), String> {
        let (commit, files) = super::read_listing("fuzz/listing", body)?;
        Ok((commit, files.into_iter().map(|f| (f.path, f.oid, f.sha256, f.size)).collect()))
    }

    /// The sha256 the download expects from these `X-Linked-Etag` and `ETag`
    /// header values (a value that is not a valid header value is absent).
    pub fn sha256_from_headers(x_linked_etag: Option<&[u8]>, etag: Option<&[u8]>) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (name, value) in [("x-linked-etag", x_linked_etag), ("etag", etag)] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
                headers.insert(name, v);
            }
        }
        super::sha256_from_headers(&headers)
    }

    /// Whether `path` is a repository path that is safe to join under the cache.
    pub fn is_valid_repo_path(path: &str) -> bool {
        super::is_valid_repo_path(path)
    }
}

async fn resolve_hub(repo: &RepoSpec, file: Option<&str>, options: &Options) -> Result<PathBuf, HubError> {
    if let Some(f) = file
        && !is_valid_repo_path(f)
    {
        return Err(HubError::BadFileName(f.to_string()));
    }
    if options.offline {
        return from_cache(repo, file, options);
    }
    let client = options.client()?;
    let (commit, files) = match list_repo(&client, repo, options).await {
        Ok(listing) => listing,
        Err(e) => {
            // As llama.cpp: without the listing, what the cache has will do.
            return match from_cache(repo, file, options) {
                Ok(path) => {
                    tracing::warn!("cannot list {} ({e}); using the cached {}", repo.repo, path.display());
                    Ok(path)
                }
                Err(_) => Err(e),
            };
        }
    };
    let names: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let chosen = choose(repo, file, &names)?;
    let repo_dir = options.cache_dir.join(repo.folder());
    let snapshot = repo_dir.join("snapshots").join(&commit);
    for part in split_parts(&names, &chosen) {
        let Some(entry) = files.iter().find(|f| f.path == part) else { continue };
        fetch_repo_file(&client, repo, &commit, entry, &repo_dir, &snapshot, part == chosen, options).await?;
    }
    write_atomic(&repo_dir.join("refs").join("main"), &commit)?;
    Ok(snapshot.join(chosen))
}

/// Make `snapshots/{commit}/{file}` exist: linked to a blob already there,
/// or downloaded.
#[allow(clippy::too_many_arguments)]
async fn fetch_repo_file(
    client: &reqwest::Client,
    repo: &RepoSpec,
    commit: &str,
    file: &RepoFile,
    repo_dir: &Path,
    snapshot: &Path,
    validate: bool,
    options: &Options,
) -> Result<(), HubError> {
    let link = snapshot.join(&file.path);
    if link.is_file() {
        tracing::info!("using the cached {}", link.display());
        return Ok(());
    }
    let depth = file.path.matches('/').count();
    let blob = match &file.oid {
        Some(oid) => repo_dir.join("blobs").join(oid),
        None => link.clone(),
    };
    if !blob.is_file() {
        let mut url = options.endpoint_url()?;
        url.path_segments_mut()
            .map_err(|()| HubError::BadUrl { url: options.endpoint.clone(), reason: "cannot hold a path".into() })?
            .pop_if_empty()
            .extend(repo.repo.split('/'))
            .extend(["resolve", commit])
            .extend(file.path.split('/'));
        let expected = Expected { sha256: file.sha256.clone(), size: file.size, validate };
        download(client, url, &blob, &format!("{}/{}", repo.repo, file.path), &expected, options).await?;
    }
    if blob != link {
        link_blob(&blob, &link, depth)?;
    }
    Ok(())
}

async fn resolve_url(url: &str, path: Option<&Path>, options: &Options) -> Result<PathBuf, HubError> {
    let parsed = http_url(url)?;
    let dest = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let name = parsed.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
            if name.is_empty() || !is_valid_repo_path(name) {
                return Err(HubError::BadFileName(name.to_string()));
            }
            options.url_cache_dir.join(name)
        }
    };
    if dest.is_file() {
        tracing::info!("using the cached {}", dest.display());
        return Ok(dest);
    }
    if options.offline {
        return Err(HubError::NotCached { what: url.to_string(), cache: options.url_cache_dir.clone() });
    }
    let client = options.client()?;
    let expected = Expected { sha256: None, size: None, validate: true };
    download(&client, parsed, &dest, url, &expected, options).await?;
    Ok(dest)
}

// ---- one download

/// What the file must be.
#[derive(Debug)]
struct Expected {
    /// Lower-case hex.
    sha256: Option<String>,
    size: Option<u64>,
    /// Check it with [`llama_core::gguf::validate`] (the model file, or the
    /// first part of a split one).
    validate: bool,
}

/// A sha256 in `X-Linked-Etag` or `ETag` (the hub's LFS files have one).
fn sha256_from_headers(headers: &HeaderMap) -> Option<String> {
    ["x-linked-etag", "etag"].iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?.trim();
        let value = value.strip_prefix("W/").unwrap_or(value).trim_matches('"');
        is_hex(value, 64).then(|| value.to_ascii_lowercase())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `.part` file next to `dest`.
fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// The start of a `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// The sha256 of the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the partial file shrank"));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

fn progress_bar(options: &Options, name: &str) -> ProgressBar {
    if !options.progress || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let short = name.rsplit('/').next().unwrap_or(name);
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(format!("downloading {short}"))
}

/// How one try ended, when it did not fail for good.
enum Try {
    /// Every byte is in the `.part` file.
    Complete,
    /// Try again (resuming): why this one stopped.
    Again(String),
}

/// Download `url` to `dest` through `dest.part`: locked, resumed with
/// `Range`, checked, renamed.
async fn download(
    client: &reqwest::Client,
    url: Url,
    dest: &Path,
    name: &str,
    expected: &Expected,
    options: &Options,
) -> Result<(), HubError> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if dest.is_file() {
        return Ok(());
    }
    let part = part_path(dest);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&part).map_err(io_err(&part))?;
    lock(&file, &part).await?;
    if dest.is_file() {
        // Another process finished it while this one waited for the lock.
        return Ok(());
    }
    let shown = url.to_string();
    tracing::info!("downloading {shown} to {}", dest.display());
    let bar = progress_bar(options, name);
    let mut sha256_header = None;
    let mut last_error = String::new();
    let mut complete = false;
    for attempt in 0..options.attempts.max(1) {
        if attempt > 0 {
            let delay = options.retry_delay.saturating_mul(1 << (attempt - 1).min(6));
            tracing::warn!("{name}: {last_error}; resuming in {:.1} s", delay.as_secs_f64());
            tokio::time::sleep(delay).await;
        }
        match try_once(client, &url, &mut file, &part, name, expected, options, &bar, &mut sha256_header).await {
            Ok(Try::Complete) => {
                complete = true;
                break;
            }
            Ok(Try::Again(reason)) => last_error = reason,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    if !complete {
        let kept = file.metadata().map(|m| m.len()).unwrap_or(0);
        return Err(HubError::Network {
            url: shown,
            reason: format!(
                "{last_error} (after {} tries; the {kept} bytes received are kept in {} and the next run resumes there)",
                options.attempts.max(1),
                part.display()
            ),
        });
    }
    finish(file, &part, dest, name, expected, sha256_header)
}

/// Wait for the exclusive lock on the `.part` file (another process may be
/// downloading the same file).
async fn lock(file: &File, part: &Path) -> Result<(), HubError> {
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!("another process is downloading {}; waiting for it", part.display());
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // A file system without locks: go on unlocked, as llama.cpp does.
            Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
            Err(fs::TryLockError::Error(error)) => return Err(HubError::Io { path: part.to_path_buf(), error }),
        }
    }
}

/// One request: from where the `.part` file ends to the end of the file.
#[allow(clippy::too_many_arguments)]
async fn try_once(
    client: &reqwest::Client,
    url: &Url,
    file: &mut File,
    part: &Path,
    name: &str,
    expected: &Expected,
    options: &Options,
    bar: &ProgressBar,
    sha256_header: &mut Option<String>,
) -> Result<Try, HubError> {
    let mut have = file.metadata().map_err(io_err(part))?.len();
    if expected.size.is_some_and(|size| have > size) {
        file.set_len(0).map_err(io_err(part))?;
        have = 0;
    }
    if have > 0 && expected.size == Some(have) {
        return Ok(Try::Complete);
    }
    let mut request = auth(client.get(url.clone()), options)?;
    if have > 0 {
        request = request.header(header::RANGE, format!("bytes={have}-"));
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Ok(Try::Again(chain(&e.without_url()))),
    };
    let status = response.status();
    match status {
        StatusCode::PARTIAL_CONTENT if have > 0 && content_range_start(response.headers()) == Some(have) => {}
        StatusCode::OK => {
            if have > 0 {
                tracing::info!("{name}: the server does not resume; starting over");
            }
            file.set_len(0).map_err(io_err(part))?;
            have = 0;
        }
        // A range the server will not serve (or not where asked): start over.
        StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
            file.set_len(0).map_err(io_err(part))?;
            return Ok(Try::Again(format!("HTTP {status} for a resumed download; starting over")));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Ok(Try::Again(format!("HTTP {}", s.as_u16())));
        }
        s => return Err(HubError::Status { url: url.to_string(), status: s.as_u16(), hint: status_hint(s) }),
    }
    if let Some(h) = sha256_from_headers(response.headers()) {
        *sha256_header = Some(h);
    }
    let total = expected.size.or_else(|| response.content_length().map(|n| have + n));
    if let (Some(size), Some(n)) = (expected.size, response.content_length())
        && have + n != size
    {
        let _ = fs::remove_file(part);
        return Err(HubError::Size { file: name.to_string(), expected: size, actual: have + n });
    }
    if let Some(total) = total {
        bar.set_length(total);
    }
    bar.set_position(have);
    file.seek(SeekFrom::Start(have)).map_err(io_err(part))?;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                file.flush().map_err(io_err(part))?;
                return Ok(Try::Again(format!("interrupted after {have} bytes: {}", chain(&e.without_url()))));
            }
        };
        let after = have + chunk.len() as u64;
        if let Some(size) = expected.size
            && after > size
        {
            let _ = fs::remove_file(part);
            return Err(HubError::Size { file: name.to_string(), expected: size, actual: after });
        }
        file.write_all(&chunk).map_err(io_err(part))?;
        have = after;
        bar.set_position(have);
    }
    Ok(Try::Complete)
}

/// Check the complete `.part` file (size, sha256, GGUF header), then rename it to `dest`.
fn finish(
    mut file: File,
    part: &Path,
    dest: &Path,
    name: &str,
    expected: &Expected,
    sha256_header: Option<String>,
) -> Result<(), HubError> {
    let fail = |e: HubError| {
        let _ = fs::remove_file(part);
        e
    };
    file.sync_all().map_err(io_err(part))?;
    let len = file.metadata().map_err(io_err(part))?.len();
    if let Some(size) = expected.size
        && len != size
    {
        return Err(fail(HubError::Size { file: name.to_string(), expected: size, actual: len }));
    }
    let actual = hex(&hash_prefix(&mut file, len).map_err(io_err(part))?.finalize());
    match expected.sha256.clone().or(sha256_header) {
        Some(want) if want != actual => {
            return Err(fail(HubError::Checksum { file: name.to_string(), expected: want, actual }));
        }
        Some(_) => tracing::info!("{name}: {len} bytes, sha256 {actual} verified"),
        None => tracing::info!("{name}: {len} bytes, sha256 {actual} (the server announced none to check)"),
    }
    if expected.validate
        && let Err(error) = llama_core::gguf::validate(part)
    {
        return Err(fail(HubError::Invalid { file: name.to_string(), error }));
    }
    fs::rename(part, dest).map_err(io_err(dest))?;
    // The lock goes with the handle, after the rename: a process waiting for
    // it then finds `dest` and stops.
    drop(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repo_specs() {
        let r = RepoSpec::parse("ggml-org/SmolLM2-135M-GGUF:q4_k_m").unwrap();
        assert_eq!((r.repo.as_str(), r.tag.as_deref()), ("ggml-org/SmolLM2-135M-GGUF", Some("q4_k_m")));
        assert_eq!(RepoSpec::parse("a/b").unwrap().tag, None);
        assert_eq!(RepoSpec::parse("a/b:").unwrap().tag, None);
        assert_eq!(r.to_string(), "ggml-org/SmolLM2-135M-GGUF:q4_k_m");
        for bad in ["", "a", "a/b/c", "/b", "a/", "a//b", "../b", "a/..", "a/b c", "a/.b", "a/b:Q4/x", "a\\b/c"] {
            assert!(matches!(RepoSpec::parse(bad), Err(HubError::BadRepo(_))), "{bad:?}");
        }
    }

    #[test]
    fn repo_paths_stay_inside() {
        for ok in ["a.gguf", "dir/a.gguf", "tinyllamas/stories260K.gguf"] {
            assert!(is_valid_repo_path(ok), "{ok}");
        }
        for bad in ["", "/a.gguf", "a/../b", "..", "./a", "a//b", "a\\b", "a/"] {
            assert!(!is_valid_repo_path(bad), "{bad}");
        }
    }

    #[test]
    fn split_info_as_llama_cpp() {
        let s = SplitInfo::of("Model-Q4_K_M-00001-of-00003.gguf");
        assert_eq!((s.prefix.as_str(), s.tag.as_str(), s.index, s.count), ("Model-Q4_K_M", "Q4_K_M", 1, 3));
        let s = SplitInfo::of("dir/model.q8_0.gguf");
        assert_eq!((s.tag.as_str(), s.index, s.count), ("Q8_0", 1, 1));
        assert_eq!(SplitInfo::of("dir/model").count, 0);
        assert_eq!(SplitInfo::of("x/Q4_0.gguf").tag, "");
    }

    #[test]
    fn the_quant_tag_picks_the_file() {
        let files = names(&[
            "README.md",
            "mmproj-Model-Q4_K_M.gguf",
            "Model-F16.gguf",
            "Model-Q8_0.gguf",
            "Model-Q4_K_M.gguf",
            "Model-Q4_K_S.gguf",
            "Model-IQ4_XS-00002-of-00002.gguf",
            "Model-IQ4_XS-00001-of-00002.gguf",
        ]);
        assert_eq!(pick_model(&files, None), Some("Model-Q4_K_M.gguf"));
        assert_eq!(pick_model(&files, Some("q4_k_s")), Some("Model-Q4_K_S.gguf"));
        assert_eq!(pick_model(&files, Some("Q8_0")), Some("Model-Q8_0.gguf"));
        // `Q4_K` is not followed by `.` or `-` in any name.
        assert_eq!(pick_model(&files, Some("Q4_K")), None);
        assert_eq!(pick_model(&files, Some("iq4_xs")), Some("Model-IQ4_XS-00001-of-00002.gguf"));
        assert_eq!(
            split_parts(&files, "Model-IQ4_XS-00001-of-00002.gguf"),
            ["Model-IQ4_XS-00001-of-00002.gguf", "Model-IQ4_XS-00002-of-00002.gguf"]
        );
        // No Q4_K_M: Q8_0; neither: the first model file.
        assert_eq!(pick_model(&names(&["a-F16.gguf", "a-Q8_0.gguf"]), None), Some("a-Q8_0.gguf"));
        assert_eq!(pick_model(&names(&["mmproj-f16.gguf", "a.imatrix.gguf", "a-F16.gguf"]), None), Some("a-F16.gguf"));
        assert_eq!(pick_model(&names(&["mmproj-f16.gguf", "notes.txt"]), None), None);
    }

    #[test]
    fn choose_reports_what_is_there() {
        let repo = RepoSpec::parse("u/m:Q2_K").unwrap();
        let files = names(&["m-Q4_K_M.gguf", "README.md"]);
        let e = choose(&repo, None, &files).unwrap_err().to_string();
        assert!(e.contains("for quant Q2_K in u/m") && e.contains("m-Q4_K_M.gguf") && !e.contains("README"), "{e}");
        let e = choose(&repo, Some("x.gguf"), &files).unwrap_err().to_string();
        assert!(e.contains("\"x.gguf\" not found in u/m"), "{e}");
        assert_eq!(choose(&repo, Some("README.md"), &files).unwrap(), "README.md");
    }

    #[test]
    fn headers_give_a_sha256_only_when_they_hold_one() {
        let sha = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert("etag", HeaderValue::from_static("\"0123\""));
        assert_eq!(sha256_from_headers(&h), None);
        h.insert("x-linked-etag", HeaderValue::from_str(&format!("W/\"{}\"", sha.to_uppercase())).unwrap());
        assert_eq!(sha256_from_headers(&h), Some(sha));
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let options = Options { token: Token::new("hf_secret"), ..Options::new(DEFAULT_ENDPOINT, "/tmp/c") };
        assert!(!format!("{options:?}").contains("hf_secret"));
        assert_eq!(Token::new("  "), None);
        assert!(matches!(Token::new("a\nb").unwrap().header(), Err(HubError::BadToken)));
    }

    #[test]
    fn the_cache_lists_and_resolves_offline() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("models--u--m");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snap = repo_dir.join("snapshots").join(commit);
        fs::create_dir_all(snap.join("sub")).unwrap();
        fs::write(snap.join("m-Q8_0.gguf"), b"x").unwrap();
        fs::write(snap.join("sub/m-Q4_K_M-00001-of-00002.gguf"), b"x").unwrap();
        fs::write(snap.join("mmproj-m-Q8_0.gguf"), b"x").unwrap();
        write_atomic(&repo_dir.join("refs/main"), commit).unwrap();
        // As llama.cpp: the first part of a split model lists it.
        assert_eq!(cached_models(dir.path()), ["u/m:Q4_K_M", "u/m:Q8_0"]);
        let options = Options { offline: true, ..Options::new(DEFAULT_ENDPOINT, dir.path()) };
        let q8 = RepoSpec::parse("u/m:Q8_0").unwrap();
        assert_eq!(from_cache(&q8, None, &options).unwrap(), snap.join("m-Q8_0.gguf"));
        // The default, Q4_K_M, is a split model that lacks its second part.
        let e = from_cache(&RepoSpec::parse("u/m").unwrap(), None, &options).unwrap_err();
        assert!(matches!(e, HubError::NotCached { .. }), "{e}");
        fs::write(snap.join("sub/m-Q4_K_M-00002-of-00002.gguf"), b"x").unwrap();
        let p = from_cache(&RepoSpec::parse("u/m:q4_k_m").unwrap(), None, &options).unwrap();
        assert_eq!(p, snap.join("sub/m-Q4_K_M-00001-of-00002.gguf"));
        assert!(from_cache(&RepoSpec::parse("u/other").unwrap(), None, &options).is_err());
    }
}
