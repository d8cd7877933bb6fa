//! The command line: every flag of every subcommand, as clap derive types.
//!
//! Flag names follow llama.cpp's `llama-cli` where one exists (`-m`, `-n`,
//! `-c`, `-t`, `--temp`, `--top-k`, ...), so that people and scripts moving
//! over find them where they expect.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};
use llama_core::json_schema::{self, OrderedJson};
use llama_core::{FlashAttn, KvCacheType, MAX_THREADS, SamplingParams, Token};

/// `llama --version`: ours and the pinned llama.cpp we were built from.
static VERSION: LazyLock<String> =
    LazyLock::new(|| format!("{} (llama.cpp {})", env!("CARGO_PKG_VERSION"), llama_sys::LLAMA_CPP_VERSION));

const TOP_EXAMPLES: &str = "\
Examples:
  llama generate \"The capital of France is\"       continue a text (default model)
  llama generate --chat \"Write a haiku about rust\"  ask the instruct model
  echo \"Once upon a time\" | llama generate -n 64    prompt from stdin
  llama chat                                        talk, multi-turn, in a terminal
  llama info                                        what is in the model file
  llama serve --port 8080                           OpenAI-compatible HTTP server
  llama generate -hf ggml-org/gemma-3-1b-it-GGUF \"Hi\"  download from Hugging Face, then run
  llama pull ggml-org/gemma-3-1b-it-GGUF:Q8_0         download only; prints the cached path

The default model is models/SmolLM2-135M-Instruct.Q4_1.gguf (run `make setup`
to fetch it); pass -m FILE or set LLAMA_MODEL to use another GGUF file, or
-hf USER/MODEL[:QUANT] to use one from the Hugging Face hub (cached).";

/// Run llama.cpp models from the command line.
#[derive(Debug, Parser)]
#[command(name = "llama", version = VERSION.as_str(), propagate_version = true, after_help = TOP_EXAMPLES)]
#[command(arg_required_else_help = true)]
pub struct Cli {
    /// Options that every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More output on stderr: -v prints the seed, timings and llama.cpp's warnings;
    /// -vv all of llama.cpp's log and ours. RUST_LOG replaces the log filter.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streamed to stdout.
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate(GenerateArgs),
    /// Chat with the model in the terminal, multi-turn.
    #[command(after_help = CHAT_EXAMPLES)]
    Chat(ChatArgs),
    /// Compute embeddings (JSON, one object per input and line).
    #[command(after_help = EMBED_EXAMPLES)]
    Embed(EmbedArgs),
    /// Turn text into token ids.
    #[command(after_help = TOKENIZE_EXAMPLES)]
    Tokenize(TokenizeArgs),
    /// Turn token ids back into text.
    #[command(after_help = DETOKENIZE_EXAMPLES)]
    Detokenize(DetokenizeArgs),
    /// Show a model's metadata (read from the GGUF file; no weights loaded unless needed).
    #[command(after_help = INFO_EXAMPLES)]
    Info(InfoArgs),
    /// Measure prompt and generation speed, ours against the plain C baseline.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Start the HTTP server (OpenAI and llama.cpp APIs); takes every `llama-server` flag.
    #[command(after_help = SERVE_EXAMPLES, disable_help_flag = true)]
    Serve(ServeArgs),
    /// Download a model from the Hugging Face hub (or a URL) into the cache and print its path.
    #[command(after_help = PULL_EXAMPLES)]
    Pull(PullArgs),
}

/// Shown after the server's own `--help`.
pub const SERVE_EXAMPLES: &str = "\
Examples:
  llama serve                                       127.0.0.1:8080, default model
  llama serve -m model.gguf --port 9000 -np 8 -c 16384
  llama serve --api-key secret --host 0.0.0.0
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'

`llama serve ARGS` is `llama-server ARGS`: the same flags, defaults and
environment variables (see docs/SERVER.md).";

