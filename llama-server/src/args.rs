//! Command-line flags, named and defaulted like llama.cpp's `llama-server`,
//! and their validation into [`Settings`].

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use llama_core::{FlashAttn, KvCacheType, MAX_THREADS};
use llama_runtime::EngineConfig;

/// The file `-m` defaults to, looked up by llama-runtime's
/// [`find_default_model`](llama_runtime::find_default_model): in the current
/// directory, then in the executable's directory and each of its ancestors.
pub use llama_runtime::DEFAULT_MODEL;
/// Smallest context per sequence (`n_ctx_seq`, the context of one slot)
/// the server accepts, above llama-runtime's `MIN_CTX_SEQ`: below this
/// nothing useful fits.
pub const MIN_SERVER_CTX_SEQ: u32 = 64;
/// Largest total context accepted.
pub const MAX_CTX: u32 = 1 << 20;
/// Most slots (llama.cpp's `LLAMA_MAX_SEQ`).
pub const MAX_PARALLEL: u32 = 256;

/// llama.cpp spells some flags with a multi-letter single dash (`-np 4`),
/// which clap cannot express; these are rewritten to their long form first.
const MULTI_LETTER_SHORTS: &[(&str, &str)] = &[
    ("-np", "--parallel"),
    ("-tb", "--threads-batch"),
    ("-ub", "--ubatch-size"),
    ("-cb", "--cont-batching"),
    ("-nocb", "--no-cont-batching"),
    ("-fa", "--flash-attn"),
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-to", "--timeout"),
    ("-ngl", "--n-gpu-layers"),
];

/// `--flash-attn` values: llama-core's [`FlashAttn`] names (`on`, `off`,
/// `auto`), as the CLI parses them.
fn flash_attn(s: &str) -> Result<FlashAttn, String> {
    s.parse().map_err(|_| format!("expected one of {}", FlashAttn::ALL.map(FlashAttn::name).join(", ")))
}

/// `llama-server` flags. Names, short forms, defaults and `LLAMA_ARG_*`
/// environment variables follow llama.cpp's server where the meaning is the
/// same; flags marked "ours" are llama.rs additions.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llama-server",
    version,
    // As in llama.cpp, a flag given twice takes its last value.
    args_override_self = true,
    about = "OpenAI- and llama.cpp-compatible HTTP server (llama.rs)",
    after_help = "Multi-letter short flags of llama.cpp are accepted too: -np, -tb, -ub, -cb, -nocb, -fa, -ctk, -ctv, -to, -ngl.\n\
                  Batching is always continuous; --cont-batching/--no-cont-batching and --no-webui are accepted and ignored."
)]
pub struct Args {
    /// Model file (GGUF). Default: models/SmolLM2-135M-Instruct.Q4_1.gguf, found in the current directory or
    /// next to the executable.
    #[arg(short = 'm', long, env = "LLAMA_ARG_MODEL", value_name = "FNAME")]
    pub model: Option<PathBuf>,

    /// Model name(s) used by the API (comma-separated); the first is reported. Default: the model's file name.
    #[arg(short = 'a', long, env = "LLAMA_ARG_ALIAS", value_delimiter = ',', value_name = "NAME")]
    pub alias: Vec<String>,

    /// Address to listen on.
    #[arg(long, env = "LLAMA_ARG_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "LLAMA_ARG_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Total context size in tokens, split evenly across the slots (0 = the model's training context).
    #[arg(short = 'c', long = "ctx-size", env = "LLAMA_ARG_CTX_SIZE", default_value_t = 4096, value_name = "N")]
    pub ctx_size: u32,

    /// Number of slots: requests decoded at the same time (-1 = 4). Alias: -np.
    #[arg(long, env = "LLAMA_ARG_N_PARALLEL", default_value_t = 4, allow_negative_numbers = true, value_name = "N")]
    pub parallel: i32,

    /// Threads for generation (-1 = all cores).
    #[arg(short = 't', long, env = "LLAMA_ARG_THREADS", default_value_t = -1, allow_negative_numbers = true)]
    pub threads: i32,

