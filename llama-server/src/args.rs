//! Command-line flags, named and defaulted like llama.cpp's `llama-server`,
//! and their validation into [`Settings`].

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use llama_core::{FlashAttn, KvCacheType, MAX_THREADS, ModelParams, Pooling};
use llama_runtime::{EngineConfig, LoraSpec, MAX_LORA_ADAPTERS};

use crate::flags::{self, FLAGS, FlagClass, FlagParser, Notice, Notices};
use crate::hub;

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

/// llama.cpp's `on|off|auto` words (also true/false, 1/0, enabled/disabled, -1 for auto).
fn on_off_auto(s: &str) -> Result<Option<bool>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "enabled" | "yes" => Ok(Some(true)),
        "off" | "false" | "0" | "disabled" | "no" => Ok(Some(false)),
        "auto" | "-1" => Ok(None),
        other => Err(format!("{other:?}: expected on, off or auto")),
    }
}

/// `--flash-attn` values: on, off, auto (and llama.cpp's other truthy/falsy words).
fn flash_attn(s: &str) -> Result<FlashAttn, String> {
    Ok(match on_off_auto(s)? {
        Some(true) => FlashAttn::On,
        Some(false) => FlashAttn::Off,
        None => FlashAttn::Auto,
    })
}

/// `--log-colors` and other `on|off|auto` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOffAuto {
    /// On.
    On,
    /// Off.
    Off,
    /// Decided at run time (for colors: when the output is a terminal).
    Auto,
}

fn on_off_auto_value(s: &str) -> Result<OnOffAuto, String> {
    Ok(match on_off_auto(s)? {
        Some(true) => OnOffAuto::On,
        Some(false) => OnOffAuto::Off,
        None => OnOffAuto::Auto,
    })
}

/// `--load-mode`: how the model file is read (llama.cpp's `LLAMA_LOAD_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// mmap (what llama.cpp's auto picks when the device can map).
    Auto,
    /// Read the file, no mmap, no mlock.
    None,
    /// Memory-map the file.
    Mmap,
    /// Read the file and lock the weights in RAM.
    Mlock,
    /// Memory-map the file and lock it in RAM.
    MmapMlock,
    /// Direct I/O if available: read without mmap here (llama-core cannot ask for direct I/O).
    DirectIo,
}

fn load_mode(s: &str) -> Result<LoadMode, String> {
    Ok(match s {
        "auto" => LoadMode::Auto,
        "none" => LoadMode::None,
        "mmap" => LoadMode::Mmap,
        "mlock" => LoadMode::Mlock,
        "mmap+mlock" => LoadMode::MmapMlock,
        "dio" => LoadMode::DirectIo,
        other => return Err(format!("{other:?}: expected auto, none, mmap, mlock, mmap+mlock or dio")),
    })
}

/// `-ngl` values: a number, `all` (every layer: -1) or `auto` (the default).
fn gpu_layers(s: &str) -> Result<GpuLayers, String> {
    match s {
        "auto" => Ok(GpuLayers::Auto),
        "all" => Ok(GpuLayers::Count(-1)),
        n => n.parse().map(GpuLayers::Count).map_err(|_| format!("{n:?}: expected a number, auto or all")),
    }
}

/// `-ngl`: how many layers to offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    /// llama.cpp fits as many as the GPU holds; here: none (nothing is fitted).
    Auto,
    /// This many (negative: all).
    Count(i32),
}

/// `--pooling` values.
fn pooling(s: &str) -> Result<Pooling, String> {
    Ok(match s {
        "none" => Pooling::None,
        "mean" => Pooling::Mean,
        "cls" => Pooling::Cls,
        "last" => Pooling::Last,
        "rank" => Pooling::Rank,
        other => return Err(format!("{other:?}: expected none, mean, cls, last or rank")),
    })
}

/// `llama-server` flags. Names, short forms, defaults and `LLAMA_ARG_*`
/// environment variables follow llama.cpp's server where the meaning is the
/// same; flags marked "ours" are llama.rs additions. Every llama.cpp flag is
/// in the table of [`FLAGS`](crate::FLAGS): those without a field here are
/// taken out before clap parses (see [`Args::try_parse_argv`]).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llama-server",
    version,
    // As in llama.cpp, a flag given twice takes its last value.
    args_override_self = true,
    about = "OpenAI- and llama.cpp-compatible HTTP server (llama.rs)"
)]
pub struct Args {
    /// Model file (GGUF). Default: models/SmolLM2-135M-Instruct.Q4_1.gguf, found in the current directory or
    /// next to the executable.
    #[arg(short = 'm', long, env = "LLAMA_ARG_MODEL", value_name = "FNAME")]
    pub model: Option<PathBuf>,

    /// Download the model from this Hugging Face repository (into the cache; wins over -m). The quant picks the
    /// file whose name has it (case-insensitive; default Q4_K_M, else Q8_0, else the first GGUF file). Alias: -hf,
    /// -hfr.
    #[arg(long = "hf-repo", env = "LLAMA_ARG_HF_REPO", value_name = "<user>/<model>[:quant]")]
    pub hf_repo: Option<String>,

    /// The file to take from the --hf-repo repository (overrides the quant). Alias: -hff.
    #[arg(long = "hf-file", env = "LLAMA_ARG_HF_FILE", value_name = "FILE")]
    pub hf_file: Option<String>,

    /// Hugging Face access token, sent as a bearer token (never logged). Alias: -hft.
    #[arg(long = "hf-token", env = "HF_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,

    /// Download the model from this URL (into the cache, or to -m FNAME when given). Alias: -mu.
    #[arg(long = "model-url", env = "LLAMA_ARG_MODEL_URL", value_name = "MODEL_URL")]
    pub model_url: Option<String>,

    /// Offline: -hf and -mu use only the download cache, no network.
    #[arg(long, env = "LLAMA_ARG_OFFLINE", value_parser = parse_bool_env)]
    pub offline: bool,

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

    /// Worker threads of the HTTP runtime (-1 = 2).
    #[arg(
        long = "threads-http",
        env = "LLAMA_ARG_THREADS_HTTP",
        default_value_t = -1,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub threads_http: i32,

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

    /// Tokens of the prompt kept by context shift (-1 = all). Recorded only: context shift is not built yet.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_name = "N")]
    pub keep: i32,

