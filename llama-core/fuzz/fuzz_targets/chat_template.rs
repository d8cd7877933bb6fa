//! The body is `llama_core_fuzz::chat_template` (`src/targets/chat_template.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // `ChatTemplate` catches panics inside minijinja and returns them as
        // errors (minijinja 2.24 has known ones), but libFuzzer's panic hook
        // aborts at any panic, caught or not. Print them instead; a panic
        // that escapes still aborts (libfuzzer-sys catches it and aborts).
        std::panic::set_hook(Box::new(|info| eprintln!("panic (caught by ChatTemplate?): {info}")));
    },
    |data: &[u8]| llama_core_fuzz::chat_template(data)
);