    /// Threads for prompt processing (default: same as --threads). Alias: -tb.
    #[arg(long = "threads-batch", env = "LLAMA_ARG_THREADS_BATCH", allow_negative_numbers = true, value_name = "N")]
    pub threads_batch: Option<i32>,

    /// Logical batch size: most tokens per decode step (llama.cpp's default is 2048; 512 suits CPUs).
    #[arg(short = 'b', long = "batch-size", env = "LLAMA_ARG_BATCH", default_value_t = 512, value_name = "N")]
    pub batch_size: u32,

    /// Physical batch size (clamped to --batch-size). Alias: -ub.
    #[arg(long = "ubatch-size", env = "LLAMA_ARG_UBATCH", default_value_t = 512, value_name = "N")]
    pub ubatch_size: u32,

    /// Most tokens to generate per request (-1 = until the context is full). Caps what a request may ask.
    #[arg(
        short = 'n',
        long = "n-predict",
        visible_alias = "predict",
        env = "LLAMA_ARG_N_PREDICT",
        default_value_t = -1,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub n_predict: i32,

    /// API key(s) clients must send (repeatable or comma-separated).
    #[arg(long = "api-key", env = "LLAMA_API_KEY", value_delimiter = ',', value_name = "KEY", hide_env_values = true)]
    pub api_key: Vec<String>,

    /// File of API keys, one per line; lines starting with '#' are comments.
    #[arg(long = "api-key-file", env = "LLAMA_ARG_API_KEY_FILE", value_name = "FNAME")]
    pub api_key_file: Option<PathBuf>,

    /// Enable the embeddings endpoints.
    #[arg(long = "embeddings", visible_alias = "embedding", env = "LLAMA_ARG_EMBEDDINGS", value_parser = parse_bool_env)]
    pub embeddings: bool,

    /// Enable the Prometheus /metrics endpoint.
    #[arg(long, env = "LLAMA_ARG_ENDPOINT_METRICS", value_parser = parse_bool_env)]
    pub metrics: bool,

    /// Expose GET /slots (default: on).
    #[arg(long, overrides_with = "no_slots")]
    pub slots: bool,

    /// Hide GET /slots (answers 501).
    #[arg(long = "no-slots", env = "LLAMA_ARG_NO_ENDPOINT_SLOTS", overrides_with = "slots", value_parser = parse_bool_env)]
    pub no_slots: bool,

    /// Default RNG seed (-1 = random).
    #[arg(short = 's', long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,

    /// Default temperature (0.8).
    #[arg(
        long = "temp",
        visible_alias = "temperature",
        env = "LLAMA_ARG_TEMPERATURE",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub temp: Option<f32>,

    /// Default top-k (40, 0 = off).
    #[arg(long = "top-k", env = "LLAMA_ARG_TOP_K", value_name = "N", allow_negative_numbers = true)]
    pub top_k: Option<i32>,

    /// Default top-p (0.95, 1.0 = off).
    #[arg(long = "top-p", env = "LLAMA_ARG_TOP_P", value_name = "N", allow_negative_numbers = true)]
    pub top_p: Option<f32>,

    /// Default min-p (0.05, 0.0 = off).
    #[arg(long = "min-p", env = "LLAMA_ARG_MIN_P", value_name = "N", allow_negative_numbers = true)]
    pub min_p: Option<f32>,

    /// Default repeat penalty (1.0 = off).
    #[arg(long = "repeat-penalty", env = "LLAMA_ARG_REPEAT_PENALTY", value_name = "N", allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,

    /// Default look-back of the repeat penalty (64, 0 = off, -1 = context).
    #[arg(long = "repeat-last-n", allow_negative_numbers = true, value_name = "N")]
    pub repeat_last_n: Option<i32>,

    /// Accepted for compatibility: batching is always continuous. Alias: -cb.
    #[arg(long = "cont-batching", env = "LLAMA_ARG_CONT_BATCHING", value_parser = parse_bool_env)]
    pub cont_batching: bool,

