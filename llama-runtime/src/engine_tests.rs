//! The engine with its real thread, over the fake backend: timing-dependent
//! behaviour (overload, abort inside a decode, slow readers, shutdown,
//! health) that the tick-driven property tests cannot show.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_core::SamplingParams;

use crate::fake::{FakeControl, FakeInference, FakeModel};
use crate::{
    ContextShift, Engine, EngineConfig, EngineError, Event, FinishReason, Health, ModelFacade, Prompt, Rejected,
    Request, SlotError, SlotState,
};

fn config() -> EngineConfig {
    EngineConfig {
        n_ctx: 4 * 1024,
        n_seq_max: 4,
        n_batch: 64,
        n_ubatch: 8,
        n_threads: 1,
        n_threads_batch: 1,
        queue_capacity: 4,
        prefill_chunk: 32,
        event_capacity: 4,
        embeddings: true,
        stall_timeout: Duration::from_secs(5),
        slow_consumer_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

fn engine(cfg: EngineConfig) -> (Engine<FakeInference>, Arc<Mutex<FakeControl>>) {
    let fake = FakeInference::for_config(&cfg);
    let ctl = fake.control();
    (Engine::with_inference(fake, FakeModel::default(), cfg).unwrap(), ctl)
}

fn greedy(prompt: impl Into<Prompt>, max_tokens: u32) -> Request {
    let mut r = Request::new(prompt);
    r.sampling = SamplingParams { seed: 7, ..SamplingParams::greedy() };
    r.max_tokens = Some(max_tokens);
    r.ignore_eos = true;
    r
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn generates_and_reports() {
    let (engine, _) = engine(config());
    let out = engine.submit(greedy("hello", 12)).unwrap().collect().await.unwrap();
    assert_eq!(out.finish_reason, FinishReason::MaxTokens);
    assert_eq!(out.events.len(), 12);
    assert_eq!(out.usage.prompt_tokens, 6);
    assert_eq!(out.usage.completion_tokens, 12);
    assert!(out.timings.first_token.is_some());
    let m = engine.metrics();
    assert_eq!(m.requests_done, 1);
    assert_eq!(m.generated_tokens_total, 12);
    assert!(m.decode_steps >= 12);
    // The finished request's prefix stays cached for reuse.
    assert!(m.kv_cells_used > 0);
    let again = engine.submit(greedy("hello", 12)).unwrap().collect().await.unwrap();
    assert_eq!(again.tokens(), out.tokens());
    assert_eq!(again.usage.cached_tokens, 5, "all but the last prompt token are reused");
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(engine.health(), Health::Stopped);
    assert_eq!(engine.metrics().kv_cells_used, 0);
}

#[test]
fn rejects_bad_requests_with_typed_errors() {
    let (engine, _) = engine(config());
    let n_ctx = engine.n_ctx_seq();
    type Check = fn(&Rejected) -> bool;
    let cases: Vec<(Request, Check)> = vec![
        (Request::new(Vec::new()), |r| matches!(r, Rejected::EmptyPrompt)),
        (Request::new(vec![0, 99]), |r| matches!(r, Rejected::InvalidToken { token: 99, n_vocab: 64 })),
        (Request::new("a\0b"), |r| matches!(r, Rejected::Tokenize(_))),
        (Request { stop: vec!["s".repeat(1000)], ..Request::new("x") }, |r| matches!(r, Rejected::Invalid(_))),
        (Request { stop: vec!["s".into(); 17], ..Request::new("x") }, |r| matches!(r, Rejected::Invalid(_))),
        (Request { n_probs: 1000, ..Request::new("x") }, |r| matches!(r, Rejected::Invalid(_))),
        (
            Request {
                sampling: SamplingParams { temperature: f32::NAN, ..SamplingParams::default() },
                ..Request::new("x")
            },
            |r| {
                matches!(r, Rejected::Invalid(e)
                    if matches!(e.get(), llama_core::Error::InvalidParam { name: "temperature", .. }))
            },
        ),
        (Request::new("a".repeat(n_ctx as usize)), |r| matches!(r, Rejected::PromptTooLong { .. })),
    ];
    let n = cases.len() as u64;
    for (req, ok) in cases {
        let err = engine.submit(req).unwrap_err();
        assert!(ok(&err), "unexpected {err:?}");
    }
    assert_eq!(engine.metrics().rejected_total, n);
    // The largest prompt that fits is accepted.
    let fits = "a".repeat(n_ctx as usize - 2);
    let out = futures::executor::block_on(engine.submit(greedy(fits, 3)).unwrap().collect()).unwrap();
    assert_eq!(out.finish_reason, FinishReason::ContextFull);
    assert_eq!(out.events.len(), 2);
}

#[test]
fn start_validates_config() {
    let cfg = EngineConfig { n_seq_max: 0, ..config() };
    let err = Engine::with_inference(FakeInference::new(1, 64, 64, 8), FakeModel::default(), cfg).unwrap_err();
    assert!(matches!(err, crate::StartError::InvalidConfig { field: "n_seq_max", .. }), "{err}");
}

#[test]
fn overload_is_immediate() {
    let cfg = EngineConfig { n_seq_max: 1, n_batch: 8, queue_capacity: 1, ..config() };
    let (engine, ctl) = engine(cfg);
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(2);
    let a = engine.submit(greedy("aaaa", 1000)).unwrap();
    wait_until("admission", Duration::from_secs(5), || engine.metrics().active_sequences == 1);
    let b = engine.submit(greedy("bbbb", 5)).unwrap();
    let t = Instant::now();
    let c = engine.submit(greedy("cccc", 5));
    assert!(t.elapsed() < Duration::from_millis(200));
    assert!(matches!(c, Err(Rejected::Overloaded { queue_capacity: 1 })), "{c:?}");
    let m = engine.metrics();
    assert_eq!((m.queue_depth, m.rejected_total), (1, 1));
    drop(a);
    let out = futures::executor::block_on(b.collect()).unwrap();
    assert_eq!(out.events.len(), 5);
    assert_eq!(engine.metrics().requests_cancelled, 1);
}

#[test]
fn cancel_aborts_a_long_prefill_within_a_microbatch() {
    let cfg = EngineConfig { n_seq_max: 2, n_batch: 2048, n_ubatch: 8, prefill_chunk: 2048, ..config() };
    let (engine, ctl) = engine(cfg);
    // 1 ms per token: the 1500-token prompt takes 1.5 s in one decode.
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(1);
    let long = engine.submit(greedy("b".repeat(1500), 4)).unwrap();
    wait_until("prefill", Duration::from_secs(5), || engine.slots().iter().any(|s| s.state == SlotState::Prefill));
    std::thread::sleep(Duration::from_millis(30));
    let t = Instant::now();
    long.cancel();
    let events: Vec<Event> = long.blocking_iter().collect();
    let waited = t.elapsed();
    assert_eq!(events, vec![Event::Error(EngineError::Cancelled)]);
    assert!(waited < Duration::from_millis(1000), "cancel took {waited:?} (the whole decode takes 1.5 s)");
    assert_eq!(engine.metrics().aborted_steps, 1);
    // The slot is free at once: a new request starts and finishes quickly.
    let t = Instant::now();
    let out = futures::executor::block_on(engine.submit(greedy("short", 3)).unwrap().collect()).unwrap();
    assert_eq!(out.events.len(), 3);
    assert!(t.elapsed() < Duration::from_millis(500), "follow-up took {:?}", t.elapsed());
    assert_eq!(engine.metrics().requests_cancelled, 1);
}

#[test]
fn abort_spares_the_other_sequences() {
    let cfg = EngineConfig { n_seq_max: 2, n_batch: 2048, n_ubatch: 8, prefill_chunk: 2048, ..config() };
    let (engine, ctl) = engine(cfg.clone());
    ctl.lock().unwrap().delay_per_token = Duration::from_micros(300);
    let solo = {
        let (e2, _) = self::engine(cfg);
        futures::executor::block_on(e2.submit(greedy("streaming one", 40)).unwrap().collect()).unwrap()
    };
    let streaming = engine.submit(greedy("streaming one", 40)).unwrap();
    let long = engine.submit(greedy("c".repeat(1500), 4)).unwrap();
    wait_until("prefill", Duration::from_secs(5), || {
        engine.slots().iter().any(|s| s.state == SlotState::Prefill && s.n_prompt > 1000)
    });
    std::thread::sleep(Duration::from_millis(20));
    drop(long);
    let out = futures::executor::block_on(streaming.collect()).unwrap();
    assert_eq!(out.tokens(), solo.tokens(), "the survivor's output must not change");
}

#[tokio::test]
async fn slow_reader_does_not_block_a_fast_one() {
    let cfg = EngineConfig { event_capacity: 2, ..config() };
    let (engine, ctl) = engine(cfg.clone());
    ctl.lock().unwrap().delay_per_token = Duration::from_micros(200);
    let slow = engine.submit(greedy("slow reader", 40)).unwrap();
    let fast = engine.submit(greedy("fast reader", 40)).unwrap();
    let t = Instant::now();
    let fast_out = fast.collect().await.unwrap();
    assert_eq!(fast_out.events.len(), 40);
    assert!(t.elapsed() < Duration::from_secs(2));
    // The slow one is paused, not lost: it holds its slot with a full channel.
    let slot = engine.slots().into_iter().find(|s| s.request_id == Some(slow.id())).unwrap();
    assert!(slot.n_decoded <= 4, "paused after filling its channel: {slot:?}");
    let slow_out = slow.collect().await.unwrap();
    let (solo_engine, _) = self::engine(cfg);
    let solo = solo_engine.submit(greedy("slow reader", 40)).unwrap().collect().await.unwrap();
    assert_eq!(slow_out.tokens(), solo.tokens());
    assert_eq!(slow_out.text, solo.text);
}

#[test]
fn slow_consumer_is_cancelled_after_the_bound() {
    let cfg = EngineConfig { event_capacity: 1, slow_consumer_timeout: Duration::from_millis(50), ..config() };
    let (engine, _) = engine(cfg);
    let h = engine.submit(greedy("never read", 100)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let events: Vec<Event> = h.blocking_iter().collect();
    assert!(matches!(events.last(), Some(Event::Error(EngineError::SlowConsumer { .. }))), "{events:?}");
    assert!(events.len() >= 2, "the buffered token is still delivered");
    assert_eq!(engine.metrics().requests_failed, 1);
    assert_eq!(engine.metrics().active_sequences, 0);
}

#[test]
fn deadline_ends_queued_and_running_requests() {
    let cfg = EngineConfig { n_seq_max: 1, n_batch: 8, ..config() };
    let (engine, ctl) = engine(cfg);
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(1);
    let deadline = Some(Instant::now() + Duration::from_millis(60));
    let running = engine.submit(Request { deadline, ..greedy("running", 10_000) }).unwrap();
    let queued = engine.submit(Request { deadline, ..greedy("queued", 5) }).unwrap();
    for h in [running, queued] {
        let events: Vec<Event> = h.blocking_iter().collect();
        assert_eq!(events.last(), Some(&Event::Error(EngineError::DeadlineExceeded)));
    }
    assert_eq!(engine.metrics().requests_timed_out, 2);
}

#[tokio::test]
async fn shutdown_drains_then_cancels() {
    let cfg = EngineConfig { n_seq_max: 2, n_batch: 8, ..config() };
    let (engine, ctl) = engine(cfg);
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(1);
    let short = engine.submit(greedy("short", 5)).unwrap();
    let endless = engine.submit(greedy("endless", 100_000)).unwrap();
    let queued = engine.submit(greedy("queued", 5)).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    engine.shutdown(Duration::from_millis(200)).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(engine.submit(greedy("late", 1)), Err(Rejected::ShuttingDown)));
    assert_eq!(short.collect().await.unwrap().events.len(), 5);
    assert_eq!(endless.collect().await, Err(EngineError::ShuttingDown));
    // Accepted before the shutdown: served during the drain.
    assert_eq!(queued.collect().await.unwrap().events.len(), 5);
    assert_eq!(engine.health(), Health::Stopped);
    assert_eq!(engine.metrics().kv_cells_used, 0);
}

#[test]
fn dropping_the_engine_ends_everything() {
    let (engine, ctl) = engine(config());
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(1);
    let h = engine.submit(greedy("x", 100_000)).unwrap();
    drop(engine);
    let events: Vec<Event> = h.blocking_iter().collect();
    assert_eq!(events.last(), Some(&Event::Error(EngineError::ShuttingDown)));
}

#[test]
fn health_reports_a_stall() {
    let cfg = EngineConfig { stall_timeout: Duration::from_millis(50), ..config() };
    let (engine, ctl) = engine(cfg);
    assert_eq!(engine.health(), Health::Ok);
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(300);
    let h = engine.submit(greedy("x", 1)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(matches!(engine.health(), Health::Stalled { since } if since >= Duration::from_millis(50)));
    ctl.lock().unwrap().delay_per_token = Duration::ZERO;
    let _ = futures::executor::block_on(h.collect());
    assert_eq!(engine.health(), Health::Ok);
}

#[tokio::test]
async fn embeddings() {
    let (engine, _) = engine(EngineConfig { n_ubatch: 64, ..config() });
    let v = engine.embed(vec!["one".into(), "two words".into()], true).unwrap().await.unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].n_tokens, 10);
    for e in &v {
        let norm: f32 = e.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    assert_eq!(
        engine.embed(vec!["x".into(), Prompt::Tokens(vec![])], false).unwrap_err(),
        Rejected::Input { index: 1, reason: Box::new(Rejected::EmptyPrompt) }
    );
    assert!(matches!(
        engine.embed(vec!["x".repeat(100).into()], false).unwrap_err(),
        Rejected::Input { index: 0, reason } if matches!(*reason, Rejected::InputTooLong { n_tokens: 101, limit: 64 })
    ));
    assert!(engine.embed(Vec::new(), false).unwrap().await.unwrap().is_empty());
    let (off, _) = self::engine(EngineConfig { embeddings: false, ..config() });
    assert_eq!(off.embed(vec!["x".into()], false).unwrap_err(), Rejected::EmbeddingsDisabled);
}

/// Many threads submitting, reading, cancelling and dropping at once: every
/// handle that is read to the end sees exactly one terminal event.
#[test]
fn concurrent_clients_each_get_one_terminal_event() {
    let cfg = EngineConfig { queue_capacity: 8, event_capacity: 2, ..config() };
    let (engine, _) = engine(cfg);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut terminals = 0;
                for i in 0..25u32 {
                    let Ok(h) = engine.submit(greedy(format!("client {t} request {i}"), 1 + i % 7)) else { continue };
                    match (t + i) % 4 {
                        0 => drop(h),
                        1 => {
                            h.cancel();
                            let ev: Vec<Event> = h.blocking_iter().collect();
                            assert_eq!(ev.iter().filter(|e| e.is_terminal()).count(), 1);
                            terminals += 1;
                        }
                        _ => {
                            let ev: Vec<Event> = h.blocking_iter().collect();
                            assert_eq!(ev.iter().filter(|e| e.is_terminal()).count(), 1, "{ev:?}");
                            assert!(matches!(ev.last(), Some(Event::Done(_))), "{ev:?}");
                            terminals += 1;
                        }
                    }
                }
                terminals
            })
        })
        .collect();
    let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    engine.shutdown_blocking(Duration::from_secs(1));
    let m = engine.metrics();
    assert_eq!(m.active_sequences, 0);
    assert_eq!(m.kv_cells_used, 0);
}

