//! bindgen over `llama.h` with an allowlist: the llama API and the ggml types
//! it mentions, nothing else.

use std::path::{Path, PathBuf};

use crate::env;
use crate::find::fail;

pub fn generate(include_dirs: &[PathBuf]) {
    let out = PathBuf::from(env::cargo("OUT_DIR")).join("bindings.rs");
    // The shim's header includes llama.h: one pass binds both.
    let header = crate::shim::header();
    let mut b = bindgen::Builder::default()
        .header(header.to_string_lossy())
        // llama.cpp's functions may throw C++ exceptions; "C-unwind" makes
        // an exception that escapes one defined behaviour (it unwinds, or
        // the process aborts at a Rust frame that cannot unwind) instead of
        // undefined behaviour. llama-core calls the throwing ones through
        // the llrs_* shim, which catches everything.
        .override_abi(bindgen::Abi::CUnwind, "llama_.*")
        .allowlist_function("llrs_.*")
        .allowlist_var("LLRS_.*")
        .allowlist_function("llama_.*")
        .allowlist_type("llama_.*")
        .allowlist_var("LLAMA_.*")
        .allowlist_function("ggml_time_us")
        .allowlist_type("ggml_log_level")
        .allowlist_function("ggml_backend_dev_count")
        .allowlist_function("ggml_backend_dev_get")
        .allowlist_function("ggml_backend_dev_name")
        .allowlist_function("ggml_backend_dev_description")
        .allowlist_function("ggml_backend_dev_type")
        .allowlist_function("ggml_backend_dev_memory")
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new().rerun_on_header_files(false)));
    for dir in include_dirs {
        b = b.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = b.generate().unwrap_or_else(|e| {
        fail(&format!(
            "bindgen failed on {}: {e} (bindgen needs libclang: apt install libclang-dev clang)",
            Path::new(&header).display()
        ))
    });
    bindings.write_to_file(&out).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}
