//! The engine over the real default model (SmolLM2-135M-Instruct Q4_1).
//! One model per test binary; tests run one at a time (they measure latency
//! on a small machine, so they must not compete for its cores).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llama_core::{FlashAttn, KvCacheType, Model, ModelParams};
use llama_runtime::{
    Engine, EngineConfig, EngineError, Event, FinishReason, Health, Output, Prompt, Rejected, Request, SamplingParams,
    SlotState,
};

fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
            Arc::new(Model::load(path, &ModelParams::default()).expect("default model loads (run the setup script)"))
        })
        .clone()
}

/// Serializes the tests of this binary.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(n_seq_max: u32, n_ctx_seq: u32) -> EngineConfig {
    EngineConfig {
        n_ctx: n_ctx_seq * n_seq_max,
        n_seq_max,
        n_batch: 512,
        n_ubatch: 128,
        n_threads: 2,
        n_threads_batch: 2,
        queue_capacity: 8,
        prefill_chunk: 256,
        event_capacity: 16,
        embeddings: false,
        stall_timeout: Duration::from_secs(30),
        slow_consumer_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    }
}

fn start(cfg: EngineConfig) -> Engine {
    Engine::start(model(), cfg).expect("engine starts")
}

fn greedy(prompt: &str, max_tokens: u32) -> Request {
    let mut r = Request::new(prompt);
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

fn run(engine: &Engine, req: Request) -> Output {
    futures::executor::block_on(engine.submit(req).expect("accepted").collect()).expect("finishes")
}

const PROMPTS: [&str; 4] =
    ["The capital of France is", "Here is a short poem about the sea:", "def fibonacci(n):", "List three colors:"];

#[test]
fn concurrent_requests_match_solo_runs() {
    let _s = serial();
    let engine = start(config(4, 256));
    let solo: Vec<Output> =
        PROMPTS.iter().map(|p| run(&engine, Request { cache_prompt: false, ..greedy(p, 24) })).collect();
    for out in &solo {
        assert!(!out.tokens().is_empty());
    }
    let handles: Vec<_> =
        PROMPTS.iter().map(|p| engine.submit(Request { cache_prompt: false, ..greedy(p, 24) }).unwrap()).collect();
    let together: Vec<Output> =
        futures::executor::block_on(futures::future::join_all(handles.into_iter().map(|h| h.collect())))
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(a.tokens(), b.tokens(), "prompt {i}: batched output differs from the solo run");
        assert_eq!(a.text, b.text);
    }
    let m = engine.metrics();
    assert!(m.busy_seq_steps_total > m.decode_steps, "steps were shared: {m:?}");
}

#[test]
fn deterministic_requests_match_solo_runs_under_load() {
    let _s = serial();
    let engine = start(config(4, 256));
    let mut det = greedy(PROMPTS[1], 20);
    det.deterministic = true;
    let solo = run(&engine, det.clone());
    let others: Vec<_> = [0, 2, 3].iter().map(|&i| engine.submit(greedy(PROMPTS[i], 20)).unwrap()).collect();
    let loaded = run(&engine, det);
    assert_eq!(loaded.tokens(), solo.tokens());
    assert_eq!(loaded.usage.cached_tokens, 0, "deterministic requests do not reuse cached prefixes");
    for h in others {
        futures::executor::block_on(h.collect()).unwrap();
    }
}

#[test]
fn stop_strings_and_max_tokens() {
    let _s = serial();
    let engine = start(config(2, 256));
    let full = run(&engine, greedy(PROMPTS[1], 32));
    assert_eq!(full.finish_reason, FinishReason::MaxTokens);
    assert_eq!(full.events.len(), 32);
    assert_eq!(full.usage.completion_tokens, 32);
    // A stop string taken from the middle of the output (on char boundaries).
    let chars: Vec<(usize, char)> = full.text.char_indices().collect();
    assert!(chars.len() > 20, "output too short: {:?}", full.text);
    let (from, to) = (chars[10].0, chars[14].0);
    let word = full.text[from..to].to_string();
    let first = full.text.find(&word).unwrap();
    let mut req = greedy(PROMPTS[1], 32);
    req.stop = vec![word.clone(), "never appears \u{1F980}".into()];
    let stopped = run(&engine, req);
    assert_eq!(stopped.finish_reason, FinishReason::Stop { word });
    assert_eq!(stopped.text, full.text[..first]);
    assert!(stopped.events.len() <= full.events.len());
    assert_eq!(stopped.tokens()[..], full.tokens()[..stopped.events.len()]);

    let five = run(&engine, greedy(PROMPTS[1], 5));
    assert_eq!(five.finish_reason, FinishReason::MaxTokens);
    assert_eq!(five.tokens(), full.tokens()[..5]);
}