    /// Shift the context when a slot fills up. Recorded only: context shift is not built yet.
    #[arg(
        long = "context-shift",
        env = "LLAMA_ARG_CONTEXT_SHIFT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_context_shift"
    )]
    pub context_shift: Option<bool>,

    /// No context shift: a full slot ends with `length` (the default).
    #[arg(long = "no-context-shift", overrides_with = "context_shift")]
    pub no_context_shift: bool,

    /// Smallest chunk reused from the cache by KV shifting. Recorded only: not built yet.
    #[arg(long = "cache-reuse", env = "LLAMA_ARG_CACHE_REUSE", default_value_t = 0, value_name = "N")]
    pub cache_reuse: u32,

    /// Reuse the cached prompt prefix by default. Recorded only: requests choose with `cache_prompt`.
    #[arg(
        long = "cache-prompt",
        env = "LLAMA_ARG_CACHE_PROMPT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_cache_prompt"
    )]
    pub cache_prompt: Option<bool>,

    /// Do not reuse the cached prompt by default. Recorded only.
    #[arg(long = "no-cache-prompt", overrides_with = "cache_prompt")]
    pub no_cache_prompt: bool,

    /// API key(s) clients must send (repeatable or comma-separated).
    #[arg(long = "api-key", env = "LLAMA_API_KEY", value_delimiter = ',', value_name = "KEY", hide_env_values = true)]
    pub api_key: Vec<String>,

    /// File of API keys, one per line; lines starting with '#' are comments.
    #[arg(long = "api-key-file", env = "LLAMA_ARG_API_KEY_FILE", value_name = "FNAME")]
    pub api_key_file: Option<PathBuf>,

    /// Enable the embeddings endpoints.
    #[arg(long = "embeddings", visible_alias = "embedding", env = "LLAMA_ARG_EMBEDDINGS", value_parser = parse_bool_env)]
    pub embeddings: bool,

    /// Enable the reranking endpoints (POST /rerank and its aliases): the embedding context runs with rank pooling.
    #[arg(long = "reranking", visible_alias = "rerank", env = "LLAMA_ARG_RERANKING", value_parser = parse_bool_env)]
    pub reranking: bool,

    /// Embedding pooling: mean, cls or last; rank with --embeddings is --reranking (none is refused). Default: the model's.
    #[arg(long, env = "LLAMA_ARG_POOLING", value_parser = pooling, value_name = "{none,mean,cls,last,rank}")]
    pub pooling: Option<Pooling>,

    /// Default embedding normalization (2 = Euclidean). Recorded only: requests choose `embd_normalize`.
    #[arg(long = "embd-normalize", default_value_t = 2, allow_negative_numbers = true, value_name = "N")]
    pub embd_normalize: i32,

    /// Enable the Prometheus /metrics endpoint.
    #[arg(long, env = "LLAMA_ARG_ENDPOINT_METRICS", value_parser = parse_bool_env)]
    pub metrics: bool,

    /// Allow changing properties with POST /props. Recorded only: POST /props is not built yet.
    #[arg(long, env = "LLAMA_ARG_ENDPOINT_PROPS", value_parser = parse_bool_env)]
    pub props: bool,

    /// Expose GET /slots (default: on).
    #[arg(
        long,
        env = "LLAMA_ARG_ENDPOINT_SLOTS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_slots"
    )]
    pub slots: Option<bool>,

    /// Hide GET /slots (answers 501).
    #[arg(long = "no-slots", env = "LLAMA_ARG_NO_ENDPOINT_SLOTS", overrides_with = "slots", value_parser = parse_bool_env)]
    pub no_slots: bool,

    /// Directory of slot save/restore files (POST /slots/{id}?action=...).
    #[arg(long = "slot-save-path", value_name = "PATH")]
    pub slot_save_path: Option<PathBuf>,

    /// LoRA adapter file(s), comma-separated; repeatable. Loaded with scale 1.
    #[arg(long = "lora", value_name = "FNAME")]
    pub lora: Vec<String>,

    /// LoRA adapters with their scale, `FNAME:SCALE`, comma-separated; repeatable.
    #[arg(long = "lora-scaled", value_name = "FNAME:SCALE,...")]
    pub lora_scaled: Vec<String>,

    /// Load the LoRA adapters with scale 0 (apply them later with POST /lora-adapters).
    #[arg(long = "lora-init-without-apply")]
    pub lora_init_without_apply: bool,

    /// `--lora` and `--lora-scaled` values in command-line order (their
    /// order gives the adapters' ids): `(scaled, value)`.
    #[arg(skip)]
    lora_in_order: Vec<(bool, String)>,

    /// Model tags, comma-separated (informational).
    #[arg(long, env = "LLAMA_ARG_TAGS", value_delimiter = ',', value_name = "STRING")]
    pub tags: Vec<String>,

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

    /// Default locally typical p (1.0 = off).
    #[arg(long = "typical", visible_alias = "typical-p", value_name = "N", allow_negative_numbers = true)]
    pub typical: Option<f32>,

    /// Default repeat penalty (1.0 = off).
    #[arg(long = "repeat-penalty", env = "LLAMA_ARG_REPEAT_PENALTY", value_name = "N", allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,

    /// Default look-back of the repeat penalty (64, 0 = off, -1 = context).
    #[arg(long = "repeat-last-n", allow_negative_numbers = true, value_name = "N")]
    pub repeat_last_n: Option<i32>,

    /// Default presence penalty (0.0 = off).
    #[arg(
        long = "presence-penalty",
        env = "LLAMA_ARG_PRESENCE_PENALTY",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub presence_penalty: Option<f32>,

    /// Default frequency penalty (0.0 = off).
    #[arg(
        long = "frequency-penalty",
        env = "LLAMA_ARG_FREQUENCY_PENALTY",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub frequency_penalty: Option<f32>,

    /// Default DRY multiplier (0.0 = off).
    #[arg(long = "dry-multiplier", value_name = "N", allow_negative_numbers = true)]
    pub dry_multiplier: Option<f32>,

    /// Default DRY base (1.75).
    #[arg(long = "dry-base", value_name = "N", allow_negative_numbers = true)]
    pub dry_base: Option<f32>,

    /// Default DRY allowed length (2).
    #[arg(long = "dry-allowed-length", value_name = "N", allow_negative_numbers = true)]
    pub dry_allowed_length: Option<i32>,

    /// Default DRY look-back (-1 = context, 0 = off).
    #[arg(long = "dry-penalty-last-n", value_name = "N", allow_negative_numbers = true)]
    pub dry_penalty_last_n: Option<i32>,

    /// DRY sequence breaker; repeatable; replaces the defaults ("none" = no breakers).
    #[arg(long = "dry-sequence-breaker", value_name = "STRING", allow_hyphen_values = true)]
    pub dry_sequence_breaker: Vec<String>,

    /// Default XTC probability (0.0 = off).
    #[arg(long = "xtc-probability", value_name = "N", allow_negative_numbers = true)]
    pub xtc_probability: Option<f32>,

    /// Default XTC threshold (0.1).
    #[arg(long = "xtc-threshold", value_name = "N", allow_negative_numbers = true)]
    pub xtc_threshold: Option<f32>,

    /// Default Mirostat version (0 = off, 1, 2).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub mirostat: Option<i32>,

    /// Default Mirostat learning rate (eta, 0.1).
    #[arg(long = "mirostat-lr", value_name = "N", allow_negative_numbers = true)]
    pub mirostat_lr: Option<f32>,

    /// Default Mirostat target entropy (tau, 5.0).
    #[arg(long = "mirostat-ent", value_name = "N", allow_negative_numbers = true)]
    pub mirostat_ent: Option<f32>,

    /// Default logit bias, TOKEN_ID(+/-)BIAS (e.g. 15043+1, 2-inf); repeatable.
    #[arg(short = 'l', long = "logit-bias", value_name = "TOKEN_ID(+/-)BIAS")]
    pub logit_bias: Vec<String>,

    /// Default GBNF grammar. Checked and recorded; not applied to requests yet.
    #[arg(long, value_name = "GRAMMAR", conflicts_with_all = ["grammar_file", "json_schema", "json_schema_file"])]
    pub grammar: Option<String>,

    /// File holding the default GBNF grammar. Checked and recorded; not applied to requests yet.
    #[arg(long = "grammar-file", value_name = "FNAME", conflicts_with_all = ["json_schema", "json_schema_file"])]
    pub grammar_file: Option<PathBuf>,

    /// Default JSON schema (converted to a grammar). Recorded; not applied to requests yet.
    #[arg(short = 'j', long = "json-schema", value_name = "SCHEMA", conflicts_with = "json_schema_file")]
    pub json_schema: Option<String>,

    /// File holding the default JSON schema. Recorded; not applied to requests yet.
    #[arg(long = "json-schema-file", value_name = "FILE")]
    pub json_schema_file: Option<PathBuf>,

    /// Keep generating after end-of-generation tokens by default. Recorded only.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,

    /// Render chat templates with Jinja (the default and the only engine here). Recorded.
    #[arg(
        long,
        env = "LLAMA_ARG_JINJA",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_jinja"
    )]
    pub jinja: Option<bool>,

    /// llama.cpp's built-in chat formatter instead of Jinja (llama_chat_apply_template).
    #[arg(long = "no-jinja", overrides_with = "jinja")]
    pub no_jinja: bool,

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

    /// Extra template variables, a JSON object (a request's `chat_template_kwargs` wins).
    #[arg(long = "chat-template-kwargs", env = "LLAMA_ARG_CHAT_TEMPLATE_KWARGS", value_name = "STRING")]
    pub chat_template_kwargs: Option<String>,

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

    /// Layers to offload to a GPU: a number, all, or auto (= 0 here); needs a GPU build. Alias: -ngl.
    #[arg(
        long = "n-gpu-layers",
        visible_alias = "gpu-layers",
        env = "LLAMA_ARG_N_GPU_LAYERS",
        value_parser = gpu_layers,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub n_gpu_layers: Option<GpuLayers>,

    /// How the model file is read: auto (mmap), none, mmap, mlock, mmap+mlock, dio. Alias: -lm. Checked and
    /// recorded; the loader does not use it yet.
    #[arg(
        long = "load-mode",
        env = "LLAMA_ARG_LOAD_MODE",
        value_parser = load_mode,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub load_mode: LoadMode,

    /// Requests that may wait for a free slot; beyond this they get 503 at once (ours).
    #[arg(long = "queue-size", env = "LLAMARS_QUEUE_SIZE", default_value_t = 64, value_name = "N")]
    pub queue_size: usize,

    /// Origins allowed by CORS, comma-separated: "*" (default) reflects any Origin, "localhost" reflects only local ones.
    #[arg(long = "cors-origins", env = "LLAMA_ARG_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGINS")]
    pub cors_origins: Vec<String>,

    /// Methods allowed by CORS, comma-separated (default: GET, POST, DELETE, OPTIONS).
    #[arg(long = "cors-methods", env = "LLAMA_ARG_CORS_METHODS", value_delimiter = ',', value_name = "METHODS")]
    pub cors_methods: Vec<String>,

    /// Headers allowed by CORS, comma-separated ("*", the default, reflects what the browser asks for).
    #[arg(long = "cors-headers", env = "LLAMA_ARG_CORS_HEADERS", value_delimiter = ',', value_name = "HEADERS")]
    pub cors_headers: Vec<String>,

    /// Allow credentials in CORS responses (default on, as llama.cpp).
    #[arg(
        long = "cors-credentials",
        env = "LLAMA_ARG_CORS_CREDENTIALS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_cors_credentials"
    )]
    pub cors_credentials: Option<bool>,

    /// No credentials in CORS responses.
    #[arg(long = "no-cors-credentials", overrides_with = "cors_credentials")]
    pub no_cors_credentials: bool,

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

    /// Log threshold: 0-1 errors, 2 warnings, 3 info (default), 4 debug, 5 and more trace. Alias: -lv.
    #[arg(
        long = "log-verbosity",
        visible_alias = "verbosity",
        env = "LLAMA_ARG_LOG_VERBOSITY",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub log_verbosity: Option<i32>,

    /// Turn logging off.
    #[arg(long = "log-disable")]
    pub log_disable: bool,

    /// Also write the log to this file (truncated first).
    #[arg(long = "log-file", env = "LLAMA_ARG_LOG_FILE", value_name = "FNAME")]
    pub log_file: Option<PathBuf>,

    /// Colored log on stderr: on, off or auto (when stderr is a terminal).
    #[arg(
        long = "log-colors",
        env = "LLAMA_ARG_LOG_COLORS",
        value_parser = on_off_auto_value,
        default_value = "auto",
        value_name = "on|off|auto"
    )]
    pub log_colors: OnOffAuto,

    /// Level and target before each log line (default: on).
    #[arg(
        long = "log-prefix",
        env = "LLAMA_ARG_LOG_PREFIX",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_log_prefix"
    )]
    pub log_prefix: Option<bool>,

    /// No level and target before log lines.
    #[arg(long = "no-log-prefix", overrides_with = "log_prefix")]
    pub no_log_prefix: bool,

    /// A timestamp before each log line (default: on).
    #[arg(
        long = "log-timestamps",
        env = "LLAMA_ARG_LOG_TIMESTAMPS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool_env,
        overrides_with = "no_log_timestamps"
    )]
    pub log_timestamps: Option<bool>,

    /// No timestamps in log lines.
    #[arg(long = "no-log-timestamps", overrides_with = "log_timestamps")]
    pub no_log_timestamps: bool,

    /// The table's flags that were given and are ignored or refused (filled
    /// by [`Args::try_parse_argv`], not by clap).
    #[arg(skip)]
    notices: Notices,
}

