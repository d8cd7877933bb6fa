//! One test per soundness fix of "Soundness and hostile input, round 2":
//! each would have failed (or, under valgrind/Miri, reported an error)
//! before its fix. Real model, real llama.cpp.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use llama_core::{
    Backend, Batch, Context, ContextParams, Error, MAX_BATCH, Model, ModelParams, Pooling, Sampler, SamplingParams,
};

mod common;
use common::{model, model_path};

fn params(n_ctx: u32, n_seq_max: u32) -> ContextParams {
    ContextParams {
        n_ctx,
        n_seq_max,
        n_batch: 512,
        n_ubatch: 512,
        n_threads: 2,
        n_threads_batch: 2,
        ..Default::default()
    }
}

/// Item 1: the grammar and DRY samplers point into the model's vocabulary;
/// a `Sampler` keeps the model alive, so dropping every other handle to it
/// first is fine (before the fix this read freed memory).
#[test]
fn sampler_keeps_its_model_alive() {
    let m = Arc::new(Model::load(model_path(), &ModelParams::default()).unwrap());
    let p = SamplingParams {
        grammar: Some(r#"root ::= "yes" | "no""#.into()),
        dry_multiplier: 0.8,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(&m, &p).unwrap();
    assert_eq!(Arc::strong_count(&m), 2, "the sampler holds a reference to the model");
    let n_vocab = m.vocab().n_tokens() as usize;
    let yes = m.vocab().tokenize("yes", false, false).unwrap()[0];
    drop(m);
    let mut logits = vec![0.0f32; n_vocab];
    logits[yes as usize] = 10.0;
    assert_eq!(s.sample_logits(&logits).unwrap(), yes);
    s.reset().unwrap();
}

/// Item 2: with rank pooling llama.cpp sizes each sequence's output to
/// `n_cls_out` floats (1 here), not `n_embd`; the slice must have that
/// length (before the fix it had 576 and read past the vector).
#[test]
fn rank_pooling_output_has_n_cls_out_floats() {
    let m = model();
    let p = ContextParams { embeddings: true, pooling: Pooling::Rank, ..params(512, 1) };
    let mut c = Context::new(m.clone(), &p).unwrap();
    assert_eq!(c.pooling(), Pooling::Rank);
    let tokens = m.vocab().tokenize("query and document", true, false).unwrap();
    let mut b = c.new_batch();
    for (i, &t) in tokens.iter().enumerate() {
        b.add(t, i as i32, &[0], true).unwrap();
    }
    c.decode(&b).unwrap();
    let scores = c.embeddings_seq(0).unwrap();
    assert_eq!(scores.len(), 1, "one score per sequence for a model without a classifier head");
    assert!(scores[0].is_finite());
}

/// Item 3: `system_info` from many threads at once (llama.cpp rebuilds a
/// static string per call; we call it once).
#[test]
fn system_info_is_safe_from_many_threads() {
    let first = Backend::init().system_info();
    assert!(!first.is_empty());
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| (0..200).map(|_| Backend::init().system_info()).collect::<Vec<_>>()))
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|s| *s == first));
    }
}

/// Item 4: shifting positions out of range is refused before llama.cpp
/// adds `delta` to its int32 positions.
#[test]
fn kv_seq_add_refuses_overflowing_shifts() {
    let m = model();
    let mut c = Context::new(m.clone(), &params(512, 1)).unwrap();
    let tokens = m.vocab().tokenize("one two three four", true, false).unwrap();
    let mut b = c.new_batch();
    b.add_sequence(&tokens, 0, 0, true).unwrap();
    c.decode(&b).unwrap();
    let before = (c.kv_seq_pos_min(0), c.kv_seq_pos_max(0));
    for delta in [i32::MAX, i32::MAX - 1, i32::MIN, i32::MIN + 1, 1 << 20, -(1 << 20)] {
        let r = c.kv_seq_add(0, None, None, delta);
        assert!(matches!(r, Err(Error::InvalidParam { name: "delta", .. })), "delta {delta}: {r:?}");
    }
    assert_eq!((c.kv_seq_pos_min(0), c.kv_seq_pos_max(0)), before, "refused shifts change nothing");
    // An in-range shift still works.
    c.kv_seq_add(0, Some(1), None, 3).unwrap();
    assert_eq!(c.kv_seq_pos_max(0), before.1.map(|p| p + 3));
}

/// Item 8: batch sizes llama.cpp's unchecked allocator would take.
#[test]
fn batch_capacity_is_bounded() {
    let n_vocab = model().vocab().n_tokens();
    for cap in [0, MAX_BATCH + 1, usize::MAX, usize::MAX / 2] {
        assert!(matches!(Batch::new(cap, 1, n_vocab), Err(Error::InvalidParam { .. })), "capacity {cap}");
    }
    for seqs in [0, 100_000, u32::MAX] {
        assert!(matches!(Batch::new(8, seqs, n_vocab), Err(Error::InvalidParam { .. })), "n_seq_max {seqs}");
    }
    let mut b = Batch::new(MAX_BATCH, 2, n_vocab).unwrap();
    b.add(1, 0, &[0, 1], true).unwrap();
    assert_eq!(b.capacity(), MAX_BATCH);
}

