//! `llama-server`: a local HTTP server that speaks the OpenAI API and
//! llama.cpp's own server API over [`llama_runtime`]'s engine.
//!
//! [`app`] builds the router (tested in-process with `tower::ServiceExt::oneshot`);
//! [`serve`] binds, loads the model beside the running server, and shuts
//! down gracefully on SIGINT/SIGTERM; [`run`] does the same on a small
//! tokio runtime of its own.
//!
//! ```no_run
//! // Flags as llama.cpp's llama-server takes them, multi-letter shorts included.
//! let args = llama_server::Args::try_parse_argv(["llama-server", "--port", "8080", "-np", "2"])?;
//! llama_server::run(args)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod auth;
mod blocking;
mod error;
mod extract;
mod flags;
pub mod hub;
mod ids;
mod listen;
mod logit_bias;
mod logprobs;
mod lora;
mod metrics;
mod native;
mod openai;
mod openapi;
mod prompt;
mod request;
mod sampling;
mod sse;
mod state;
mod submit;
mod timings;
mod tool_calls;

// Response bodies are `Serialize` structs whose fields are declared in
// alphabetical order, and whose f32 values are widened to f64: the bytes
// the server wrote when its bodies were `serde_json::json!` trees (sorted
// maps, every float an f64), which clients and the wire golden
// (tests/wire/golden.txt) rely on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};

pub use args::{
    Args, ArgsError, BUILTIN_TEMPLATES, Cors, CorsOrigins, DEFAULT_MODEL, GpuLayers, LoadMode, MIN_SERVER_CTX_SEQ,
    OnOffAuto, Settings, TemplateChoice,
};
pub use auth::PUBLIC_PATHS;
pub use error::AppError;
pub use flags::{ExitAction, FLAGS, Flag, FlagClass, FlagParser, markdown_table};
pub use listen::HEADER_READ_TIMEOUT;
pub use logit_bias::{MAX_LOGIT_BIAS, MAX_LOGIT_BIAS_TEXT_BYTES};
pub use logprobs::MAX_TOP_LOGPROBS;
pub use native::MAX_RERANK_DOCUMENTS;
pub use openai::embeddings::MAX_EMBED_INPUTS;
pub use openapi::DOCUMENT as OPENAPI_DOCUMENT;
pub use request::RequestDefaults;
pub use request::{MAX_CHOICES, MAX_STOP, MAX_STOP_BYTES};
pub use sampling::MAX_GRAMMAR_BYTES;
pub use state::{AppState, LoadError, Phase, Ready};
/// Tool calling's output readers and grammar builder, for the fuzz targets
/// (`llama-core/fuzz/model`). Not a stable API.
#[doc(hidden)]
pub use tool_calls::fuzzing as tool_calls_fuzzing;

use crate::extract::BodyLimit;

/// Mounts every route and lists it in [`ROUTES`], from one table: a route
/// cannot be listed without being mounted, and a misspelt handler does not
/// compile.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path,)*) => {
        /// Every route: (method, path), in the order they are mounted. A
        /// test checks the table against the OpenAPI document.
        pub const ROUTES: &[(&str, &str)] = &[$((routes!(@name $method), $path),)*];

        /// The router with every route of [`ROUTES`], before the fallback
        /// and the middleware.
        fn routes() -> Router<AppState> {
            Router::new()$(.route($path, $method($handler)))*
        }
    };
    (@name get) => { "GET" };
    (@name post) => { "POST" };
}

routes! {
    get "/" => native::index,
    get "/health" => native::health,
    get "/v1/health" => native::health,
    get "/v1/models" => openai::models,
    get "/models" => openai::models,
    post "/v1/chat/completions" => openai::chat_completions,
    post "/chat/completions" => openai::chat_completions,
    post "/v1/completions" => openai::completions,
    post "/completion" => native::completion,
    post "/completions" => native::completion,
    post "/infill" => native::infill,
    post "/v1/embeddings" => openai::embeddings,
    post "/embedding" => native::embedding,
    post "/embeddings" => native::embedding,
    post "/reranking" => native::rerank,
    post "/rerank" => native::rerank,
    post "/v1/rerank" => native::rerank,
    post "/v1/reranking" => native::rerank,
    post "/tokenize" => native::tokenize,
    post "/detokenize" => native::detokenize,
    post "/apply-template" => native::apply_template,
    get "/props" => native::props,
    post "/props" => native::set_props,
    get "/slots" => native::slots,
    post "/slots/{id}" => native::slot_action,
    get "/lora-adapters" => lora::list,
    post "/lora-adapters" => lora::set,
    get "/metrics" => native::metrics,
    get "/openapi.json" => openapi::document,
}

async fn not_found() -> AppError {
    AppError::NotFound("File Not Found".into())
}

