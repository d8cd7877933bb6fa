//! The flag table: every flag of llama.cpp's `llama-server` (the flag tables
//! of `vendor/llama.cpp/tools/server/README.md`), plus our own, each in
//! exactly one [`FlagClass`].
//!
//! clap parses the flags it has a field for ([`FlagParser::Clap`]); the
//! rest are taken out of the command line here, before clap sees it
//! ([`preparse`]): an accepted flag (and its value) becomes a startup
//! notice, a refused one an error of [`Args::validate`](crate::Args::validate).
//! The same pass rewrites llama.cpp's multi-letter short spellings
//! (`-np 4`, `-nocb`) to long ones, which clap can parse, and turns
//! `--ctx_size` into `--ctx-size` as llama.cpp does. `docs/SERVER.md`'s
//! flag table is rendered from [`FLAGS`] ([`markdown_table`]), and a test
//! checks [`FLAGS`] against the README.

use std::ffi::OsString;

use clap::error::ErrorKind;

/// What a flag does in this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagClass {
    /// It has llama.cpp's meaning (or the note says where it differs).
    Implemented,
    /// Parsed, value included, and otherwise ignored; a startup line says so
    /// and why. Some are kept in [`Settings`](crate::Settings) for the work
    /// that will use them (the note says which field).
    Accepted,
    /// The server refuses to start, with one line naming the flag and why:
    /// features that are not built yet, and flags llama.cpp itself refuses.
    Refused,
}

impl FlagClass {
    /// The name used in `docs/SERVER.md` and `--help`.
    pub fn label(self) -> &'static str {
        match self {
            FlagClass::Implemented => "implemented",
            FlagClass::Accepted => "accepted, no effect",
            FlagClass::Refused => "refused",
        }
    }
}

/// Who parses a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagParser {
    /// clap, into the [`Args`](crate::Args) field with this id; a negation
    /// (`--no-slots`) goes into the field `no_<id>`.
    Clap(&'static str),
    /// The pass before clap: the flag and its values are taken out of the command line.
    Table,
    /// The pass before clap: print something and exit 0, as llama.cpp does.
    Exit(ExitAction),
}

/// Flags that print something and exit instead of serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitAction {
    /// `--cache-list`: the models in the download cache.
    CacheList,
    /// `--completion-bash`: a bash completion script.
    CompletionBash,
    /// `--list-devices`: the offload devices.
    ListDevices,
}

/// One row of the flag table (one row of the README's tables).
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The spellings that turn it on or take its value, README order.
    pub names: &'static [&'static str],
    /// The spellings that turn it off (`--no-slots`, `-no-kvu`).
    pub negations: &'static [&'static str],
    /// The value's placeholder (`N`, `FNAME`); `None` for a switch.
    pub value: Option<&'static str>,
    /// How many command-line values it takes: 0, 1 or 2.
    pub values: u8,
    /// Its environment variable.
    pub env: Option<&'static str>,
    /// What it does here.
    pub class: FlagClass,
    /// Who parses it.
    pub parser: FlagParser,
    /// What it does, where it differs, or why it has no effect / is refused.
    pub note: &'static str,
    /// Not a llama.cpp flag: one of ours.
    pub ours: bool,
}

const fn flag(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        negations: &[],
        value: None,
        values: 0,
        env: None,
        class: FlagClass::Accepted,
        parser: FlagParser::Table,
        note: "",
        ours: false,
    }
}

impl Flag {
    const fn neg(mut self, negations: &'static [&'static str]) -> Flag {
        self.negations = negations;
        self
    }
    const fn val(mut self, hint: &'static str) -> Flag {
        self.value = Some(hint);
        self.values = 1;
        self
    }
    const fn two(mut self, hint: &'static str) -> Flag {
        self.value = Some(hint);
        self.values = 2;
        self
    }
    const fn env(mut self, env: &'static str) -> Flag {
        self.env = Some(env);
        self
    }
    /// Implemented, parsed by clap into field `id`.
    const fn imp(mut self, id: &'static str, note: &'static str) -> Flag {
        self.class = FlagClass::Implemented;
        self.parser = FlagParser::Clap(id);
        self.note = note;
        self
    }
    /// Implemented here, by printing and exiting.
    const fn exit(mut self, action: ExitAction, note: &'static str) -> Flag {
        self.class = FlagClass::Implemented;
        self.parser = FlagParser::Exit(action);
        self.note = note;
        self
    }
    /// Accepted without effect, parsed by clap into field `id` (kept in the settings).
    const fn kept(mut self, id: &'static str, note: &'static str) -> Flag {
        self.class = FlagClass::Accepted;
        self.parser = FlagParser::Clap(id);
        self.note = note;
        self
    }
    /// Accepted without effect, taken out before clap.
    const fn no_effect(mut self, note: &'static str) -> Flag {
        self.class = FlagClass::Accepted;
        self.parser = FlagParser::Table;
        self.note = note;
        self
    }
    /// Refused at startup.
    const fn refused(mut self, note: &'static str) -> Flag {
        self.class = FlagClass::Refused;
        self.parser = FlagParser::Table;
        self.note = note;
        self
    }
    const fn ours(mut self) -> Flag {
        self.ours = true;
        self
    }

    /// Every spelling: names, then negations.
    pub fn spellings(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.names.iter().chain(self.negations).copied()
    }

    /// The spelling used in messages: the first long name.
    pub fn primary(&self) -> &'static str {
        self.names.iter().find(|n| n.starts_with("--")).unwrap_or(&self.names[0])
    }

    /// The long spelling clap knows for `spelling` (a multi-letter short
    /// such as `-np` or `-nocb` becomes `--parallel` / `--no-cont-batching`).
    fn long_for(&self, spelling: &str) -> &'static str {
        let group = if self.negations.contains(&spelling) { self.negations } else { self.names };
        group.iter().find(|n| n.starts_with("--")).copied().unwrap_or(self.primary())
    }
}

// Reasons shared by several rows.
const AFFINITY: &str = "CPU affinity, priority and polling are not set: ggml's threads run with the OS defaults";
const GPU: &str =
    "GPU placement is not wired: llama.cpp's defaults apply (layers offload with -ngl in a GPU build only)";
const ROPE: &str = "RoPE/YaRN scaling comes from the model file; overriding it is not wired";
const SPEC: &str = "speculative decoding is not built: tokens are generated without a draft";
const SPEC_REMOVED: &str = "removed in llama.cpp too (it refuses it): use the --spec-draft-* or --spec-ngram-* flags";
const MTMD: &str = "multimodal input is not built yet (image and audio parts are refused with 400)";
const PRESET: &str =
    "llama.cpp's preset flags (a fixed repository plus its flags) are not built: pass -hf REPO and the flags yourself";
const NO_UI: &str = "there is no web UI";
const TOOLS: &str = "built-in agent tools and MCP servers are not provided";
const REASONING: &str = "reasoning output is not parsed: thoughts stay in `content`";
const SAMPLER: &str = "not in llama-core's sampler chain (its order is fixed)";
const CACHE: &str =
    "the prompt cache is each slot's own KV cells (longest-prefix reuse); there is no host-memory cache";

