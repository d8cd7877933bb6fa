//! Shared state: the settings, and the model and engine once loaded.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use llama_core::{ChatMessage, ChatTemplate, Model, SamplingParams, TemplateSpec};
use llama_runtime::{CoreError, DynEngine, Engine, EngineConfig, Health, ModelFacade, StartError};

use crate::args::{Settings, TemplateChoice};
use crate::auth::{ApiKeys, HostPolicy};
use crate::error::AppError;
use crate::ids::unix_now;
use crate::metrics::ServerStats;
use crate::request::RequestDefaults;

/// Where the server is in its life.
#[derive(Debug, Clone)]
pub enum Phase {
    /// The model is being loaded; inference endpoints answer 503.
    Loading,
    /// Serving.
    Ready(Arc<Ready>),
    /// Loading failed; the server is about to exit.
    Failed(String),
}

/// The engine (with its model) and what the handlers derive from it.
pub struct Ready {
    /// The engine; its [`DynEngine::model`] is the model facade (tokenize,
    /// detokenize, token text, facts).
    pub engine: Arc<dyn DynEngine>,
    /// The chat template in use.
    pub template: ChatTemplate,
    /// Its source (for `/props`).
    pub template_source: String,
    /// Server-wide timing measurements.
    pub stats: Arc<ServerStats>,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Default sampling parameters (llama.cpp's, overridden by flags).
    pub defaults: SamplingParams,
    /// Server cap on generated tokens.
    pub n_predict: Option<u32>,
    /// Context per sequence (one slot's), llama.cpp's `n_ctx_seq`.
    pub n_ctx_seq: u32,
    /// Text of the BOS token (empty if none).
    pub bos_text: String,
    /// Text of the EOS token (empty if none).
    pub eos_text: String,
    /// What a request does when it does not say (the server's flags).
    pub request_defaults: RequestDefaults,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("model", &self.engine.model().info().path)
            .field("n_ctx_seq", &self.n_ctx_seq)
            .finish_non_exhaustive()
    }
}