/// A `--flag`/`--no-flag` pair: the negation wins (clap keeps only the last
/// of the two given), else the flag's value (command line or variable), else
/// the default.
fn pair(flag: Option<bool>, negated: bool, default: bool) -> bool {
    if negated { false } else { flag.unwrap_or(default) }
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
    /// A llama.cpp flag (or its variable) for a feature this server does not
    /// have yet; see the flag table.
    #[error("{flag}: {reason}")]
    Refused {
        /// The flag as given, or `VARIABLE (--flag)`.
        flag: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Where the chat template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's `tokenizer.chat_template`.
    Model,
    /// A Jinja source from `--chat-template` or `--chat-template-file`.
    Source(String),
    /// llama.cpp's built-in formatter: a format name from `--chat-template`
    /// (`llama3`, `mistral-v7`, ...), a template it recognizes, or with
    /// `None` the model's (`--no-jinja`).
    Builtin(Option<String>),
}

/// The CORS policy, llama.cpp's by default: any `Origin` reflected, with
/// credentials, `GET, POST, DELETE, OPTIONS`, and whatever headers the
/// browser asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Which origins get CORS headers.
    pub origins: CorsOrigins,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Allowed request headers; `None`: whatever the browser asks for (`*`).
    pub headers: Option<Vec<String>>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

/// `--cors-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (reflected when credentials are allowed).
    Any,
    /// `localhost`: only origins whose host is `localhost`, `127.0.0.1` or `[::1]`.
    Localhost,
    /// These origins.
    List(Vec<String>),
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
    /// Embeddings endpoints on (also on with `reranking`, as in llama.cpp:
    /// they then answer that the model ranks).
    pub embeddings: bool,
    /// `--reranking` (or `--embeddings --pooling rank`): POST /rerank and
    /// its aliases on; the embedding context uses rank pooling.
    pub reranking: bool,
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
    /// The CORS policy (`--cors-*`).
    pub cors: Cors,
    /// Extra allowed Host names.
    pub allowed_hosts: Vec<String>,
    /// Body limit.
    pub max_body: usize,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
    /// Default sampling parameters (llama.cpp's, with the flags' overrides).
    pub sampling: llama_core::SamplingParams,
    /// Worker threads of the HTTP runtime (`--threads-http`; -1 = the default).
    pub threads_http: i32,
    /// How the model file is read (`--load-mode`); see [`Settings::model_params`].
    pub load_mode: LoadMode,
    /// `--keep`: prompt tokens context shift keeps (-1 = all). Not used yet.
    pub n_keep: i32,
    /// `--context-shift`: not built yet; a full slot ends with `length`.
    pub context_shift: bool,
    /// `--cache-reuse`: smallest chunk reused by KV shifting. Not used yet.
    pub cache_reuse: u32,
    /// `--cache-prompt` / `--no-cache-prompt`: the default of a request's
    /// `cache_prompt`. Not read by the request path yet (its default is on).
    pub cache_prompt: bool,
    /// `--props`: POST /props allowed. Not built yet.
    pub props: bool,
    /// `--slot-save-path`: directory of slot save/restore files (`None`:
    /// POST /slots/{id} answers 501).
    pub slot_save_path: Option<PathBuf>,
    /// `--lora`, `--lora-scaled`: the LoRA adapters to load, in
    /// command-line order (their ids), with their initial global scales (0
    /// with `--lora-init-without-apply`).
    pub lora: Vec<LoraSpec>,
    /// `--tags`: informational model tags.
    pub tags: Vec<String>,
    /// `--pooling`: the embedding pooling asked for (`None`: the model's).
    pub pooling: Option<Pooling>,
    /// `--embd-normalize`: the default of a request's `embd_normalize`. Not
    /// read by the request path yet (its default is 2).
    pub embd_normalize: i32,
    /// `--ignore-eos`: the default of a request's `ignore_eos`. Not read by
    /// the request path yet (its default is false).
    pub ignore_eos: bool,
    /// `--jinja` (true, the default) / `--no-jinja`. Templates are always
    /// rendered with Jinja; llama.cpp's built-in engine is not wired.
    pub jinja: bool,
    /// `--chat-template-kwargs`: extra template variables, passed to every
    /// chat template render (a request's `chat_template_kwargs` wins).
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// `-hf`/`-hff`/`-mu`: where [`Settings::download_model`] fetches the
    /// model from before it loads (`None`: `model_path` is a local file).
    /// With `-hf`, `model_path` is empty until then.
    pub download: Option<hub::Source>,
    /// `--offline`: downloads use only the cache.
    pub offline: bool,
    /// `-hft` / `HF_TOKEN` (its `Debug` does not show it).
    pub hf_token: Option<hub::Token>,
    /// One line per flag given that has no effect here: `--flag: reason`.
    /// [`Settings::log_ignored_flags`] logs them at startup.
    pub ignored_flags: Vec<String>,
}

