//! Link `baseline/baseline.c` into an executable against the same static
//! libraries. Tests and benchmarks find it through `llama_sys::BASELINE_BIN`.

use std::path::PathBuf;

use crate::cmake_build::Built;
use crate::env;
use crate::find::fail;

pub fn build(built: &Built) {
    let manifest_dir = PathBuf::from(env::cargo("CARGO_MANIFEST_DIR"));
    let src = manifest_dir.join("baseline/baseline.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let exe = built.root.join("llama-baseline");
    let compiler = cc::Build::new().cpp(true).cargo_metadata(false).cargo_warnings(false).opt_level(2).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.arg("-x").arg("c").arg(&src).arg("-x").arg("none");
    for dir in &built.include_dirs {
        cmd.arg(format!("-I{}", dir.display()));
    }
    cmd.arg("-o").arg(&exe).arg(format!("-L{}", built.lib_dir.display()));
    for dir in &built.system_lib_dirs {
        cmd.arg(format!("-L{}", dir.display()));
    }
    for lib in &built.static_libs {
        cmd.arg(format!("-l{lib}"));
    }
    for lib in &built.system_libs {
        cmd.arg(format!("-l{lib}"));
    }
    for fw in &built.frameworks {
        cmd.arg("-framework").arg(fw);
    }
    cmd.arg("-lm").arg("-lpthread");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the C baseline failed ({s}): {:?} {:?}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        )),
        Err(e) => fail(&format!("cannot run the C compiler for the baseline: {e}")),
    }
    println!("cargo:rustc-env=LLAMA_BASELINE_BIN={}", exe.display());
}
