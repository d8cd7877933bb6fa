//! Where the llama.cpp source comes from: `LLAMA_CPP_DIR`, else the vendored
//! tree, else a failure naming the command that fixes it.

use std::path::{Path, PathBuf};

use crate::env;

pub struct Source {
    pub dir: PathBuf,
    /// A string that changes whenever the tree's content may have changed.
    pub fingerprint: String,
}

pub fn llama_cpp_source() -> Source {
    if let Some(dir) = env::var_os("LLAMA_CPP_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("include/llama.h").is_file() {
            fail(&format!(
                "LLAMA_CPP_DIR={} does not contain include/llama.h; point it at a llama.cpp checkout or unset it",
                dir.display()
            ));
        }
        // A user tree has no stamp: watch the parts that are compiled.
        for sub in ["CMakeLists.txt", "include", "src", "ggml/include", "ggml/src", "ggml/CMakeLists.txt"] {
            println!("cargo:rerun-if-changed={}", dir.join(sub).display());
        }
        let fingerprint = format!("dir:{}:{}", dir.display(), newest_mtime(&dir.join("src")));
        return Source { dir, fingerprint };
    }

    let manifest_dir = PathBuf::from(env::cargo("CARGO_MANIFEST_DIR"));
    let vendor = manifest_dir.join("../vendor");
    let dir = vendor.join("llama.cpp");
    let stamp = dir.join(".llama-rs-stamp");
    // The fetch script rewrites the stamp and manifest whenever it changes the
    // tree, so these two files are all cargo needs to watch.
    println!("cargo:rerun-if-changed={}", stamp.display());
    println!("cargo:rerun-if-changed={}", dir.join(".llama-rs-manifest").display());
    println!("cargo:rerun-if-changed={}", vendor.join("llama.cpp.pin").display());
    match std::fs::read_to_string(&stamp) {
        Ok(s) if dir.join("include/llama.h").is_file() => {
            Source { dir: dir.canonicalize().unwrap_or(dir), fingerprint: format!("vendored:{}", s.trim()) }
        }
        _ => {
            fail("llama.cpp source not found: run `vendor/setup.sh` (or `vendor/fetch-llama.sh`), or set LLAMA_CPP_DIR")
        }
    }
}

fn newest_mtime(dir: &Path) -> u64 {
    let mut newest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if let Ok(t) = md.modified() {
                let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                newest = newest.max(secs);
            }
        }
    }
    newest
}

/// Stop the build with one clear line (cargo shows build-script panics verbatim).
pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}
