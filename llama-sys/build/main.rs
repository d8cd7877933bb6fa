//! Build script for llama-sys.
//!
//! 1. find the llama.cpp source (`find`),
//! 2. build it with CMake into a cache keyed by source + options (`cmake_build`),
//! 3. generate bindings for `llama.h` and our exception shim (`bindings`),
//! 4. compile the shim, which catches C++ exceptions before they reach Rust (`shim`),
//! 5. build our C baseline program against the same static libraries (`baseline`).

mod baseline;
mod bindings;
mod cmake_build;
mod env;
mod find;
mod shim;

fn main() {
    let src = find::llama_cpp_source();
    let built = cmake_build::build(&src);
    bindings::generate(&built.include_dirs);
    shim::build(&built);
    built.emit_link_directives();
    baseline::build(&built);
    println!("cargo:root={}", built.root.display());
    println!("cargo:include={}", built.include_dirs[0].display());
    println!("cargo:lib_dir={}", built.lib_dir.display());
}