#[test]
fn timings_are_wall_clock() {
    let (engine, ctl) = engine(config());
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(2);
    // 20 prompt tokens (one chunk) then 5 single-token steps.
    let out = futures::executor::block_on(engine.submit(greedy("a".repeat(19), 5)).unwrap().collect()).unwrap();
    let t = out.timings;
    let first = t.first_token.unwrap();
    assert!(t.prefill >= Duration::from_millis(40), "{t:?}");
    assert!(first >= t.prefill && first >= t.queued, "{t:?}");
    assert!(t.decode >= Duration::from_millis(8), "{t:?}");
    let m = engine.metrics();
    assert!(m.prefill_time_total >= Duration::from_millis(40), "{m:?}");
    assert!(m.decode_time_total >= Duration::from_millis(8), "{m:?}");
}

#[test]
fn public_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send_unpin_stream<T: Send + Unpin + futures::Stream<Item = Event>>() {}
    send_sync::<Engine>();
    send_sync::<Engine<FakeInference>>();
    send_sync::<crate::Canceller>();
    send_unpin_stream::<crate::Handle>();
}

/// Even a panic on the engine thread leaves no request without its terminal event.
#[test]
fn engine_thread_panic_still_ends_every_request() {
    let cfg = EngineConfig { n_seq_max: 1, n_batch: 8, ..config() };
    let (engine, ctl) = engine(cfg);
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(1);
    let running = engine.submit(greedy("running", 1000)).unwrap();
    let queued = engine.submit(greedy("queued", 5)).unwrap();
    wait_until("admission", Duration::from_secs(5), || engine.metrics().active_sequences == 1);
    ctl.lock().unwrap().on_ubatch = Some(Box::new(|_| panic!("injected engine panic (expected by this test)")));
    let events: Vec<Event> = running.blocking_iter().collect();
    assert!(matches!(events.last(), Some(Event::Error(EngineError::Internal(_)))), "{:?}", events.last());
    let events: Vec<Event> = queued.blocking_iter().collect();
    assert_eq!(events, vec![Event::Error(EngineError::ShuttingDown)]);
    wait_until("stop", Duration::from_secs(5), || engine.health() == Health::Stopped);
    assert!(matches!(engine.submit(greedy("late", 1)), Err(Rejected::ShuttingDown)));
    engine.shutdown_blocking(Duration::ZERO);
}

