//! Compile `shim/llrs_shim.cpp`, the try/catch barrier that keeps C++
//! exceptions thrown inside llama.cpp from unwinding into Rust.

use std::path::PathBuf;

use crate::cmake_build::Built;
use crate::env;

/// The shim's header, for bindgen.
pub fn header() -> PathBuf {
    PathBuf::from(env::cargo("CARGO_MANIFEST_DIR")).join("shim/llrs_shim.h")
}

/// Build the shim as a static library and link it (before llama.cpp's
/// libraries, whose symbols it uses).
pub fn build(built: &Built) {
    let dir = PathBuf::from(env::cargo("CARGO_MANIFEST_DIR")).join("shim");
    println!("cargo:rerun-if-changed={}", dir.join("llrs_shim.cpp").display());
    println!("cargo:rerun-if-changed={}", dir.join("llrs_shim.h").display());
    let mut b = cc::Build::new();
    b.cpp(true).std("c++17").file(dir.join("llrs_shim.cpp")).include(&dir).warnings(false);
    for inc in &built.include_dirs {
        b.include(inc);
    }
    b.compile("llrs_shim");
}