/// Every flag: the rows of the README's "Common params", "Sampling params"
/// and "Server-specific params" tables, in that order, then our own.
pub static FLAGS: &[Flag] = &[
    // ---- Common params
    flag(&["-h", "--help", "--usage"]).imp("help", "Print the flags and exit."),
    flag(&["--version"]).imp("version", "Print the version and exit."),
    flag(&["-cl", "--cache-list"]).exit(
        ExitAction::CacheList,
        "Prints the models in the -hf cache (`user/model:QUANT`, one per quant) and exits.",
    ),
    flag(&["--completion-bash"]).exit(ExitAction::CompletionBash, "Prints a bash completion script and exits."),
    flag(&["-t", "--threads"]).val("N").env("LLAMA_ARG_THREADS").imp("threads", "Default -1 (all cores)."),
    flag(&["-tb", "--threads-batch"]).val("N").imp("threads_batch", "Default: --threads. Also `LLAMA_ARG_THREADS_BATCH`."),
    flag(&["-C", "--cpu-mask"]).val("M").no_effect(AFFINITY),
    flag(&["-Cr", "--cpu-range"]).val("lo-hi").no_effect(AFFINITY),
    flag(&["--cpu-strict"]).val("<0|1>").no_effect(AFFINITY),
    flag(&["--prio"]).val("N").no_effect(AFFINITY),
    flag(&["--poll"]).val("<0...100>").no_effect(AFFINITY),
    flag(&["-Cb", "--cpu-mask-batch"]).val("M").no_effect(AFFINITY),
    flag(&["-Crb", "--cpu-range-batch"]).val("lo-hi").no_effect(AFFINITY),
    flag(&["--cpu-strict-batch"]).val("<0|1>").no_effect(AFFINITY),
    flag(&["--prio-batch"]).val("N").no_effect(AFFINITY),
    flag(&["--poll-batch"]).val("<0|1>").no_effect(AFFINITY),
    flag(&["-c", "--ctx-size"]).val("N").env("LLAMA_ARG_CTX_SIZE").imp(
        "ctx_size",
        "Total KV cells, split evenly across the slots; 0 = the model's. Default 4096 (llama.cpp: 0). Each slot needs >= 64.",
    ),
    flag(&["-n", "--predict", "--n-predict"])
        .val("N")
        .env("LLAMA_ARG_N_PREDICT")
        .imp("n_predict", "Default and cap of generated tokens per request (-1 = until the slot is full)."),
    flag(&["-b", "--batch-size"])
        .val("N")
        .env("LLAMA_ARG_BATCH")
        .imp("batch_size", "Default 512 (llama.cpp: 2048; 512 keeps CPU steps short); raised to -np if smaller."),
    flag(&["-ub", "--ubatch-size"])
        .val("N")
        .env("LLAMA_ARG_UBATCH")
        .imp("ubatch_size", "Default 512; clamped to --batch-size."),
    flag(&["--keep"]).val("N").imp(
        "keep",
        "Prompt tokens a context shift keeps (-1 = all); a request's `n_keep` wins. Counted from the first token, BOS included.",
    ),
    flag(&["--swa-full"])
        .env("LLAMA_ARG_SWA_FULL")
        .no_effect("the sliding-window KV cache keeps llama.cpp's default size (the engine has no setting for it)"),
    flag(&["-fa", "--flash-attn"]).val("[on|off|auto]").env("LLAMA_ARG_FLASH_ATTN").imp(
        "flash_attn",
        "on/off/auto (also true/false/1/0). Default auto. `-fa` alone means on.",
    ),
    flag(&["--perf"])
        .neg(&["--no-perf"])
        .env("LLAMA_ARG_PERF")
        .no_effect("llama.cpp's internal perf counters are not printed; every response carries `timings`"),
    flag(&["-e", "--escape"])
        .neg(&["--no-escape"])
        .no_effect("escapes apply to prompts given on the command line, which a server does not take"),
    flag(&["--rope-scaling"]).val("{none,linear,yarn}").env("LLAMA_ARG_ROPE_SCALING_TYPE").no_effect(ROPE),
    flag(&["--rope-scale"]).val("N").env("LLAMA_ARG_ROPE_SCALE").no_effect(ROPE),
    flag(&["--rope-freq-base"]).val("N").env("LLAMA_ARG_ROPE_FREQ_BASE").no_effect(ROPE),
    flag(&["--rope-freq-scale"]).val("N").env("LLAMA_ARG_ROPE_FREQ_SCALE").no_effect(ROPE),
    flag(&["--yarn-orig-ctx"]).val("N").env("LLAMA_ARG_YARN_ORIG_CTX").no_effect(ROPE),
    flag(&["--yarn-ext-factor"]).val("N").env("LLAMA_ARG_YARN_EXT_FACTOR").no_effect(ROPE),
    flag(&["--yarn-attn-factor"]).val("N").env("LLAMA_ARG_YARN_ATTN_FACTOR").no_effect(ROPE),
    flag(&["--yarn-beta-slow"]).val("N").env("LLAMA_ARG_YARN_BETA_SLOW").no_effect(ROPE),
    flag(&["--yarn-beta-fast"]).val("N").env("LLAMA_ARG_YARN_BETA_FAST").no_effect(ROPE),
    flag(&["-kvo", "--kv-offload"]).neg(&["-nkvo", "--no-kv-offload"]).env("LLAMA_ARG_KV_OFFLOAD").no_effect(GPU),
    flag(&["--repack"])
        .neg(&["-nr", "--no-repack"])
        .env("LLAMA_ARG_REPACK")
        .no_effect("weight repacking keeps llama.cpp's default (on)"),
    flag(&["--no-host"]).env("LLAMA_ARG_NO_HOST").no_effect(GPU),
    flag(&["-ctk", "--cache-type-k"])
        .val("TYPE")
        .env("LLAMA_ARG_CACHE_TYPE_K")
        .imp("cache_type_k", "f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1. Default f16."),
    flag(&["-ctv", "--cache-type-v"])
        .val("TYPE")
        .env("LLAMA_ARG_CACHE_TYPE_V")
        .imp("cache_type_v", "Same types; a quantized V cache needs flash attention (refused with -fa off)."),
    flag(&["-dt", "--defrag-thold"])
        .val("N")
        .env("LLAMA_ARG_DEFRAG_THOLD")
        .no_effect("deprecated in llama.cpp, where it has no effect either"),
    flag(&["--rpc"])
        .val("SERVERS")
        .env("LLAMA_ARG_RPC")
        .refused("the RPC backend is not built (llama.cpp refuses --rpc in such builds too)"),
    flag(&["-lm", "--load-mode"]).val("MODE").env("LLAMA_ARG_LOAD_MODE").imp(
        "load_mode",
        "auto, none, mmap, mlock, mmap+mlock; `dio` is read as `none` (no direct I/O here).",
    ),
    flag(&["-lzm", "--lazy-mode"])
        .val("MODE")
        .env("LLAMA_ARG_LAZY_MODE")
        .no_effect("on-demand tensor reads keep llama.cpp's default (auto)"),
    flag(&["--numa"])
        .val("TYPE")
        .env("LLAMA_ARG_NUMA")
        .no_effect("NUMA placement is not set up: threads and memory follow the OS defaults"),
    flag(&["-dev", "--device"]).val("<dev1,dev2,..>").env("LLAMA_ARG_DEVICE").no_effect(GPU),
    flag(&["--list-devices"]).exit(
        ExitAction::ListDevices,
        "Prints `Available devices:` and exits; a CPU-only build has none, a GPU build says it cannot list them yet.",
    ),
    flag(&["-ot", "--override-tensor"])
        .val("<tensor name pattern>=<buffer type>,...")
        .env("LLAMA_ARG_OVERRIDE_TENSOR")
        .no_effect(GPU),
    flag(&["-cmoe", "--cpu-moe"]).env("LLAMA_ARG_CPU_MOE").no_effect(GPU),
    flag(&["-ncmoe", "--n-cpu-moe"]).val("N").env("LLAMA_ARG_N_CPU_MOE").no_effect(GPU),
    flag(&["-ncffn", "--n-cpu-ffn"]).val("N").env("LLAMA_ARG_N_CPU_FFN").no_effect(GPU),
    flag(&["-ngl", "--gpu-layers", "--n-gpu-layers"]).val("N").env("LLAMA_ARG_N_GPU_LAYERS").imp(
        "n_gpu_layers",
        "A number, `all`, or `auto` (default: 0 here, nothing is fitted to GPU memory). Needs a GPU build (cargo features cuda, hip, metal, vulkan).",
    ),
    flag(&["-sm", "--split-mode"]).val("{none,layer,row,tensor}").env("LLAMA_ARG_SPLIT_MODE").no_effect(GPU),
    flag(&["-ts", "--tensor-split"]).val("N0,N1,N2,...").env("LLAMA_ARG_TENSOR_SPLIT").no_effect(GPU),
    flag(&["-mg", "--main-gpu"]).val("INDEX").env("LLAMA_ARG_MAIN_GPU").no_effect(GPU),
    flag(&["-fit", "--fit"])
        .val("[on|off]")
        .env("LLAMA_ARG_FIT")
        .no_effect("nothing is fitted to device memory: -c and -ngl are used as given"),
    flag(&["-fitt", "--fit-target"])
        .val("MiB0,MiB1,MiB2,...")
        .env("LLAMA_ARG_FIT_TARGET")
        .no_effect("nothing is fitted to device memory"),
    flag(&["-fitc", "--fit-ctx"]).val("N").env("LLAMA_ARG_FIT_CTX").no_effect("nothing is fitted to device memory"),
    flag(&["--check-tensors"]).no_effect(
        "tensor data is not scanned for NaN/inf; every load validates the GGUF structure (llama-core) instead",
    ),
    flag(&["--override-kv"])
        .val("KEY=TYPE:VALUE,...")
        .no_effect("model metadata overrides are not wired: the file's metadata is used"),
    flag(&["--op-offload"]).neg(&["--no-op-offload"]).no_effect(GPU),
    flag(&["--lora"]).val("FNAME").imp(
        "lora",
        "Repeatable, comma lists (quoted fields as llama.cpp); scale 1. Ids follow the command-line order of \
         --lora and --lora-scaled. Each file is validated and checked against the model at load.",
    ),
    flag(&["--lora-scaled"]).val("FNAME:SCALE,...").imp(
        "lora_scaled",
        "Repeatable, comma lists of FNAME:SCALE (exactly one ':', as llama.cpp); the scale must be finite.",
    ),
    flag(&["--control-vector"])
        .val("FNAME")
        .no_effect("control vectors are not supported: the model runs without them"),
    flag(&["--control-vector-scaled"])
        .val("FNAME:SCALE,...")
        .no_effect("control vectors are not supported: the model runs without them"),
    flag(&["--control-vector-layer-range"]).two("START END").no_effect("control vectors are not supported"),
    flag(&["-m", "--model"]).val("FNAME").env("LLAMA_ARG_MODEL").imp(
        "model",
        "Default models/SmolLM2-135M-Instruct.Q4_1.gguf, looked up in the current directory, then in each ancestor of the executable's.",
    ),
    flag(&["-mu", "--model-url"]).val("MODEL_URL").env("LLAMA_ARG_MODEL_URL").imp(
        "model_url",
        "Downloads to -m FNAME if given, else into llama.cpp's cache directory (LLAMA_CACHE, else $XDG_CACHE_HOME/llama.cpp, else ~/.cache/llama.cpp) under the URL's file name; resumable, GGUF-checked. A file already there is used as is (llama.cpp re-checks its ETag). Split URLs are not expanded.",
    ),
    flag(&["-dr", "--docker-repo"])
        .val("[<repo>/]<model>[:quant]")
        .env("LLAMA_ARG_DOCKER_REPO")
        .refused("Docker Hub downloads are not built: use -hf or -mu"),
    flag(&["-hf", "-hfr", "--hf-repo"]).val("<user>/<model>[:quant]").env("LLAMA_ARG_HF_REPO").imp(
        "hf_repo",
        "Downloads from the hub (HF_ENDPOINT) into the Hugging Face cache layout llama.cpp uses (LLAMA_CACHE, else HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub): resumable, sha256- and GGUF-checked; every part of a split model. Wins over -m. mmproj files and preset.ini repositories are not fetched. See \"Downloading models\".",
    ),
    flag(&["-hff", "--hf-file"])
        .val("FILE")
        .env("LLAMA_ARG_HF_FILE")
        .imp("hf_file", "A path in the -hf repository; overrides the quant. Without -hf it does nothing, as in llama.cpp."),
    flag(&["-hft", "--hf-token"])
        .val("TOKEN")
        .env("HF_TOKEN")
        .imp("hf_token", "Sent as `Authorization: Bearer` to the hub (not across a redirect to another host); never logged."),
    flag(&["--log-disable"]).imp("log_disable", "No log output at all."),
    flag(&["--log-file"])
        .val("FNAME")
        .env("LLAMA_ARG_LOG_FILE")
        .imp("log_file", "Logs go to this file (truncated, no colors) as well as to stderr."),
    flag(&["--log-jsonl"])
        .neg(&["--no-log-jsonl"])
        .env("LLAMA_ARG_LOG_JSONL")
        .no_effect("logs are text only (tracing's JSON format is not built in)"),
    flag(&["--log-colors"])
        .val("[on|off|auto]")
        .env("LLAMA_ARG_LOG_COLORS")
        .imp("log_colors", "ANSI colors on stderr; auto = when stderr is a terminal."),
    flag(&["-v", "--verbose", "--log-verbose"]).imp("verbose", "Debug logging (RUST_LOG overrides)."),
    flag(&["--offline"])
        .env("LLAMA_ARG_OFFLINE")
        .imp("offline", "-hf and -mu use only the cache; a model that is not there is an error."),
    flag(&["-lv", "--verbosity", "--log-verbosity"]).val("N").env("LLAMA_ARG_LOG_VERBOSITY").imp(
        "log_verbosity",
        "0-1 errors, 2 warnings, 3 info (default), 4 debug, 5+ trace (RUST_LOG overrides).",
    ),
    flag(&["--log-prefix"])
        .neg(&["--no-log-prefix"])
        .env("LLAMA_ARG_LOG_PREFIX")
        .imp("log_prefix", "Level and target before each line. Default on (llama.cpp: off)."),
    flag(&["--log-timestamps"])
        .neg(&["--no-log-timestamps"])
        .env("LLAMA_ARG_LOG_TIMESTAMPS")
        .imp("log_timestamps", "A timestamp before each line. Default on (llama.cpp: off)."),
    flag(&["--spec-draft-type-k", "-ctkd", "--cache-type-k-draft"])
        .val("TYPE")
        .env("LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K")
        .no_effect(SPEC),
    flag(&["--spec-draft-type-v", "-ctvd", "--cache-type-v-draft"])
        .val("TYPE")
        .env("LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V")
        .no_effect(SPEC),
    // ---- Sampling params (request defaults: a request's own fields win)
    flag(&["--samplers"]).val("SAMPLERS").no_effect(SAMPLER),
    flag(&["-s", "--seed"]).val("SEED").imp("seed", "Default seed; -1 = random."),
    flag(&["--sampler-seq", "--sampling-seq"]).val("SEQUENCE").no_effect(SAMPLER),
    flag(&["--ignore-eos"]).imp("ignore_eos", "The default of a request's `ignore_eos`."),
    flag(&["--temp", "--temperature"]).val("N").env("LLAMA_ARG_TEMPERATURE").imp("temp", "Default 0.8."),
    flag(&["--top-k"]).val("N").env("LLAMA_ARG_TOP_K").imp("top_k", "Default 40."),
    flag(&["--top-p"]).val("N").env("LLAMA_ARG_TOP_P").imp("top_p", "Default 0.95."),
    flag(&["--min-p"]).val("N").env("LLAMA_ARG_MIN_P").imp("min_p", "Default 0.05."),
    flag(&["--top-nsigma", "--top-n-sigma"]).val("N").no_effect(SAMPLER),
    flag(&["--xtc-probability"]).val("N").imp("xtc_probability", "Default 0 (off)."),
    flag(&["--xtc-threshold"]).val("N").imp("xtc_threshold", "Default 0.1."),
    flag(&["--typical", "--typical-p"]).val("N").imp("typical", "Default 1 (off)."),
    flag(&["--repeat-last-n"]).val("N").imp("repeat_last_n", "Default 64; -1 = the context."),
    flag(&["--repeat-penalty"]).val("N").env("LLAMA_ARG_REPEAT_PENALTY").imp("repeat_penalty", "Default 1 (off)."),
    flag(&["--presence-penalty"])
        .val("N")
        .env("LLAMA_ARG_PRESENCE_PENALTY")
        .imp("presence_penalty", "Default 0 (off)."),
    flag(&["--frequency-penalty"])
        .val("N")
        .env("LLAMA_ARG_FREQUENCY_PENALTY")
        .imp("frequency_penalty", "Default 0 (off)."),
    flag(&["--dry-multiplier"]).val("N").imp("dry_multiplier", "Default 0 (off)."),
    flag(&["--dry-base"]).val("N").imp("dry_base", "Default 1.75."),
    flag(&["--dry-allowed-length"]).val("N").imp("dry_allowed_length", "Default 2."),
    flag(&["--dry-penalty-last-n"]).val("N").imp("dry_penalty_last_n", "Default -1 (the context)."),
    flag(&["--dry-sequence-breaker"])
        .val("STRING")
        .imp("dry_sequence_breaker", "Repeatable; replaces the default breakers; `none` = no breakers."),
    flag(&["--adaptive-target"]).val("N").no_effect(SAMPLER),
    flag(&["--adaptive-decay"]).val("N").no_effect(SAMPLER),
    flag(&["--dynatemp-range"]).val("N").no_effect(SAMPLER),
    flag(&["--dynatemp-exp"]).val("N").no_effect(SAMPLER),
    flag(&["--mirostat"]).val("N").imp("mirostat", "0 (default), 1 or 2."),
    flag(&["--mirostat-lr"]).val("N").imp("mirostat_lr", "Default 0.1."),
    flag(&["--mirostat-ent"]).val("N").imp("mirostat_ent", "Default 5."),
    flag(&["-l", "--logit-bias"])
        .val("TOKEN_ID(+/-)BIAS")
        .imp("logit_bias", "Repeatable, e.g. `15043+1`, `15043-inf`; a request's `logit_bias` replaces the list."),
    flag(&["--grammar"]).val("GRAMMAR").imp(
        "grammar",
        "The grammar of requests that bring none (`grammar`, `json_schema` or `response_format` replace it).",
    ),
    flag(&["--grammar-file"]).val("FNAME").imp("grammar_file", "Like --grammar, read from a file."),
    flag(&["-j", "--json-schema"]).val("SCHEMA").imp("json_schema", "Converted to a grammar, used like --grammar."),
    flag(&["-jf", "--json-schema-file"]).val("FILE").imp("json_schema_file", "Like --json-schema, read from a file."),
    flag(&["-bs", "--backend-sampling"])
        .env("LLAMA_ARG_BACKEND_SAMPLING")
        .no_effect("sampling runs in llama-core's sampler chain on the CPU"),
    // ---- Server-specific params
    flag(&["-lcs", "--lookup-cache-static"]).val("FNAME").no_effect(SPEC),
    flag(&["-lcd", "--lookup-cache-dynamic"]).val("FNAME").no_effect(SPEC),
    flag(&["--kv-unified-per-slot"])
        .val("N")
        .env("LLAMA_ARG_KV_UNIFIED_PER_SLOT")
        .no_effect("each slot gets --ctx-size / --parallel KV cells; size the context with -c"),
    flag(&["-ctxcp", "--ctx-checkpoints", "--swa-checkpoints"])
        .val("N")
        .env("LLAMA_ARG_CTX_CHECKPOINTS")
        .no_effect("no context checkpoints are made: a slot reuses its cached prefix or recomputes"),
    flag(&["-cms", "--checkpoint-min-step"])
        .val("N")
        .env("LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT")
        .no_effect("no context checkpoints are made"),
    flag(&["-cram", "--cache-ram"]).val("N").env("LLAMA_ARG_CACHE_RAM").no_effect(CACHE),
    flag(&["-kvu", "--kv-unified"]).neg(&["-no-kvu", "--no-kv-unified"]).env("LLAMA_ARG_KV_UNIFIED").no_effect(
        "each slot has its own KV cells (--ctx-size / --parallel) by design, so that one long request cannot starve the others",
    ),
    flag(&["--cache-idle-slots"])
        .neg(&["--no-cache-idle-slots"])
        .env("LLAMA_ARG_CACHE_IDLE_SLOTS")
        .no_effect(CACHE),
    flag(&["--context-shift"]).neg(&["--no-context-shift"]).env("LLAMA_ARG_CONTEXT_SHIFT").imp(
        "context_shift",
        "A generation that fills its slot keeps --keep tokens, drops half of the rest and goes on; off (default): it ends with `length`.",
    ),
    flag(&["-r", "--reverse-prompt"])
        .val("PROMPT")
        .no_effect("interactive mode only; requests stop on their own `stop` strings"),
    flag(&["-sp", "--special"])
        .no_effect("special tokens in the output are decided per request (the server renders them as text pieces)"),
    flag(&["--warmup"])
        .neg(&["--no-warmup"])
        .no_effect("there is no warm-up run; the first request pays for the first decode"),
    flag(&["--spm-infill"]).no_effect("/infill always lays out prefix, suffix, middle (the suffix-prefix-middle order is not built)"),
    flag(&["--pooling"]).val("{none,mean,cls,last,rank}").env("LLAMA_ARG_POOLING").imp(
        "pooling",
        "mean, cls, last: how /embedding and /v1/embeddings pool; default: the model's own, else mean. `rank` with --embedding is --reranking (alone it has no effect; another value with --reranking is refused). `none` (per-token vectors) is refused at load.",
    ),
    flag(&["-np", "--parallel"])
        .val("N")
        .env("LLAMA_ARG_N_PARALLEL")
        .imp("parallel", "Slots decoded together, 1..256; -1 (auto) = 4. Default 4."),
    flag(&["-cb", "--cont-batching"])
        .neg(&["-nocb", "--no-cont-batching"])
        .env("LLAMA_ARG_CONT_BATCHING")
        .no_effect("batching is always continuous"),
    flag(&["-mm", "--mmproj"]).val("FILE").env("LLAMA_ARG_MMPROJ").refused(MTMD),
    flag(&["-mmu", "--mmproj-url"]).val("URL").env("LLAMA_ARG_MMPROJ_URL").refused(MTMD),
    flag(&["--mmproj-auto"])
        .neg(&["--no-mmproj", "--no-mmproj-auto"])
        .env("LLAMA_ARG_MMPROJ_AUTO")
        .no_effect("no projector is ever loaded (multimodal input is not built yet)"),
    flag(&["--mmproj-offload"]).neg(&["--no-mmproj-offload"]).env("LLAMA_ARG_MMPROJ_OFFLOAD").no_effect(MTMD),
    flag(&["-mmdev", "--mmproj-device"]).val("DEVICE").env("MTMD_BACKEND_DEVICE").no_effect(MTMD),
    flag(&["--image-min-tokens"]).val("N").env("LLAMA_ARG_IMAGE_MIN_TOKENS").no_effect(MTMD),
    flag(&["--image-max-tokens"]).val("N").env("LLAMA_ARG_IMAGE_MAX_TOKENS").no_effect(MTMD),
    flag(&["--mtmd-batch-max-tokens"]).val("N").env("LLAMA_ARG_MTMD_BATCH_MAX_TOKENS").no_effect(MTMD),
    flag(&["--video-fps"]).val("N").env("LLAMA_ARG_VIDEO_FPS").no_effect(MTMD),
    flag(&["--video-timestamp-interval"]).val("N").env("LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL").no_effect(MTMD),
    flag(&["--video-ffmpeg-dir"]).val("DIR").env("LLAMA_ARG_VIDEO_FFMPEG_DIR").no_effect(MTMD),
    flag(&["-a", "--alias"])
        .val("STRING")
        .env("LLAMA_ARG_ALIAS")
        .imp("alias", "Comma-separated names; the first is the model's `id` in responses. Default: the file name."),
    flag(&["--tags"]).val("STRING").env("LLAMA_ARG_TAGS").kept(
        "tags",
        "Informational: kept as `Settings::tags`; no endpoint reports them yet.",
    ),
    flag(&["--embd-normalize"]).val("N").kept(
        "embd_normalize",
        "Kept as `Settings::embd_normalize`; requests choose their own `embd_normalize` (default 2).",
    ),
    flag(&["--host"]).val("HOST").env("LLAMA_ARG_HOST").imp(
        "host",
        "One IP address (or `localhost`). Default 127.0.0.1. Lists and UNIX socket paths are not supported.",
    ),
    flag(&["--port"]).val("PORT").env("LLAMA_ARG_PORT").imp("port", "Default 8080; 0 picks a free port and logs it."),
    flag(&["--reuse-port"]).env("LLAMA_ARG_REUSE_PORT").no_effect("the socket is bound without SO_REUSEPORT"),
    flag(&["--path"]).val("PATH").env("LLAMA_ARG_STATIC_PATH").no_effect("no static files are served (no web UI)"),
    flag(&["--cors-origins"]).val("ORIGINS").env("LLAMA_ARG_CORS_ORIGINS").imp(
        "cors_origins",
        "Comma-separated; `*` (default) reflects any Origin, `localhost` only local ones.",
    ),
    flag(&["--cors-methods"])
        .val("METHODS")
        .env("LLAMA_ARG_CORS_METHODS")
        .imp("cors_methods", "Default GET, POST, DELETE, OPTIONS."),
    flag(&["--cors-headers"])
        .val("HEADERS")
        .env("LLAMA_ARG_CORS_HEADERS")
        .imp("cors_headers", "Default `*`: the headers the browser asks for are allowed."),
    flag(&["--cors-credentials"])
        .neg(&["--no-cors-credentials"])
        .env("LLAMA_ARG_CORS_CREDENTIALS")
        .imp("cors_credentials", "Default on: `Access-Control-Allow-Credentials: true` (a `*` origin is then reflected)."),
    flag(&["--api-prefix"])
        .val("PREFIX")
        .env("LLAMA_ARG_API_PREFIX")
        .no_effect("routes are served at the root only (a prefixed path answers 404)"),
    flag(&["--ui-config", "--webui-config"]).val("JSON").env("LLAMA_ARG_UI_CONFIG").no_effect(NO_UI),
    flag(&["--ui-config-file", "--webui-config-file"]).val("PATH").env("LLAMA_ARG_UI_CONFIG_FILE").no_effect(NO_UI),
    flag(&["--ui-mcp-proxy", "--webui-mcp-proxy"])
        .neg(&["--no-ui-mcp-proxy", "--no-webui-mcp-proxy"])
        .env("LLAMA_ARG_UI_MCP_PROXY")
        .no_effect(NO_UI),
    flag(&["--tools"]).val("TOOL1,TOOL2,...").env("LLAMA_ARG_TOOLS").no_effect(TOOLS),
    flag(&["--tools-runtime"]).val("OPTION").env("LLAMA_ARG_TOOLS_RUNTIME").no_effect(TOOLS),
    flag(&["--mcp-servers-config"]).val("PATH").env("LLAMA_ARG_MCP_SERVERS_CONFIG").no_effect(TOOLS),
    flag(&["--mcp-servers-json"]).val("JSON").env("LLAMA_ARG_MCP_SERVERS_JSON").no_effect(TOOLS),
    flag(&["-ag", "--agent"]).neg(&["-no-ag", "--no-agent"]).env("LLAMA_ARG_AGENT").no_effect(TOOLS),
    flag(&["--ui", "--webui"]).neg(&["--no-ui", "--no-webui"]).env("LLAMA_ARG_UI").no_effect(NO_UI),
    flag(&["--embedding", "--embeddings"])
        .env("LLAMA_ARG_EMBEDDINGS")
        .imp("embeddings", "Enables the embeddings routes (generation stays available)."),
    flag(&["--rerank", "--reranking"]).env("LLAMA_ARG_RERANKING").imp(
        "reranking",
        "POST /reranking, /rerank, /v1/rerank, /v1/reranking for a reranker model (a classification head): embeddings on, rank pooling. The embeddings routes then answer 501 (the model ranks, it does not embed).",
    ),
    flag(&["--api-key"])
        .val("KEY")
        .env("LLAMA_API_KEY")
        .imp("api_key", "Comma-separated and repeatable; keys are never logged."),
    flag(&["--api-key-file"])
        .val("FNAME")
        .env("LLAMA_ARG_API_KEY_FILE")
        .imp("api_key_file", "One key per line; lines starting with # are comments."),
    flag(&["--ssl-key-file"])
        .val("FNAME")
        .env("LLAMA_ARG_SSL_KEY_FILE")
        .no_effect("TLS is not built in: the server speaks plain HTTP (put a TLS proxy in front)"),
    flag(&["--ssl-cert-file"])
        .val("FNAME")
        .env("LLAMA_ARG_SSL_CERT_FILE")
        .no_effect("TLS is not built in: the server speaks plain HTTP (put a TLS proxy in front)"),
    flag(&["--chat-template-kwargs"]).val("STRING").env("LLAMA_ARG_CHAT_TEMPLATE_KWARGS").imp(
        "chat_template_kwargs",
        "A JSON object (refused otherwise): extra variables for the chat template (e.g. `{\"enable_thinking\": false}`); a request's `chat_template_kwargs` wins.",
    ),
    flag(&["-to", "--timeout"])
        .val("N")
        .env("LLAMA_ARG_TIMEOUT")
        .imp("timeout", "Seconds a request may take. Default 600 (llama.cpp: 3600)."),
    flag(&["--sse-ping-interval"])
        .val("N")
        .env("LLAMA_ARG_SSE_PING_INTERVAL")
        .no_effect("streams send a keep-alive comment every 15 s"),
    flag(&["--threads-http"]).val("N").env("LLAMA_ARG_THREADS_HTTP").imp(
        "threads_http",
        "Worker threads of the HTTP runtime, 1..1024; -1 (default) = 2.",
    ),
    flag(&["--cache-prompt"]).neg(&["--no-cache-prompt"]).env("LLAMA_ARG_CACHE_PROMPT").imp(
        "cache_prompt",
        "The default of a request's `cache_prompt` (on).",
    ),
    flag(&["--cache-reuse"]).val("N").env("LLAMA_ARG_CACHE_REUSE").kept(
        "cache_reuse",
        "Kept as `Settings::cache_reuse`; reuse by KV shifting is not built (the cached prefix is reused).",
    ),
    flag(&["--metrics"]).env("LLAMA_ARG_ENDPOINT_METRICS").imp("metrics", "Enables /metrics."),
    flag(&["--props"]).env("LLAMA_ARG_ENDPOINT_PROPS").imp(
        "props",
        "Enables POST /props (no property can be changed yet, as in llama.cpp; it answers `{\"success\": true}`).",
    ),
    flag(&["--slots"])
        .neg(&["--no-slots"])
        .env("LLAMA_ARG_ENDPOINT_SLOTS")
        .imp("slots", "GET /slots; on by default. `--no-slots` answers 501. Also `LLAMA_ARG_NO_ENDPOINT_SLOTS`."),
    flag(&["--slot-save-path"]).val("PATH").imp(
        "slot_save_path",
        "Enables POST /slots/{id}?action=save|restore|erase; files are confined to this directory and signed with \
         the key in its `.llama-rs-state-key` (see Slot files).",
    ),
    flag(&["--media-path"]).val("PATH").no_effect(MTMD),
    flag(&["--models-dir"]).val("PATH").env("LLAMA_ARG_MODELS_DIR").refused("router mode is not built yet"),
    flag(&["--models-preset"]).val("PATH").env("LLAMA_ARG_MODELS_PRESET").refused("router mode is not built yet"),
    flag(&["--models-max"])
        .val("N")
        .env("LLAMA_ARG_MODELS_MAX")
        .no_effect("only used in router mode, which is not built yet"),
    flag(&["--models-autoload"])
        .neg(&["--no-models-autoload"])
        .env("LLAMA_ARG_MODELS_AUTOLOAD")
        .no_effect("only used in router mode, which is not built yet"),
    flag(&["--jinja"]).neg(&["--no-jinja"]).env("LLAMA_ARG_JINJA").imp(
        "jinja",
        "--jinja (default): templates are rendered with Jinja (minijinja); --no-jinja: llama.cpp's built-in formatter (`llama_chat_apply_template`) on the format it recognizes in the template.",
    ),
    flag(&["--reasoning-format"]).val("FORMAT").env("LLAMA_ARG_THINK").no_effect(REASONING),
    flag(&["-rea", "--reasoning"]).val("[on|off|auto]").env("LLAMA_ARG_REASONING").no_effect(REASONING),
    flag(&["--reasoning-effort"]).val("LEVEL").env("LLAMA_ARG_REASONING_EFFORT").no_effect(REASONING),
    flag(&["--reasoning-budget"]).val("N").env("LLAMA_ARG_THINK_BUDGET").no_effect(REASONING),
    flag(&["--reasoning-budget-message"]).val("MESSAGE").env("LLAMA_ARG_THINK_BUDGET_MESSAGE").no_effect(REASONING),
    flag(&["--reasoning-preserve"])
        .neg(&["--no-reasoning-preserve"])
        .env("LLAMA_ARG_REASONING_PRESERVE")
        .no_effect(REASONING),
    flag(&["--chat-template"]).val("JINJA_TEMPLATE").env("LLAMA_ARG_CHAT_TEMPLATE").imp(
        "chat_template",
        "A Jinja source, or a name of llama.cpp's built-in formats (llama3, mistral-v7, gemma, phi3, deepseek3, ...: `llama_chat_builtin_templates`), formatted by llama.cpp. Default: the model's.",
    ),
    flag(&["--chat-template-file"])
        .val("JINJA_TEMPLATE_FILE")
        .env("LLAMA_ARG_CHAT_TEMPLATE_FILE")
        .imp("chat_template_file", "A file holding a Jinja chat template."),
    flag(&["--skip-chat-parsing"])
        .neg(&["--no-skip-chat-parsing"])
        .env("LLAMA_ARG_SKIP_CHAT_PARSING")
        .no_effect("tool calls are read from the output of requests with tools; a request's `parse_tool_calls: false` leaves it all `content`"),
    flag(&["--prefill-assistant"])
        .neg(&["--no-prefill-assistant"])
        .env("LLAMA_ARG_PREFILL_ASSISTANT")
        .no_effect("a trailing assistant message is not continued (as with --no-prefill-assistant)"),
    flag(&["-sps", "--slot-prompt-similarity"]).val("SIMILARITY").no_effect(
        "the scheduler gives a request the free slot with the longest cached common prefix, whatever the similarity",
    ),
    flag(&["--lora-init-without-apply"]).imp(
        "lora_init_without_apply",
        "Every adapter starts with global scale 0; POST /lora-adapters or a request's `lora` applies them.",
    ),
    flag(&["--sleep-idle-seconds"]).val("SECONDS").no_effect("the model stays loaded while idle"),
    flag(&["--log-prompts-dir"]).val("PATH").no_effect("prompts are not logged"),
    flag(&["--spec-draft-hf", "-hfd", "-hfrd", "--hf-repo-draft"])
        .val("<user>/<model>[:quant]")
        .env("LLAMA_ARG_SPEC_DRAFT_HF_REPO")
        .refused("draft models (speculative decoding) are not built yet"),
    flag(&["--spec-draft-threads", "-td", "--threads-draft"]).val("N").no_effect(SPEC),
    flag(&["--spec-draft-threads-batch", "-tbd", "--threads-batch-draft"]).val("N").no_effect(SPEC),
    flag(&["--spec-draft-cpu-mask", "-Cd", "--cpu-mask-draft"]).val("M").no_effect(SPEC),
    flag(&["--spec-draft-cpu-range", "-Crd", "--cpu-range-draft"]).val("lo-hi").no_effect(SPEC),
    flag(&["--spec-draft-cpu-strict", "--cpu-strict-draft"]).val("<0|1>").no_effect(SPEC),
    flag(&["--spec-draft-prio", "--prio-draft"]).val("N").no_effect(SPEC),
    flag(&["--spec-draft-poll", "--poll-draft"]).val("<0|1>").no_effect(SPEC),
    flag(&["--spec-draft-cpu-mask-batch", "-Cbd", "--cpu-mask-batch-draft"]).val("M").no_effect(SPEC),
    flag(&["--spec-draft-cpu-strict-batch", "--cpu-strict-batch-draft"]).val("<0|1>").no_effect(SPEC),
    flag(&["--spec-draft-prio-batch", "--prio-batch-draft"]).val("N").no_effect(SPEC),
    flag(&["--spec-draft-poll-batch", "--poll-batch-draft"]).val("<0|1>").no_effect(SPEC),
    flag(&["--spec-draft-override-tensor", "-otd", "--override-tensor-draft"])
        .val("<tensor name pattern>=<buffer type>,...")
        .no_effect(SPEC),
    flag(&["--spec-draft-cpu-moe", "-cmoed", "--cpu-moe-draft"]).env("LLAMA_ARG_SPEC_DRAFT_CPU_MOE").no_effect(SPEC),
    flag(&["--spec-draft-n-cpu-moe", "--spec-draft-ncmoe", "-ncmoed", "--n-cpu-moe-draft"])
        .val("N")
        .env("LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE")
        .no_effect(SPEC),
    flag(&["--spec-draft-n-max"]).val("N").env("LLAMA_ARG_SPEC_DRAFT_N_MAX").no_effect(SPEC),
    flag(&["--spec-draft-n-min"]).val("N").env("LLAMA_ARG_SPEC_DRAFT_N_MIN").no_effect(SPEC),
    flag(&["--spec-synth-len"]).val("L").env("LLAMA_ARG_SPEC_SYNTH_LEN").no_effect(SPEC),
    flag(&["--spec-synth-rates"]).val("P0,P1,...").env("LLAMA_ARG_SPEC_SYNTH_RATES").no_effect(SPEC),
    flag(&["--spec-draft-p-split", "--draft-p-split"]).val("P").env("LLAMA_ARG_SPEC_DRAFT_P_SPLIT").no_effect(SPEC),
    flag(&["--spec-draft-p-min", "--draft-p-min"]).val("P").env("LLAMA_ARG_SPEC_DRAFT_P_MIN").no_effect(SPEC),
    flag(&["--spec-draft-backend-sampling"])
        .neg(&["--no-spec-draft-backend-sampling"])
        .env("LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING")
        .no_effect(SPEC),
    flag(&["--spec-draft-device", "-devd", "--device-draft"]).val("<dev1,dev2,..>").no_effect(SPEC),
    flag(&["--spec-draft-ngl", "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"])
        .val("N")
        .env("LLAMA_ARG_N_GPU_LAYERS_DRAFT")
        .no_effect(SPEC),
    flag(&["--spec-draft-model", "-md", "--model-draft"])
        .val("FNAME")
        .env("LLAMA_ARG_SPEC_DRAFT_MODEL")
        .refused("draft models (speculative decoding) are not built yet"),
    flag(&["--spec-type"])
        .val("none,draft-simple,draft-eagle3,draft-mtp,draft-dflash,draft-dspark,ngram-simple,ngram-map-k,ngram-map-k4v,ngram-mod,ngram-cache")
        .env("LLAMA_ARG_SPEC_TYPE")
        .no_effect(SPEC),
    flag(&["--spec-ngram-mod-n-min"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-mod-n-max"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-mod-n-match"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-simple-size-n"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-simple-size-m"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-simple-min-hits"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k-size-n"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k-size-m"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k-min-hits"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k4v-size-n"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k4v-size-m"]).val("N").no_effect(SPEC),
    flag(&["--spec-ngram-map-k4v-min-hits"]).val("N").no_effect(SPEC),
    flag(&["--draft", "--draft-n", "--draft-max"]).val("N").env("LLAMA_ARG_DRAFT_MAX").refused(SPEC_REMOVED),
    flag(&["--draft-min", "--draft-n-min"]).val("N").env("LLAMA_ARG_DRAFT_MIN").refused(SPEC_REMOVED),
    flag(&["--spec-ngram-size-n"]).val("N").refused(SPEC_REMOVED),
    flag(&["--spec-ngram-size-m"]).val("N").refused(SPEC_REMOVED),
    flag(&["--spec-ngram-min-hits"]).val("N").refused(SPEC_REMOVED),
    flag(&["--embd-gemma-default"]).refused(PRESET),
    flag(&["--fim-qwen-1.5b-default"]).refused(PRESET),
    flag(&["--fim-qwen-3b-default"]).refused(PRESET),
    flag(&["--fim-qwen-7b-default"]).refused(PRESET),
    flag(&["--fim-qwen-7b-spec"]).refused(PRESET),
    flag(&["--fim-qwen-14b-spec"]).refused(PRESET),
    flag(&["--fim-qwen-30b-default"]).refused(PRESET),
    flag(&["--gpt-oss-20b-default"]).refused(PRESET),
    flag(&["--gpt-oss-120b-default"]).refused(PRESET),
    flag(&["--vision-gemma-4b-default"]).refused(PRESET),
    flag(&["--vision-gemma-12b-default"]).refused(PRESET),
    flag(&["--spec-default"]).no_effect(SPEC),
    // ---- Ours
    flag(&["--queue-size"])
        .val("N")
        .env("LLAMARS_QUEUE_SIZE")
        .imp("queue_size", "Requests that may wait for a slot (default 64); past that, 503 at once.")
        .ours(),
    flag(&["--allowed-hosts"])
        .val("HOSTS")
        .env("LLAMARS_ALLOWED_HOSTS")
        .imp("allowed_hosts", "Extra `Host` names accepted (see Security); `*` turns the check off.")
        .ours(),
    flag(&["--max-body"])
        .val("BYTES")
        .env("LLAMARS_MAX_BODY")
        .imp("max_body", "Largest request body (default 8 MiB); larger bodies get 413.")
        .ours(),
    flag(&["--drain-timeout"])
        .val("N")
        .env("LLAMARS_DRAIN_TIMEOUT")
        .imp("drain_timeout", "Seconds in-flight requests get to finish after SIGINT/SIGTERM (default 30).")
        .ours(),
];