/// What the fake generates with context shifts, simulated independently:
/// sample from the whole KV, and when the window is full keep `keep`
/// cells, drop half of the rest, and go on.
fn shifted_reference(prompt: &str, n_ctx_seq: usize, keep: usize, discard: usize, n: usize) -> Vec<crate::Token> {
    let mut kv = FakeModel::default().tokenize(prompt, true, true).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = crate::fake::fake_next_token(7, &kv);
        out.push(t);
        if kv.len() >= n_ctx_seq {
            let discard = if discard == 0 { (kv.len() - keep) / 2 } else { discard.min(kv.len() - keep) }.max(1);
            kv.drain(keep..keep + discard);
        }
        kv.push(t);
    }
    out
}

#[tokio::test]
async fn context_shift_keeps_generating_past_the_window() {
    // Four slots of 64 cells.
    let (engine, _) = engine(EngineConfig { n_ctx: 256, ..config() });
    assert_eq!(engine.n_ctx_seq(), 64);

    let full = engine.submit(greedy("hello", 200)).unwrap().collect().await.unwrap();
    assert_eq!(full.finish_reason, FinishReason::ContextFull);
    assert_eq!(full.events.len(), 64 - 6 + 1);

    for (n_keep, keep, n_discard) in [(3, 3, 0), (0, 0, 0), (-1, 6, 0), (3, 3, 10), (3, 3, 1000)] {
        let mut req = greedy("hello", 200);
        req.context_shift = Some(ContextShift { n_keep, n_discard });
        let out = engine.submit(req).unwrap().collect().await.unwrap();
        assert_eq!(out.finish_reason, FinishReason::MaxTokens, "n_keep {n_keep}");
        let want = shifted_reference("hello", 64, keep, n_discard as usize, 200);
        assert_eq!(out.tokens(), want, "n_keep {n_keep} n_discard {n_discard}");
    }
    // A later request does not reuse cells a shift moved: only the kept prefix.
    let again = engine.submit(greedy("hello", 3)).unwrap().collect().await.unwrap();
    assert!(again.usage.cached_tokens <= 6, "{:?}", again.usage);
}

