//! `POST /slots/{id}?action=save|restore|erase` (needs `--slot-save-path`):
//! a slot's prompt cache to a file in that directory and back, as
//! llama.cpp's server does.
//!
//! File names are confined to the directory: a name is one path component
//! (no `/`, `\`, NUL or other control characters, not `.`/`..`, not
//! starting with a dot, at most 255 bytes), and the file it names must be a
//! regular file, never a symlink: a restore checks that the file it opened
//! is the one `lstat` saw; a save writes a fresh temporary file
//! (`O_CREAT | O_EXCL`, which never follows a link) and renames it over the
//! name, which replaces a directory entry and never writes through one.
//!
//! A saved file is the engine's slot state, signed (HMAC-SHA256) with a key
//! derived from a secret kept in the directory ([`KEY_FILE`], 32 random
//! bytes, mode 0600, made the first time a server starts with the
//! directory): files survive a restart, while a file written by anyone
//! without the secret is refused before llama.cpp reads it.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use llama_core::StateKey;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;

/// The secret in the slot directory that the state key is derived from.
pub(crate) const KEY_FILE: &str = ".llama-rs-state-key";
/// What the key derived from [`KEY_FILE`] is for.
const KEY_PURPOSE: &str = "llama-server slot files";
/// The longest file name accepted (bytes), as most file systems allow.
const MAX_NAME_BYTES: usize = 255;

/// The key that signs and verifies the slot files in `dir`, derived from
/// the secret in `dir/`[`KEY_FILE`], which is created (32 random bytes,
/// mode 0600) when it does not exist yet.
///
/// # Errors
/// `dir` is not a directory; the key file cannot be created or read, is
/// not a regular file, is readable or writable by group or others, or does
/// not hold 32 bytes.
pub(crate) fn state_key(dir: &Path) -> io::Result<StateKey> {
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "not a directory"));
    }
    let path = dir.join(KEY_FILE);
    let secret = match read_secret(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => create_secret(dir, &path)?,
        other => other?,
    };
    Ok(StateKey::derive(&secret, KEY_PURPOSE))
}

/// Write a fresh secret under a temporary name, then hard-link it to
/// `path`: the link either creates `path` whole or fails because another
/// process made it first, whose secret is then used.
fn create_secret(dir: &Path, path: &Path) -> io::Result<[u8; 32]> {
    let secret = *StateKey::generate().map_err(io::Error::other)?.as_bytes();
    let tmp = dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
    // A leftover of a crashed start with the same process id.
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let linked = file.write_all(&secret).and_then(|()| file.sync_all()).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!("created the slot file key {}", path.display());
            Ok(secret)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_secret(path),
        Err(e) => Err(e),
    }
}

fn read_secret(path: &Path) -> io::Result<[u8; 32]> {
    let (file, meta) = open_regular(path)?;
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!("{} is open to group or others (mode {:o}); make it 0600", path.display(), meta.mode() & 0o777),
        ));
    }
    let mut bytes = Vec::with_capacity(32);
    file.take(33).read_to_end(&mut bytes)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, format!("{} does not hold 32 bytes", path.display())))
}

/// Open `path` for reading only if it is a regular file, not a symlink:
/// the file opened must be the one `lstat` saw (same device and inode), so
/// a link swapped in between is refused too. A file that is not regular is
/// `InvalidInput`.
fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let seen = fs::symlink_metadata(path)?;
    if !seen.file_type().is_file() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) || !opened.file_type().is_file() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "the file changed while it was opened"));
    }
    Ok((file, opened))
}

/// Why a file name is refused, or `None` when it names a file of the slot
/// directory and nothing else.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.starts_with('.') {
        // `.`, `..`, and the key file and temporary files of this directory.
        Some("it starts with a dot")
    } else {
        None
    }
}

/// The path of `name` in `dir`, after the checks of [`name_problem`].
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, AppError> {
    match name_problem(name) {
        Some(why) => Err(AppError::invalid("filename", format!("Invalid filename: {why}"))),
        None => Ok(dir.join(name)),
    }
}

/// Temporary files of concurrent saves get different names.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `dest` (in `dir`) atomically: a fresh temporary file,
/// synced, renamed over `dest`. Refuses (`InvalidInput`) a `dest` that
/// exists and is not a regular file (a symlink, a directory).
fn write_file(dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(io::Error::new(ErrorKind::InvalidInput, "it exists and is not a regular file"));
        }
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".llama-rs-slot-{}-{n}.tmp", std::process::id()));
    // O_CREAT | O_EXCL: never follows a link planted under the name.
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| fs::rename(&tmp, dest));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // Make the new directory entry durable too (best effort).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, meta) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The HTTP error for a failed file operation on `name`.
fn file_error(name: &str, e: io::Error) -> AppError {
    match e.kind() {
        ErrorKind::NotFound => AppError::NotFound(format!("slot save file not found: {name}")),
        ErrorKind::InvalidInput => AppError::invalid("filename", format!("Invalid filename: {name}: {e}")),
        _ => AppError::Internal(format!("slot file {name}: {e}")),
    }
}

/// Run blocking file work off the HTTP runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))
}

/// `?action=`.
#[derive(Debug, Deserialize)]
pub(crate) struct SlotActionQuery {
    action: Option<String>,
}

