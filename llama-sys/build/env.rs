//! The one way this build script reads the environment: every variable read
//! is also declared to cargo, so changing it reruns the script.

use std::ffi::OsString;

pub fn var_os(name: &str) -> Option<OsString> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var_os(name)
}

pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

/// Cargo-set variables (never changed by a user between runs of one build).
pub fn cargo(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo did not set {name}"))
}

pub fn feature(name: &str) -> bool {
    std::env::var_os(format!("CARGO_FEATURE_{}", name.to_uppercase())).is_some()
}