const GENERATE_EXAMPLES: &str = "\
Examples:
  llama generate \"The capital of France is\" -n 16
  llama generate -hf ggml-org/gemma-3-1b-it-GGUF:Q4_K_M --chat \"Hi\"   a model from Hugging Face
  llama generate --chat --system \"Answer briefly.\" \"What is a GGUF file?\"
  llama generate -f prompt.txt --temp 0               greedy, deterministic
  llama generate --seed 42 \"Once upon a time\"       reproducible sampling
  cat notes.txt | llama generate --chat -n 200 -     prompt from stdin
  llama generate --json -n 8 \"Hello\" | jq .usage
  llama generate --grammar 'root ::= (\"yes\" | \"no\")' --chat \"Is water wet?\"
  llama generate --chat -j '{\"type\":\"object\",\"properties\":{\"age\":{\"type\":\"integer\"}}}' \"Age of Ada?\"

Sampling defaults are llama.cpp's: temperature 0.8, top-k 40, top-p 0.95,
min-p 0.05, no repetition penalty, and a random seed (printed with -v and in
--json); pass --seed N to make a run reproducible byte for byte, or --temp 0
for greedy decoding. The prompt is used exactly as given, except that a
prompt read from stdin or a file loses one trailing line ending (\\n or
\\r\\n; a second one is kept), as llama.cpp's -f does: `echo \"x\" | llama
generate` and `llama generate \"x\"` see the same prompt. --chat wraps the
prompt in the model's chat template. Output is exactly the generated text; a
final newline is added only when stdout is a terminal. Ctrl-C stops
generation (exit code 130) and keeps what was printed.";

const CHAT_EXAMPLES: &str = "\
Examples:
  llama chat
  llama chat --system \"You are a pirate.\" --temp 0.7
  printf 'Hi!\\nWhat did I just say?\\n' | llama chat    one turn per line, scripted

In the chat: /reset forgets the conversation, /exit (or Ctrl-D) quits.
Ctrl-C stops the answer being written; Ctrl-C at the prompt quits. The
conversation stays in the model's KV cache between turns, so only the new
turn is processed. When it outgrows the context (-c), the oldest turns are
dropped.";

const EMBED_EXAMPLES: &str = "\
Examples:
  llama embed \"first sentence\" \"second sentence\"
  llama embed --no-normalize \"raw vector\" | jq '.embedding | length'
  cat lines.txt | llama embed                       one input per stdin line";

const TOKENIZE_EXAMPLES: &str = "\
Examples:
  llama tokenize \"Hello world\"                      ids, space-separated
  llama tokenize --pieces \"Hello world\"             one `id<TAB>piece` per line
  llama tokenize --json \"Hello\"
  llama detokenize $(llama tokenize \"round trip\")
  echo \"Hello\" | llama tokenize                    the same ids as `llama tokenize Hello`

Text read from stdin loses one trailing line ending (\\n or \\r\\n), as a
prompt does in `llama generate`, so the ids match what it tokenizes.";

const DETOKENIZE_EXAMPLES: &str = "\
Examples:
  llama detokenize 19556 905
  llama detokenize $(llama tokenize \"round trip\")";

const INFO_EXAMPLES: &str = "\
Examples:
  llama info
  llama info -m other.gguf --json | jq .context_length
  llama info --metadata                             every GGUF key too";

const BENCH_EXAMPLES: &str = "\
Examples:
  llama bench                                       512-token prompt, 128 generated, 5 rounds
  llama bench -p 256 -n 64 -r 3 -t 2 --json

Each round runs the C baseline (llama.cpp through llama.h, built with the same
static libraries) and then our Rust path (llama-core, in this process) on the
same synthetic tokens; rounds interleave A B A B so that machine noise hits
both. Reported: median tokens/s of prompt processing (pp) and generation (tg)
and the ratio ours / baseline.";

const PULL_EXAMPLES: &str = "\
Examples:
  llama pull ggml-org/gemma-3-1b-it-GGUF            the Q4_K_M file (else Q8_0, else the first GGUF file)
  llama pull ggml-org/gemma-3-1b-it-GGUF:q8_0       the file whose name has Q8_0 (any case)
  llama pull ggml-org/models --hf-file tinyllamas/stories260K.gguf
  llama pull https://example.com/model.gguf         a plain URL
  llama generate -m \"$(llama pull ggml-org/gemma-3-1b-it-GGUF)\" \"Hi\"

Files go to the Hugging Face cache that llama.cpp uses too: LLAMA_CACHE, else
HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub (URLs: LLAMA_CACHE, else
~/.cache/llama.cpp). A model already there is not downloaded again; an
interrupted download resumes. Each file is checked against the sha256 the hub
announces and as a GGUF file before it is kept. HF_TOKEN is sent for gated or
private repositories; HF_ENDPOINT points at another hub. A progress bar shows
on a terminal; stdout gets only the path.";

/// llama.cpp's multi-letter short flags for downloads, which clap cannot
/// parse (`-hf` would be `-h -f`), and the long flags they stand for.
pub const MULTI_LETTER_FLAGS: &[(&str, &str)] = &[
    ("-hf", "--hf-repo"),
    ("-hfr", "--hf-repo"),
    ("-hff", "--hf-file"),
    ("-hft", "--hf-token"),
    ("-mu", "--model-url"),
];

/// The command line with [`MULTI_LETTER_FLAGS`] spelled long (`-hf x` and
/// `-hf=x` alike), up to a `--`. `llama serve`'s own parser knows both.
pub fn normalize_argv(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = argv.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        match MULTI_LETTER_FLAGS.iter().find(|(short, _)| *short == name) {
            Some((_, long)) => out.push(match value {
                Some(v) => format!("{long}={v}").into(),
                None => (*long).into(),
            }),
            None => out.push(arg),
        }
    }
    out
}

/// Where the model comes from: a file, a Hugging Face repository, a URL.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// GGUF model file [default: models/SmolLM2-135M-Instruct.Q4_1.gguf,
    /// looked up from the current directory and the executable's directory upwards]
    #[arg(short, long, env = "LLAMA_MODEL", value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Download the model from a Hugging Face repository into the cache (-hf for short; wins over -m).
    /// QUANT picks the file whose name has it, any case [default: Q4_K_M, else Q8_0, else the first GGUF file]
    #[arg(long = "hf-repo", value_name = "USER/MODEL[:QUANT]")]
    pub hf_repo: Option<String>,
    /// The file of the --hf-repo repository to use, instead of choosing by QUANT (-hff)
    #[arg(long = "hf-file", value_name = "FILE", requires = "hf_repo")]
    pub hf_file: Option<String>,
    /// Download the model from this URL into the cache, or to -m FILE when given (-mu)
    #[arg(long = "model-url", value_name = "URL")]
    pub model_url: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub download: DownloadArgs,
}