#[test]
fn limits_and_overload() {
    let _s = serial();
    let cfg = EngineConfig { queue_capacity: 1, ..config(1, 64) };
    let engine = start(cfg);
    let long_prompt = "word ".repeat(100);
    match engine.submit(greedy(&long_prompt, 4)) {
        Err(Rejected::PromptTooLong { n_prompt, n_ctx: 64 }) => assert!(n_prompt > 64),
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    // Generation that reaches the window ends with ContextFull.
    let mut req = greedy("Count: 1, 2, 3,", 1000);
    req.ignore_eos = true;
    let full = run(&engine, req);
    assert_eq!(full.finish_reason, FinishReason::ContextFull);
    assert_eq!(full.usage.prompt_tokens + full.usage.completion_tokens, 65);

    let mut busy = greedy("Tell me a long story.", 1000);
    busy.ignore_eos = true;
    let running = engine.submit(busy).unwrap();
    let t = Instant::now();
    while engine.metrics().active_sequences == 0 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued = engine.submit(greedy("queued", 2)).unwrap();
    let t = Instant::now();
    let rejected = engine.submit(greedy("one too many", 2));
    assert!(t.elapsed() < Duration::from_millis(100), "rejection must not wait");
    assert!(matches!(rejected, Err(Rejected::Overloaded { queue_capacity: 1 })), "{rejected:?}");
    drop(running);
    let out = futures::executor::block_on(queued.collect()).unwrap();
    assert_eq!(out.usage.completion_tokens, out.events.len() as u32);
    assert_eq!(engine.metrics().rejected_total, 2);
}

/// A grammar that allows no token of the model (a token id it does not
/// have, a class that matches nothing) ends the request with the typed
/// `Constraint` error, not an internal one, and the slot serves on.
#[test]
fn a_grammar_that_allows_no_token_is_a_constraint_error() {
    let _s = serial();
    let engine = start(config(1, 256));
    for grammar in ["root ::= <[99999999]>", r"root ::= [^\x00-\U0010FFFF]", r#"root ::= "a" <[99999999]>"#] {
        let mut req = greedy("Hello", 4);
        req.sampling.grammar = Some(grammar.into());
        let events: Vec<Event> = engine.submit(req).expect("accepted").blocking_iter().collect();
        assert!(matches!(events.last(), Some(Event::Error(EngineError::Constraint(_)))), "{grammar}: {events:?}");
    }
    assert!(!run(&engine, greedy("Hello", 2)).events.is_empty());
}

#[test]
fn cancel_mid_prefill_and_mid_decode_frees_the_slot() {
    let _s = serial();
    let cfg = EngineConfig { n_batch: 2048, n_ubatch: 128, prefill_chunk: 2048, ..config(1, 2048) };
    let engine = start(cfg);
    // Mid-prefill: ~1500 prompt tokens in one decode call, cancelled inside it.
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(150);
    let long = engine.submit(greedy(&prompt, 8)).unwrap();
    assert!(long.n_prompt_tokens() > 1400, "{}", long.n_prompt_tokens());
    let t = Instant::now();
    // The slot shows `Prefill` just before the decode call starts.
    while !engine.slots().iter().any(|s| s.state == SlotState::Prefill) {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    long.cancel();
    let events: Vec<Event> = long.blocking_iter().collect();
    let cancel_latency = t.elapsed();
    assert_eq!(events, vec![Event::Error(EngineError::Cancelled)]);
    let m = engine.metrics();
    assert_eq!(m.aborted_steps, 1, "the running prefill was interrupted, not finished");
    assert_eq!(m.kv_cells_used, 0, "the aborted prefill left no KV behind");

    // The slot is free at once: the next request is admitted without queueing.
    let next = run(&engine, greedy("Tell me a story.", 4));
    assert!(next.timings.queued < Duration::from_secs(2), "{:?}", next.timings);

    // Mid-decode.
    let mut req = greedy("Tell me a long story.", 10_000);
    req.ignore_eos = true;
    let mut h = engine.submit(req).unwrap();
    for _ in 0..3 {
        assert!(matches!(futures::executor::block_on(h.next()), Some(Event::Token(_))));
    }
    let t = Instant::now();
    drop(h);
    while engine.metrics().active_sequences != 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "the slot was not freed");
        std::thread::sleep(Duration::from_millis(1));
    }
    let freed = t.elapsed();
    assert_eq!(engine.metrics().requests_cancelled, 2);
    println!("cancel mid-prefill answered in {cancel_latency:?}; mid-decode slot freed in {freed:?}");
}