/// The built-in chat templates `--chat-template NAME` accepts.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[("chatml", llama_core::CHATML_TEMPLATE)];

/// The `--lora` and `--lora-scaled` values in command-line order: clap
/// keeps each flag's values apart, with their positions.
fn lora_in_order(matches: &clap::ArgMatches) -> Vec<(bool, String)> {
    let mut all: Vec<(usize, bool, String)> = Vec::new();
    for (id, scaled) in [("lora", false), ("lora_scaled", true)] {
        if let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_many::<String>(id)) {
            all.extend(indices.zip(values).map(|(i, v)| (i, scaled, v.clone())));
        }
    }
    all.sort_by_key(|&(i, _, _)| i);
    all.into_iter().map(|(_, scaled, v)| (scaled, v)).collect()
}

/// llama.cpp's `parse_csv_row`: fields separated by commas; a field that
/// starts with `"` is quoted (commas inside it are kept, `""` is a quote).
fn parse_csv_row(input: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_quotes && field.is_empty() => in_quotes = true,
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if in_quotes => in_quotes = false,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

impl Args {
    /// The adapters of `--lora` (scale 1) and `--lora-scaled FNAME:SCALE`
    /// in command-line order; every scale 0 with `--lora-init-without-apply`.
    fn lora_specs(&self) -> Result<Vec<LoraSpec>, ArgsError> {
        let mut specs = Vec::new();
        for (scaled, value) in &self.lora_in_order {
            for item in parse_csv_row(value) {
                let flag = if *scaled { "--lora-scaled" } else { "--lora" };
                let bad = |reason: &str| ArgsError::OutOfRange { flag, value: item.clone(), reason: reason.into() };
                if !scaled {
                    if item.is_empty() {
                        return Err(bad("an empty file name"));
                    }
                    specs.push(LoraSpec::new(&item, 1.0));
                    continue;
                }
                // As llama.cpp: exactly one ':' (so no ':' in the file name).
                let parts: Vec<&str> = item.split(':').collect();
                let [path, scale] = parts[..] else { return Err(bad("the format is FNAME:SCALE")) };
                let scale: f32 = scale.trim().parse().map_err(|_| bad("the scale is not a number"))?;
                if path.is_empty() || !scale.is_finite() {
                    return Err(bad("the format is FNAME:SCALE, with a finite SCALE"));
                }
                specs.push(LoraSpec::new(path, scale));
            }
        }
        if specs.len() > MAX_LORA_ADAPTERS {
            return Err(ArgsError::OutOfRange {
                flag: "--lora",
                value: specs.len().to_string(),
                reason: format!("at most {MAX_LORA_ADAPTERS} adapters"),
            });
        }
        if self.lora_init_without_apply {
            specs.iter_mut().for_each(|s| s.scale = 0.0);
        }
        Ok(specs)
    }
}

/// Boolean flags read from the environment accept llama.cpp's words:
/// true/1/on/enabled and false/0/off/disabled (any case).
fn parse_bool_env(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "enabled" | "yes" => Ok(true),
        "false" | "0" | "off" | "disabled" | "no" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (use true/false, 1/0, on/off, enabled/disabled)")),
    }
}