/// How to download.
#[derive(Debug, Args, Clone)]
pub struct DownloadArgs {
    /// Hugging Face access token, for gated or private repositories (-hft; never printed)
    #[arg(long = "hf-token", env = "HF_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// Use only the download cache: no network; a model that is not cached is an error
    #[arg(long)]
    pub offline: bool,
}

/// `llama pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// A Hugging Face repository, USER/MODEL[:QUANT], or an http(s) URL of a GGUF file
    #[arg(value_name = "USER/MODEL[:QUANT]|URL")]
    pub model: String,
    /// The file of the repository to download, instead of choosing by QUANT (-hff)
    #[arg(long = "hf-file", value_name = "FILE")]
    pub hf_file: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub download: DownloadArgs,
}

/// Context and threads.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Context size in tokens (prompt + output); 0 = the model's training context
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096, value_name = "N", value_parser = ctx_size)]
    pub ctx_size: u32,
    /// CPU threads [default: all cores]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=MAX_THREADS as i64))]
    pub threads: Option<i32>,
    /// Flash attention: on, off or auto
    #[arg(long = "flash-attn", value_name = "WHEN", default_value = "auto", value_parser = flash_attn)]
    pub flash_attn: FlashAttn,
    /// KV cache type for K (f16, q8_0, q4_0, ...; q8_0 halves the cache)
    #[arg(long = "cache-type-k", value_name = "TYPE", default_value = "f16")]
    pub cache_type_k: KvCacheType,
    /// KV cache type for V (a quantized type needs flash attention)
    #[arg(long = "cache-type-v", value_name = "TYPE", default_value = "f16")]
    pub cache_type_v: KvCacheType,
    /// When the output fills the context, drop half of it (after --keep) and go on, as llama.cpp
    #[arg(long = "context-shift")]
    pub context_shift: bool,
    /// Prompt tokens a context shift always keeps (-1 = the whole prompt)
    #[arg(long, default_value_t = 0, value_name = "N", allow_negative_numbers = true, requires = "context_shift",
          value_parser = clap::value_parser!(i32).range(-1..))]
    pub keep: i32,
}