#[tokio::test]
async fn requests_pinned_to_a_slot_wait_for_it_and_others_go_ahead() {
    let (engine, ctl) = engine(EngineConfig { n_seq_max: 2, n_ctx: 512, ..config() });
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(2);
    let pinned = |prompt: &str, n: u32| Request { slot: Some(1), ..greedy(prompt, n) };
    let a = engine.submit(pinned("first", 40)).unwrap();
    let b = engine.submit(pinned("second", 2)).unwrap();
    let c = engine.submit(greedy("third", 2)).unwrap();
    let c = c.collect().await.unwrap();
    let (a, b) = (a.collect().await.unwrap(), b.collect().await.unwrap());
    assert_eq!((a.slot, b.slot, c.slot), (1, 1, 0));
    // The unpinned request did not wait behind the one waiting for slot 1.
    assert!(c.timings.queued < a.timings.decode, "{:?} vs {:?}", c.timings, a.timings);

    let err = engine.submit(Request { slot: Some(2), ..greedy("x", 1) }).unwrap_err();
    assert!(
        matches!(&err, Rejected::Invalid(e) if matches!(e.get(), llama_core::Error::InvalidParam { name: "id_slot", .. }))
    );
}

#[tokio::test]
async fn a_saved_slot_restores_into_another_and_its_prefix_is_reused() {
    let (engine, _) = engine(EngineConfig { n_seq_max: 3, n_ctx: 3 * 256, ..config() });
    let pinned = |slot: u32| Request { slot: Some(slot), ..greedy("the same prompt", 6) };
    let first = engine.submit(pinned(0)).unwrap().collect().await.unwrap();
    let prompt = FakeModel::default().tokenize("the same prompt", true, true).unwrap();

    let saved = engine.save_slot(0).await.unwrap();
    // The cache: the prompt and every generated token but the last (never decoded).
    let mut held = prompt.clone();
    held.extend(&first.tokens()[..5]);
    assert_eq!(saved.tokens, held);
    assert_eq!(engine.slots()[0].n_cached as usize, held.len());

    assert_eq!(engine.erase_slot(0).await.unwrap(), held.len());
    assert_eq!(engine.slots()[0].n_cached, 0);
    assert_eq!(engine.metrics().kv_cells_used, 0, "erase frees the cells");
    assert_eq!(engine.erase_slot(0).await.unwrap(), 0, "erasing an empty slot is no error");

    assert_eq!(engine.restore_slot(2, saved.bytes.clone()).await.unwrap(), held);
    assert_eq!(engine.slots()[2].n_cached as usize, held.len());
    let again = engine.submit(pinned(2)).unwrap().collect().await.unwrap();
    assert_eq!(again.tokens(), first.tokens(), "the restored cells are the same KV");
    assert_eq!(again.usage.cached_tokens as usize, prompt.len() - 1, "the restored prefix is reused");

    // Unknown slots, edited states.
    assert_eq!(engine.save_slot(3).await.unwrap_err(), SlotError::NoSuchSlot { slot: 3, n_slots: 3 });
    assert!(matches!(engine.restore_slot(9, saved.bytes.clone()).await, Err(SlotError::NoSuchSlot { .. })));
    let mut forged = saved.bytes.clone();
    *forged.last_mut().unwrap() ^= 1;
    let err = engine.restore_slot(1, forged).await.unwrap_err();
    assert!(matches!(&err, SlotError::InvalidState(e) if matches!(e.get(), llama_core::Error::State(_))), "{err}");
    assert!(matches!(engine.restore_slot(1, b"junk".to_vec()).await, Err(SlotError::InvalidState(_))));
    // A refused restore leaves the slot empty (and consistent).
    assert!(matches!(engine.restore_slot(2, b"junk".to_vec()).await, Err(SlotError::InvalidState(_))));
    assert_eq!(engine.slots()[2].n_cached, 0);
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(engine.save_slot(0).await.unwrap_err(), SlotError::ShuttingDown);
}