    /// Accepted for compatibility and ignored: batching is always continuous. Alias: -nocb.
    #[arg(long = "no-cont-batching")]
    pub no_cont_batching: bool,

    /// Accepted for compatibility: there is no web UI.
    #[arg(long = "no-webui", visible_alias = "no-ui")]
    pub no_webui: bool,

    /// Accepted for compatibility: chat templates are always rendered with Jinja.
    #[arg(long)]
    pub jinja: bool,

    /// Chat template: a Jinja source or a built-in name (chatml). Default: the model's own.
    #[arg(
        long = "chat-template",
        env = "LLAMA_ARG_CHAT_TEMPLATE",
        value_name = "TEMPLATE",
        conflicts_with = "chat_template_file"
    )]
    pub chat_template: Option<String>,

    /// File holding a Jinja chat template.
    #[arg(long = "chat-template-file", env = "LLAMA_ARG_CHAT_TEMPLATE_FILE", value_name = "FNAME")]
    pub chat_template_file: Option<PathBuf>,

    /// Read/write timeout of a request, in seconds. Alias: -to.
    #[arg(long, env = "LLAMA_ARG_TIMEOUT", default_value_t = 600, value_name = "N")]
    pub timeout: u64,

    /// Flash attention: on, off or auto. Alias: -fa.
    #[arg(
        long = "flash-attn",
        env = "LLAMA_ARG_FLASH_ATTN",
        value_parser = flash_attn,
        default_value = "auto",
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub flash_attn: FlashAttn,

    /// KV cache type for K: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1. Alias: -ctk.
    #[arg(long = "cache-type-k", env = "LLAMA_ARG_CACHE_TYPE_K", default_value = "f16", value_name = "TYPE")]
    pub cache_type_k: KvCacheType,

    /// KV cache type for V (a quantized type needs flash attention). Alias: -ctv.
    #[arg(long = "cache-type-v", env = "LLAMA_ARG_CACHE_TYPE_V", default_value = "f16", value_name = "TYPE")]
    pub cache_type_v: KvCacheType,

    /// Layers to offload to a GPU (needs a GPU build). Alias: -ngl.
    #[arg(long = "n-gpu-layers", visible_alias = "gpu-layers", env = "LLAMA_ARG_N_GPU_LAYERS", value_name = "N")]
    pub n_gpu_layers: Option<i32>,

    /// Requests that may wait for a free slot; beyond this they get 503 at once (ours).
    #[arg(long = "queue-size", env = "LLAMARS_QUEUE_SIZE", default_value_t = 64, value_name = "N")]
    pub queue_size: usize,

    /// Origins allowed by CORS, comma-separated ("*" = any). Default: CORS off (ours).
    #[arg(long = "cors-origins", env = "LLAMARS_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGINS")]
    pub cors_origins: Vec<String>,

    /// Extra Host names accepted besides localhost when bound to loopback ("*" = any) (ours).
    #[arg(long = "allowed-hosts", env = "LLAMARS_ALLOWED_HOSTS", value_delimiter = ',', value_name = "HOSTS")]
    pub allowed_hosts: Vec<String>,

    /// Largest request body in bytes (ours).
    #[arg(long = "max-body", env = "LLAMARS_MAX_BODY", default_value_t = 8 << 20, value_name = "BYTES")]
    pub max_body: usize,

    /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM (ours).
    #[arg(long = "drain-timeout", env = "LLAMARS_DRAIN_TIMEOUT", default_value_t = 30, value_name = "N")]
    pub drain_timeout: u64,

    /// Log everything (debug level).
    #[arg(short = 'v', long = "verbose", visible_alias = "log-verbose")]
    pub verbose: bool,

    /// Turn logging off.
    #[arg(long = "log-disable")]
    pub log_disable: bool,
}