#[test]
fn slow_reader_does_not_block_a_fast_one() {
    let _s = serial();
    let cfg = EngineConfig { event_capacity: 2, ..config(2, 256) };
    let engine = start(cfg);
    let mut slow_req = greedy(PROMPTS[0], 24);
    slow_req.ignore_eos = true;
    let solo_slow = run(&engine, Request { cache_prompt: false, ..slow_req.clone() });
    let slow = engine.submit(slow_req).unwrap();
    let fast = engine.submit(Request { ignore_eos: true, ..greedy(PROMPTS[2], 24) }).unwrap();
    let fast_out = futures::executor::block_on(fast.collect()).unwrap();
    assert_eq!(fast_out.events.len(), 24);
    let info = engine.slots().into_iter().find(|s| s.request_id == Some(slow.id())).expect("slow still holds its slot");
    assert!(info.n_decoded <= 3, "the slow request is paused: {info:?}");
    let slow_out = futures::executor::block_on(slow.collect()).unwrap();
    assert_eq!(slow_out.tokens(), solo_slow.tokens(), "pausing lost or changed tokens");
}

#[test]
fn prefix_reuse_reports_cached_tokens_and_keeps_output() {
    let _s = serial();
    let engine = start(config(2, 512));
    let prompt = "You are a helpful assistant. Answer briefly.\nQuestion: what is the boiling point of water?";
    let first = run(&engine, greedy(prompt, 16));
    assert_eq!(first.usage.cached_tokens, 0);
    let second = run(&engine, greedy(prompt, 16));
    assert_eq!(second.usage.cached_tokens, second.usage.prompt_tokens - 1);
    assert_eq!(second.tokens(), first.tokens(), "reusing the cache changed the output");
    // A longer prompt sharing the prefix reuses it too.
    let longer = format!("{prompt} And of ethanol?");
    let third = run(&engine, greedy(&longer, 8));
    assert!(third.usage.cached_tokens >= first.usage.prompt_tokens - 1, "{:?}", third.usage);
    let m = engine.metrics();
    assert_eq!(m.cached_tokens_total, u64::from(second.usage.cached_tokens + third.usage.cached_tokens));
    // Slot reuse never leaks KV cells: at most one cached sequence per slot.
    assert!(m.kv_cells_used <= 2 * 512, "{m:?}");
    engine.shutdown_blocking(Duration::from_secs(1));
    assert_eq!(engine.metrics().kv_cells_used, 0);
}

#[test]
fn embeddings() {
    let _s = serial();
    let engine = start(EngineConfig { embeddings: true, ..config(2, 256) });
    let before = run(&engine, greedy(PROMPTS[0], 8));
    let inputs: Vec<Prompt> =
        ["hello world", "hello world", "The stock market fell sharply today."].into_iter().map(Prompt::from).collect();
    let v = futures::executor::block_on(engine.embed(inputs, true).unwrap()).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].vector.len(), model().n_embd() as usize);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((dot(&v[0].vector, &v[0].vector) - 1.0).abs() < 1e-3, "normalized");
    assert!(dot(&v[0].vector, &v[1].vector) > 0.9999, "same text, same vector");
    assert!(dot(&v[0].vector, &v[2].vector) < 0.99, "different text, different vector");
    // Generation is unaffected by the embedding work.
    let after = run(&engine, greedy(PROMPTS[0], 8));
    assert_eq!(after.tokens(), before.tokens());

    let off = start(config(1, 128));
    assert_eq!(off.embed(vec!["x".into()], false).unwrap_err(), Rejected::EmbeddingsDisabled);
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let _s = serial();
    let engine = start(config(2, 256));
    let a = engine.submit(greedy(PROMPTS[0], 12)).unwrap();
    let b = engine.submit(greedy(PROMPTS[3], 12)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        engine.shutdown(Duration::from_secs(30)).await;
        assert!(matches!(engine.submit(greedy("late", 1)), Err(Rejected::ShuttingDown)));
        for h in [a, b] {
            let out = h.collect().await.unwrap();
            assert!(!out.tokens().is_empty());
        }
    });
    assert_eq!(engine.health(), Health::Stopped);
    assert_eq!(engine.metrics().requests_done, 2);
}

