//! `POST /slots/{id}?action=save|restore|erase` with `--slot-save-path`:
//! llama.cpp's own scenario (`test_slot_save.py`: save after a completion,
//! restore elsewhere, the prefix is reused) on a real process with the real
//! model, a restart that keeps the files, a server with another key that
//! refuses them; and, in process over the fake engine, the response
//! shapes, hostile file names (nothing is written outside the directory),
//! forged files, busy slots and the 501 without the flag.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use common::oneshot::{assert_error, assert_invalid, fake, loading, post, send};
use common::{Server, assert_schema};
use serde_json::{Value, json};

const KEY_FILE: &str = ".llama-rs-state-key";

async fn post_to(server: &Server, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(path)).timeout(Duration::from_secs(120));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// A greedy completion pinned to `slot`, its prompt kept in the slot's cache.
fn completion(slot: u32) -> Value {
    json!({
        "prompt": "What is the capital of France? The capital of France is",
        "n_predict": 8,
        "id_slot": slot,
        "cache_prompt": true,
        "temperature": 0,
    })
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn save_erase_restore_and_the_restored_prefix_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--slot-save-path", dir.path().to_str().unwrap()]).await;
    // The key was made at start, private to the server's user.
    let key = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
    assert_eq!((key.len(), key.permissions().mode() & 0o777), (32, 0o600));

    let (status, first) = post_to(&server, "/completion", Some(completion(1))).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["tokens_cached"], 0);
    let n_prompt = first["tokens_evaluated"].as_u64().unwrap();
    let n_predicted = first["tokens_predicted"].as_u64().unwrap();

    let (status, saved) = post_to(&server, "/slots/1?action=save", Some(json!({"filename": "slot1.bin"}))).await;
    assert_eq!(status, 200, "{saved}");
    assert_schema("SlotSaved", &saved);
    assert_eq!((saved["id_slot"].as_u64(), saved["filename"].as_str()), (Some(1), Some("slot1.bin")));
    // The slot's cache: the prompt and every generated token but the last.
    assert_eq!(saved["n_saved"].as_u64().unwrap(), n_prompt + n_predicted - 1, "{saved}");
    let file = dir.path().join("slot1.bin");
    assert_eq!(saved["n_written"].as_u64().unwrap(), std::fs::metadata(&file).unwrap().len());
    assert!(saved["timings"]["save_ms"].as_f64().unwrap() >= 0.0);

    let (status, erased) = post_to(&server, "/slots/1?action=erase", None).await;
    assert_eq!((status, erased.clone()), (200, json!({"id_slot": 1, "n_erased": saved["n_saved"]})));
    assert_schema("SlotErased", &erased);

    let (status, restored) = post_to(&server, "/slots/0?action=restore", Some(json!({"filename": "slot1.bin"}))).await;
    assert_eq!(status, 200, "{restored}");
    assert_schema("SlotRestored", &restored);
    assert_eq!(restored["id_slot"], 0);
    assert_eq!(restored["n_restored"], saved["n_saved"]);
    assert_eq!(restored["n_read"], saved["n_written"]);
    assert!(restored["timings"]["restore_ms"].as_f64().unwrap() >= 0.0);

    // The same prompt in the restored slot reuses the restored cells.
    let (status, again) = post_to(&server, "/completion", Some(completion(0))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["tokens_cached"].as_u64().unwrap(), n_prompt - 1, "{again}");
    assert_eq!(again["content"], first["content"], "greedy output after the restore");

    // A file that does not verify under this server's key is refused
    // before llama.cpp reads it, and leaves the slot empty.
    let mut forged = std::fs::read(&file).unwrap();
    let at = forged.len() / 2;
    forged[at] ^= 0x20;
    std::fs::write(dir.path().join("forged.bin"), &forged).unwrap();
    std::fs::write(dir.path().join("garbage.bin"), b"not a slot state").unwrap();
    for name in ["forged.bin", "garbage.bin"] {
        let (status, body) = post_to(&server, "/slots/0?action=restore", Some(json!({"filename": name}))).await;
        assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("Invalid slot save file"), "{body}");
    }
    let (_, slots) = post_to(&server, "/slots/0?action=erase", None).await;
    assert_eq!(slots["n_erased"], 0, "a refused restore leaves the slot empty");
    let (status, body) = post_to(&server, "/slots/0?action=restore", Some(json!({"filename": "nope.bin"}))).await;
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("not_found_error")), "{body}");
}