/// A flag value that cannot work; the message says which flag and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// A numeric flag is out of its range.
    #[error("{flag} {value}: {reason}")]
    OutOfRange {
        /// The flag, e.g. `--ctx-size`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// No `-m` was given and the default model is nowhere to be found.
    #[error(
        "no model given and the default model was not found (looked for {DEFAULT_MODEL} in {searched}); \
         pass -m PATH or fetch the default model with the project's setup"
    )]
    DefaultModelMissing {
        /// The directories searched, joined.
        searched: String,
    },
    /// The model file given does not exist.
    #[error("model file not found: {0}")]
    ModelMissing(PathBuf),
    /// A file named by a flag could not be read.
    #[error("cannot read {flag} {path}: {reason}")]
    Unreadable {
        /// The flag.
        flag: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// `--host` is not an address.
    #[error("--host {0}: not an IP address (use e.g. 127.0.0.1, 0.0.0.0 or ::1)")]
    BadHost(String),
}

/// Where the chat template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's `tokenizer.chat_template`.
    Model,
    /// A Jinja source from `--chat-template` or `--chat-template-file`.
    Source(String),
}

/// Validated settings, independent of the model.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The model file.
    pub model_path: PathBuf,
    /// API names of the model; the first is reported.
    pub aliases: Vec<String>,
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind.
    pub port: u16,
    /// Total context (0 = the model's training context).
    pub ctx_size: u32,
    /// Slots.
    pub parallel: u32,
    /// Generation threads (-1 = auto).
    pub threads: i32,
    /// Prompt-processing threads (-1 = auto).
    pub threads_batch: i32,
    /// Logical batch.
    pub batch_size: u32,
    /// Physical batch (<= batch_size).
    pub ubatch_size: u32,
    /// Server cap on generated tokens (None = context-bound).
    pub n_predict: Option<u32>,
    /// Accepted API keys (empty = no auth).
    pub api_keys: Vec<String>,
    /// Embeddings endpoints on.
    pub embeddings: bool,
    /// /metrics on.
    pub metrics: bool,
    /// /slots on.
    pub slots: bool,
    /// Chat template source.
    pub chat_template: TemplateChoice,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Flash attention.
    pub flash_attn: FlashAttn,
    /// KV cache element type for K.
    pub cache_type_k: KvCacheType,
    /// KV cache element type for V.
    pub cache_type_v: KvCacheType,
    /// GPU layers.
    pub n_gpu_layers: Option<i32>,
    /// Admission queue length.
    pub queue_size: usize,
    /// CORS origins (empty = CORS off).
    pub cors_origins: Vec<String>,
    /// Extra allowed Host names.
    pub allowed_hosts: Vec<String>,
    /// Body limit.
    pub max_body: usize,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
    /// Default sampling parameters (llama.cpp's, with the flags' overrides).
    pub sampling: llama_core::SamplingParams,
}

/// The built-in chat templates `--chat-template NAME` accepts.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[("chatml", llama_core::CHATML_TEMPLATE)];

/// Boolean flags read from the environment accept llama.cpp's words:
/// true/1/on/enabled and false/0/off/disabled (any case).
fn parse_bool_env(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "enabled" | "yes" => Ok(true),
        "false" | "0" | "off" | "disabled" | "no" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (use true/false, 1/0, on/off, enabled/disabled)")),
    }
}

/// Rewrite llama.cpp's multi-letter short flags (`-np 4`, `-np=4`) to their
/// long forms so clap can parse them. Stops at `--`.
pub fn normalize_argv<I, T>(argv: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in argv {
        let arg: OsString = arg.into();
        if passthrough {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let (flag, value) = match s.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (s, None),
        };
        match MULTI_LETTER_SHORTS.iter().find(|(short, _)| *short == flag) {
            Some((_, long)) => match value {
                Some(v) => out.push(format!("{long}={v}").into()),
                None => out.push((*long).into()),
            },
            None => out.push(arg),
        }
    }
    out
}