impl RunArgs {
    /// The context-shift setting of each request.
    pub fn context_shift(&self) -> Option<llama_runtime::ContextShift> {
        self.context_shift.then_some(llama_runtime::ContextShift { n_keep: self.keep, n_discard: 0 })
    }
}

/// llama-core's [`FlashAttn`] names (`on`, `off`, `auto`); the server parses them the same way.
fn flash_attn(s: &str) -> Result<FlashAttn, String> {
    s.parse().map_err(|_| "expected on, off or auto".to_owned())
}

/// Sampling flags, turned into [`SamplingParams`] by [`SamplingArgs::to_params`].
/// At most one of `--grammar`, `--grammar-file`, `--json-schema` and
/// `--json-schema-file` (as in llama.cpp, each sets the one grammar).
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("constraint").multiple(false)))]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy (always the most likely token)
    #[arg(long = "temp", default_value_t = 0.8, value_name = "T", value_parser = non_negative_f32, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off)
    #[arg(long, default_value_t = 40, value_name = "K", value_parser = clap::value_parser!(i32).range(0..), allow_negative_numbers = true)]
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest set with probability mass P (1 = off)
    #[arg(long, default_value_t = 0.95, value_name = "P", value_parser = unit_f32, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off)
    #[arg(long, default_value_t = 0.05, value_name = "P", value_parser = unit_f32, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalise repeating the last 64 tokens (1 = off)
    #[arg(long, default_value_t = 1.0, value_name = "X", value_parser = positive_f32, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Random seed; the same seed, prompt and flags give the same output [default: random]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..u32::MAX as i64))]
    pub seed: Option<u32>,
    /// Constrain the output with a GBNF grammar (text)
    #[arg(long, value_name = "GBNF", group = "constraint")]
    pub grammar: Option<String>,
    /// Constrain the output with a GBNF grammar read from a file
    #[arg(long, value_name = "FILE", group = "constraint")]
    pub grammar_file: Option<PathBuf>,
    /// Constrain the output to JSON matching this JSON schema (text), e.g. '{"type":"object"}'
    /// for any JSON object; the supported subset is the server's (docs/SERVER.md)
    #[arg(short = 'j', long, value_name = "SCHEMA", group = "constraint")]
    pub json_schema: Option<String>,
    /// Constrain the output to JSON matching the JSON schema read from a file
    #[arg(long, value_name = "FILE", group = "constraint")]
    pub json_schema_file: Option<PathBuf>,
}

impl SamplingArgs {
    /// The sampling parameters for the engine, with `seed` standing in for
    /// "random" so that the caller can report which seed was used.
    pub fn to_params(&self, seed: u32) -> anyhow::Result<SamplingParams> {
        let grammar = self.grammar()?;
        let params = SamplingParams {
            seed,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: 64,
            grammar,
            ..SamplingParams::default()
        };
        params.validate()?;
        Ok(params)
    }
}

impl SamplingArgs {
    /// The GBNF grammar that `--grammar`, `--grammar-file`, `--json-schema`
    /// or `--json-schema-file` asks for (clap lets at most one through);
    /// a JSON schema is converted by llama-core's `json_schema` module.
    fn grammar(&self) -> anyhow::Result<Option<String>> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {what} file {}: {e}", path.display()))
        };
        let (schema, flag) = match (&self.json_schema, &self.json_schema_file) {
            (Some(text), _) => (text.clone(), "--json-schema"),
            (None, Some(path)) => (read(path, "JSON schema")?, "--json-schema-file"),
            (None, None) => {
                return match (&self.grammar, &self.grammar_file) {
                    (Some(g), _) => Ok(Some(g.clone())),
                    (None, Some(path)) => Ok(Some(read(path, "grammar")?)),
                    (None, None) => Ok(None),
                };
            }
        };
        let schema: OrderedJson = serde_json::from_str(&schema)
            .map_err(|e| anyhow::anyhow!("{flag}: not valid JSON: {}", one_line(&e.to_string())))?;
        let gbnf = json_schema::json_schema_to_gbnf(&schema).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        Ok(Some(gbnf))
    }
}