#[tokio::test]
async fn saved_slots_survive_a_restart_and_another_servers_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let first = Server::start(&["--slot-save-path", path]).await;
    let (status, done) = post_to(&first, "/completion", Some(completion(0))).await;
    assert_eq!(status, 200, "{done}");
    let n_prompt = done["tokens_evaluated"].as_u64().unwrap();
    let (status, body) = post_to(&first, "/slots/0?action=save", Some(json!({"filename": "kept.bin"}))).await;
    assert_eq!(status, 200, "{body}");
    drop(first);

    let second = Server::start(&["--slot-save-path", path]).await;
    let (status, body) = post_to(&second, "/slots/1?action=restore", Some(json!({"filename": "kept.bin"}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, again) = post_to(&second, "/completion", Some(completion(1))).await;
    assert_eq!(again["tokens_cached"].as_u64().unwrap(), n_prompt - 1, "{again}");
    assert_eq!(again["content"], done["content"]);
    drop(second);

    // Another directory has another key: the same file is refused there.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("kept.bin"), other.path().join("kept.bin")).unwrap();
    let third = Server::start(&["--slot-save-path", other.path().to_str().unwrap()]).await;
    let (status, body) = post_to(&third, "/slots/0?action=restore", Some(json!({"filename": "kept.bin"}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("authentication failed"), "{body}");
}

#[tokio::test]
async fn a_slot_save_path_that_is_not_a_directory_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let server = Server::spawn(&["--slot-save-path", file.to_str().unwrap()]);
    let status = server.wait_exit(Duration::from_secs(60)).expect("the server exits");
    assert!(!status.success());
    let log = server.log();
    assert!(log.contains("--slot-save-path") && log.contains("not a directory"), "{log}");
}

// ---- in process, over the fake engine ----

#[tokio::test]
async fn without_the_flag_the_actions_are_501_and_bad_bodies_400() {
    for path in ["/slots/0?action=save", "/slots/0?action=restore", "/slots/0?action=erase", "/slots/x?action=y"] {
        let (status, _, body) = send(loading(&[]), post(path, r#"{"filename": "a.bin"}"#)).await;
        assert_error(status, &body, StatusCode::NOT_IMPLEMENTED, "not_supported_error");
        assert_eq!(
            body["error"]["message"],
            "This server does not support slots action. Start it with `--slot-save-path`"
        );
        let (status, _, body) = send(loading(&[]), post(path, "{")).await;
        assert_invalid(status, &body, None);
    }
    let (status, _, body) = send(loading(&[]), post("/slots/0?action=save", r#"{"filename": 5}"#)).await;
    assert_invalid(status, &body, Some("filename"));
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_is_written_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    symlink(&victim, dir.path().join("link")).unwrap();
    symlink(outside.path().join("created"), dir.path().join("dangling")).unwrap();
    symlink(outside.path(), dir.path().join("dirlink")).unwrap();
    let f = fake(&["--slot-save-path", dir.path().to_str().unwrap()]);
    let (status, body) = f.post("/completion", json!({"prompt": "hello", "n_predict": 4, "id_slot": 0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let escape = format!("../{}/x", outside.path().file_name().unwrap().to_string_lossy());
    let absolute = outside.path().join("abs").to_string_lossy().into_owned();
    let hostile = [
        "../x",
        "/etc/passwd",
        "a/b",
        escape.as_str(),
        absolute.as_str(),
        "dirlink/x",
        "..",
        ".",
        "",
        KEY_FILE,
        ".hidden",
        "x\u{0}y",
        "a\\b",
        "line\nbreak",
    ];
    for name in hostile.iter().copied().chain(["link", "dangling", "dirlink"]) {
        for action in ["save", "restore"] {
            let (status, body) = f.post(&format!("/slots/0?action={action}"), json!({"filename": name})).await;
            assert_invalid(status, &body, Some("filename"));
            assert!(body["error"]["message"].as_str().unwrap().starts_with("Invalid filename"), "{name:?}: {body}");
        }
    }
    let (status, body) = f.post("/slots/0?action=save", json!({})).await;
    assert_invalid(status, &body, Some("filename"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert_eq!(names(outside.path()), ["victim"]);
    // Only the links the test made: no file, no temporary file.
    assert_eq!(names(dir.path()), ["dangling", "dirlink", "link"]);

    // A plain name works; the key file is never served or replaced.
    let (status, body) = f.post("/slots/0?action=save", json!({"filename": "ok.bin"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_schema("SlotSaved", &body);
    assert_eq!(names(dir.path()), ["dangling", "dirlink", "link", "ok.bin"]);
}

#[tokio::test]
async fn ids_actions_and_busy_slots() {
    let dir = tempfile::tempdir().unwrap();
    let f = fake(&["--slot-save-path", dir.path().to_str().unwrap()]);
    for (path, want) in [
        ("/slots/x?action=save", "Invalid slot ID"),
        ("/slots/-1?action=save", "Invalid slot ID"),
        ("/slots/2?action=save", "Invalid slot ID"),
        ("/slots/99999999999?action=erase", "Invalid slot ID"),
        ("/slots/0?action=bogus", "Invalid action"),
        ("/slots/0", "Invalid action"),
    ] {
        let (status, body) = f.post(path, json!({"filename": "a.bin"})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(want), "{path}: {body}");
    }
    // An unused slot saves (as empty) and erases (nothing).
    let (status, body) = f.post("/slots/1?action=save", json!({"filename": "empty.bin"})).await;
    assert_eq!((status, body["n_saved"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    let (status, body) = f.post("/slots/1?action=erase", json!({})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"id_slot": 1, "n_erased": 0})));

    // A slot serving a request: 409 for all three (llama.cpp waits instead).
    f.slow(Duration::from_millis(5));
    let stream = f.open(common::oneshot::post_json(
        "/completion",
        json!({"prompt": "x", "n_predict": 500, "id_slot": 0, "stream": true}),
    ));
    let _open = stream.await;
    f.wait_until("slot 0 busy", |e| e.slots()[0].state != llama_runtime::SlotState::Idle).await;
    for action in ["save", "restore", "erase"] {
        let (status, body) = f.post(&format!("/slots/0?action={action}"), json!({"filename": "empty.bin"})).await;
        assert_error(status, &body, StatusCode::CONFLICT, "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("busy"), "{body}");
    }
}