/// The row `spelling` (any of its names or negations) belongs to.
pub fn lookup(spelling: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.spellings().any(|s| s == spelling))
}

/// A flag that is not applied, from the command line or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// The spelling given, or `ENV (--flag)`.
    pub(crate) flag: String,
    /// Why.
    pub(crate) reason: &'static str,
}

/// What [`preparse`] took out of the command line and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Notices {
    /// Accepted flags without effect, in order.
    pub(crate) ignored: Vec<Notice>,
    /// Refused flags, in order.
    pub(crate) refused: Vec<Notice>,
}

/// A value for a flag that clap parses: taken as a value, not as a flag,
/// when it does not look like one (clap's rule: a leading `-` only for numbers).
fn is_value_for_clap(token: &str) -> bool {
    !token.starts_with('-') || token.parse::<f64>().is_ok()
}

/// llama.cpp's truthy words, for switches set from the environment.
fn is_truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "on" | "enabled" | "yes")
}

/// Take the table's flags out of `argv` (first element: the program name):
/// accepted and refused ones become [`Notices`] (their values consumed,
/// `--flag=value` too), multi-letter shorts of clap's flags become their long
/// spelling, `--a_b` becomes `--a-b`, `--usage` becomes `--help`. Variables
/// of accepted and refused flags are read with `env`.
///
/// # Errors
/// A clap error: a table flag without its value (exit code 2), or, for
/// [`ExitAction`] flags, the text to print (`DisplayVersion`: stdout, exit 0).
pub(crate) fn preparse(
    argv: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, Notices), clap::Error> {
    let mut notices = Notices::default();
    let mut out = Vec::new();
    let mut args = argv.into_iter();
    out.extend(args.next());
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let Some(s) = arg.to_str().filter(|s| s.starts_with('-') && *s != "-") else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        // llama.cpp reads `--ctx_size` as `--ctx-size`.
        let name = if name.starts_with("--") { name.replace('_', "-") } else { name.to_string() };
        let Some(spec) = lookup(&name) else {
            out.push(arg);
            continue;
        };
        match spec.parser {
            FlagParser::Clap(_) => {
                let long = match name.as_str() {
                    "--usage" => "--help",
                    n if n.starts_with("--") || n.len() == 2 => n,
                    n => spec.long_for(n),
                };
                out.push(match inline {
                    Some(v) => format!("{long}={v}").into(),
                    None => long.into(),
                });
                // Its value passes through untouched (it may look like a flag of the table).
                if inline.is_none()
                    && spec.values > 0
                    && let Some(next) = args.next_if(|a| a.to_str().is_none_or(is_value_for_clap))
                {
                    out.push(next);
                }
            }
            FlagParser::Exit(action) => return Err(exit_with(action)),
            FlagParser::Table => {
                let needed = usize::from(spec.values) - usize::from(inline.is_some() && spec.values > 0);
                for _ in 0..needed {
                    if args.next().is_none() {
                        return Err(clap::Error::raw(
                            ErrorKind::InvalidValue,
                            format!(
                                "a value is required for '{name} <{}>' but none was supplied\n",
                                spec.value.unwrap_or("VALUE")
                            ),
                        ));
                    }
                }
                let notice = Notice { flag: name, reason: spec.note };
                match spec.class {
                    FlagClass::Refused => notices.refused.push(notice),
                    _ => notices.ignored.push(notice),
                }
            }
        }
    }
    for spec in FLAGS.iter().filter(|f| f.parser == FlagParser::Table) {
        let Some(var) = spec.env else { continue };
        let Some(value) = env(var) else { continue };
        let notice = Notice { flag: format!("{var} ({})", spec.primary()), reason: spec.note };
        match spec.class {
            // A switch set to false does not turn the feature on (llama.cpp reads it so).
            FlagClass::Refused if spec.values == 0 && !is_truthy(&value) => {}
            FlagClass::Refused if value.trim().is_empty() => {}
            FlagClass::Refused => notices.refused.push(notice),
            _ => notices.ignored.push(notice),
        }
    }
    Ok((out, notices))
}

