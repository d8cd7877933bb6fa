//! The real `llama` binary on the real default model: output, errors, exit
//! codes, signals, pipes, and a terminal session under tmux.
//!
//! Every generation is short (-n ≤ 32, -c ≤ 1024) and single-threaded
//! (-t 1): tests run in parallel on a two-core machine, and two OpenMP
//! teams of two threads each on two cores spin in their barriers for
//! most of the time (measured: -n 48 took 39 s with -t 2 and 2.8 s with
//! -t 1 on a loaded machine).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_llama");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("llama-cli sits in the workspace").to_path_buf()
}

fn model() -> PathBuf {
    let m = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(m.is_file(), "the default model is missing: run `make setup` (or vendor/setup.sh)");
    m
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llama-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `llama` with a clean environment: no model from the caller's env, no
/// log filter, run from the repository root.
fn llama() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("LLAMA_MODEL").env_remove("RUST_LOG").env_remove("RUST_BACKTRACE").current_dir(repo_root());
    c
}

/// `generate` with flags for a small, fast run: the default model, 2
/// threads, a 512-token context, unless `extra` sets `-m` or `-c` itself.
fn gen_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["generate".into(), "-t".into(), "1".into()];
    if !extra.contains(&"-m") {
        v.extend(["-m".to_owned(), model().display().to_string()]);
    }
    if !extra.contains(&"-c") {
        v.extend(["-c".to_owned(), "512".to_owned()]);
    }
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn run(args: &[String], stdin: Option<&str>) -> Output {
    let mut child = llama()
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llama");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for llama")
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A successful run: exit 0, and nothing alarming on stderr.
fn ok(o: Output) -> Output {
    assert!(o.status.success(), "llama failed ({:?}); stderr:\n{}", o.status, stderr(&o));
    assert_no_panic(&o);
    o
}

fn assert_no_panic(o: &Output) {
    let e = stderr(o);
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "panic on stderr:\n{e}");
}

