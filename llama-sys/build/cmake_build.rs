//! Build llama.cpp's static libraries with CMake, once.
//!
//! The build goes into a cache under the target directory keyed by the source
//! fingerprint, the enabled features and the target, not into `OUT_DIR`: dev,
//! test, release and clippy runs all reuse one Release build of llama.cpp, so
//! an unchanged tree is built exactly once. A file lock serialises concurrent
//! cargo invocations that would build the same key.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::env;
use crate::find::{Source, fail};

pub struct Built {
    pub root: PathBuf,
    pub lib_dir: PathBuf,
    pub include_dirs: Vec<PathBuf>,
    /// Static libraries, in link order (dependents before dependencies):
    /// llama, ggml (the backend registry), the backends, ggml-base.
    pub static_libs: Vec<&'static str>,
    /// System libraries and frameworks that the static libraries need.
    pub system_libs: Vec<String>,
    pub system_lib_dirs: Vec<PathBuf>,
    pub frameworks: Vec<&'static str>,
}

impl Built {
    pub fn emit_link_directives(&self) {
        println!("cargo:rustc-link-search=native={}", self.lib_dir.display());
        for dir in &self.system_lib_dirs {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        for lib in &self.static_libs {
            println!("cargo:rustc-link-lib=static={lib}");
        }
        for lib in &self.system_libs {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        for fw in &self.frameworks {
            println!("cargo:rustc-link-lib=framework={fw}");
        }
    }
}

struct Options {
    defines: Vec<(&'static str, String)>,
    static_libs: Vec<&'static str>,
    system_libs: Vec<String>,
    system_lib_dirs: Vec<PathBuf>,
    frameworks: Vec<&'static str>,
}

fn on(b: bool) -> String {
    if b { "ON" } else { "OFF" }.to_string()
}

/// `native` feature, overridable with `LLAMA_SYS_NATIVE=0|1` (for example
/// to build a portable binary, or one that valgrind can run: valgrind does not
/// decode AVX-512).
fn native() -> bool {
    match env::var("LLAMA_SYS_NATIVE").as_deref() {
        Some("0") | Some("off") | Some("false") => false,
        Some(_) => true,
        None => env::feature("native"),
    }
}

fn options() -> Options {
    let target_os = env::cargo("CARGO_CFG_TARGET_OS");
    let mut o = Options {
        defines: vec![
            ("BUILD_SHARED_LIBS", on(false)),
            ("CMAKE_POSITION_INDEPENDENT_CODE", on(true)),
            ("LLAMA_BUILD_COMMON", on(false)),
            ("LLAMA_BUILD_TESTS", on(false)),
            ("LLAMA_BUILD_TOOLS", on(false)),
            ("LLAMA_BUILD_EXAMPLES", on(false)),
            ("LLAMA_BUILD_SERVER", on(false)),
            ("LLAMA_BUILD_APP", on(false)),
            ("LLAMA_CURL", on(false)),
            ("LLAMA_OPENSSL", on(false)),
            ("LLAMA_ALL_WARNINGS", on(false)),
            ("GGML_BUILD_TESTS", on(false)),
            ("GGML_BUILD_EXAMPLES", on(false)),
            ("GGML_NATIVE", on(native())),
            ("GGML_OPENMP", on(env::feature("openmp"))),
            ("GGML_CUDA", on(env::feature("cuda"))),
            ("GGML_HIP", on(env::feature("hip"))),
            ("GGML_METAL", on(env::feature("metal"))),
            ("GGML_VULKAN", on(env::feature("vulkan"))),
            ("GGML_BLAS", on(false)),
        ],
        static_libs: vec!["llama", "ggml"],
        system_libs: vec![],
        system_lib_dirs: vec![],
        frameworks: vec![],
    };

    if env::feature("cuda") {
        let cuda = cuda_root();
        o.static_libs.push("ggml-cuda");
        o.system_lib_dirs.push(cuda.join("lib64"));
        o.system_lib_dirs.push(cuda.join("lib64/stubs"));
        o.system_libs.extend(["cudart", "cublas", "cublasLt", "cuda"].map(String::from));
        if let Some(arch) = env::var("CUDA_ARCHITECTURES") {
            o.defines.push(("CMAKE_CUDA_ARCHITECTURES", arch));
        }
    }
    if env::feature("hip") {
        let rocm = PathBuf::from(env::var("ROCM_PATH").unwrap_or_else(|| "/opt/rocm".into()));
        if !rocm.join("bin/hipcc").exists() {
            fail(&format!(
                "feature `hip` needs ROCm, but {} has no bin/hipcc; install ROCm or set ROCM_PATH",
                rocm.display()
            ));
        }
        o.static_libs.push("ggml-hip");
        o.system_lib_dirs.push(rocm.join("lib"));
        o.system_libs.extend(["amdhip64", "hipblas", "rocblas"].map(String::from));
    }
    if env::feature("vulkan") {
        if which("glslc").is_none() {
            fail(
                "feature `vulkan` needs the Vulkan SDK: glslc not found on PATH (Debian: apt install glslc libvulkan-dev; headers >= 1.3.275)",
            );
        }
        o.static_libs.push("ggml-vulkan");
        o.system_libs.push("vulkan".into());
    }
    if env::feature("metal") {
        if target_os != "macos" && target_os != "ios" {
            fail("feature `metal` is only available on Apple targets");
        }
        o.defines.push(("GGML_METAL_EMBED_LIBRARY", on(true)));
        o.static_libs.push("ggml-metal");
        o.frameworks.extend(["Foundation", "Metal", "MetalKit"]);
    }
    // ggml (the registry) needs every backend; every backend needs ggml-base.
    o.static_libs.extend(["ggml-cpu", "ggml-base"]);
    if target_os == "macos" || target_os == "ios" {
        o.system_libs.push("c++".into());
        o.frameworks.push("Accelerate");
    } else {
        o.system_libs.push("stdc++".into());
    }
    if env::feature("openmp") && target_os == "linux" {
        o.system_libs.push("gomp".into());
    }
    o
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn cuda_root() -> PathBuf {
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_TOOLKIT_ROOT_DIR"] {
        if let Some(p) = env::var(var) {
            return PathBuf::from(p);
        }
    }
    if let Some(nvcc) = which("nvcc") {
        // nvcc lives in <root>/bin/nvcc
        if let Some(root) = nvcc.canonicalize().ok().and_then(|p| p.parent()?.parent().map(Path::to_path_buf)) {
            return root;
        }
    }
    if Path::new("/usr/local/cuda/bin/nvcc").exists() {
        return PathBuf::from("/usr/local/cuda");
    }
    fail("feature `cuda` needs the CUDA toolkit: nvcc not found on PATH and CUDA_PATH is not set");
}

/// `<target-dir>/llama.cpp-build`, derived from OUT_DIR
/// (`<target-dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out`).
fn cache_root() -> PathBuf {
    if let Some(dir) = env::var_os("LLAMA_CPP_BUILD_CACHE") {
        return PathBuf::from(dir);
    }
    let out = PathBuf::from(env::cargo("OUT_DIR"));
    match out.ancestors().nth(4) {
        Some(target_dir) => target_dir.join("llama.cpp-build"),
        None => out.join("llama.cpp-build"),
    }
}

pub fn build(src: &Source) -> Built {
    let opts = options();
    let target = env::cargo("TARGET");
    let mut h = std::hash::DefaultHasher::new();
    (&src.fingerprint, &target, &opts.defines, env::var("CMAKE_GENERATOR"), env::var("CC"), env::var("CXX"))
        .hash(&mut h);
    let key = format!("{:016x}", h.finish());
    let root = cache_root().join(&key);
    std::fs::create_dir_all(&root).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", root.display())));

    let lock = std::fs::File::create(root.join(".lock"))
        .unwrap_or_else(|e| fail(&format!("cannot lock {}: {e}", root.display())));
    // Another cargo (say, clippy beside a test run) may be building the same key.
    lock.lock().unwrap_or_else(|e| fail(&format!("cannot lock {}: {e}", root.display())));
    let done = root.join(".done");
    if !done.exists() {
        let mut cfg = cmake::Config::new(&src.dir);
        cfg.out_dir(&root)
            // An unoptimised ggml is useless, whatever cargo profile asked.
            .profile("Release")
            // Our own flags only: the cc-derived defaults differ between cargo
            // profiles and would make the cached build profile-dependent.
            .no_default_flags(true);
        for (k, v) in &opts.defines {
            cfg.define(k, v);
        }
        cfg.build();
        std::fs::write(&done, &key).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", done.display())));
    }
    drop(lock);

    let lib_dir = ["lib", "lib64"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.join("libllama.a").exists() || d.join("llama.lib").exists())
        .unwrap_or_else(|| fail(&format!("CMake finished but no libllama.a under {}", root.display())));
    Built {
        include_dirs: vec![root.join("include")],
        lib_dir,
        root,
        static_libs: opts.static_libs,
        system_libs: opts.system_libs,
        system_lib_dirs: opts.system_lib_dirs,
        frameworks: opts.frameworks,
    }
}