fn exit_with(action: ExitAction) -> clap::Error {
    let text = match action {
        ExitAction::CacheList => {
            let models =
                crate::hub::Options::from_env().map(|o| crate::hub::cached_models(&o.cache_dir)).unwrap_or_default();
            let mut text = format!("number of models in cache: {}\n", models.len());
            for (i, m) in models.iter().enumerate() {
                text.push_str(&format!("{:4}. {m}\n", i + 1));
            }
            text
        }
        ExitAction::CompletionBash => completion_bash(),
        ExitAction::ListDevices => {
            if llama_core::Backend::init().supports_gpu_offload() {
                "Available devices:\n  (this build can offload to a GPU; llama.rs cannot list the devices yet)\n"
                    .to_string()
            } else {
                "Available devices:\n  (none)\n".to_string()
            }
        }
    };
    clap::Error::raw(ErrorKind::DisplayVersion, text)
}

/// A bash completion script in llama.cpp's shape (`_llama_completions`).
pub fn completion_bash() -> String {
    let opts: Vec<&str> = FLAGS.iter().flat_map(|f| f.names.iter().copied()).collect();
    format!(
        r#"_llama_completions() {{
    local cur prev opts
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"

    opts="{}"

    case "$prev" in
        --model|-m)
            COMPREPLY=( $(compgen -f -X '!*.gguf' -- "$cur") $(compgen -d -- "$cur") )
            return 0
            ;;
        --grammar-file)
            COMPREPLY=( $(compgen -f -X '!*.gbnf' -- "$cur") $(compgen -d -- "$cur") )
            return 0
            ;;
        --chat-template-file)
            COMPREPLY=( $(compgen -f -X '!*.jinja' -- "$cur") $(compgen -d -- "$cur") )
            return 0
            ;;
        *)
            COMPREPLY=( $(compgen -W "${{opts}}" -- "$cur") )
            return 0
            ;;
    esac
}}