impl Args {
    /// Parse the process arguments and environment like
    /// [`try_parse_argv`](Args::try_parse_argv); exits with clap's message on
    /// a parse error (code 2), or after `--help`, `--version`,
    /// `--completion-bash`, `--cache-list`, `--list-devices` (code 0).
    pub fn parse_env() -> Args {
        Args::try_parse_argv(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parse a given argv (first element = program name), reading the
    /// `LLAMA_ARG_*` variables of the process environment.
    ///
    /// Every flag of llama.cpp's server table is known ([`FLAGS`]): those
    /// accepted without effect are noted in the settings (and logged at
    /// startup), those refused make [`Args::validate`] fail; llama.cpp's
    /// multi-letter shorts (`-np 4`) and `--flag=value` work. An unknown flag
    /// is an error.
    ///
    /// # Errors
    /// clap's error: an unknown flag or a bad value (exit code 2), or a
    /// `--help`-like flag whose text is in the error (exit code 0).
    pub fn try_parse_argv<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let (argv, mut notices) = flags::preparse(argv.into_iter().map(Into::into), &env)?;
        let matches = Args::command_with_table().try_get_matches_from(argv)?;
        let mut args = Args::from_arg_matches(&matches)?;
        notices.ignored.extend(kept_flags_given(&matches));
        args.notices = notices;
        args.lora_in_order = lora_in_order(&matches);
        Ok(args)
    }

    /// clap's command with the table's section at the end of `--help`.
    fn command_with_table() -> clap::Command {
        Args::command().after_help(flags::help_section())
    }

    /// Check every value and resolve files (the model file's existence is
    /// checked by [`Settings::check_model_file`]).
    ///
    /// # Errors
    /// [`ArgsError`]: the first refused flag ([`ArgsError::Refused`]), then
    /// the first value that cannot work.
    pub fn validate(&self) -> Result<Settings, ArgsError> {
        fn range(flag: &'static str, value: impl ToString, reason: impl Into<String>) -> ArgsError {
            ArgsError::OutOfRange { flag, value: value.to_string(), reason: reason.into() }
        }

        if let Some(Notice { flag, reason }) = self.notices.refused.first() {
            return Err(ArgsError::Refused { flag: flag.clone(), reason });
        }

        if let Some(p) = self.pooling.filter(|&p| self.reranking && p != Pooling::Rank) {
            return Err(range("--pooling", format!("{p:?}").to_lowercase(), "--reranking ranks with rank pooling"));
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
            let builtins = llama_core::builtin_chat_templates();
            if let Some((_, src)) = BUILTIN_TEMPLATES.iter().find(|(name, _)| name == t) {
                TemplateChoice::Source((*src).to_string())
            } else if builtins.iter().any(|name| name == t) {
                TemplateChoice::Builtin(Some(t.clone()))
            } else if t.contains("{%") || t.contains("{{") {
                TemplateChoice::Source(t.clone())
            } else {
                return Err(range(
                    "--chat-template",
                    t,
                    format!("not a built-in template ({}) nor a Jinja template", builtins.join(", ")),
                ));
            }
        } else {
            TemplateChoice::Model
        };
        // --no-jinja: llama.cpp's built-in formatter, on the template given or the model's.
        let chat_template = match chat_template {
            TemplateChoice::Model if !pair(self.jinja, self.no_jinja, true) => TemplateChoice::Builtin(None),
            TemplateChoice::Source(src) if !pair(self.jinja, self.no_jinja, true) => {
                llama_core::ChatTemplate::builtin(&src, "", "")
                    .map_err(|e| range("--no-jinja", "(template)", e.to_string()))?;
                TemplateChoice::Builtin(Some(src))
            }
            other => other,
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
        let mut sampling = self.default_sampling(seed);
        if !self.dry_sequence_breaker.is_empty() {
            // As llama.cpp: the first one given clears the defaults; "none" clears all.
            sampling.dry_sequence_breakers =
                self.dry_sequence_breaker.iter().filter(|b| *b != "none").cloned().collect();
            if self.dry_sequence_breaker.last().is_some_and(|b| b == "none") {
                sampling.dry_sequence_breakers.clear();
            }
        }
        for bias in &self.logit_bias {
            sampling.logit_bias.push(parse_logit_bias(bias).ok_or_else(|| {
                range("--logit-bias", bias, "expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043+1 or 2-inf")
            })?);
        }
        sampling.grammar = self.default_grammar()?;
        sampling.validate().map_err(|e| match e {
            llama_core::Error::InvalidParam { name, reason } => {
                let (flag, value) = self.sampling_flag(name);
                range(flag, value, reason)
            }
            llama_core::Error::Grammar(reason) => range(self.grammar_flag(), "(grammar)", reason),
            other => range("--temp", "", other.to_string()),
        })?;
        let threads_http = match self.threads_http {
            n if n <= 0 => -1,
            n if n <= 1024 => n,
            n => return Err(range("--threads-http", n, "must be between 1 and 1024, or -1 for the default (2)")),
        };
        let chat_template_kwargs = match &self.chat_template_kwargs {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str(text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return Err(range("--chat-template-kwargs", text, "must be a JSON object")),
                Err(e) => return Err(range("--chat-template-kwargs", text, format!("not valid JSON: {e}"))),
            },
        };
        let ignored_flags: Vec<String> =
            self.notices.ignored.iter().map(|n| format!("{}: no effect here: {}", n.flag, n.reason)).collect();

        // As llama.cpp: -hf wins over -m; -mu downloads to -m when both are given.
        let non_empty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let download = if let Some(spec) = non_empty(&self.hf_repo) {
            let repo = hub::RepoSpec::parse(&spec).map_err(|_| {
                range("--hf-repo", &spec, "expected <user>/<model>[:quant], e.g. ggml-org/gemma-3-1b-it-GGUF:Q4_K_M")
            })?;
            Some(hub::Source::Hub { repo, file: non_empty(&self.hf_file) })
        } else {
            non_empty(&self.model_url).map(|url| hub::Source::Url { url, path: self.model.clone() })
        };
        let model_path = match (&download, &self.model) {
            // Filled in by `Settings::download_model`.
            (Some(hub::Source::Hub { .. }), _) | (Some(hub::Source::Url { .. }), None) => PathBuf::new(),
            // Whether the file exists is checked when the server starts
            // (`serve`), so that settings can be built without a model.
            (_, Some(path)) => path.clone(),
            (None, None) => llama_runtime::find_default_model().map_err(|e| ArgsError::DefaultModelMissing {
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
            embeddings: self.embeddings || self.reranking,
            reranking: self.reranking || (self.embeddings && self.pooling == Some(Pooling::Rank)),
            metrics: self.metrics,
            slots: pair(self.slots, self.no_slots, true),
            chat_template,
            timeout: Duration::from_secs(self.timeout),
            flash_attn: self.flash_attn,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            n_gpu_layers: match self.n_gpu_layers {
                None | Some(GpuLayers::Auto) => None,
                Some(GpuLayers::Count(n)) => Some(n),
            },
            queue_size: self.queue_size,
            cors: self.cors()?,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            max_body: self.max_body,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            sampling,
            threads_http,
            load_mode: self.load_mode,
            n_keep: self.keep,
            context_shift: pair(self.context_shift, self.no_context_shift, false),
            cache_reuse: self.cache_reuse,
            cache_prompt: pair(self.cache_prompt, self.no_cache_prompt, true),
            props: self.props,
            slot_save_path: self.slot_save_path.clone(),
            lora: self.lora_specs()?,
            tags: self.tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            pooling: self.pooling,
            embd_normalize: self.embd_normalize,
            ignore_eos: self.ignore_eos,
            jinja: pair(self.jinja, self.no_jinja, true),
            chat_template_kwargs,
            download,
            offline: self.offline,
            hf_token: self.hf_token.clone().and_then(hub::Token::new),
            ignored_flags,
        })
    }

    /// The flag (and value as given) behind a sampling parameter `name` of
    /// [`llama_core::SamplingParams::validate`]'s errors.
    fn sampling_flag(&self, name: &str) -> (&'static str, String) {
        fn show<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        match name {
            "temperature" => ("--temp", show(self.temp)),
            "top_p" => ("--top-p", show(self.top_p)),
            "min_p" => ("--min-p", show(self.min_p)),
            "typical_p" => ("--typical", show(self.typical)),
            "repeat_penalty" => ("--repeat-penalty", show(self.repeat_penalty)),
            "repeat_last_n" => ("--repeat-last-n", show(self.repeat_last_n)),
            "frequency_penalty" => ("--frequency-penalty", show(self.frequency_penalty)),
            "presence_penalty" => ("--presence-penalty", show(self.presence_penalty)),
            "dry_multiplier" => ("--dry-multiplier", show(self.dry_multiplier)),
            "dry_base" => ("--dry-base", show(self.dry_base)),
            "dry_allowed_length" => ("--dry-allowed-length", show(self.dry_allowed_length)),
            "dry_penalty_last_n" => ("--dry-penalty-last-n", show(self.dry_penalty_last_n)),
            "dry_sequence_breakers" => ("--dry-sequence-breaker", self.dry_sequence_breaker.join(",")),
            "xtc_probability" => ("--xtc-probability", show(self.xtc_probability)),
            "xtc_threshold" => ("--xtc-threshold", show(self.xtc_threshold)),
            "mirostat" => ("--mirostat", show(self.mirostat)),
            "mirostat_tau" => ("--mirostat-ent", show(self.mirostat_ent)),
            "mirostat_eta" => ("--mirostat-lr", show(self.mirostat_lr)),
            "logit_bias" => ("--logit-bias", self.logit_bias.join(",")),
            _ => ("--top-k", show(self.top_k)),
        }
    }

    /// The flag that gave the default grammar.
    fn grammar_flag(&self) -> &'static str {
        if self.grammar_file.is_some() {
            "--grammar-file"
        } else if self.json_schema.is_some() {
            "--json-schema"
        } else if self.json_schema_file.is_some() {
            "--json-schema-file"
        } else {
            "--grammar"
        }
    }

    /// The default grammar from `--grammar`, `--grammar-file`,
    /// `--json-schema` or `--json-schema-file` (a schema is converted).
    fn default_grammar(&self) -> Result<Option<String>, ArgsError> {
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| ArgsError::Unreadable {
                flag,
                path: path.clone(),
                reason: e.to_string(),
            })
        };
        let (flag, schema) = match (&self.json_schema, &self.json_schema_file) {
            (Some(text), _) => ("--json-schema", text.clone()),
            (None, Some(path)) => ("--json-schema-file", read("--json-schema-file", path)?),
            (None, None) => {
                return Ok(match (&self.grammar, &self.grammar_file) {
                    (Some(g), _) => Some(g.clone()),
                    (None, Some(path)) => Some(read("--grammar-file", path)?),
                    (None, None) => None,
                });
            }
        };
        let bad = |reason: String| ArgsError::OutOfRange { flag, value: "(schema)".into(), reason };
        let schema: llama_core::json_schema::OrderedJson =
            serde_json::from_str(&schema).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        llama_core::json_schema::json_schema_to_gbnf(&schema).map(Some).map_err(|e| bad(e.to_string()))
    }