#[test]
fn bad_config_is_a_typed_error() {
    let _s = serial();
    let err = Engine::start(model(), EngineConfig { n_ctx: 32, n_seq_max: 4, ..config(1, 128) }).unwrap_err();
    assert!(matches!(err, llama_runtime::StartError::InvalidConfig { field: "n_ctx", .. }), "{err}");
    let err = Engine::start(model(), EngineConfig { n_threads: 0, ..config(1, 128) }).unwrap_err();
    assert!(matches!(err, llama_runtime::StartError::InvalidConfig { field: "n_threads", .. }), "{err}");
}

/// A q8_0 KV cache (with flash attention, which a quantized V needs) gives
/// the same greedy text as f16 on short answers: the quantization error is
/// far below the margins between the top tokens here. An f16 cache with
/// flash attention forced on and off agrees too.
#[test]
fn kv_cache_types_and_flash_attention_agree_on_greedy_text() {
    let _guard = serial();
    let prompt = "The capital of France is";
    let text = |cfg: EngineConfig| {
        let engine = start(cfg);
        let out = run(&engine, greedy(prompt, 8));
        engine.shutdown_blocking(Duration::from_secs(5));
        out.text
    };
    let reference = text(config(1, 256));
    assert!(!reference.is_empty());
    for (flash_attn, type_k, type_v) in [
        (FlashAttn::Off, KvCacheType::F16, KvCacheType::F16),
        (FlashAttn::On, KvCacheType::F16, KvCacheType::F16),
        (FlashAttn::Auto, KvCacheType::Q8_0, KvCacheType::Q8_0),
    ] {
        let cfg = EngineConfig { flash_attn, type_k, type_v, ..config(1, 256) };
        assert_eq!(text(cfg), reference, "{flash_attn:?} {type_k} {type_v}");
    }
    let bad = EngineConfig { flash_attn: FlashAttn::Off, type_v: KvCacheType::Q4_0, ..config(1, 256) };
    match Engine::start(model(), bad) {
        Err(e) => assert!(e.to_string().contains("flash attention"), "{e}"),
        Ok(_) => panic!("a quantized V cache without flash attention was accepted"),
    }
}

/// Penalties count the prompt (as llama.cpp's server does): a prompt that
/// repeats a pattern predicts the next word of it greedily, and a presence
/// penalty on the prompt's tokens must push the first token elsewhere. If the
/// prompt were not part of the history, the first token could not change.
#[test]
fn penalties_count_the_prompt_tokens() {
    let _guard = serial();
    let engine = start(config(1, 256));
    let prompt = "one two three one two three one two three one two";
    let plain = run(&engine, greedy(prompt, 1));
    let mut penalized = greedy(prompt, 1);
    penalized.sampling.presence_penalty = 50.0;
    penalized.sampling.repeat_last_n = 64;
    let penalized = run(&engine, penalized);
    engine.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(plain.text, " three", "the pattern's next word");
    assert_ne!(penalized.tokens(), plain.tokens(), "a presence penalty on the prompt's tokens changed nothing");
}