impl Args {
    /// Parse the process arguments (after [`normalize_argv`]); exits with
    /// clap's message on a parse error, like any clap program.
    pub fn parse_env() -> Args {
        Args::parse_from(normalize_argv(std::env::args_os()))
    }

    /// Parse a given argv (first element = program name).
    pub fn try_parse_argv<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Args::try_parse_from(normalize_argv(argv))
    }

    /// Check every value and resolve files; the model file must exist.
    pub fn validate(&self) -> Result<Settings, ArgsError> {
        fn range(flag: &'static str, value: impl ToString, reason: impl Into<String>) -> ArgsError {
            ArgsError::OutOfRange { flag, value: value.to_string(), reason: reason.into() }
        }

        if self.cache_type_v.is_quantized() && self.flash_attn == FlashAttn::Off {
            return Err(range(
                "--cache-type-v",
                self.cache_type_v,
                "a quantized V cache needs flash attention (drop --flash-attn off, or use f16)",
            ));
        }
        let parallel = match self.parallel {
            -1 => 4,
            n if n >= 1 && n as u32 <= MAX_PARALLEL => n as u32,
            n => return Err(range("--parallel", n, format!("must be between 1 and {MAX_PARALLEL} (or -1 for 4)"))),
        };
        if self.ctx_size != 0 {
            if self.ctx_size > MAX_CTX {
                return Err(range("--ctx-size", self.ctx_size, format!("must be at most {MAX_CTX}")));
            }
            let n_ctx_seq = self.ctx_size / parallel;
            if n_ctx_seq < MIN_SERVER_CTX_SEQ {
                return Err(range(
                    "--ctx-size",
                    self.ctx_size,
                    format!(
                        "too small for {parallel} slot(s): each would get {n_ctx_seq} tokens, at least \
                         {MIN_SERVER_CTX_SEQ} are needed (use --ctx-size >= {}, or 0 for the model's own)",
                        MIN_SERVER_CTX_SEQ * parallel
                    ),
                ));
            }
        }
        let check_threads = |flag: &'static str, n: i32| -> Result<i32, ArgsError> {
            if n == -1 || (1..=MAX_THREADS).contains(&n) {
                Ok(n)
            } else {
                Err(range(flag, n, format!("must be between 1 and {MAX_THREADS}, or -1 for all cores")))
            }
        };
        let threads = check_threads("--threads", self.threads)?;
        let threads_batch = check_threads("--threads-batch", self.threads_batch.unwrap_or(threads))?;
        if !(1..=1 << 16).contains(&self.batch_size) {
            return Err(range("--batch-size", self.batch_size, "must be between 1 and 65536"));
        }
        if self.ubatch_size == 0 {
            return Err(range("--ubatch-size", self.ubatch_size, "must be at least 1"));
        }
        let ubatch_size = self.ubatch_size.min(self.batch_size);
        let n_predict = match self.n_predict {
            -1 => None,
            n if n >= 0 => Some(n as u32),
            n => return Err(range("--n-predict", n, "must be -1 (no limit) or >= 0")),
        };
        if self.timeout == 0 {
            return Err(range("--timeout", self.timeout, "must be at least 1 second"));
        }
        if !(1..=1 << 16).contains(&self.queue_size) {
            return Err(range("--queue-size", self.queue_size, "must be between 1 and 65536"));
        }
        if self.max_body < 1024 {
            return Err(range("--max-body", self.max_body, "must be at least 1024 bytes"));
        }
        let seed = match self.seed {
            -1 => u32::MAX,
            s if (0..u32::MAX as i64).contains(&s) => s as u32,
            s => return Err(range("--seed", s, "must be -1 (random) or between 0 and 4294967294")),
        };
        let host: IpAddr = match self.host.as_str() {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h.parse().map_err(|_| ArgsError::BadHost(h.to_string()))?,
        };

        let mut api_keys: Vec<String> = self.api_key.iter().map(|k| k.trim().to_string()).collect();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| ArgsError::Unreadable {
                flag: "--api-key-file",
                path: path.clone(),
                reason: e.to_string(),
            })?;
            api_keys.extend(
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
            );
        }
        api_keys.retain(|k| !k.is_empty());

        let chat_template = if let Some(path) = &self.chat_template_file {
            TemplateChoice::Source(std::fs::read_to_string(path).map_err(|e| ArgsError::Unreadable {
                flag: "--chat-template-file",
                path: path.clone(),
                reason: e.to_string(),
            })?)
        } else if let Some(t) = &self.chat_template {
            if let Some((_, src)) = BUILTIN_TEMPLATES.iter().find(|(name, _)| name == t) {
                TemplateChoice::Source((*src).to_string())
            } else if t.contains("{%") || t.contains("{{") {
                TemplateChoice::Source(t.clone())
            } else {
                let names: Vec<&str> = BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect();
                return Err(range(
                    "--chat-template",
                    t,
                    format!("not a built-in template ({}) nor a Jinja template", names.join(", ")),
                ));
            }
        } else {
            TemplateChoice::Model
        };

        if let TemplateChoice::Source(src) = &chat_template {
            // Compile now (bos/eos come from the model later) so that a broken
            // template is refused before anything is loaded.
            llama_core::ChatTemplate::new(src, "", "").map_err(|e| {
                range(
                    if self.chat_template_file.is_some() { "--chat-template-file" } else { "--chat-template" },
                    "(template)",
                    e.to_string(),
                )
            })?;
        }
        self.default_sampling(seed).validate().map_err(|e| match e {
            llama_core::Error::InvalidParam { name, reason } => {
                let (flag, value) = match name {
                    "temperature" => ("--temp", format!("{:?}", self.temp)),
                    "top_p" => ("--top-p", format!("{:?}", self.top_p)),
                    "min_p" => ("--min-p", format!("{:?}", self.min_p)),
                    "repeat_penalty" => ("--repeat-penalty", format!("{:?}", self.repeat_penalty)),
                    "repeat_last_n" => ("--repeat-last-n", format!("{:?}", self.repeat_last_n)),
                    _ => ("--top-k", format!("{:?}", self.top_k)),
                };
                range(flag, value.trim_start_matches("Some(").trim_end_matches(')'), reason)
            }
            other => range("--temp", "", other.to_string()),
        })?;

        let model_path = match &self.model {
            // Whether the file exists is checked when the server starts
            // (`serve`), so that settings can be built without a model.
            Some(path) => path.clone(),
            None => llama_runtime::find_default_model().map_err(|e| ArgsError::DefaultModelMissing {
                searched: e.searched.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            })?,
        };
        let aliases: Vec<String> = self.alias.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();

        Ok(Settings {
            model_path,
            aliases,
            host,
            port: self.port,
            ctx_size: self.ctx_size,
            parallel,
            threads,
            threads_batch,
            batch_size: self.batch_size,
            ubatch_size,
            n_predict,
            api_keys,
            embeddings: self.embeddings,
            metrics: self.metrics,
            slots: !self.no_slots,
            chat_template,
            timeout: Duration::from_secs(self.timeout),
            flash_attn: self.flash_attn,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            n_gpu_layers: self.n_gpu_layers,
            queue_size: self.queue_size,
            cors_origins: self.cors_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect(),
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            max_body: self.max_body,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            sampling: self.default_sampling(seed),
        })
    }
}