/// `text` on one line (error messages are one line on stderr).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `llama generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt; `-` or none (with piped stdin) reads it from stdin
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short, long, value_name = "FILE", conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Stop after N generated tokens [default: until the model stops or the context is full]
    #[arg(short = 'n', long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Stop when the output contains this text (not printed); repeatable
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-generation token
    #[arg(long)]
    pub ignore_eos: bool,
    /// Treat the prompt as a user message and apply the model's chat template (ChatML if it has none)
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Print one JSON object (text, tokens, finish reason, usage, timings) instead of streaming text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sampling: SamplingArgs,
}

/// `llama chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// System message that opens the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Longest answer, in tokens [default: until the model stops]
    #[arg(short = 'n', long, value_name = "N")]
    pub max_tokens: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sampling: SamplingArgs,
}

/// `llama embed`
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Texts to embed; none reads one text per line from stdin
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Keep the raw vectors instead of scaling them to unit length
    #[arg(long)]
    pub no_normalize: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,
}

/// `llama tokenize`
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The text; `-` or none (with piped stdin) reads it from stdin
    #[arg(value_name = "TEXT")]
    pub text: Option<String>,
    /// Print `id<TAB>piece` per line (piece as a quoted string)
    #[arg(long)]
    pub pieces: bool,
    /// Print a JSON array (of ids, or of {id, piece} with --pieces)
    #[arg(long)]
    pub json: bool,
    /// Do not add the BOS/EOS tokens the model adds to a prompt
    #[arg(long)]
    pub no_add_special: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

/// `llama detokenize`
#[derive(Debug, Args)]
pub struct DetokenizeArgs {
    /// Token ids (space- or comma-separated)
    #[arg(value_name = "ID", required = true, num_args = 1.., value_delimiter = ',', allow_negative_numbers = true)]
    pub ids: Vec<Token>,
    /// Drop BOS/EOS and other special tokens from the text
    #[arg(long)]
    pub remove_special: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

/// `llama info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Also list every GGUF metadata key (large arrays summarised)
    #[arg(long)]
    pub metadata: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

/// `llama serve`: everything after `serve` goes to llama-server's own
/// parser, so that its llama.cpp-style flags (`-np 4`, `-ngl 0`) work
/// unchanged.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// llama-server flags (see `llama serve --help`)
    #[arg(value_name = "ARGS", num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `llama bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Prompt length in tokens
    #[arg(short = 'p', long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub n_prompt: u32,
    /// Tokens to generate
    #[arg(short = 'n', long, default_value_t = 128, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub n_gen: u32,
    /// Rounds (each runs the baseline, then ours)
    #[arg(short = 'r', long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repetitions: u32,
    /// CPU threads [default: all cores]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=MAX_THREADS as i64))]
    pub threads: Option<i32>,
    /// Batch size for prompt processing
    #[arg(short = 'b', long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,
    /// Measure only ours (skip the C baseline)
    #[arg(long)]
    pub no_baseline: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

/// 0 (the model's training context) or at least the engine's minimum.
fn ctx_size(s: &str) -> Result<u32, String> {
    let v: u32 = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    let min = llama_runtime::MIN_CTX_SEQ;
    if v == 0 || (min..=1 << 20).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be 0 (the model's training context) or in {min}..=1048576 (got {v})"))
    }
}

fn parse_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() { Ok(v) } else { Err(format!("`{s}` is not a finite number")) }
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v >= 0.0 { Ok(v) } else { Err(format!("must be >= 0 (got {v})")) }
}

fn positive_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v > 0.0 { Ok(v) } else { Err(format!("must be > 0 (got {v})")) }
}