complete -F _llama_completions llama-server
"#,
        opts.join(" ")
    )
}

/// A row's spellings with its value placeholder, as the README writes them.
fn usage(f: &Flag) -> String {
    let spellings: Vec<&str> = f.spellings().collect();
    match f.value {
        Some(v) => format!("{} {v}", spellings.join(", ")),
        None => spellings.join(", "),
    }
}

/// The `--help` section for the flags clap does not show: the accepted and
/// refused rows parsed by the table.
pub fn help_section() -> String {
    let mut out = String::new();
    for (class, title) in [
        (FlagClass::Accepted, "llama.cpp flags accepted without effect here (a startup line names each one given):"),
        (FlagClass::Refused, "llama.cpp flags refused at startup (not built yet, or refused by llama.cpp too):"),
    ] {
        out.push_str(title);
        out.push('\n');
        for f in FLAGS.iter().filter(|f| f.class == class && f.parser == FlagParser::Table) {
            out.push_str(&format!("  {}\n          {}\n", usage(f), f.note));
        }
        out.push('\n');
    }
    out.push_str(
        "Flags given twice take their last value; `--flag=value` and llama.cpp's multi-letter shorts (-np, -ub, ...) \
         work; a flag beats its environment variable.",
    );
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `docs/SERVER.md`'s flag table: one row per [`FLAGS`] entry.
pub fn markdown_table() -> String {
    let mut out = String::from("| Flag | Env | Class | Note |\n| --- | --- | --- | --- |\n");
    for f in FLAGS {
        let flag = format!("`{}`{}", md_escape(&usage(f)), if f.ours { " (ours)" } else { "" });
        let env = f.env.map(|e| format!("`{e}`")).unwrap_or_default();
        out.push_str(&format!("| {flag} | {env} | {} | {} |\n", f.class.label(), md_escape(f.note)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(args: &[&str], env: &[(&str, &str)]) -> Result<(Vec<String>, Notices), clap::Error> {
        let argv = std::iter::once("x").chain(args.iter().copied()).map(OsString::from);
        let lookup_env = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let (out, notices) = preparse(argv, &lookup_env)?;
        Ok((out.into_iter().skip(1).map(|a| a.into_string().unwrap()).collect(), notices))
    }

    #[test]
    fn every_spelling_is_in_one_row() {
        let mut seen = std::collections::HashSet::new();
        for f in FLAGS {
            assert!(!f.note.is_empty(), "{} has no note", f.primary());
            assert_eq!(f.value.is_some(), f.values > 0, "{}", f.primary());
            for s in f.spellings() {
                assert!(seen.insert(s), "{s} is in two rows");
            }
        }
    }

    #[test]
    fn accepted_flags_and_their_values_are_taken_out() {
        let (out, n) = pre(
            &["--cpu-mask", "ff", "--prio=-1", "-np", "2", "--control-vector-layer-range", "1", "5", "--offline"],
            &[],
        )
        .unwrap();
        assert_eq!(out, ["--parallel", "2", "--offline"]);
        let flags: Vec<&str> = n.ignored.iter().map(|n| n.flag.as_str()).collect();
        assert_eq!(flags, ["--cpu-mask", "--prio", "--control-vector-layer-range"]);
        assert!(n.refused.is_empty());
    }

    #[test]
    fn values_of_clap_flags_are_not_read_as_flags() {
        let (out, n) = pre(&["--alias", "x", "-n", "-1", "--chat-template", "chatml", "-C", "-1"], &[]).unwrap();
        assert_eq!(out, ["--alias", "x", "-n", "-1", "--chat-template", "chatml"]);
        assert_eq!(n.ignored.len(), 1);
    }

    #[test]
    fn negations_and_underscores_are_normalized() {
        let (out, n) = pre(&["-no-kvu", "-nocb", "--ctx_size", "64", "--no-context-shift", "--usage"], &[]).unwrap();
        assert_eq!(out, ["--ctx-size", "64", "--no-context-shift", "--help"]);
        assert_eq!(n.ignored.len(), 2);
    }

    #[test]
    fn refused_flags_and_variables() {
        let (out, n) = pre(&["--mmproj=x.gguf", "-hf", "a/b", "-dr", "x"], &[]).unwrap();
        let flags: Vec<&str> = n.refused.iter().map(|n| n.flag.as_str()).collect();
        assert_eq!(flags, ["--mmproj", "-dr"]);
        assert_eq!(out, ["--hf-repo", "a/b"]);
        let (_, n) =
            pre(&[], &[("LLAMA_ARG_MMPROJ", "p.gguf"), ("LLAMA_ARG_RERANKING", "0"), ("HF_TOKEN", "t")]).unwrap();
        assert_eq!(n.refused.len(), 1);
        assert_eq!(n.refused[0].flag, "LLAMA_ARG_MMPROJ (--mmproj)");
        assert!(n.ignored.is_empty(), "HF_TOKEN is clap's now: {:?}", n.ignored);
        let (_, n) = pre(&[], &[("LLAMA_ARG_MODELS_DIR", "/models")]).unwrap();
        assert_eq!(n.refused.len(), 1);
    }

    #[test]
    fn a_table_flag_without_its_value_is_a_usage_error() {
        let err = pre(&["--cpu-mask"], &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("--cpu-mask"));
    }

    #[test]
    fn docs_table_has_a_row_per_flag() {
        assert_eq!(markdown_table().lines().count(), FLAGS.len() + 2);
        assert!(help_section().contains("--cpu-mask M"));
    }
}