impl Settings {
    /// Refuse a model path that names no file (before anything binds or
    /// loads; [`Args::validate`] does not look at the file system for it).
    ///
    /// # Errors
    /// [`ArgsError::ModelMissing`].
    pub fn check_model_file(&self) -> Result<(), ArgsError> {
        if self.model_path.is_file() { Ok(()) } else { Err(ArgsError::ModelMissing(self.model_path.clone())) }
    }

    /// The engine configuration these settings ask for, for a model trained
    /// with `n_ctx_train` tokens of context (`-c 0` means that, capped at
    /// [`MAX_CTX`]).
    pub fn engine_config(&self, n_ctx_train: u32) -> EngineConfig {
        let n_ctx = if self.ctx_size == 0 { n_ctx_train.min(MAX_CTX) } else { self.ctx_size };
        let threads = |t: i32| if t < 0 { llama_core::default_threads() } else { t };
        EngineConfig {
            n_ctx,
            n_seq_max: self.parallel,
            n_batch: self.batch_size.max(self.parallel),
            n_ubatch: self.ubatch_size.min(self.batch_size.max(self.parallel)),
            n_threads: threads(self.threads),
            n_threads_batch: threads(self.threads_batch),
            queue_capacity: self.queue_size,
            embeddings: self.embeddings,
            flash_attn: self.flash_attn,
            type_k: self.cache_type_k,
            type_v: self.cache_type_v,
            ..EngineConfig::default()
        }
    }
}