    /// Worker threads for the HTTP runtime: `--threads-http` when positive
    /// (at most 1024), else `default`.
    pub fn http_workers(&self, default: usize) -> usize {
        if self.threads_http > 0 { (self.threads_http as usize).min(1024) } else { default }
    }

    /// Install the log subscriber the `--log-*` flags ask for: stderr, plus
    /// `--log-file` (truncated, no colors); `-v` = debug, `-lv N` = the level
    /// of N, `RUST_LOG` overrides both; `--log-disable`: nothing. Does
    /// nothing if a subscriber is installed already.
    pub fn init_logging(&self) {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;

        if self.log_disable {
            return;
        }
        let default = match self.log_verbosity {
            _ if self.verbose => "debug",
            Some(..=1) => "error",
            Some(2) => "warn",
            Some(3) => "info,llama_cpp=warn",
            Some(4) => "debug",
            Some(_) => "trace",
            None => "info,llama_cpp=warn",
        };
        let filter = || {
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        };
        let prefix = pair(self.log_prefix, self.no_log_prefix, true);
        let timestamps = pair(self.log_timestamps, self.no_log_timestamps, true);
        let colors = match self.log_colors {
            OnOffAuto::On => true,
            OnOffAuto::Off => false,
            OnOffAuto::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        // One fmt layer per output; the timer is a type parameter, hence the boxes.
        fn layer<S, W>(writer: W, ansi: bool, prefix: bool, timestamps: bool) -> Box<dyn Layer<S> + Send + Sync>
        where
            S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
            W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
        {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_level(prefix)
                .with_target(prefix);
            if timestamps { fmt.boxed() } else { fmt.without_time().boxed() }
        }
        let file = self.log_file.as_ref().and_then(|path| match std::fs::File::create(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("llama-server: warning: cannot open --log-file {}: {e}", path.display());
                None
            }
        });
        let stderr = layer(std::io::stderr, colors, prefix, timestamps).with_filter(filter());
        let file = file.map(|f| layer(std::sync::Mutex::new(f), false, prefix, timestamps).with_filter(filter()));
        let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
    }
}

/// `TOKEN_ID+BIAS` / `TOKEN_ID-BIAS` (llama.cpp's `--logit-bias` syntax;
/// `-inf` bans the token).
fn parse_logit_bias(s: &str) -> Option<(llama_core::Token, f32)> {
    let at = s.char_indices().skip(1).find(|(_, c)| *c == '+' || *c == '-').map(|(i, _)| i)?;
    let token: llama_core::Token = s[..at].trim().parse().ok()?;
    let bias: f32 = s[at + 1..].trim().parse().ok()?;
    Some((token, if s.as_bytes()[at] == b'-' { -bias } else { bias }))
}

/// Accepted flags that clap parses (to keep their value in the settings),
/// given on the command line or in the environment: one notice each.
fn kept_flags_given(matches: &ArgMatches) -> Vec<Notice> {
    let mut out = Vec::new();
    for f in FLAGS.iter().filter(|f| f.class == FlagClass::Accepted) {
        let FlagParser::Clap(id) = f.parser else { continue };
        for (id, spelling) in
            [(id.to_string(), f.primary()), (format!("no_{id}"), f.negations.first().copied().unwrap_or(""))]
        {
            if matches.try_get_raw(&id).is_err() {
                continue; // no negation field
            }
            let flag = match matches.value_source(&id) {
                Some(ValueSource::CommandLine) => spelling.to_string(),
                Some(ValueSource::EnvVariable) => format!("{} ({spelling})", f.env.unwrap_or("environment")),
                _ => continue,
            };
            out.push(Notice { flag, reason: f.note });
        }
    }
    out
}