/// A failed run: the given exit code, and one `error: ...` line on stderr
/// containing `needle`.
fn fails(o: Output, code: i32, needle: &str) {
    assert_no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr:\n{e}");
    assert!(e.starts_with("error: "), "stderr does not start with `error: `:\n{e}");
    if code == 1 {
        assert_eq!(e.trim_end().lines().count(), 1, "more than one line on stderr:\n{e}");
    }
    assert!(e.contains(needle), "stderr lacks {needle:?}:\n{e}");
    assert!(o.stdout.is_empty(), "stdout is not empty: {:?}", stdout(&o));
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

#[test]
fn help_and_version() {
    let o = ok(run(&strs(&["--version"]), None));
    assert!(stdout(&o).contains("llama.cpp"), "{}", stdout(&o));
    assert!(stdout(&o).contains("ggml"), "{}", stdout(&o));
    for cmd in ["generate", "chat", "embed", "tokenize", "detokenize", "info", "bench", "serve"] {
        let o = ok(run(&strs(&[cmd, "--help"]), None));
        assert!(stdout(&o).contains("Examples:"), "`llama {cmd} --help` has no examples");
    }
    // No subcommand: help on stderr, usage error.
    let o = run(&[], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn seeded_generation_is_reproducible_and_stdout_is_only_the_text() {
    let args = gen_args(&["-n", "24", "--seed", "1234", "--temp", "0.9", "Once upon a time"]);
    let a = ok(run(&args, None));
    let b = ok(run(&args, None));
    assert!(!a.stdout.is_empty(), "nothing generated");
    assert_eq!(a.stdout, b.stdout, "same seed, different output");
    // llama.cpp's log and our own stay off stderr without -v.
    assert_eq!(stderr(&a), "", "stderr is not empty");

    // The same run as JSON: its text is exactly what plain mode printed (no
    // decoration, no trailing newline on a pipe).
    let mut json_args = args.clone();
    json_args.push("--json".into());
    let j = json(&ok(run(&json_args, None)));
    assert_eq!(j["text"].as_str().expect("text"), stdout(&a));
    assert_eq!(j["seed"], 1234);
}

#[test]
fn json_counts_match_tokenize() {
    let prompt = "The capital of France is";
    let o = ok(run(&gen_args(&["-n", "8", "--temp", "0", "--json", prompt]), None));
    let j = json(&o);
    let tokens = j["tokens"].as_array().expect("tokens array");
    let usage = &j["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(tokens.len() as u64));
    assert!(tokens.len() <= 8 && !tokens.is_empty());
    assert!(["eos", "length", "stop"].contains(&j["finish_reason"].as_str().expect("finish_reason")));
    assert!(j["timings"]["prefill_ms"].as_f64().is_some());

    let t = ok(run(&strs(&["tokenize", "-m", &model().display().to_string(), prompt]), None));
    let ids: Vec<i64> = stdout(&t).split_whitespace().map(|s| s.parse().expect("id")).collect();
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(ids.len() as u64), "tokenize: {ids:?}");

    // Greedy output decodes to the same text through `detokenize`, minus the
    // end-of-generation token (which has no text).
    if j["finish_reason"] == "length" {
        let id_args: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        let mut args = strs(&["detokenize", "-m", &model().display().to_string()]);
        args.extend(id_args);
        let d = ok(run(&args, None));
        assert_eq!(stdout(&d), j["text"].as_str().expect("text"));
    }
}

#[test]
fn prompt_from_stdin_file_and_argument_agree() {
    let prompt = "The capital of France is";
    let from_arg = ok(run(&gen_args(&["-n", "6", "--temp", "0", prompt]), None));
    let from_stdin = ok(run(&gen_args(&["-n", "6", "--temp", "0"]), Some(prompt)));
    let from_dash = ok(run(&gen_args(&["-n", "6", "--temp", "0", "-"]), Some(prompt)));
    let file = scratch("prompt").join("prompt.txt");
    std::fs::write(&file, prompt).expect("write prompt");
    let from_file = ok(run(&gen_args(&["-n", "6", "--temp", "0", "-f", &file.display().to_string()]), None));
    assert!(!from_arg.stdout.is_empty());
    assert_eq!(from_arg.stdout, from_stdin.stdout);
    assert_eq!(from_arg.stdout, from_dash.stdout);
    assert_eq!(from_arg.stdout, from_file.stdout);
}

/// A prompt from a pipe or a file loses exactly one trailing line ending:
/// `echo "x" | llama generate` and `llama generate "x"` see the same prompt
/// (same prompt token count, same greedy tokens); a second newline stays.
#[test]
fn stdin_and_file_prompts_lose_one_trailing_newline() {
    let prompt = "The capital of France is";
    let generate = |extra: &[&str], stdin: Option<&str>| {
        let mut args = vec!["-n", "4", "--temp", "0", "--json"];
        args.extend_from_slice(extra);
        let j = json(&ok(run(&gen_args(&args), stdin)));
        (j["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens"), j["tokens"].clone())
    };
    let from_arg = generate(&[prompt], None);
    let dir = scratch("newline");
    let file = dir.join("prompt.txt");
    std::fs::write(&file, format!("{prompt}\n")).expect("write prompt");
    let file = file.display().to_string();
    for (name, got) in [
        ("echo (\\n)", generate(&[], Some(&format!("{prompt}\n")))),
        ("- with \\r\\n", generate(&["-"], Some(&format!("{prompt}\r\n")))),
        ("-f with \\n", generate(&["-f", &file], None)),
    ] {
        assert_eq!(got, from_arg, "{name}: the prompt differs from the argument's");
    }
    // Only one line ending goes: "x\n\n" on stdin is the argument "x\n".
    let kept = generate(&[], Some(&format!("{prompt}\n\n")));
    assert_eq!(kept, generate(&[&format!("{prompt}\n")], None));
    assert!(kept.0 > from_arg.0, "the second newline must stay in the prompt: {kept:?} vs {from_arg:?}");
    // `llama tokenize` reads stdin the same way.
    let m = model().display().to_string();
    let ids = |args: &[&str], stdin: Option<&str>| {
        let mut a = strs(&["tokenize", "-m", &m]);
        a.extend(strs(args));
        stdout(&ok(run(&a, stdin)))
    };
    assert_eq!(ids(&[], Some("Hello world\n")), ids(&["Hello world"], None));
    // A lone newline on stdin is an empty prompt.
    fails(run(&gen_args(&[]), Some("\n")), 1, "empty");
}

#[test]
fn chat_flag_and_stop_and_grammar() {
    let o = ok(run(&gen_args(&["--chat", "-n", "24", "--temp", "0", "What is the capital of France?"]), None));
    assert!(!o.stdout.is_empty());
    // A grammar constrains the answer completely.
    let o = ok(run(
        &gen_args(&["--chat", "-n", "8", "--seed", "3", "--grammar", r#"root ::= ("yes" | "no")"#, "Is water wet?"]),
        None,
    ));
    let text = stdout(&o);
    assert!(text == "yes" || text == "no", "{text:?}");
    // The stop string ends the output and is not printed.
    let o = ok(run(&gen_args(&["-n", "32", "--temp", "0", "--stop", " ", "--json", "The capital of France is"]), None));
    let j = json(&o);
    assert!(!j["text"].as_str().expect("text").contains(' '), "{j}");
}

#[test]
fn json_schema_constrains_the_output() {
    let schema = r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#;
    let o = ok(run(&gen_args(&["--chat", "-n", "32", "--temp", "0", "-j", schema, "Give me a number."]), None));
    let text = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(v["a"].is_i64() || v["a"].is_u64(), "{text:?}");
    // The same schema from a file.
    let dir = scratch("json-schema");
    let file = dir.join("schema.json");
    std::fs::write(&file, schema).expect("write schema");
    let o = ok(run(
        &gen_args(&[
            "--chat",
            "-n",
            "32",
            "--temp",
            "0",
            "--json-schema-file",
            &file.display().to_string(),
            "Give me a number.",
        ]),
        None,
    ));
    assert_eq!(stdout(&o), text);
    // Bad schemas and grammar files: one `error:` line, exit 1, nothing on stdout.
    fails(run(&gen_args(&["-j", "{not json", "hi"]), None), 1, "--json-schema: not valid JSON");
    fails(run(&gen_args(&["-j", r#"{"type":"object","patternProperties":{}}"#, "hi"]), None), 1, "not supported");
    fails(
        run(&gen_args(&["--json-schema-file", "/nonexistent/schema.json", "hi"]), None),
        1,
        "cannot read JSON schema file",
    );
    fails(run(&gen_args(&["--grammar-file", "/nonexistent/g.gbnf", "hi"]), None), 1, "cannot read grammar file");
    let bad = dir.join("bad.gbnf");
    std::fs::write(&bad, "root ::= [a-").expect("write grammar");
    let o = run(&gen_args(&["--grammar-file", &bad.display().to_string(), "hi"]), None);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let last = stderr(&o).trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: ") && last.contains("grammar"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // Two constraints at once: a usage error.
    fails(run(&gen_args(&["-j", schema, "--grammar", "root ::= \"x\"", "hi"]), None), 2, "cannot be used with");
}

#[test]
fn error_cases_are_one_line_and_nonzero() {
    let model = model().display().to_string();
    // Missing model file.
    fails(run(&gen_args(&["-m", "/nonexistent/model.gguf", "hi"]), None), 1, "not found");
    // Not a GGUF file, and a truncated one: refused before llama.cpp sees them.
    let dir = scratch("errors");
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all").expect("write junk");
    fails(run(&gen_args(&["-m", &junk.display().to_string(), "hi"]), None), 1, "invalid model file");
    let truncated = dir.join("truncated.gguf");
    let mut head = vec![0u8; 4096];
    std::fs::File::open(&model).and_then(|mut f| f.read_exact(&mut head)).expect("read model head");
    std::fs::write(&truncated, &head).expect("write truncated");
    fails(run(&gen_args(&["-m", &truncated.display().to_string(), "hi"]), None), 1, "invalid model file");
    fails(run(&strs(&["info", "-m", &junk.display().to_string()]), None), 1, "invalid model file");
    // Prompt longer than the context.
    let long = "word ".repeat(200);
    fails(run(&gen_args(&["-c", "64", &long]), None), 1, "longer than the context");
    // Bad flag values: usage errors from the parser (exit 2).
    fails(run(&gen_args(&["--temp", "-1", "hi"]), None), 2, "--temp");
    fails(run(&gen_args(&["--top-p", "2", "hi"]), None), 2, "--top-p");
    fails(run(&gen_args(&["-t", "0", "hi"]), None), 2, "--threads");
    // A grammar that does not parse. llama.cpp's grammar parser also prints
    // its own diagnostic straight to stderr (fprintf, not its log callback),
    // so only the last line is ours here.
    let o = run(&gen_args(&["--grammar", "root ::= (", "hi"]), None);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1));
    let last = stderr(&o).trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: ") && last.contains("grammar"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // An empty prompt on stdin.
    fails(run(&gen_args(&[]), Some("")), 1, "empty");
    // Token ids outside the vocabulary.
    fails(run(&strs(&["detokenize", "-m", &model, "99999999"]), None), 1, "vocabulary");
}

#[test]
fn default_model_is_found_and_its_absence_is_explained() {
    // From the repository root, no -m: the default model is used.
    let o = ok(run(&strs(&["tokenize", "hello"]), None));
    assert!(!stdout(&o).trim().is_empty());
    // LLAMA_MODEL is honoured.
    let o = llama().env("LLAMA_MODEL", "/nonexistent/env-model.gguf").args(["info"]).output().expect("run");
    fails(o, 1, "env-model.gguf");
    // A copy of the binary outside the repository (the system temp dir, not
    // target/, whose ancestors lead back to models/) finds nothing and says
    // how to get the model.
    let dir = std::env::temp_dir().join(format!("llama-cli-nomodel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = dir.join("llama");
    std::fs::hard_link(BIN, &exe).or_else(|_| std::fs::copy(BIN, &exe).map(|_| ())).expect("place binary");
    let o = Command::new(&exe)
        .env_remove("LLAMA_MODEL")
        .current_dir(&dir)
        .args(["generate", "hi"])
        .stdin(Stdio::null())
        .output()
        .expect("run copy");
    let _ = std::fs::remove_dir_all(&dir);
    fails(o, 1, "make setup");
}

#[test]
fn sigint_stops_generation_keeps_output_and_exits_130() {
    let mut child = llama()
        .args(gen_args(&["-n", "2000", "--ignore-eos", "-c", "1024", "Once upon a time"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("piped");
    // Wait for some generated text: the engine is running, the handler
    // installed.
    let mut first = Vec::new();
    let mut buf = [0u8; 64];
    while first.len() < 16 {
        let n = out.read(&mut buf).expect("read output");
        assert!(n > 0, "EOF before any output");
        first.extend_from_slice(&buf[..n]);
    }
    let n = first.len();
    // The `kill` command rather than libc::kill: this crate forbids FFI calls of its own.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let mut rest = Vec::new();
    let reader = std::thread::spawn(move || {
        let _ = out.read_to_end(&mut rest);
        rest
    });
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let rest = reader.join().expect("reader");
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err).expect("stderr");
    assert_eq!(status, Some(130), "exit status after SIGINT; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let total = n + rest.len();
    // Everything printed before the signal is still there; nothing was
    // printed over it.
    assert!(total >= 16, "output was not kept ({total} bytes)");
    // It stopped early: 2000 tokens would be several kilobytes.
    assert!(total < 6000, "generation was not stopped ({total} bytes)");
}

#[test]
fn closed_pipe_is_a_clean_exit() {
    let mut child = llama()
        .args(gen_args(&["-n", "2000", "--ignore-eos", "-c", "1024", "Once upon a time"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("piped");
    let mut ten = [0u8; 10];
    out.read_exact(&mut ten).expect("read 10 bytes");
    drop(out); // like `| head -c 10`
    let started = Instant::now();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err).expect("stderr");
    assert_eq!(status, Some(0), "exit status after the reader left; stderr:\n{err}");
    assert!(err.is_empty(), "stderr: {err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?} to notice", started.elapsed());
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("llama did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tokenize_detokenize_round_trip() {
    let model = model().display().to_string();
    let text = "Hello, world! Ünïcödé ✓";
    let t = ok(run(&strs(&["tokenize", "-m", &model, "--no-add-special", text]), None));
    let ids: Vec<String> = stdout(&t).split_whitespace().map(str::to_owned).collect();
    assert!(ids.len() > 3);
    let mut args = strs(&["detokenize", "-m", &model]);
    args.extend(ids.clone());
    let d = ok(run(&args, None));
    assert_eq!(stdout(&d), text);
    // --pieces: one line per token; --json: an array of the same ids.
    let p = ok(run(&strs(&["tokenize", "-m", &model, "--no-add-special", "--pieces", text]), None));
    assert_eq!(stdout(&p).lines().count(), ids.len());
    let j = ok(run(&strs(&["tokenize", "-m", &model, "--no-add-special", "--json", text]), None));
    let arr: Vec<String> = json(&j).as_array().expect("array").iter().map(|v| v.to_string()).collect();
    assert_eq!(arr, ids);
}

#[test]
fn info_reports_the_model() {
    let model = model().display().to_string();
    let j = json(&ok(run(&strs(&["info", "-m", &model, "--json"]), None)));
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["context_length"], 8192);
    assert_eq!(j["vocab_size"], 49152);
    assert_eq!(j["has_chat_template"], true);
    assert_eq!(j["quantization"], "q4_1");
    let params = j["parameters"].as_u64().expect("parameters");
    assert!((130_000_000..140_000_000).contains(&params), "{params}");
    assert!(j["special_tokens"]["eos"]["id"].is_u64(), "{j}");
    let text = stdout(&ok(run(&strs(&["info", "-m", &model]), None)));
    for needle in ["architecture:    llama", "chat template:   yes", "context length:  8192", "q4_1"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn embed_prints_one_unit_vector_per_input() {
    let model = model().display().to_string();
    let o = ok(run(&strs(&["embed", "-m", &model, "-t", "1", "-c", "256", "first text", "second text"]), None));
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2);
    let mut vectors = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        let v: Vec<f64> =
            line["embedding"].as_array().expect("vector").iter().map(|x| x.as_f64().expect("f")).collect();
        assert_eq!(v.len(), 576, "SmolLM2-135M has 576-wide embeddings");
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
        vectors.push(v);
    }
    assert_ne!(vectors[0], vectors[1]);
}

#[test]
fn piped_chat_answers_each_line() {
    let model = model().display().to_string();
    let o = ok(run(
        &strs(&["chat", "-m", &model, "-t", "1", "-c", "1024", "-n", "16", "--temp", "0"]),
        Some("Hi!\n/reset\nWhat is 2+2?\n"),
    ));
    let text = stdout(&o);
    // Two answers (the /reset line is a command), each ending a line.
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(text.lines().filter(|l| !l.trim().is_empty()).count() >= 2, "{text:?}");
    assert!(!text.contains(">>>"), "a prompt was printed to a pipe: {text:?}");
}

#[test]
fn bench_compares_with_the_baseline() {
    let model = model().display().to_string();
    let o = ok(run(&strs(&["bench", "-m", &model, "-p", "32", "-n", "8", "-r", "2", "-t", "1", "--json"]), None));
    let j = json(&o);
    for side in ["baseline", "ours"] {
        assert_eq!(j[side]["pp"].as_array().map(Vec::len), Some(2), "{j}");
        assert_eq!(j[side]["tg"].as_array().map(Vec::len), Some(2), "{j}");
        assert!(j[side]["tg_median"].as_f64().is_some_and(|v| v > 0.0), "{j}");
    }
    assert!(j["ratio"]["pp"].as_f64().is_some_and(|r| r > 0.0), "{j}");
}

/// Under a pseudo-terminal (`script`), stderr shows the loading bar, and
/// stdout gets its final newline.
#[test]
fn terminal_shows_the_progress_bar() {
    if skip_tty("script") {
        return;
    }
    let model = model().display().to_string();
    let cmd = format!("{BIN} generate -m '{model}' -t 1 -c 256 -n 4 --temp 0 'Hello'");
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(repo_root())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(screen.contains("loading SmolLM2-135M-Instruct.Q4_1.gguf"), "no progress bar:\n{screen:?}");
    assert!(screen.contains("100%"), "the bar never reached 100%:\n{screen:?}");
    assert!(screen.ends_with("\r\n") || screen.ends_with('\n'), "no final newline on a terminal:\n{screen:?}");
}

/// `llama chat` in tmux: two turns, a third stopped by Ctrl-C, then Ctrl-C
/// twice at the prompt quits with 130.
#[test]
fn chat_in_tmux_two_turns() {
    if skip_tty("tmux") {
        return;
    }
    let model = model().display().to_string();
    let socket = format!("llama-cli-test-{}", std::process::id());
    let tmux = |args: &[&str]| -> String {
        let o = Command::new("tmux").arg("-L").arg(&socket).args(args).output().expect("tmux");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The exit status is printed by the shell around the chat: tmux's
    // `#{pane_dead_status}` is not filled in reliably on every tmux version.
    let cmd = format!("{BIN} chat -m '{model}' -t 1 -c 2048 -n 100 --temp 0; echo \"exit status $?\"");
    tmux(&["new-session", "-d", "-s", "chat", "-x", "120", "-y", "40", "-c", &repo_root().display().to_string()]);
    tmux(&["set-option", "-t", "chat", "remain-on-exit", "on"]);
    tmux(&["respawn-pane", "-k", "-t", "chat", &cmd]);
    let pane = || tmux(&["capture-pane", "-p", "-t", "chat"]);
    let wait_for = |what: &dyn Fn(&str) -> bool, label: &str| -> String {
        let start = Instant::now();
        loop {
            let p = pane();
            if what(&p) {
                return p;
            }
            if start.elapsed() > Duration::from_secs(30) {
                tmux(&["kill-server"]);
                panic!("timed out waiting for {label}; screen:\n{p}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // capture-pane drops trailing spaces: an empty prompt is `>>>`.
    let prompts = |p: &str| p.lines().filter(|l| l.starts_with(">>>")).count();
    wait_for(&|p| prompts(p) == 1 && p.contains("Chatting with"), "the first prompt");
    tmux(&["send-keys", "-t", "chat", "Hello! Who are you?", "Enter"]);
    wait_for(&|p| prompts(p) == 2, "the first answer");
    tmux(&["send-keys", "-t", "chat", "What is the capital of France?", "Enter"]);
    let screen = wait_for(&|p| prompts(p) == 3, "the second answer");
    // Each question is followed by a non-empty answer line.
    let lines: Vec<&str> = screen.lines().collect();
    for q in ["Hello! Who are you?", "What is the capital of France?"] {
        let i = lines.iter().position(|l| l.contains(q)).unwrap_or_else(|| panic!("{q:?} not on screen:\n{screen}"));
        assert!(
            lines.get(i + 1).is_some_and(|l| !l.trim().is_empty() && !l.starts_with(">>>")),
            "no answer:\n{screen}"
        );
    }
    // Ctrl-C during an answer stops it and gives the prompt back.
    tmux(&["send-keys", "-t", "chat", "Write a very long story about a dragon.", "Enter"]);
    wait_for(
        &|p| p.lines().skip_while(|l| !l.contains("about a dragon")).nth(1).is_some_and(|l| !l.trim().is_empty()),
        "the third answer to start",
    );
    tmux(&["send-keys", "-t", "chat", "C-c"]);
    wait_for(&|p| p.contains("(stopped)") && prompts(p) == 4, "the stopped answer");
    tmux(&["send-keys", "-t", "chat", "C-c"]);
    wait_for(&|p| p.contains("Ctrl-C again"), "the Ctrl-C hint");
    tmux(&["send-keys", "-t", "chat", "C-c"]);
    let screen = wait_for(&|p| p.contains("exit status"), "chat to quit on the second Ctrl-C");
    tmux(&["kill-server"]);
    assert!(screen.contains("exit status 130"), "screen:\n{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
}

/// Terminal tests need `tmux`/`script`; they are skipped only when
/// LLAMA_TEST_SKIP_TTY=1 says so, never silently.
fn skip_tty(tool: &str) -> bool {
    if std::env::var_os("LLAMA_TEST_SKIP_TTY").is_some_and(|v| v == "1") {
        eprintln!("skipping: LLAMA_TEST_SKIP_TTY=1");
        return true;
    }
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is required for terminal tests (apt-get install {tool}), or set LLAMA_TEST_SKIP_TTY=1");
    false
}

/// `llama serve` is the real server: it comes up, answers, and shuts down
/// gracefully on SIGINT.
#[test]
fn serve_starts_answers_and_stops() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    let model = model().display().to_string();
    let mut child = llama()
        .args(["serve", "-m", &model, "--port", "0", "-t", "1", "-c", "512", "-np", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its address");
    let get = |path: &str| -> Option<String> {
        let mut s = TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        Some(response)
    };
    let start = Instant::now();
    let health = loop {
        match get("/health") {
            Some(r) if r.starts_with("HTTP/1.1 200") => break r,
            _ if start.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
                panic!("/health never turned 200");
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(health.contains("ok"), "{health}");
    let models = get("/v1/models").expect("GET /v1/models");
    assert!(models.starts_with("HTTP/1.1 200") && models.contains("SmolLM2"), "{models}");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let code = wait_timeout(&mut child, Duration::from_secs(20));
    let log = log.join().expect("log reader");
    assert_eq!(code, Some(0), "server log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn context_shift_generates_past_a_full_context() {
    let args = |extra: &[&str]| {
        let mut a = vec!["-c", "64", "-n", "100", "--temp", "0", "--ignore-eos", "--json"];
        a.extend_from_slice(extra);
        a.push("Once upon a time");
        gen_args(&a)
    };
    let full = json(&ok(run(&args(&[]), None)));
    assert_eq!(full["finish_reason"], "context_full");
    let shifted = json(&ok(run(&args(&["--context-shift", "--keep", "4"]), None)));
    assert_eq!(shifted["finish_reason"], "length");
    assert_eq!(shifted["usage"]["completion_tokens"], 100);
    // --keep without --context-shift is a usage error.
    fails(run(&args(&["--keep", "4"]), None), 2, "--context-shift");
}