/// `--context-shift` on llama.cpp: a generation that fills its 64-cell
/// window keeps the prompt's first tokens, drops half of the rest and goes
/// on, so it runs to `max_tokens`; without it the request ends at the
/// window. The shifted KV must stay consistent: the slot is reusable and a
/// later request's output is unaffected.
#[test]
fn context_shift_generates_past_the_window() {
    let _s = serial();
    let engine = start(config(1, 64));
    let mut plain = greedy("Once upon a time", 150);
    plain.ignore_eos = true;
    let full = run(&engine, plain.clone());
    assert_eq!(full.finish_reason, FinishReason::ContextFull);
    assert!(full.events.len() < 64, "{}", full.events.len());

    let mut shifted = plain.clone();
    shifted.context_shift = Some(llama_runtime::ContextShift { n_keep: 4, n_discard: 0 });
    let out = run(&engine, shifted);
    assert_eq!(out.finish_reason, FinishReason::MaxTokens);
    assert_eq!(out.events.len(), 150);
    // Up to the first shift the output is the plain run's.
    let n_before = full.events.len() - 1;
    assert_eq!(out.tokens()[..n_before], full.tokens()[..n_before]);
    assert!(!out.text.is_empty());

    // The slot still serves a request exactly as a fresh engine would.
    let after = run(&engine, greedy("The capital of France is", 8));
    let fresh = run(&start(config(1, 64)), greedy("The capital of France is", 8));
    assert_eq!(after.tokens(), fresh.tokens());
}

/// The default model (SmolLM2) declares no FIM prefix/suffix/middle tokens
/// (only a repository token): an infill prompt is
/// refused with a clear error rather than laid out around nothing.
#[test]
fn infill_needs_fim_tokens() {
    use llama_runtime::{Infill, InfillError, LlamaModel, ModelFacade};
    let facade = LlamaModel::new(model());
    let fim = facade.info().fim;
    assert_eq!((fim.pre, fim.suf, fim.mid), (None, None, None), "{fim:?}");
    let infill = Infill { prefix: "def add(a, b):".into(), ..Infill::default() };
    assert_eq!(infill.tokens(&facade, 512, 1000), Err(InfillError::NoFimTokens));
}

/// `EngineConfig::pooling` (llama.cpp's `--pooling`) chooses how an input's
/// tokens are pooled: the mean and the last token give different vectors,
/// the default (the model declares none) is the mean.
#[test]
fn embedding_pooling_follows_the_config() {
    use llama_core::Pooling;
    let _s = serial();
    let embed = |pooling: Pooling| {
        let engine = start(EngineConfig { embeddings: true, pooling, ..config(1, 256) });
        let out = futures::executor::block_on(engine.embed(vec!["The sky is blue.".into()], false).unwrap()).unwrap();
        out[0].vector.clone()
    };
    let (default, mean, last) = (embed(Pooling::Unspecified), embed(Pooling::Mean), embed(Pooling::Last));
    assert_eq!(default, mean);
    assert_ne!(mean, last);
}

#[test]
fn a_slot_saved_erased_and_restored_elsewhere_reuses_its_prefix() {
    let _s = serial();
    let key = llama_core::StateKey::from_bytes([3; 32]);
    let engine = start(EngineConfig { state_key: Some(key.clone()), ..config(2, 256) });
    use futures::executor::block_on as block;
    let pinned = |slot: u32| Request { slot: Some(slot), ..greedy(PROMPTS[1], 12) };
    let first = run(&engine, pinned(0));
    let saved = block(engine.save_slot(0)).unwrap();
    assert_eq!(saved.tokens.len(), first.usage.prompt_tokens as usize + first.tokens().len() - 1);
    assert_eq!(&saved.tokens[first.usage.prompt_tokens as usize..], &first.tokens()[..first.tokens().len() - 1]);
    assert_eq!(block(engine.erase_slot(0)).unwrap(), saved.tokens.len());
    assert_eq!(engine.metrics().kv_cells_used, 0);

    assert_eq!(block(engine.restore_slot(1, saved.bytes.clone())).unwrap(), saved.tokens);
    let again = run(&engine, pinned(1));
    assert_eq!(again.tokens(), first.tokens(), "greedy output after the restore");
    assert_eq!(again.usage.cached_tokens, first.usage.prompt_tokens - 1, "the restored prefix is reused");

    // Another engine with the same key and model restores it; one without refuses it.
    engine.shutdown_blocking(Duration::from_secs(5));
    let same_key = start(EngineConfig { state_key: Some(key), ..config(2, 256) });
    assert_eq!(block(same_key.restore_slot(0, saved.bytes.clone())).unwrap(), saved.tokens);
    same_key.shutdown_blocking(Duration::from_secs(5));
    let other = start(config(2, 256));
    let err = block(other.restore_slot(0, saved.bytes)).unwrap_err();
    assert!(matches!(err, llama_runtime::SlotError::InvalidState(_)), "{err}");
}