impl Args {
    /// The CORS policy of the `--cors-*` flags.
    fn cors(&self) -> Result<Cors, ArgsError> {
        fn range(flag: &'static str, value: impl ToString, reason: impl Into<String>) -> ArgsError {
            ArgsError::OutOfRange { flag, value: value.to_string(), reason: reason.into() }
        }
        let list = |v: &[String]| -> Vec<String> {
            v.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect()
        };
        let origins = list(&self.cors_origins);
        let origins = if origins.is_empty() || origins.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else if origins == ["localhost"] {
            CorsOrigins::Localhost
        } else {
            if let Some(bad) = origins.iter().find(|o| axum::http::HeaderValue::from_str(o).is_err()) {
                return Err(range("--cors-origins", bad, "not a valid origin"));
            }
            CorsOrigins::List(origins)
        };
        let mut methods: Vec<String> = list(&self.cors_methods).iter().map(|m| m.to_ascii_uppercase()).collect();
        if methods.is_empty() {
            methods = ["GET", "POST", "DELETE", "OPTIONS"].map(String::from).to_vec();
        }
        if let Some(bad) = methods.iter().find(|m| axum::http::Method::from_bytes(m.as_bytes()).is_err()) {
            return Err(range("--cors-methods", bad, "not an HTTP method"));
        }
        let headers = list(&self.cors_headers);
        let headers = if headers.is_empty() || headers.iter().any(|h| h == "*") {
            None
        } else {
            if let Some(bad) = headers.iter().find(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()) {
                return Err(range("--cors-headers", bad, "not a header name"));
            }
            Some(headers)
        };
        Ok(Cors { origins, methods, headers, credentials: pair(self.cors_credentials, self.no_cors_credentials, true) })
    }
}

impl Settings {
    /// Log one warning per flag that has no effect here (see
    /// [`Settings::ignored_flags`]); called once at startup.
    pub fn log_ignored_flags(&self) {
        for line in &self.ignored_flags {
            tracing::warn!("{line}");
        }
    }

    /// The model parameters these settings ask for: `-ngl` and `--load-mode`.
    pub fn model_params(&self) -> ModelParams {
        let (use_mmap, use_mlock) = match self.load_mode {
            LoadMode::Auto | LoadMode::Mmap => (true, false),
            LoadMode::None | LoadMode::DirectIo => (false, false),
            LoadMode::Mlock => (false, true),
            LoadMode::MmapMlock => (true, true),
        };
        ModelParams { n_gpu_layers: self.n_gpu_layers.unwrap_or(0), use_mmap, use_mlock, ..ModelParams::default() }
    }
}

