//! Suite sizes and recorded figures.

use std::io::Write as _;

use serde_json::Value;

use crate::paths;

/// Whether `RELIABILITY_SCALE=long` (the `make reliability-long` sizes).
pub fn long() -> bool {
    std::env::var("RELIABILITY_SCALE").is_ok_and(|v| v.eq_ignore_ascii_case("long"))
}

/// A suite size: `RELIABILITY_<NAME>` if set, else `long` under
/// `RELIABILITY_SCALE=long`, else `ci`.
pub fn knob(name: &str, ci: usize, long: usize) -> usize {
    let var = format!("RELIABILITY_{}", name.to_ascii_uppercase());
    match std::env::var(&var) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) if self::long() => long,
        Err(_) => ci,
    }
}

/// Print the figures of a suite (one `RELIABILITY` line, visible with
/// `--nocapture`) and write them to `target/reliability/<suite>.json`.
pub fn record(suite: &str, figures: Value) {
    let scale = if long() { "long" } else { "ci" };
    let entry = serde_json::json!({ "suite": suite, "scale": scale, "figures": figures });
    println!("RELIABILITY {entry}");
    let dir = paths::report_dir();
    if std::fs::create_dir_all(&dir).is_ok()
        && let Ok(mut f) = std::fs::File::create(dir.join(format!("{suite}.{scale}.json")))
    {
        let _ = writeln!(f, "{}", serde_json::to_string_pretty(&entry).unwrap_or_default());
    }
}