/// Item 9: the detokenizer's length is bounded by the longest piece of
/// the vocabulary (llama.cpp sums lengths in an int32).
#[test]
fn detokenize_length_is_bounded_by_the_longest_piece() {
    let m = model();
    let longest = m.vocab().max_piece_len();
    assert!((1..1024).contains(&longest), "{longest}");
    let n = (i32::MAX as usize / 2) / (longest + 1) + 1;
    let r = m.vocab().detokenize(&vec![1; n], false, true);
    assert!(matches!(r, Err(Error::Tokenize(_))), "{} tokens: {:?}", n, r.as_ref().map(String::len));
    // Ordinary lengths still work.
    assert_eq!(
        m.vocab().detokenize(&m.vocab().tokenize("hello world", false, false).unwrap(), false, false).unwrap(),
        "hello world"
    );
}

/// Item 10: without causal attention a batch longer than one micro-batch
/// aborts in llama.cpp; it is a typed error here.
#[test]
fn non_causal_batches_must_fit_one_micro_batch() {
    let m = model();
    let p = ContextParams { n_batch: 256, n_ubatch: 64, ..params(512, 1) };
    let mut c = Context::new(m, &p).unwrap();
    c.set_causal_attn(false);
    assert!(!c.causal_attn());
    let mut b = c.new_batch();
    b.add_sequence(&vec![1; 100], 0, 0, true).unwrap();
    assert!(matches!(c.decode(&b), Err(Error::InvalidParam { name: "batch", .. })));
    assert!(matches!(c.encode(&b), Err(Error::InvalidParam { name: "batch", .. })));
    // One micro-batch is fine.
    let mut b = c.new_batch();
    b.add_sequence(&vec![1; 64], 0, 0, true).unwrap();
    c.decode(&b).unwrap();
    c.set_causal_attn(true);
    let mut b = c.new_batch();
    b.add_sequence(&vec![1; 100], 64, 0, true).unwrap();
    c.decode(&b).unwrap();
}

/// Item 11: the abort flag works after the Context has moved (the
/// callback's pointer is the Arc's, not an address inside the Context).
#[test]
fn abort_flag_survives_moves() {
    let m = model();
    let c = Context::new(m, &ContextParams { n_ubatch: 16, ..params(512, 1) }).unwrap();
    let flag = c.abort_flag();
    let mut moved = vec![Box::new(c)];
    let mut c = moved.pop().unwrap();
    flag.store(true, Ordering::Relaxed);
    let mut b = c.new_batch();
    b.add_sequence(&vec![1; 64], 0, 0, true).unwrap();
    assert!(matches!(c.decode(&b), Err(Error::Aborted)));
    flag.store(false, Ordering::Relaxed);
    c.kv_seq_rm(0, None, None).unwrap();
    c.decode(&b).unwrap();
}

/// Item 12: a look-back of -1 means the context, as in llama.cpp's server
/// (llama.cpp's sampler itself would read -1 as "off").
#[test]
fn minus_one_look_back_means_the_context() {
    let p = SamplingParams { repeat_last_n: -1, dry_penalty_last_n: -1, ..SamplingParams::default() };
    let r = p.clone().with_context_size(4096);
    assert_eq!((r.repeat_last_n, r.dry_penalty_last_n), (4096, 4096));
    let r = SamplingParams { repeat_last_n: 0, ..p }.with_context_size(4096);
    assert_eq!(r.repeat_last_n, 0, "0 stays off");

    // With a strong penalty, -1 behaves like the whole context, not like 0.
    let m = model();
    let n_vocab = m.vocab().n_tokens() as usize;
    let run = |last_n: i32| {
        let p = SamplingParams { repeat_penalty: 100.0, repeat_last_n: last_n, ..SamplingParams::greedy() };
        let mut s = Sampler::new(&m, &p).unwrap();
        let mut logits = vec![0.0f32; n_vocab];
        logits[7] = 5.0;
        logits[8] = 4.0;
        (0..3).map(|_| s.sample_logits(&logits).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(0), vec![7, 7, 7]);
    assert_eq!(run(-1)[..2], [7, 8], "the penalty sees the first token");
    assert_eq!(run(-1), run(m.n_ctx_train() as i32));
}

/// llama.cpp allocates a ring buffer of `last_n` tokens for the penalties
/// and DRY; a huge look-back is capped at the model's context instead of
/// asking for gigabytes (or throwing `bad_alloc` out of the constructor).
#[test]
fn huge_look_backs_are_capped() {
    let m = model();
    let p = SamplingParams {
        repeat_penalty: 1.3,
        repeat_last_n: i32::MAX,
        dry_multiplier: 0.8,
        dry_penalty_last_n: i32::MAX,
        ..SamplingParams::greedy()
    };
    let t = std::time::Instant::now();
    let mut s = Sampler::new(&m, &p).unwrap();
    assert!(t.elapsed().as_secs() < 5, "no 2^31-entry buffers: {:?}", t.elapsed());
    let logits = vec![0.0f32; m.vocab().n_tokens() as usize];
    s.sample_logits(&logits).unwrap();
}