impl Args {
    /// llama.cpp's default sampling parameters with this command line's
    /// overrides (`--seed`, `--temp`, `--top-k`, ...).
    pub fn default_sampling(&self, seed: u32) -> llama_core::SamplingParams {
        let mut p = llama_core::SamplingParams { seed, ..Default::default() };
        if let Some(v) = self.temp {
            p.temperature = v;
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            p.repeat_penalty = v;
        }
        if let Some(v) = self.repeat_last_n {
            p.repeat_last_n = v;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/SmolLM2-135M-Instruct.Q4_1.gguf");

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["llama-server", "-m", MODEL];
        argv.extend_from_slice(args);
        Args::try_parse_argv(argv)
    }

    fn settings(args: &[&str]) -> Result<Settings, ArgsError> {
        parse(args).expect("parses").validate()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documentation() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.host, "127.0.0.1");
        assert_eq!(a.port, 8080);
        assert_eq!(a.ctx_size, 4096);
        assert_eq!(a.parallel, 4);
        assert_eq!(a.n_predict, -1);
        assert_eq!(a.timeout, 600);
        assert_eq!(a.flash_attn, FlashAttn::Auto);
        assert_eq!((a.cache_type_k, a.cache_type_v), (KvCacheType::F16, KvCacheType::F16));
        let s = a.validate().unwrap();
        assert!(s.slots);
        assert!(!s.metrics);
        assert!(s.api_keys.is_empty());
        assert_eq!(s.sampling.seed, u32::MAX);
        assert_eq!(s.sampling, llama_core::SamplingParams::default());
        assert_eq!(s.chat_template, TemplateChoice::Model);
    }

    #[test]
    fn multi_letter_shorts_are_rewritten() {
        let a = parse(&["-np", "2", "-tb", "3", "-ub", "128", "-cb", "-fa", "off", "-to=30", "-ngl", "0"]).unwrap();
        assert_eq!(a.parallel, 2);
        assert_eq!(a.threads_batch, Some(3));
        assert_eq!(a.ubatch_size, 128);
        assert!(a.cont_batching);
        assert_eq!(a.flash_attn, FlashAttn::Off);
        assert_eq!(a.timeout, 30);
        assert_eq!(a.n_gpu_layers, Some(0));
        let a = parse(&["-fa", "-nocb"]).unwrap();
        assert_eq!(a.flash_attn, FlashAttn::On);
        assert!(a.no_cont_batching);
        let a = parse(&["-ctk", "q8_0", "-ctv", "Q4_0"]).unwrap();
        assert_eq!((a.cache_type_k, a.cache_type_v), (KvCacheType::Q8_0, KvCacheType::Q4_0));
        let err = parse(&["-ctk", "q3"]).unwrap_err().to_string();
        assert!(err.contains("q3") && err.contains("q8_0"), "{err}");
    }