/// The body: `{"filename": "..."}` (save and restore; erase reads none).
#[derive(Debug, Default, Deserialize)]
struct SlotActionBody {
    filename: Option<String>,
}

/// `timings` of a save.
#[derive(Debug, Serialize)]
struct SaveTimings {
    save_ms: f64,
}

/// The answer to `action=save`.
#[derive(Debug, Serialize)]
struct Saved {
    filename: String,
    id_slot: u32,
    n_saved: usize,
    n_written: usize,
    timings: SaveTimings,
}

/// `timings` of a restore.
#[derive(Debug, Serialize)]
struct RestoreTimings {
    restore_ms: f64,
}

/// The answer to `action=restore`.
#[derive(Debug, Serialize)]
struct Restored {
    filename: String,
    id_slot: u32,
    n_read: usize,
    n_restored: usize,
    timings: RestoreTimings,
}

/// The answer to `action=erase`.
#[derive(Debug, Serialize)]
struct Erased {
    id_slot: u32,
    n_erased: usize,
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// `POST /slots/{id}?action=save|restore|erase`
pub(crate) async fn slot_action(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<SlotActionQuery>,
    body: Bytes,
) -> Result<Response, AppError> {
    // The body first: malformed JSON is a 400 whatever else is wrong.
    let body: SlotActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        SlotActionBody::default()
    } else {
        crate::extract::parse(&body)?
    };
    let Some(dir) = state.settings().slot_save_path.clone() else {
        return Err(AppError::NotSupported(
            "This server does not support slots action. Start it with `--slot-save-path`".into(),
        ));
    };
    let id_slot: u32 = id.parse().map_err(|_| AppError::bad_request(format!("Invalid slot ID: {id:?}")))?;
    let action = query.action.unwrap_or_default();
    if !matches!(action.as_str(), "save" | "restore" | "erase") {
        return Err(AppError::bad_request(format!("Invalid action: {action:?} (save, restore or erase)")));
    }
    let ready = state.ready()?;
    let engine = &ready.engine;
    if action == "erase" {
        let n_erased = engine.erase_slot(id_slot).await?;
        return Ok(Json(Erased { id_slot, n_erased }).into_response());
    }
    let filename = body.filename.unwrap_or_default();
    let path = file_in(&dir, &filename)?;
    let started = Instant::now();
    if action == "save" {
        let saved = engine.save_slot(id_slot).await?;
        let n_written = saved.bytes.len();
        let bytes = saved.bytes;
        let name = filename.clone();
        blocking(move || write_file(&dir, &path, &bytes)).await?.map_err(|e| file_error(&name, e))?;
        let timings = SaveTimings { save_ms: millis(started) };
        Ok(Json(Saved { filename, id_slot, n_saved: saved.tokens.len(), n_written, timings }).into_response())
    } else {
        let name = filename.clone();
        let bytes = blocking(move || read_file(&path)).await?.map_err(|e| file_error(&name, e))?;
        let n_read = bytes.len();
        let tokens = engine.restore_slot(id_slot, bytes).await?;
        let timings = RestoreTimings { restore_ms: millis(started) };
        Ok(Json(Restored { filename, id_slot, n_read, n_restored: tokens.len(), timings }).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_component() {
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "x\0y", "x\ny", ".hidden", KEY_FILE] {
            assert!(name_problem(bad).is_some(), "{bad:?} was accepted");
        }
        assert!(name_problem(&"a".repeat(256)).is_some());
        for good in ["slot1.bin", "a", "naïve state", "a..b", "x.", &"a".repeat(255)] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = state_key(dir.path()).unwrap();
        let meta = fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        assert_eq!(state_key(dir.path()).unwrap(), key, "the same secret, the same key");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let other = tempfile::tempdir().unwrap();
        assert_ne!(state_key(other.path()).unwrap(), key);

        // A key file others can read is refused, as a symlink or a wrong size is.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(state_key(dir.path()).unwrap_err().kind(), ErrorKind::PermissionDenied);
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path().join(KEY_FILE), linked.path().join(KEY_FILE)).unwrap();
        assert_eq!(state_key(linked.path()).unwrap_err().kind(), ErrorKind::InvalidInput);
        let short = tempfile::tempdir().unwrap();
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(short.path().join(KEY_FILE)).unwrap();
        f.write_all(b"short").unwrap();
        assert_eq!(state_key(short.path()).unwrap_err().kind(), ErrorKind::InvalidData);
        assert!(state_key(&dir.path().join(KEY_FILE)).is_err(), "a file is not a directory");
    }

    #[test]
    fn files_are_written_whole_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, b"untouched").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(write_file(dir.path(), &link, b"evil").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(read_file(&link).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(fs::read(&target).unwrap(), b"untouched");

        let dest = dir.path().join("state.bin");
        write_file(dir.path(), &dest, b"one").unwrap();
        write_file(dir.path(), &dest, b"two").unwrap();
        assert_eq!(read_file(&dest).unwrap(), b"two");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_file(&dir.path().join("missing")).unwrap_err().kind(), ErrorKind::NotFound);
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(read_file(&dir.path().join("sub")).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(write_file(dir.path(), &dir.path().join("sub"), b"x").unwrap_err().kind(), ErrorKind::InvalidInput);
        // Only the files written and the link: no temporary file is left.
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["link", "state.bin", "sub"]);
    }
}
