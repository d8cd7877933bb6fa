//! Runs the official OpenAI Python client against the real server
//! (`tests/python/run.sh`), so that `cargo test` covers it. Skips, loudly,
//! only when `python3` is not installed.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn openai_python_client() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("\n\n!!!!! SKIPPED: python3 is not installed; the OpenAI-client tests did not run !!!!!\n\n");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("bash")
        .arg(root.join("tests/python/run.sh"))
        .env("LLAMA_SERVER_BIN", env!("CARGO_BIN_EXE_llama-server"))
        .current_dir(&root)
        .output()
        .expect("run tests/python/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "tests/python/run.sh failed ({})\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(" passed"), "pytest ran no test:\n{stdout}");
}
