//! Through raw FFI only: load the default model and decode one token.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::path::PathBuf;

fn default_model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "default model missing at {}: run vendor/setup.sh", p.display());
    p
}

#[test]
fn load_model_and_decode_one_token() {
    let path = CString::new(default_model().to_str().unwrap()).unwrap();
    // SAFETY (whole test): each pointer comes from the matching llama.cpp
    // constructor, is checked for null, and is freed exactly once at the end.
    unsafe {
        llama_sys::llama_backend_init();
        let mut mp = llama_sys::llama_model_default_params();
        mp.n_gpu_layers = 0;
        let model = llama_sys::llama_model_load_from_file(path.as_ptr(), mp);
        assert!(!model.is_null(), "model failed to load");
        let vocab = llama_sys::llama_model_get_vocab(model);
        let n_vocab = llama_sys::llama_vocab_n_tokens(vocab);
        assert_eq!(n_vocab, 49152, "SmolLM2 has a 49152-token vocabulary");

        let mut cp = llama_sys::llama_context_default_params();
        cp.n_ctx = 256;
        cp.n_batch = 64;
        cp.n_threads = 2;
        cp.n_threads_batch = 2;
        let ctx = llama_sys::llama_init_from_model(model, cp);
        assert!(!ctx.is_null(), "context failed to initialise");

        let text = "The capital of France is";
        let mut toks = vec![0i32; 64];
        let n = llama_sys::llama_tokenize(
            vocab,
            text.as_ptr().cast(),
            text.len() as i32,
            toks.as_mut_ptr(),
            64,
            true,
            false,
        );
        assert!(n > 0, "tokenize returned {n}");
        toks.truncate(n as usize);
        let batch = llama_sys::llama_batch_get_one(toks.as_mut_ptr(), n);
        assert_eq!(llama_sys::llama_decode(ctx, batch), 0);
        let logits = llama_sys::llama_get_logits_ith(ctx, -1);
        assert!(!logits.is_null());
        let logits = std::slice::from_raw_parts(logits, n_vocab as usize);
        assert!(logits.iter().all(|x| x.is_finite()));
        let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as i32;
        let mut buf = [0u8; 64];
        let len = llama_sys::llama_token_to_piece(vocab, best, buf.as_mut_ptr().cast(), 64, 0, false);
        assert!(len > 0);
        let piece = String::from_utf8_lossy(&buf[..len as usize]);
        assert_eq!(piece.trim(), "Paris", "greedy next token after {text:?}");

        llama_sys::llama_free(ctx);
        llama_sys::llama_model_free(model);
        llama_sys::llama_backend_free();
    }
}

#[test]
fn baseline_binary_exists() {
    assert!(std::path::Path::new(llama_sys::BASELINE_BIN).is_file(), "{}", llama_sys::BASELINE_BIN);
}