#[test]
fn a_busy_slot_refuses_slot_operations() {
    let (engine, ctl) = engine(EngineConfig { n_seq_max: 2, n_ctx: 512, ..config() });
    use futures::executor::block_on as block;
    let saved = block(engine.save_slot(1)).unwrap();
    assert!(saved.tokens.is_empty(), "an unused slot saves as empty");
    ctl.lock().unwrap().delay_per_token = Duration::from_millis(5);
    let busy = engine.submit(Request { slot: Some(0), ..greedy("long", 200) }).unwrap();
    wait_until("slot 0 busy", Duration::from_secs(5), || engine.slots()[0].state != SlotState::Idle);
    assert_eq!(block(engine.save_slot(0)).unwrap_err(), SlotError::Busy { slot: 0 });
    assert_eq!(block(engine.restore_slot(0, saved.bytes.clone())).unwrap_err(), SlotError::Busy { slot: 0 });
    assert_eq!(block(engine.erase_slot(0)).unwrap_err(), SlotError::Busy { slot: 0 });
    // The other slot is free for all three meanwhile.
    assert_eq!(block(engine.restore_slot(1, saved.bytes)).unwrap(), Vec::<crate::Token>::new());
    assert_eq!(block(engine.erase_slot(1)).unwrap(), 0);
    busy.cancel();
}

#[tokio::test]
async fn slot_states_cross_engines_only_under_the_same_key() {
    let key = || Some(llama_core::StateKey::from_bytes([9; 32]));
    let (a, _) = engine(EngineConfig { state_key: key(), ..config() });
    a.submit(Request { slot: Some(0), ..greedy("kept across restarts", 3) }).unwrap().collect().await.unwrap();
    let saved = a.save_slot(0).await.unwrap();
    a.shutdown(Duration::from_secs(1)).await;

    let (b, _) = engine(EngineConfig { state_key: key(), ..config() });
    assert_eq!(b.restore_slot(3, saved.bytes.clone()).await.unwrap(), saved.tokens);
    let (c, _) = engine(config());
    assert!(matches!(c.restore_slot(0, saved.bytes).await, Err(SlotError::InvalidState(_))));
}