/// The router with every route and middleware (auth, Host check, CORS, body
/// limit, timeout, panic catching, JSON error shapes).
pub fn app(state: AppState) -> Router {
    with_middleware(routes().fallback(not_found), state)
}

/// Wrap `router` in the middleware stack, outermost last: panics → 500,
/// request logging, JSON error bodies, Host check, CORS, body limit,
/// timeout, API keys.
fn with_middleware(router: Router<AppState>, state: AppState) -> Router {
    let settings = state.settings().clone();
    let router = router
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(state.keys(), auth::require_api_key))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.timeout))
        .layer(axum::Extension(BodyLimit(settings.max_body)))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.max_body))
        .layer(middleware::from_fn_with_state(settings.max_body, refuse_oversized));
    let router = router.layer(cors_layer(&settings.cors));
    router
        .layer(middleware::from_fn_with_state(state.hosts(), auth::check_host))
        .layer(middleware::from_fn_with_state(settings.max_body, json_errors))
        // One line per request at info (method, path, status, latency; never
        // headers or bodies). 5xx details are logged where they arise.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            AppError::Internal("a request handler panicked".into()).into_response()
        }))
}

/// The CORS layer of `policy` (llama.cpp's semantics: with credentials, a
/// wildcard origin or header list is answered by reflecting the request's).
fn cors_layer(policy: &args::Cors) -> CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowMethods};
    let origin = match &policy.origins {
        args::CorsOrigins::Any if policy.credentials => AllowOrigin::mirror_request(),
        args::CorsOrigins::Any => AllowOrigin::any(),
        args::CorsOrigins::Localhost => AllowOrigin::predicate(|origin, _| is_local_origin(origin)),
        args::CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    let methods = AllowMethods::list(policy.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()));
    let headers = match &policy.headers {
        None if policy.credentials => AllowHeaders::mirror_request(),
        None => AllowHeaders::any(),
        Some(list) => AllowHeaders::list(list.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .allow_credentials(policy.credentials)
}

/// An `Origin` whose host is `localhost`, `127.0.0.1` or `[::1]`.
fn is_local_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    let Some((_, rest)) = origin.split_once("://") else { return false };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default(),
        None => rest.split(':').next().unwrap_or_default().to_owned(),
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// Bodies declared larger than this are refused without reading them.
const MAX_DRAIN_BYTES: u64 = 64 << 20;

/// A body whose `Content-Length` is over the limit gets 413 before any
/// handler runs. Up to [`MAX_DRAIN_BYTES`] of it is read and thrown away
/// first (for at most 10 s): answering while the client is still sending
/// makes the kernel reset the connection, and most clients then report a
/// broken pipe instead of the 413.
async fn refuse_oversized(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit as u64) else {
        return next.run(req).await;
    };
    if declared <= MAX_DRAIN_BYTES {
        let mut body = req.into_body().into_data_stream();
        let drain = async {
            use futures::StreamExt;
            while let Some(Ok(_)) = body.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }
    let mut response = AppError::PayloadTooLarge { limit }.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Give every error response the JSON error shape, including those made by
/// middleware and routing (413, 405, 408) that carry plain text or nothing.
async fn json_errors(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let mut replaced = AppError::from_status(status, max_body).into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !replaced.headers().contains_key(name) {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced
}

/// Install the log subscriber the `--log-*` flags ask for (stderr, and
/// `--log-file`; `-v`: debug, `--log-disable`: none; `RUST_LOG` overrides).
/// Does nothing if one is installed already.
pub fn init_logging(args: &Args) {
    args.init_logging();
}

/// Run the server until SIGINT/SIGTERM (or a failed model load).
///
/// With `-hf`/`-mu`, first downloads the model into the cache (or finds it
/// there; see [`hub`]). Then binds; `/health` answers 503 "Loading model" until the model,
/// loaded on a blocking thread, is ready. A connection that does not send a
/// complete request head within [`HEADER_READ_TIMEOUT`] (idle keep-alive
/// connections included) is closed. On a signal: stop accepting, let
/// in-flight requests finish for up to `--drain-timeout`, shut the engine
/// down, return `Ok`. A model that fails to load is an `Err`.
///
/// # Cancel safety
///
/// Dropping the future stops the server abruptly: open connections are
/// dropped (cancelling their generations) and the engine is left to stop
/// when its last handle goes; use a signal for a graceful stop.
///
/// # Errors
/// [`ServeError`]: bad flags, a missing model or one that cannot be
/// downloaded, a port that cannot be bound, a model that fails to load.
pub async fn serve(args: Args) -> Result<(), ServeError> {
    let mut settings = args.validate()?;
    settings.log_ignored_flags();
    // `-hf`/`-mu`: fetched (or found in the cache) before anything binds, as llama.cpp does.
    settings.download_model().await?;
    settings.check_model_file()?;
    let signals = ShutdownSignals::register();
    let addr = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!("listening on http://{local}");
    if !settings.api_keys.is_empty() {
        tracing::info!("API key authentication is on ({} key(s))", settings.api_keys.len());
    }

    let state = AppState::new(settings.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    let loader = state.clone();
    let load_stop = stop_tx.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let stats = loader.stats();
        let path = settings.model_path.clone();
        tracing::info!("loading model {}", path.display());
        let result = tokio::task::spawn_blocking(move || Ready::load(&settings, stats)).await;
        match result {
            Ok(Ok(ready)) => {
                tracing::info!(
                    "model loaded in {:.2} s: {} slot(s) of {} tokens; serving",
                    started.elapsed().as_secs_f64(),
                    ready.engine.config().n_seq_max,
                    ready.n_ctx_seq
                );
                loader.set_ready(ready);
            }
            Ok(Err(e)) => {
                loader.set_failed(format!("failed to load the model {}: {e:#}", path.display()));
                let _ = load_stop.send(true);
            }
            Err(e) => {
                loader.set_failed(format!("the model loader crashed: {e}"));
                let _ = load_stop.send(true);
            }
        }
    });

    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("shutdown requested: no new connections; finishing in-flight requests");
        let _ = stop_tx.send(true);
    });

    let drain = state.settings().drain_timeout;
    let mut graceful_rx = stop_rx.clone();
    let server = listen::serve_connections(listener, app(state.clone()), HEADER_READ_TIMEOUT, async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
    });
    let mut drain_rx = stop_rx;
    tokio::select! {
        () = server => {}
        _ = async {
            let _ = drain_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(drain).await;
        } => tracing::warn!("drain timeout of {} s passed; closing the remaining connections", drain.as_secs()),
    }

    match state.phase() {
        Phase::Ready(ready) => {
            ready.engine.shutdown(Duration::from_secs(2)).await;
            tracing::info!("stopped");
            Ok(())
        }
        Phase::Failed(message) => Err(ServeError::Load(message)),
        Phase::Loading => Ok(()),
    }
}