    #[test]
    fn negative_values_parse() {
        let a = parse(&["-n", "-1", "-t", "-1", "--seed", "-1", "-np", "-1"]).unwrap();
        assert_eq!(a.n_predict, -1);
        assert_eq!(a.threads, -1);
        let s = a.validate().unwrap();
        assert_eq!(s.parallel, 4);
        assert_eq!(s.n_predict, None);
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let err = parse(&["--no-such-flag"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("--no-such-flag"));
    }

    #[test]
    fn absurd_values_are_refused_with_a_message() {
        let cases: &[(&[&str], &str)] = &[
            (&["--ctx-size", "1"], "--ctx-size"),
            (&["-np", "0"], "--parallel"),
            (&["-np", "1000"], "--parallel"),
            (&["--threads", "0"], "--threads"),
            (&["-tb", "0"], "--threads-batch"),
            (&["-b", "0"], "--batch-size"),
            (&["-ub", "0"], "--ubatch-size"),
            (&["-n", "-5"], "--n-predict"),
            (&["--timeout", "0"], "--timeout"),
            (&["--queue-size", "0"], "--queue-size"),
            (&["--max-body", "10"], "--max-body"),
            (&["--host", "not a host"], "--host"),
            (&["--chat-template", "nonsense"], "--chat-template"),
            (&["--chat-template", "{% for %}"], "--chat-template"),
            (&["--temp", "-5"], "--temp"),
            (&["--top-p", "7"], "--top-p"),
            (&["--repeat-last-n", "-9"], "--repeat-last-n"),
            (&["--seed", "4294967295"], "--seed"),
            (&["-ctv", "q8_0", "-fa", "off"], "--cache-type-v"),
        ];
        for (args, flag) in cases {
            let err = settings(args).unwrap_err();
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn ctx_size_zero_means_model_default() {
        assert_eq!(settings(&["-c", "0"]).unwrap().ctx_size, 0);
    }

    #[test]
    fn api_keys_from_list_and_file() {
        let dir = std::env::temp_dir().join(format!("llama-server-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.txt");
        std::fs::write(&file, "# comment\nk3\n\n  k4  \n").unwrap();
        let s = settings(&["--api-key", "k1,k2", "--api-key", "k5", "--api-key-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(s.api_keys, ["k1", "k2", "k5", "k3", "k4"]);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = settings(&["--api-key-file", "/nonexistent/keys"]).unwrap_err();
        assert!(matches!(err, ArgsError::Unreadable { .. }));
    }

    #[test]
    fn missing_model_file_is_refused_at_start_not_in_the_settings() {
        let s = Args::try_parse_argv(["llama-server", "-m", "/nonexistent/model.gguf"]).unwrap().validate().unwrap();
        assert!(matches!(s.check_model_file(), Err(ArgsError::ModelMissing(_))));
    }

    #[test]
    fn builtin_and_inline_templates() {
        let s = settings(&["--chat-template", "chatml"]).unwrap();
        assert!(matches!(s.chat_template, TemplateChoice::Source(ref src) if src.contains("<|im_start|>")));
        let s = settings(&["--chat-template", "{{ messages[0]['content'] }}"]).unwrap();
        assert_eq!(s.chat_template, TemplateChoice::Source("{{ messages[0]['content'] }}".into()));
    }

    #[test]
    fn no_slots_and_flags() {
        let s = settings(&["--no-slots", "--metrics", "--embedding", "--no-webui", "--jinja"]).unwrap();
        assert!(!s.slots);
        assert!(s.metrics);
        assert!(s.embeddings);
    }

    #[test]
    fn ubatch_is_clamped_to_batch() {
        let s = settings(&["-b", "64", "-ub", "512"]).unwrap();
        assert_eq!(s.ubatch_size, 64);
    }

    #[test]
    fn the_last_value_of_a_repeated_flag_wins() {
        let a = parse(&["-np", "2", "--parallel", "3", "-c", "100", "-c", "2048"]).unwrap();
        assert_eq!(a.parallel, 3);
        assert_eq!(a.ctx_size, 2048);
    }

    #[test]
    fn argv_normalization_leaves_values_alone() {
        let out = normalize_argv(["x", "-np", "4", "--alias", "a", "--", "-np"]);
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(out, ["x", "--parallel", "4", "--alias", "a", "--", "-np"]);
    }
}