impl Settings {
    /// `-hf`/`-mu`: download the model (or find it in the cache) and make
    /// [`Settings::model_path`] its local path. Nothing to do without a
    /// download source. The cache and the hub come from the environment
    /// ([`hub::Options::from_env`]); `--offline` and `--hf-token` apply.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the download; the next start resumes it.
    ///
    /// # Errors
    /// [`hub::HubError`]: see [`hub::resolve`].
    pub async fn download_model(&mut self) -> Result<(), hub::HubError> {
        let Some(source) = &self.download else { return Ok(()) };
        let mut options = hub::Options::from_env()?;
        options.offline = self.offline;
        if let Some(token) = &self.hf_token {
            options.token = Some(token.clone());
        }
        self.model_path = hub::resolve(source, &options).await?;
        tracing::info!("model {source}: {}", self.model_path.display());
        Ok(())
    }

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
    /// `MAX_CTX`, 1 Mi tokens).
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
            pooling: match self.pooling {
                _ if self.reranking => Pooling::Rank,
                // Without embeddings nothing pools (llama.cpp ignores it too).
                Some(Pooling::Rank) | None => Pooling::Unspecified,
                Some(p) => p,
            },
            lora: self.lora.clone(),
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
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => { $(if let Some(v) = self.$flag { p.$field = v; })* };
        }
        set!(
            typical => typical_p,
            presence_penalty => presence_penalty,
            frequency_penalty => frequency_penalty,
            dry_multiplier => dry_multiplier,
            dry_base => dry_base,
            dry_allowed_length => dry_allowed_length,
            dry_penalty_last_n => dry_penalty_last_n,
            xtc_probability => xtc_probability,
            xtc_threshold => xtc_threshold,
            mirostat_lr => mirostat_eta,
            mirostat_ent => mirostat_tau
        );
        if let Some(m) = self.mirostat {
            // Out of range stays out of range, for validate to name it.
            p.mirostat = u8::try_from(m).unwrap_or(u8::MAX);
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
        assert_eq!(a.flash_attn, FlashAttn::Off);
        assert_eq!(a.timeout, 30);
        assert_eq!(a.n_gpu_layers, Some(GpuLayers::Count(0)));
        let a = parse(&["-fa", "-nocb"]).unwrap();
        assert_eq!(a.flash_attn, FlashAttn::On);
        let s = a.validate().unwrap();
        assert_eq!(s.ignored_flags.len(), 1);
        assert!(s.ignored_flags[0].starts_with("-nocb: no effect here: batching is always continuous"));
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
        // llama.cpp's built-in formats by name, and --no-jinja.
        let s = settings(&["--chat-template", "llama3"]).unwrap();
        assert_eq!(s.chat_template, TemplateChoice::Builtin(Some("llama3".into())));
        assert!(settings(&["--chat-template", "no-such-format"]).is_err());
        let s = settings(&["--no-jinja", "--chat-template", "chatml"]).unwrap();
        assert!(matches!(s.chat_template, TemplateChoice::Builtin(Some(ref src)) if src.contains("<|im_start|>")));
    }

    #[test]
    fn no_slots_and_flags() {
        let s = settings(&["--no-slots", "--metrics", "--embedding", "--no-webui", "--jinja"]).unwrap();
        assert!(!s.slots);
        assert!(s.metrics);
        assert!(s.embeddings);
    }

    #[test]
    fn reranking_turns_on_embeddings_with_rank_pooling() {
        for flags in [
            &["--reranking"][..],
            &["--rerank"],
            &["--embedding", "--pooling", "rank"],
            &["--rerank", "--pooling", "rank"],
        ] {
            let s = settings(flags).unwrap();
            assert!(s.reranking && s.embeddings, "{flags:?}");
            let c = s.engine_config(512);
            assert!(c.embeddings && c.pooling == Pooling::Rank, "{flags:?}");
            c.validate().unwrap();
        }
        // Rank pooling without embeddings pools nothing, as in llama.cpp.
        let s = settings(&["--pooling", "rank"]).unwrap();
        assert!(!s.reranking && !s.embeddings);
        assert_eq!(s.engine_config(512).pooling, Pooling::Unspecified);
        s.engine_config(512).validate().unwrap();
        // Another pooling contradicts reranking.
        let err = settings(&["--reranking", "--pooling", "mean"]).unwrap_err();
        assert!(err.to_string().contains("--pooling mean"), "{err}");
        let s = settings(&["--embedding", "--pooling", "cls"]).unwrap();
        assert!(!s.reranking && s.engine_config(512).pooling == Pooling::Cls);
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
    fn cheap_flags_reach_the_settings() {
        let s = settings(&[
            "-ngl=all",
            "-lm",
            "mmap+mlock",
            "--threads-http",
            "3",
            "--keep",
            "-1",
            "--context-shift",
            "--cache-reuse",
            "256",
            "--no-cache-prompt",
            "--props",
            "--tags",
            "a, b,",
            "--pooling",
            "rank",
            "--embd-normalize",
            "-1",
            "--ignore-eos",
            "--no-jinja",
            "--slot-save-path",
            "/tmp/slots",
            "--chat-template-kwargs",
            r#"{"enable_thinking": false}"#,
        ])
        .unwrap();
        assert_eq!(s.n_gpu_layers, Some(-1));
        let mp = s.model_params();
        assert!(mp.use_mmap && mp.use_mlock && mp.n_gpu_layers == -1);
        assert_eq!(s.threads_http, 3);
        assert_eq!((s.n_keep, s.context_shift, s.cache_reuse, s.cache_prompt), (-1, true, 256, false));
        assert!(s.props && s.ignore_eos && !s.jinja);
        assert_eq!(s.tags, ["a", "b"]);
        assert_eq!(s.pooling, Some(Pooling::Rank));
        assert_eq!(s.embd_normalize, -1);
        assert_eq!(s.slot_save_path.as_deref(), Some(std::path::Path::new("/tmp/slots")));
        assert_eq!(s.chat_template_kwargs["enable_thinking"], serde_json::json!(false));
        // Every accepted flag that was given is one startup line; implemented ones none.
        for flag in ["--keep", "--context-shift", "--no-cache-prompt", "--ignore-eos"] {
            assert!(!s.ignored_flags.iter().any(|l| l.starts_with(&format!("{flag}: "))), "{flag}");
        }
        assert_eq!(s.chat_template, TemplateChoice::Builtin(None));
        assert!(s.ignored_flags.iter().any(|l| l.starts_with("--tags: ")), "{:?}", s.ignored_flags);
        let d = settings(&[]).unwrap();
        assert_eq!((d.n_keep, d.context_shift, d.cache_prompt, d.jinja, d.slots), (0, false, true, true, true));
        assert!(d.ignored_flags.is_empty(), "{:?}", d.ignored_flags);
        assert_eq!((d.model_params().use_mmap, d.model_params().use_mlock), (true, false));
        assert_eq!(d.n_gpu_layers, None);
    }

    #[test]
    fn pairs_take_the_last_spelling() {
        assert!(!settings(&["--slots", "--no-slots"]).unwrap().slots);
        assert!(settings(&["--no-slots", "--slots"]).unwrap().slots);
        assert!(settings(&["--no-context-shift", "--context-shift"]).unwrap().context_shift);
        assert!(!settings(&["--context-shift", "--no-context-shift"]).unwrap().context_shift);
        assert!(settings(&["--jinja"]).unwrap().jinja);
        assert!(!settings(&["--log-prefix=false", "--slots=0"]).unwrap().slots);
    }

    #[test]
    fn sampling_defaults_from_flags() {
        let s = settings(&[
            "--typical-p",
            "0.5",
            "--presence-penalty",
            "0.25",
            "--frequency-penalty",
            "0.5",
            "--dry-multiplier",
            "0.8",
            "--dry-sequence-breaker",
            "\\n",
            "--dry-sequence-breaker",
            "::",
            "--xtc-probability",
            "0.5",
            "--mirostat",
            "2",
            "--mirostat-lr",
            "0.2",
            "--mirostat-ent",
            "4",
            "-l",
            "15043+1",
            "--logit-bias",
            "2-inf",
            "--grammar",
            "root ::= \"a\"",
        ])
        .unwrap()
        .sampling;
        assert_eq!((s.typical_p, s.presence_penalty, s.frequency_penalty), (0.5, 0.25, 0.5));
        assert_eq!(
            (s.dry_multiplier, s.xtc_probability, s.mirostat, s.mirostat_eta, s.mirostat_tau),
            (0.8, 0.5, 2, 0.2, 4.0)
        );
        assert_eq!(s.dry_sequence_breakers, ["\\n", "::"]);
        assert_eq!(s.logit_bias, [(15043, 1.0), (2, f32::NEG_INFINITY)]);
        assert_eq!(s.grammar.as_deref(), Some("root ::= \"a\""));
        assert!(settings(&["--dry-sequence-breaker", "none"]).unwrap().sampling.dry_sequence_breakers.is_empty());
        let g = settings(&["-j", r#"{"type": "boolean"}"#]).unwrap().sampling.grammar.unwrap();
        assert!(g.contains("root"), "{g}");
        for (args, flag) in [
            (&["-l", "15043"][..], "--logit-bias"),
            (&["--mirostat", "3"], "--mirostat"),
            (&["--typical", "0"], "--typical"),
            (&["--grammar", "root ::= ("], "--grammar"),
            (&["-j", "{"], "--json-schema"),
            (&["--grammar-file", "/nonexistent.gbnf"], "--grammar-file"),
            (&["--chat-template-kwargs", "[1]"], "--chat-template-kwargs"),
            (&["--threads-http", "5000"], "--threads-http"),
        ] {
            let err = settings(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn lora_flags_keep_the_command_line_order_and_llama_cpp_syntax() {
        let s = settings(&["--lora", "a.gguf,\"b,c.gguf\"", "--lora-scaled", "d.gguf:0.5,e.gguf:-1", "--lora=f.gguf"])
            .unwrap();
        let got: Vec<(String, f32)> = s.lora.iter().map(|l| (l.path.display().to_string(), l.scale)).collect();
        let want = [("a.gguf", 1.0), ("b,c.gguf", 1.0), ("d.gguf", 0.5), ("e.gguf", -1.0), ("f.gguf", 1.0)];
        assert_eq!(got, want.map(|(p, s)| (p.to_string(), s)));
        assert_eq!(s.engine_config(4096).lora, s.lora);
        let s = settings(&["--lora-scaled", "d.gguf:0.5", "--lora", "a.gguf", "--lora-init-without-apply"]).unwrap();
        assert_eq!(s.lora.iter().map(|l| l.scale).collect::<Vec<_>>(), [0.0, 0.0]);
        assert_eq!(s.lora[0].path, std::path::Path::new("d.gguf"));
        for bad in ["d.gguf", "c:/d.gguf:1", "d.gguf:x", "d.gguf:inf", ":1"] {
            let err = settings(&["--lora-scaled", bad]).unwrap_err();
            assert!(matches!(err, ArgsError::OutOfRange { flag: "--lora-scaled", .. }), "{bad}: {err}");
        }
        assert!(settings(&["--lora", "a.gguf,"]).is_err(), "an empty file name");
        assert!(settings(&[]).unwrap().lora.is_empty());
    }

    #[test]
    fn refused_flags_fail_validation_with_one_line() {
        let err = settings(&["--cpu-mask", "ff", "--mmproj", "p.gguf", "--lora", "a.gguf"]).unwrap_err();
        assert!(matches!(err, ArgsError::Refused { ref flag, .. } if flag == "--mmproj"), "{err}");
        let line = err.to_string();
        assert!(!line.contains('\n') && line.contains("multimodal"), "{line}");
    }

    #[test]
    fn help_lists_the_table_flags() {
        let help = Args::command_with_table().render_help().to_string();
        for flag in ["--cpu-mask M", "--mmproj FILE", "-kvu, --kv-unified, -no-kvu, --no-kv-unified", "--offline"] {
            assert!(help.contains(flag), "--help lacks {flag}");
        }
    }

    #[test]
    fn argv_normalization_leaves_values_alone() {
        let (out, _) =
            flags::preparse(["x", "-np", "4", "--alias", "a", "--", "-np"].map(OsString::from), &|_: &str| {
                None::<String>
            })
            .unwrap();
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(out, ["x", "--parallel", "4", "--alias", "a", "--", "-np"]);
    }
}
