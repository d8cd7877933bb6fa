//! Hostile input to the `llama` CLI: absurd flags, broken model files,
//! grammars that do not parse, token ids outside the vocabulary, a prompt
//! file far beyond the context, a closed output pipe. Each run must end by
//! itself with a plain exit code (never a signal: `GGML_ASSERT` aborts with
//! SIGABRT) and, on failure, a short message with no panic text.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use llama_e2e::paths::{cli_binary, model_path};
use llama_e2e::{figures, wait_or_kill};
use serde_json::json;

/// What a run must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Exit non-zero with a message containing this (case-insensitive).
    Fail(&'static str),
    /// Exit 0.
    Succeed,
}

fn run(
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String, Vec<u8>) {
    let mut child = Command::new(cli_binary())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llama");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input);
    }
    // Read both pipes on threads so that a chatty child never blocks.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let status = wait_or_kill(&mut child, timeout);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    (status, stderr, stdout)
}

#[test]
fn hostile_cli_input_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7fjunk").expect("write");
    let truncated = dir.path().join("truncated.gguf");
    let real = std::fs::read(model_path()).expect("read model");
    std::fs::write(&truncated, &real[..real.len() / 2]).expect("write");
    drop(real);
    let newlines = dir.path().join("newlines.txt");
    std::fs::write(&newlines, "\n".repeat(1_000_000)).expect("write");
    let nul = dir.path().join("nul.txt");
    std::fs::write(&nul, "a\u{0}<|im_end|>\u{0}b").expect("write");
    let m = model_path().display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let p = |path: &std::path::Path| path.display().to_string();

    let cases: Vec<(Vec<String>, Want)> = vec![
        (s(&["generate", "-m", &m, "-c", "1", "hi"]), Want::Fail("ctx")),
        (s(&["generate", "-m", &m, "-t", "0", "hi"]), Want::Fail("threads")),
        (s(&["generate", "-m", &m, "--temp", "-1", "hi"]), Want::Fail("temp")),
        (s(&["generate", "-m", &m, "--top-p", "7", "hi"]), Want::Fail("top-p")),
        (s(&["generate", "-m", &m, "-c", "99999999999", "hi"]), Want::Fail("ctx")),
        (s(&["generate", "-m", &m, "--grammar", "root ::= (", "-n", "4", "hi"]), Want::Fail("grammar")),
        (
            s(&[
                "generate",
                "-m",
                &m,
                "--grammar",
                &format!("root ::= {}\"a\"{}", "(".repeat(10_000), ")".repeat(10_000)),
                "hi",
            ]),
            Want::Fail("grammar"),
        ),
        (s(&["generate", "-m", "/nonexistent/model.gguf", "hi"]), Want::Fail("model")),
        (s(&["generate", "-m", "/dev/null", "hi"]), Want::Fail("")),
        (vec!["generate".into(), "-m".into(), p(&garbage), "hi".into()], Want::Fail("")),
        (vec!["generate".into(), "-m".into(), p(&truncated), "hi".into()], Want::Fail("")),
        (
            vec!["generate".into(), "-m".into(), m.clone(), "-c".into(), "512".into(), "-f".into(), p(&newlines)],
            Want::Fail("context"),
        ),
        (s(&["generate", "-m", &m, "-f", "/nonexistent/prompt.txt"]), Want::Fail("prompt.txt")),
        // NUL bytes cannot be in argv; they come through a prompt file.
        (
            vec![
                "generate".into(),
                "-m".into(),
                m.clone(),
                "-n".into(),
                "2".into(),
                "--temp".into(),
                "0".into(),
                "-f".into(),
                p(&nul),
            ],
            Want::Succeed,
        ),
        (s(&["detokenize", "-m", &m, "99999999"]), Want::Fail("99999999")),
        (s(&["detokenize", "-m", &m, "1,-1"]), Want::Fail("-1")),
        (s(&["detokenize", "-m", &m, "1,2,3"]), Want::Succeed),
        (s(&["tokenize", "-m", &m, "<|im_start|><|im_end|>"]), Want::Succeed),
        (s(&["info", "-m", &m]), Want::Succeed),
        (vec!["info".into(), "-m".into(), p(&truncated)], Want::Fail("")),
        (s(&["no-such-command"]), Want::Fail("no-such-command")),
    ];
    let mut failures = Vec::new();
    for (args, want) in &cases {
        let (status, stderr, _stdout) = run(args, None, Duration::from_secs(120));
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        let describe = || format!("{shown:?}: {status:?}\n{stderr}");
        let Some(st) = status else {
            failures.push(format!("did not exit within 120 s: {}", describe()));
            continue;
        };
        if st.signal().is_some() {
            failures.push(format!("killed by a signal: {}", describe()));
            continue;
        }
        for bad in ["GGML_ASSERT", "panicked", "RUST_BACKTRACE", "Segmentation"] {
            if stderr.contains(bad) {
                failures.push(format!("stderr contains {bad}: {}", describe()));
            }
        }
        match want {
            Want::Succeed if !st.success() => failures.push(format!("expected success: {}", describe())),
            Want::Fail(word) => {
                if st.success() {
                    failures.push(format!("expected failure: {}", describe()));
                } else if !stderr.to_ascii_lowercase().contains(&word.to_ascii_lowercase()) {
                    failures.push(format!("message does not mention {word:?}: {}", describe()));
                } else if stderr.lines().filter(|l| l.to_ascii_lowercase().contains("error")).count() > 2 {
                    failures.push(format!("message is not short: {}", describe()));
                }
            }
            Want::Succeed => {}
        }
    }

    // A closed output pipe (`llama generate | head -c 1`) is a clean exit.
    let mut child = Command::new(cli_binary())
        .args(["generate", "-m", &m, "-n", "64", "--ignore-eos", "--temp", "0", "Count to a hundred:"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llama");
    let mut out = child.stdout.take().expect("piped");
    let mut first = [0u8; 1];
    let _ = std::io::Read::read(&mut out, &mut first);
    drop(out);
    let status = wait_or_kill(&mut child, Duration::from_secs(120));
    match status {
        Some(s) if s.signal().is_none() => {}
        other => failures.push(format!("closed pipe: {other:?} (killed by SIGPIPE or hung)")),
    }

    figures::record("cli", json!({"cases": cases.len() + 1, "failures": failures.len()}));
    assert!(failures.is_empty(), "{} CLI cases failed:\n{}", failures.len(), failures.join("\n\n"));
}