fn unit_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("must be between 0 and 1 (got {v})")) }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
            assert!(after.contains("Examples:"), "`llama {}` has no examples in --help", sub.get_name());
        }
    }

    #[test]
    fn version_names_llama_cpp() {
        let v = Cli::command().render_version();
        assert!(v.contains(llama_sys::LLAMA_CPP_VERSION), "{v}");
    }

    #[test]
    fn bad_sampling_values_are_refused_by_the_parser() {
        for bad in
            [["--temp", "-1"], ["--top-p", "1.5"], ["--min-p", "-0.1"], ["--repeat-penalty", "0"], ["--temp", "nan"]]
        {
            let r = Cli::try_parse_from(["llama", "generate", "hi", bad[0], bad[1]]);
            assert!(r.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn defaults_are_llama_cpp_like() {
        let cli = Cli::try_parse_from(["llama", "generate", "hi"]).expect("parses");
        let Command::Generate(g) = cli.command else { panic!("not generate") };
        assert_eq!(g.sampling.temperature, 0.8);
        assert_eq!(g.sampling.top_k, 40);
        assert_eq!(g.sampling.seed, None);
        assert_eq!(g.run.ctx_size, 4096);
        let p = g.sampling.to_params(7).expect("valid");
        assert_eq!(p.seed, 7);
        assert_eq!(p.temperature, 0.8);
    }

    #[test]
    fn grammar_and_json_schema_flags() {
        let params = |args: &[&str]| {
            let mut argv = vec!["llama", "generate", "hi"];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(argv).expect("parses");
            let Command::Generate(g) = cli.command else { panic!("not generate") };
            g.sampling.to_params(1)
        };
        let p = params(&["-j", r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#]).unwrap();
        assert!(p.grammar.as_deref().is_some_and(|g| g.starts_with("root ::= ")), "{:?}", p.grammar);
        let p = params(&["--grammar", r#"root ::= "x""#]).unwrap();
        assert_eq!(p.grammar.as_deref(), Some(r#"root ::= "x""#));
        assert_eq!(params(&[]).unwrap().grammar, None);
        // Bad input is an error (one line), not a panic.
        let e = params(&["--json-schema", "{not json"]).unwrap_err().to_string();
        assert!(e.starts_with("--json-schema: not valid JSON") && !e.contains('\n'), "{e}");
        let e = params(&["--json-schema", r#"{"type":"object","patternProperties":{}}"#]).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = params(&["--json-schema-file", "/nonexistent/schema.json"]).unwrap_err().to_string();
        assert!(e.contains("cannot read JSON schema file"), "{e}");
        // At most one constraint.
        for pair in [["--grammar", "-j"], ["-j", "--json-schema-file"], ["--grammar-file", "--json-schema"]] {
            let r = Cli::try_parse_from(["llama", "generate", "hi", pair[0], "x", pair[1], "y"]);
            assert!(r.is_err(), "{pair:?} was accepted");
        }
        // `chat` takes them too.
        assert!(Cli::try_parse_from(["llama", "chat", "--json-schema", "{}"]).is_ok());
    }

    #[test]
    fn download_flags_in_llama_cpp_spellings() {
        let argv = |args: &[&str]| normalize_argv(args.iter().map(OsString::from));
        let cli = Cli::try_parse_from(argv(&["llama", "generate", "-hf", "u/m:Q8_0", "-hff=x.gguf", "hi"])).unwrap();
        let Command::Generate(g) = cli.command else { panic!("not generate") };
        assert_eq!((g.model.hf_repo.as_deref(), g.model.hf_file.as_deref()), (Some("u/m:Q8_0"), Some("x.gguf")));
        assert_eq!(g.prompt.as_deref(), Some("hi"));
        for sub in ["chat", "embed", "info", "tokenize", "bench"] {
            let cli = Cli::try_parse_from(argv(&["llama", sub, "-hf", "u/m", "--offline"]));
            assert!(cli.is_ok(), "{sub}: {:?}", cli.err());
        }
        let cli = Cli::try_parse_from(argv(&["llama", "detokenize", "-mu", "http://h/m.gguf", "1"])).unwrap();
        let Command::Detokenize(d) = cli.command else { panic!("not detokenize") };
        assert_eq!(d.model.model_url.as_deref(), Some("http://h/m.gguf"));
        // After `--` everything is left alone; -hff needs -hf.
        assert_eq!(argv(&["llama", "--", "-hf"])[2], "-hf");
        assert!(Cli::try_parse_from(argv(&["llama", "info", "-hff", "x.gguf"])).is_err());
        let cli = Cli::try_parse_from(argv(&["llama", "pull", "u/m", "--hf-file", "a.gguf", "--offline"])).unwrap();
        let Command::Pull(p) = cli.command else { panic!("not pull") };
        assert_eq!((p.model.as_str(), p.download.offline), ("u/m", true));
    }

    #[test]
    fn detokenize_takes_commas_and_spaces() {
        let cli = Cli::try_parse_from(["llama", "detokenize", "1,2", "3"]).expect("parses");
        let Command::Detokenize(d) = cli.command else { panic!("not detokenize") };
        assert_eq!(d.ids, vec![1, 2, 3]);
    }
}