/// Why [`serve`] or [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A flag is invalid, or the model file is missing.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The tokio runtime could not start.
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// The model failed to load (the message names the file and the cause).
    #[error("{0}")]
    Load(String),
    /// `-hf`/`-mu`: the model could not be downloaded (or, offline, is not cached).
    #[error(transparent)]
    Download(#[from] hub::HubError),
}

/// SIGINT and SIGTERM handlers, registered when created (before the server
/// announces itself), so that a signal right after start is never lost.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let register = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot listen for {name}: {e}");
                    None
                }
            };
            ShutdownSignals {
                interrupt: register(SignalKind::interrupt(), "SIGINT"),
                terminate: register(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    async fn recv(self) {
        #[cfg(unix)]
        {
            async fn next(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(self.interrupt) => {},
                _ = next(self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Worker threads of the server's tokio runtime. HTTP handling is light; the
/// model's threads (ggml) do the heavy work and should not compete with a
/// runtime sized to every core.
pub const RUNTIME_WORKERS: usize = 2;

/// Set up logging, build a small multi-threaded tokio runtime
/// ([`RUNTIME_WORKERS`] workers, or `--threads-http`) and [`serve`] on it.
///
/// # Errors
/// [`ServeError`]: bad flags, a missing model, a port that cannot be bound,
/// a model that fails to load.
pub fn run(args: Args) -> Result<(), ServeError> {
    init_logging(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.http_workers(RUNTIME_WORKERS))
        .thread_name("llama-server-http")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(args));
    // A model still loading on a blocking thread must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_is_a_json_500_not_a_dead_process() {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let settings = Args::try_parse_argv(["llama-server", "-m", model]).unwrap().validate().unwrap();
        let router: Router<AppState> = Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
        let app = with_middleware(router, AppState::new(settings));
        let req = axum::http::Request::get("/boom").header(header::HOST, "localhost").body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["message"], "internal server error");
    }
}

/// Helpers for the unit tests of the response types.
#[cfg(test)]
pub(crate) mod test_support {
    use serde::Serialize;

    /// `value` serializes to the bytes a `json!` tree of it would: keys in
    /// alphabetical order at every level, floats as f64. (Going through
    /// `serde_json::Value` sorts the keys and widens f32 to f64.)
    #[track_caller]
    pub(crate) fn assert_wire_order<T: Serialize>(value: &T) {
        let direct = serde_json::to_string(value).expect("serializes");
        let via_value = serde_json::to_value(value).expect("serializes").to_string();
        assert_eq!(direct, via_value, "declare the fields in alphabetical order, f32 values as f64");
    }
}
