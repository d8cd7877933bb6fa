//! Fuzz target `state_restore`: bytes that this process did not write must
//! never be restored into a context: `Context::set_state_bytes` and
//! `set_seq_state_bytes` return `Err` for them and the context stays usable
//! (llama.cpp restores whatever it is given; a malformed state is a heap
//! overflow).
//!
//! Input: byte 0 holds flags (bits 0–1: the mode; bit 2: the sequence id
//! for sequence modes); the rest is
//! - mode 0: a whole-context state, as is;
//! - mode 1: a sequence state, as is;
//! - mode 2: edits to a real sequence state this context wrote: (2-byte
//!   little-endian offset, byte to XOR) triples, applied in turn;
//! - mode 3: a real whole-context state cut to (2-byte offset) bytes,
//!   followed by the rest of the input.
//!
//! Only the public API is used. Compiled into the model fuzz crate and into
//! llama-core's corpus-replay test (it names only `llama_core`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use llama_core::{Context, ContextParams, Model, ModelParams};

struct Fixture {
    ctx: Mutex<Context>,
    /// A sequence state and a whole-context state that `ctx` wrote.
    seq_state: Vec<u8>,
    whole_state: Vec<u8>,
}

fn model_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("LLAMA_FUZZ_MODEL") {
        return p.into();
    }
    let rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| rel.into())
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = model_path();
        let model = match Model::load(&path, &ModelParams::default()) {
            Ok(m) => Arc::new(m),
            Err(e) => panic!("the default model does not load from {} (run `make setup`): {e}", path.display()),
        };
        let params = ContextParams {
            n_ctx: 256,
            n_batch: 64,
            n_ubatch: 64,
            n_seq_max: 2,
            n_threads: 1,
            n_threads_batch: 1,
            ..Default::default()
        };
        let mut ctx = Context::new(model, &params).unwrap_or_else(|e| panic!("context: {e}"));
        // Two tokens in sequence 0, no outputs: small states.
        let mut batch = ctx.new_batch();
        for (pos, token) in [1, 2].into_iter().enumerate() {
            batch.add(token, pos as i32, &[0], false).unwrap_or_else(|e| panic!("batch: {e}"));
        }
        ctx.decode(&batch).unwrap_or_else(|e| panic!("decode: {e}"));
        let seq_state = ctx.seq_state_bytes(0).unwrap_or_else(|e| panic!("seq_state_bytes: {e}"));
        let file = std::env::temp_dir().join(format!("llama-fuzz-state-{}.bin", std::process::id()));
        ctx.save_state_file(&file).unwrap_or_else(|e| panic!("save_state_file: {e}"));
        let whole_state = std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let _ = std::fs::remove_file(&file);
        Fixture { ctx: Mutex::new(ctx), seq_state, whole_state }
    })
}

/// Run one input.
pub fn state_restore(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let mut ctx = f.ctx.lock().unwrap_or_else(PoisonError::into_inner);
    let seq = i32::from((flags >> 2) & 1);
    match flags & 3 {
        0 => assert!(ctx.set_state_bytes(rest).is_err() || rest == f.whole_state, "a forged state was restored"),
        1 => assert!(ctx.set_seq_state_bytes(rest, seq).is_err() || rest == f.seq_state, "a forged state was restored"),
        2 => {
            let mut state = f.seq_state.clone();
            for edit in rest.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
                if let Some(b) = state.get_mut(at) {
                    *b ^= edit[2];
                }
            }
            let result = ctx.set_seq_state_bytes(&state, seq);
            if state == f.seq_state {
                assert!(result.is_ok(), "a state this context wrote was refused: {result:?}");
            } else {
                assert!(result.is_err(), "an edited state was restored");
            }
        }
        _ => {
            let cut = rest.get(..2).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
            let mut state = f.whole_state[..cut.min(f.whole_state.len())].to_vec();
            state.extend_from_slice(rest.get(2..).unwrap_or_default());
            let result = ctx.set_state_bytes(&state);
            if state == f.whole_state {
                assert!(result.is_ok(), "a state this context wrote was refused: {result:?}");
            } else {
                assert!(result.is_err(), "an altered state was restored");
            }
        }
    }
    // The context still works: one more token decodes.
    ctx.kv_clear();
    let mut batch = ctx.new_batch();
    if batch.add(3, 0, &[1], false).is_ok() {
        assert!(ctx.decode(&batch).is_ok(), "the context no longer decodes");
    }
}
