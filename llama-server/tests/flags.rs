//! The binary's command line: llama.cpp's flags and `LLAMA_ARG_*`
//! variables, clear refusals of bad values and of features not built yet,
//! flags accepted without effect, the default model lookup, and a model that
//! fails to load. (`flag_table.rs` checks every flag of llama.cpp's README at
//! the parsing level.)

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Server, binary, model_path};
use serde_json::Value;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run llama-server")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version() {
    let o = run(&["--help"], &[]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--ctx-size",
        "--parallel",
        "--api-key",
        "--embeddings",
        "--metrics",
        "--no-slots",
        "-np",
        "LLAMA_ARG_MODEL",
        "--cpu-mask M",
        "--mmproj FILE",
        "-kvu, --kv-unified, -no-kvu, --no-kv-unified",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let o = run(&["--version"], &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_flags_and_absurd_values_are_refused_with_a_message() {
    let o = run(&["--no-such-flag"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));

    let model = model_path();
    let m = model.to_str().unwrap();
    for (args, needle) in [
        (vec!["-m", m, "--ctx-size", "1"], "--ctx-size"),
        (vec!["-m", m, "-np", "0"], "--parallel"),
        (vec!["-m", m, "--threads", "0"], "--threads"),
        (vec!["-m", m, "-ub", "0"], "--ubatch-size"),
        (vec!["-m", m, "--port", "99999"], "--port"),
        (vec!["-m", "/nonexistent/model.gguf"], "model file not found"),
        (vec!["-m", m, "--api-key-file", "/nonexistent/keys"], "--api-key-file"),
        (vec!["-m", m, "--chat-template", "no-such-template"], "--chat-template"),
        (vec!["-m", m, "--flash-attn", "maybe"], "--flash-attn"),
    ] {
        let o = run(&args, &[]);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("GGML_ASSERT") && !stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // Environment variables are read like llama.cpp's.
    let o = run(&["-m", m], &[("LLAMA_ARG_CTX_SIZE", "1")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--ctx-size"), "{}", stderr(&o));
}

#[tokio::test]
async fn llama_cpp_flags_and_env_vars_work() {
    let s = Server::spawn_with_env(
        &[
            "-np",
            "3",
            "-tb",
            "1",
            "-ub",
            "64",
            "-b",
            "128",
            "-cb",
            "-fa",
            "off",
            "-to",
            "30",
            "-ngl",
            "0",
            "--no-webui",
            "--jinja",
        ],
        &[("LLAMA_ARG_ENDPOINT_METRICS", "1"), ("LLAMA_API_KEY", "sk-env"), ("LLAMA_ARG_ALIAS", "from-env")],
    );
    s.wait_healthy(Duration::from_secs(120)).await;
    let client = reqwest::Client::new();
    let r = client.get(s.url("/props")).send().await.unwrap();
    assert_eq!(r.status(), 401, "LLAMA_API_KEY turns auth on");
    let props: Value = client.get(s.url("/props")).bearer_auth("sk-env").send().await.unwrap().json().await.unwrap();
    assert_eq!(props["total_slots"], 3);
    assert_eq!(props["model_alias"], "from-env");
    let r = client.get(s.url("/metrics")).header("x-api-key", "sk-env").send().await.unwrap();
    assert_eq!(r.status(), 200, "LLAMA_ARG_ENDPOINT_METRICS=1 enables /metrics");
    assert!(!s.log().contains("sk-env"), "the key must never be logged");
}

#[tokio::test]
async fn default_model_is_found_next_to_the_executable() {
    // No -m, and a working directory without models/: the executable's
    // ancestors (target/debug/.. /..) hold models/.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(binary());
    cmd.current_dir(dir.path())
        .args(["--port", "0", "-c", "256", "-np", "1", "-t", "2"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut loaded = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        if line.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && line.contains("loading model") {
            loaded = true;
        }
        if line.contains("serving") {
            break;
        }
    }
    let _ = child.kill().await;
    assert!(loaded, "the default model was not picked up");
}

#[tokio::test]
async fn a_model_that_fails_to_load_is_reported_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&[3, 0, 0, 0]);
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(&bad, bytes).unwrap();
    let s = Server::spawn(&["-m", bad.to_str().unwrap()]);
    let (status, log) =
        tokio::task::spawn_blocking(move || (s.wait_exit(Duration::from_secs(60)), s.log())).await.unwrap();
    let status = status.expect("exits");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("failed to load the model"), "{log}");
}

#[test]
fn flags_that_print_and_exit() {
    for (flag, needle) in [
        ("--completion-bash", "complete -F _llama_completions llama-server"),
        ("--cache-list", "number of models in cache: 0"),
        ("-cl", "number of models in cache: 0"),
        ("--list-devices", "Available devices:"),
    ] {
        let o = run(&[flag], &[]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(needle), "{flag}");
    }
}

#[test]
fn refused_flags_and_variables_stop_the_server_with_one_line() {
    let model = model_path();
    let m = model.to_str().unwrap();
    for (args, env, needle) in [
        (vec!["-m", m, "--mmproj", "proj.gguf"], vec![], "--mmproj: multimodal input is not built yet"),
        (vec!["-m", m, "--offline", "-dr=ai/smollm2"], vec![], "-dr: Docker Hub downloads are not built"),
        (vec!["-m", m, "--draft", "4"], vec![], "--draft: removed in llama.cpp too"),
        (vec!["-m", m], vec![("LLAMA_ARG_MODELS_DIR", "/models")], "LLAMA_ARG_MODELS_DIR (--models-dir): router mode"),
        (vec!["-m", m], vec![("LLAMA_ARG_MMPROJ_URL", "http://x")], "LLAMA_ARG_MMPROJ_URL (--mmproj-url): multimodal"),
    ] {
        let o = run(&args, &env);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?} {env:?}: one line, got {err}");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
    }
    // A switch's variable set to false turns it off and is no error.
    let o = run(&["-m", "/nonexistent/model.gguf"], &[("LLAMA_ARG_RERANKING", "0")]);
    assert!(stderr(&o).contains("model file not found"), "{}", stderr(&o));
}

#[tokio::test]
async fn accepted_flags_start_and_say_why_they_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("server.log");
    let s = Server::spawn_with_env(
        &[
            "--cpu-mask=ff",
            "-Cr",
            "0-1",
            "--prio",
            "-1",
            "-no-kvu",
            "--numa",
            "distribute",
            "-sps",
            "0.5",
            "--context-shift",
            "--keep",
            "-1",
            "--pooling",
            "mean",
            "--tags",
            "local,test",
            "--chat-template-kwargs",
            r#"{"enable_thinking": false}"#,
            "--threads-http",
            "3",
            "--log-file",
            log_file.to_str().unwrap(),
            "--no-log-timestamps",
            "--log-colors=off",
            "-lm",
            "none",
        ],
        &[("LLAMA_ARG_OFFLINE", "1"), ("LLAMA_ARG_ENDPOINT_SLOTS", "0")],
    );
    s.wait_healthy(Duration::from_secs(120)).await;
    let log = s.log();
    for line in [
        "--cpu-mask: no effect here: CPU affinity",
        "-Cr: no effect here",
        "--prio: no effect here",
        "-no-kvu: no effect here: each slot has its own KV cells",
        "--numa: no effect here",
        "-sps: no effect here",
        "--tags: no effect here",
    ] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
    // Implemented flags say nothing.
    for flag in ["--context-shift:", "--keep:", "-lm:", "--pooling:", "--chat-template-kwargs:"] {
        assert!(!log.contains(flag), "{flag} in\n{log}");
    }
    let client = reqwest::Client::new();
    let r = client.get(s.url("/slots")).send().await.unwrap();
    assert_eq!(r.status(), 501, "LLAMA_ARG_ENDPOINT_SLOTS=0 turns /slots off");
    let written = std::fs::read_to_string(&log_file).unwrap();
    assert!(written.contains("listening on") && written.contains("--cpu-mask: no effect here"), "{written}");
    assert!(!written.contains('\u{1b}'), "no colors in the log file");
}