/// Why the model could not be loaded or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The model file is missing or llama.cpp refused it.
    #[error(transparent)]
    Model(#[from] llama_core::Error),
    /// The chat template (from the flags or the model) does not compile.
    #[error("chat template")]
    Template(#[source] CoreError),
    /// The engine could not start (context creation failed).
    #[error(transparent)]
    Engine(#[from] StartError),
    /// `--slot-save-path` is not a directory, or the key of its slot files
    /// cannot be made or read.
    #[error("--slot-save-path {}: {source}", path.display())]
    SlotSavePath {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Ready {
    /// Load the model and start the engine (blocking: call it on a blocking thread).
    ///
    /// With `--slot-save-path`, the engine signs and verifies slot states
    /// with the key of that directory (created there on first use; see
    /// `native/slot_files.rs`), so saved slots survive a restart.
    ///
    /// # Errors
    /// [`LoadError`] when the file is missing or invalid, the template does
    /// not compile, the context cannot be created, or the slot directory's
    /// key cannot be made or read.
    pub fn load(settings: &Settings, stats: Arc<ServerStats>) -> Result<Ready, LoadError> {
        let state_key = match &settings.slot_save_path {
            Some(dir) => Some(
                crate::native::slot_state_key(dir)
                    .map_err(|source| LoadError::SlotSavePath { path: dir.clone(), source })?,
            ),
            None => None,
        };
        let model = Arc::new(Model::load(&settings.model_path, &settings.model_params())?);
        let config = EngineConfig { state_key, ..settings.engine_config(model.n_ctx_train()) };
        let engine = Engine::start(model, config)?;
        Self::with_engine(Arc::new(engine), settings, stats)
    }

    /// Serve a running engine (of any backend: the router tests use the
    /// fake one). Settings that shape the engine itself were applied when
    /// it was started (see [`Settings::engine_config`]).
    ///
    /// # Errors
    /// [`LoadError::Template`] when the chat template does not compile.
    pub fn with_engine(
        engine: Arc<dyn DynEngine>,
        settings: &Settings,
        stats: Arc<ServerStats>,
    ) -> Result<Ready, LoadError> {
        // The template from the flags, else the model's, else ChatML.
        let spec = match &settings.chat_template {
            TemplateChoice::Source(src) => TemplateSpec::Jinja(src),
            TemplateChoice::Builtin(name) => TemplateSpec::Builtin(name.as_deref()),
            TemplateChoice::Model => TemplateSpec::Model,
        };
        let template = engine.model().chat_template(spec).map_err(LoadError::Template)?;
        if let Some(why) = template.fallback() {
            tracing::warn!("{why}; using ChatML");
        }
        Ok(Ready {
            template_source: template.source().to_owned(),
            bos_text: template.bos_token().to_owned(),
            eos_text: template.eos_token().to_owned(),
            template,
            stats,
            timeout: settings.timeout,
            defaults: settings.sampling.clone(),
            n_predict: settings.n_predict,
            n_ctx_seq: engine.n_ctx_seq(),
            request_defaults: RequestDefaults {
                ignore_eos: settings.ignore_eos,
                cache_prompt: settings.cache_prompt,
                context_shift: settings.context_shift,
                n_keep: settings.n_keep,
            },
            engine,
        })
    }

    /// The model facade: tokenization, token text, facts.
    pub fn model(&self) -> &dyn ModelFacade {
        self.engine.model()
    }

    /// Render chat messages with the template (generation prompt added).
    ///
    /// # Errors
    /// A 400 when the template fails on these messages.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, AppError> {
        self.template.render(messages, true).map_err(AppError::from)
    }
}

struct Shared {
    settings: Settings,
    keys: ApiKeys,
    hosts: HostPolicy,
    phase: RwLock<Phase>,
    stats: Arc<ServerStats>,
    created: u64,
}

/// The state every handler sees. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("phase", &self.phase()).finish_non_exhaustive()
    }
}

impl AppState {
    /// A state in the [`Phase::Loading`] phase.
    pub fn new(settings: Settings) -> AppState {
        let keys = ApiKeys::new(&settings.api_keys);
        let hosts = HostPolicy::new(settings.host, &settings.allowed_hosts);
        AppState(Arc::new(Shared {
            settings,
            keys,
            hosts,
            phase: RwLock::new(Phase::Loading),
            stats: Arc::new(ServerStats::default()),
            created: unix_now(),
        }))
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The API keys.
    pub fn keys(&self) -> ApiKeys {
        self.0.keys.clone()
    }

    /// The Host policy.
    pub fn hosts(&self) -> HostPolicy {
        self.0.hosts.clone()
    }

    /// Server-side measurements.
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.0.stats)
    }

    /// Unix time the server started (the `created` of `/v1/models`).
    pub fn created(&self) -> u64 {
        self.0.created
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        // A poisoned lock only means a writer panicked mid-assignment of an
        // enum; the value is still a valid Phase.
        self.0.phase.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Switch to serving.
    pub fn set_ready(&self, ready: Ready) {
        *self.0.phase.write().unwrap_or_else(|p| p.into_inner()) = Phase::Ready(Arc::new(ready));
    }

    /// Record a load failure.
    pub fn set_failed(&self, message: String) {
        *self.0.phase.write().unwrap_or_else(|p| p.into_inner()) = Phase::Failed(message);
    }

    /// The loaded model and engine, or 503 while loading.
    pub fn ready(&self) -> Result<Arc<Ready>, AppError> {
        match self.phase() {
            Phase::Ready(r) => Ok(r),
            Phase::Loading => Err(AppError::unavailable("Loading model", Some(1))),
            Phase::Failed(_) => Err(AppError::unavailable("the model failed to load", None)),
        }
    }

    /// Whether the engine is healthy (for `/health`).
    pub fn health(&self) -> Result<(), AppError> {
        let ready = self.ready()?;
        match ready.engine.health() {
            Health::Ok => Ok(()),
            Health::Stalled { since } => Err(AppError::unavailable(
                format!("the engine has made no progress for {} s", since.as_secs()),
                Some(5),
            )),
            _ => Err(AppError::unavailable("the engine has stopped", None)),
        }
    }

    /// The id the API reports for the model: the first alias, else the file name.
    pub fn model_id(&self) -> String {
        let s = &self.0.settings;
        s.aliases.first().cloned().unwrap_or_else(|| file_name(&s.model_path))
    }

    /// A request's `model` field. With one model loaded any name is served
    /// by it, as llama.cpp's server does (OpenAI clients send names such as
    /// `gpt-3.5-turbo` by default); the responses name the model actually
    /// used. Router mode, which serves several models, will route here.
    ///
    /// # Errors
    /// None yet: every name is accepted.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), AppError> {
        let _ = requested;
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|x| x.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
