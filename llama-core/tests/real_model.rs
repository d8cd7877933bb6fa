//! llama-core against the real default model. One model per test binary.

use std::process::Command;

use llama_core::{
    Batch, Context, ContextParams, Error, Model, ModelParams, Sampler, SamplingParams, StateKey, Token, TokenDecoder,
};

mod common;
use common::{model, model_path};

fn ctx(n_ctx: u32, n_seq_max: u32) -> Context {
    let params = ContextParams {
        n_ctx,
        n_seq_max,
        n_batch: 512,
        n_ubatch: 512,
        n_threads: 2,
        n_threads_batch: 2,
        ..Default::default()
    };
    Context::new(model(), &params).unwrap()
}

/// Greedy generation through our API: prefill `prompt`, then `n` tokens.
fn generate(ctx: &mut Context, prompt: &[Token], n: usize, seq: i32) -> Vec<Token> {
    let m = model();
    let mut sampler = Sampler::new(&m, &SamplingParams::greedy()).unwrap();
    let mut batch = ctx.new_batch();
    let mut last = batch.add_sequence(prompt, 0, seq, true).unwrap();
    let mut pos = prompt.len() as i32;
    let mut out = Vec::new();
    while out.len() < n {
        ctx.decode(&batch).unwrap();
        let t = sampler.sample(ctx, last).unwrap();
        if m.vocab().is_eog(t) {
            break;
        }
        out.push(t);
        batch.clear();
        last = batch.add(t, pos, &[seq], true).unwrap();
        pos += 1;
    }
    out
}

const PROMPT: &str = "The three primary colors are";

#[test]
fn golden_greedy_matches_c_baseline() {
    let m = model();
    let prompt = m.vocab().tokenize(PROMPT, true, true).unwrap();
    let ours = generate(&mut ctx(2048, 1), &prompt, 32, 0);
    let out = Command::new(llama_sys::BASELINE_BIN)
        .args([model_path().to_str().unwrap(), "generate", PROMPT, "32", "2", "2048", "512"])
        .output()
        .expect("run llama-baseline");
    assert!(out.status.success(), "baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Token> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(theirs.len() >= 8, "baseline produced too little: {theirs:?}");
    assert_eq!(ours, theirs, "our greedy tokens differ from llama.cpp driven from C");
}

#[test]
fn kv_equivalence_stepwise_vs_whole() {
    let m = model();
    let toks = m.vocab().tokenize("One two three four five six seven eight nine ten", true, false).unwrap();
    // whole sequence at once, logits for the last token
    let mut a = ctx(512, 1);
    let mut batch = a.new_batch();
    let last = batch.add_sequence(&toks, 0, 0, true).unwrap();
    a.decode(&batch).unwrap();
    let whole = a.logits(last).unwrap().to_vec();
    // prefill all but the last 4, then one token per decode
    let mut b = ctx(512, 1);
    let split = toks.len() - 4;
    let mut batch = b.new_batch();
    batch.add_sequence(&toks[..split], 0, 0, false).unwrap();
    b.decode(&batch).unwrap();
    let mut step = Vec::new();
    for (k, &t) in toks[split..].iter().enumerate() {
        batch.clear();
        let i = batch.add(t, (split + k) as i32, &[0], true).unwrap();
        b.decode(&batch).unwrap();
        step = b.logits(i).unwrap().to_vec();
    }
    let max_diff = whole.iter().zip(&step).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    // Different batch shapes take different kernels; the tolerance is on
    // logits with magnitude ~10-30.
    assert!(max_diff < 0.05, "max |Δlogit| = {max_diff}");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&whole), argmax(&step));
}

#[test]
fn sequences_are_isolated_in_one_batch() {
    let m = model();
    let p0 = m.vocab().tokenize("Paris is the capital of", true, false).unwrap();
    let p1 = m.vocab().tokenize("def fibonacci(n):", true, false).unwrap();
    let solo0 = generate(&mut ctx(512, 1), &p0, 12, 0);
    let solo1 = generate(&mut ctx(512, 1), &p1, 12, 0);

    let mut c = ctx(1024, 2);
    let mut s =
        [Sampler::new(&m, &SamplingParams::greedy()).unwrap(), Sampler::new(&m, &SamplingParams::greedy()).unwrap()];
    let mut batch = c.new_batch();
    let mut idx = [batch.add_sequence(&p0, 0, 0, true).unwrap(), batch.add_sequence(&p1, 0, 1, true).unwrap()];
    let mut pos = [p0.len() as i32, p1.len() as i32];
    let mut outs = [Vec::new(), Vec::new()];
    for _ in 0..12 {
        c.decode(&batch).unwrap();
        let toks = [s[0].sample(&c, idx[0]).unwrap(), s[1].sample(&c, idx[1]).unwrap()];
        batch.clear();
        for q in 0..2 {
            outs[q].push(toks[q]);
            idx[q] = batch.add(toks[q], pos[q], &[q as i32], true).unwrap();
            pos[q] += 1;
        }
    }
    let trim = |v: &Vec<Token>, n: usize| v[..n.min(v.len())].to_vec();
    assert_eq!(trim(&outs[0], solo0.len()), solo0);
    assert_eq!(trim(&outs[1], solo1.len()), solo1);
}

#[test]
fn state_save_restore_gives_identical_continuation() {
    let m = model();
    let prompt = m.vocab().tokenize("Once upon a time", true, false).unwrap();
    let n = prompt.len();
    let mut c = ctx(512, 1);
    let mut batch = c.new_batch();
    batch.add_sequence(&prompt[..n - 1], 0, 0, false).unwrap();
    c.decode(&batch).unwrap();
    let saved = c.state_bytes().unwrap();
    let seq_saved = c.seq_state_bytes(0).unwrap();
    // From a saved state, feed the last prompt token and continue greedily.
    let cont = |c: &mut Context| {
        let mut s = Sampler::new(&m, &SamplingParams::greedy()).unwrap();
        let mut b = c.new_batch();
        let mut t = prompt[n - 1];
        let mut out = Vec::new();
        for k in 0..8 {
            b.clear();
            let i = b.add(t, (n - 1 + k) as i32, &[0], true).unwrap();
            c.decode(&b).unwrap();
            t = s.sample(c, i).unwrap();
            out.push(t);
        }
        out
    };
    let first = cont(&mut c);
    c.set_state_bytes(&saved).unwrap();
    assert_eq!(c.kv_seq_pos_max(0), Some(n as i32 - 2));
    let second = cont(&mut c);
    assert_eq!(first, second);

    // per-sequence restore into a fresh context, via a file
    let path = std::env::temp_dir().join(format!("llama-core-state-{}", std::process::id()));
    std::fs::write(&path, &seq_saved).unwrap();
    let mut d = ctx(512, 1);
    d.set_seq_state_bytes(&std::fs::read(&path).unwrap(), 0).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(cont(&mut d), first);

    // tampered or foreign states are refused, not handed to llama.cpp
    let mut bad = saved.clone();
    let len = bad.len();
    bad[len / 2] ^= 0xff;
    assert!(matches!(c.set_state_bytes(&bad), Err(Error::State(_))));
    assert!(matches!(c.set_state_bytes(&saved[..len - 10]), Err(Error::State(_))));
    assert!(matches!(c.set_state_bytes(b"garbage"), Err(Error::State(_))));
    assert!(matches!(c.set_seq_state_bytes(&saved, 0), Err(Error::State(_))));

    // A state saved under a caller's key restores only under that key: the
    // per-process key (which another run would not have) refuses it, so a
    // state file from elsewhere cannot reach llama.cpp's trusting restore.
    let key = StateKey::generate().unwrap();
    let mut e = ctx(512, 1);
    e.set_state_key(key.clone());
    let mut b = e.new_batch();
    b.add_sequence(&prompt[..n - 1], 0, 0, false).unwrap();
    e.decode(&b).unwrap();
    let keyed = e.state_bytes().unwrap();
    assert!(matches!(c.set_state_bytes(&keyed), Err(Error::State(_))), "the process key must not verify it");
    let mut f = ctx(512, 1);
    f.set_state_key(StateKey::from_bytes(*key.as_bytes()));
    f.set_state_bytes(&keyed).unwrap();
    assert_eq!(cont(&mut f), first);
}

/// Decode `token` at `pos` of `seq` and return its logits.
fn next_logits(c: &mut Context, token: Token, pos: usize, seq: i32) -> Vec<f32> {
    let mut b = c.new_batch();
    let i = b.add(token, pos as i32, &[seq], true).unwrap();
    c.decode(&b).unwrap();
    c.logits(i).unwrap().to_vec()
}

#[test]
fn seq_state_with_tokens_restores_into_another_sequence() {
    let m = model();
    let prompt = m.vocab().tokenize("The quick brown fox jumps over the lazy", true, false).unwrap();
    let (head, last) = (&prompt[..prompt.len() - 1], prompt[prompt.len() - 1]);
    let mut c = ctx(1024, 2);
    let mut b = c.new_batch();
    b.add_sequence(head, 0, 0, false).unwrap();
    c.decode(&b).unwrap();
    // The tokens must be exactly what the sequence holds.
    assert!(matches!(c.seq_state_with_tokens(0, &head[1..]), Err(Error::InvalidParam { name: "tokens", .. })));
    assert!(matches!(c.seq_state_with_tokens(0, &[-1]), Err(Error::TokenOutOfVocab { .. })));
    assert!(matches!(c.seq_state_with_tokens(2, head), Err(Error::SeqIdOutOfRange { .. })));
    let saved = c.seq_state_with_tokens(0, head).unwrap();
    let reference = next_logits(&mut c, last, head.len(), 0);

    c.kv_clear();
    assert_eq!(c.set_seq_state_with_tokens(&saved, 1).unwrap(), head);
    assert_eq!((c.kv_seq_pos_min(1), c.kv_seq_pos_max(1)), (Some(0), Some(head.len() as i32 - 1)));
    assert_eq!(c.kv_seq_pos_max(0), None, "only the target sequence is restored");
    let restored = next_logits(&mut c, last, head.len(), 1);
    let diff = reference.iter().zip(&restored).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-3, "logits after the restore differ by {diff}");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&reference), argmax(&restored));

    // Tampered, truncated, forged, relabelled or foreign states are typed
    // errors, and the sequence they were aimed at keeps what it held.
    let held = c.kv_seq_pos_max(1);
    let mut tampered = saved.clone();
    let len = tampered.len();
    tampered[len / 2] ^= 0x40;
    let mut token_changed = saved.clone();
    token_changed[60 + 4] ^= 1; // the first token, just after the header and the count
    let other_key = {
        let mut e = ctx(1024, 2);
        e.set_state_key(StateKey::generate().unwrap());
        let mut b = e.new_batch();
        b.add_sequence(head, 0, 0, false).unwrap();
        e.decode(&b).unwrap();
        e.seq_state_with_tokens(0, head).unwrap()
    };
    let plain = c.seq_state_bytes(1).unwrap();
    let whole = c.state_bytes().unwrap();
    for (what, bytes) in [
        ("tampered", &tampered[..]),
        ("a changed token", &token_changed[..]),
        ("truncated", &saved[..len - 1]),
        ("header only", &saved[..60]),
        ("another key", &other_key[..]),
        ("a state without tokens", &plain[..]),
        ("a context state", &whole[..]),
        ("garbage", &b"garbage"[..]),
        ("empty", &b""[..]),
    ] {
        assert!(matches!(c.set_seq_state_with_tokens(bytes, 0), Err(Error::State(_))), "{what}");
        assert!(matches!(c.set_seq_state_with_tokens(bytes, 1), Err(Error::State(_))), "{what}");
        assert_eq!(c.kv_seq_pos_max(1), held, "{what} touched the sequence");
    }
    assert!(matches!(c.set_seq_state_with_tokens(&saved, 2), Err(Error::SeqIdOutOfRange { .. })));
    assert!(matches!(c.set_seq_state_with_tokens(&saved, -1), Err(Error::SeqIdOutOfRange { .. })));

    // A context of another shape (one sequence, not two): llama.cpp refuses
    // the verified state, and the sequence is left empty, never half-written.
    let mut one = ctx(1024, 1);
    let mut b = one.new_batch();
    b.add_sequence(&head[..2], 0, 0, false).unwrap();
    one.decode(&b).unwrap();
    assert!(matches!(one.set_seq_state_with_tokens(&saved, 0), Err(Error::State(_))));
    assert_eq!(one.kv_seq_pos_max(0), None);

    // An empty sequence saves and restores as empty, replacing what was there.
    let empty = c.seq_state_with_tokens(0, &[]).unwrap();
    assert_eq!(c.set_seq_state_with_tokens(&empty, 1).unwrap(), Vec::<Token>::new());
    assert_eq!(c.kv_seq_pos_max(1), None);
    // So does the plain sequence state (llama.cpp alone would keep the old cells).
    assert_eq!(c.set_seq_state_with_tokens(&saved, 1).unwrap(), head);
    let empty_plain = c.seq_state_bytes(0).unwrap();
    c.set_seq_state_bytes(&empty_plain, 1).unwrap();
    assert_eq!(c.kv_seq_pos_max(1), None);
}

#[test]
fn seeded_sampling_is_deterministic() {
    let m = model();
    let prompt = m.vocab().tokenize("Write a haiku about the sea", true, false).unwrap();
    let params = SamplingParams { seed: 1234, temperature: 0.9, ..Default::default() };
    let run = || {
        let mut c = ctx(512, 1);
        let mut s = Sampler::new(&m, &params).unwrap();
        let mut b = c.new_batch();
        let mut last = b.add_sequence(&prompt, 0, 0, true).unwrap();
        let mut out = Vec::new();
        for k in 0..24 {
            c.decode(&b).unwrap();
            let t = s.sample(&c, last).unwrap();
            out.push(t);
            b.clear();
            last = b.add(t, prompt.len() as i32 + k, &[0], true).unwrap();
        }
        out
    };
    assert_eq!(run(), run());
}

#[test]
fn grammar_constrains_output_and_bad_grammars_are_errors() {
    let m = model();
    let grammar = r#"root ::= ("yes" | "no") "." "#;
    let params = SamplingParams { grammar: Some(grammar.into()), ..SamplingParams::greedy() };
    let prompt = m.vocab().tokenize("Is the sky blue? Answer:", true, false).unwrap();
    let mut c = ctx(512, 1);
    let mut s = Sampler::new(&m, &params).unwrap();
    let mut b = c.new_batch();
    let mut last = b.add_sequence(&prompt, 0, 0, true).unwrap();
    let mut text = String::new();
    for k in 0..10 {
        c.decode(&b).unwrap();
        let t = s.sample(&c, last).unwrap();
        if m.vocab().is_eog(t) {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&m.vocab().token_to_piece(t, false).unwrap()));
        b.clear();
        last = b.add(t, prompt.len() as i32 + k, &[0], true).unwrap();
    }
    assert!(text == "yes." || text == "no.", "grammar output {text:?}");

    for bad in [
        "root ::= (",
        "root ::= undefined_rule",
        "nonsense",
        &format!("root ::= {}\"a\"{}", "(".repeat(10_000), ")".repeat(10_000)),
    ] {
        let p = SamplingParams { grammar: Some(bad.to_string()), ..SamplingParams::greedy() };
        assert!(matches!(Sampler::new(&m, &p), Err(Error::Grammar(_))), "{bad:.40}");
    }
}

/// `root ::= word (" " word)*` with `n` words `w0 … w{n-1}`: right after
/// "Words:" the model ranks the only allowed first token ("w") below the
/// top 4096, and each word's end is a choice among many.
fn word_grammar(n: usize) -> String {
    let alternatives: Vec<String> = (0..n).map(|i| format!("\"w{i}\"")).collect();
    format!("root ::= word (\" \" word)*\nword ::= {}", alternatives.join(" | "))
}

/// Generate up to `n` tokens with two samplers built from the same
/// `params` fed the same logits: the lazy grammar path
/// (`sample_logits`) and the reference that masks the whole vocabulary
/// first (`sample_logits_full_mask`, the pre-lazy behaviour). Asserts they
/// agree at every step (and, with `check_masks`, that the prefiltered
/// grammar mask equals the plain one). Returns the text and the lazy
/// sampler's step counts.
fn greedy_lockstep(prompt: &str, params: &SamplingParams, n: usize, check_masks: bool) -> (String, [u64; 3]) {
    let m = model();
    let prompt = m.vocab().tokenize(prompt, true, false).unwrap();
    let mut c = ctx(512, 1);
    let mut lazy = Sampler::new(&m, params).unwrap();
    let mut reference = Sampler::new(&m, params).unwrap();
    let mut b = c.new_batch();
    let mut last = b.add_sequence(&prompt, 0, 0, true).unwrap();
    let mut text = String::new();
    for k in 0..n {
        c.decode(&b).unwrap();
        let logits = c.logits(last).unwrap().to_vec();
        if check_masks {
            let plain = lazy.grammar_allowed_tokens(false).unwrap();
            assert!(!plain.is_empty());
            assert_eq!(lazy.grammar_allowed_tokens(true).unwrap(), plain, "prefiltered mask differs after {text:?}");
        }
        let want = reference.sample_logits_full_mask(&logits).unwrap();
        let got = lazy.sample_logits(&logits).unwrap();
        assert_eq!(got, want, "step {k} after {text:?} ({params:?})");
        if m.vocab().is_eog(got) {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&m.vocab().token_to_piece(got, false).unwrap()));
        b.clear();
        last = b.add(got, prompt.len() as i32 + k as i32, &[0], true).unwrap();
    }
    (text, lazy.grammar_steps())
}

#[test]
fn lazy_grammar_greedy_equals_masking_the_whole_vocabulary() {
    let m = model();
    let w = m.vocab().tokenize("w", false, false).unwrap();
    assert_eq!(w.len(), 1);
    let greedy = |g: &str| SamplingParams { grammar: Some(g.to_string()), ..SamplingParams::greedy() };
    let words = word_grammar(300);
    let quote = r#"root ::= "«" [^»\n]+ "»" "\n""#;
    let json = r#"root ::= "{" ws "\"name\"" ws ":" ws "\"" [a-zA-Z ]* "\"" ws "}"
ws ::= [ \t\n]*"#;
    let cases = [
        ("Words:", greedy(&words), 10, true),
        // Penalties lower the subset's best token below tokens left out of it.
        ("Words:", SamplingParams { repeat_penalty: 1.5, frequency_penalty: 0.5, ..greedy(&words) }, 10, false),
        // A positive bias lifts a token from far below the top 4096.
        ("Words:", SamplingParams { logit_bias: vec![(w[0], 12.0)], ..greedy(&words) }, 6, false),
        // A repeat penalty below 1 raises logits: the subset cannot be trusted.
        (
            "Is the sky blue? Answer:",
            SamplingParams { repeat_penalty: 0.8, ..greedy(r#"root ::= ("yes" | "no") "." "#) },
            6,
            false,
        ),
        // Non-ASCII pieces and a negated class: partial UTF-8 states.
        ("A famous quote:", greedy(quote), 12, true),
        ("Give a JSON object with a name:", greedy(json), 12, true),
    ];
    let mut steps = [0u64; 3];
    for (prompt, params, n, check_masks) in &cases {
        let (text, s) = greedy_lockstep(prompt, params, *n, *check_masks);
        assert!(!text.is_empty(), "{prompt:?}");
        for (a, b) in steps.iter_mut().zip(s) {
            *a += b;
        }
    }
    // Every step of the lazy path was taken somewhere above, so each was
    // compared with the reference.
    assert!(steps.iter().all(|&s| s > 0), "steps taken: {steps:?}");
}

#[test]
fn lazy_grammar_greedy_edge_cases_on_crafted_logits() {
    let m = model();
    let n = m.vocab().n_tokens() as usize;
    let grammar = "root ::= [a-z]+";
    let probe = Sampler::new(&m, &SamplingParams { grammar: Some(grammar.into()), ..SamplingParams::greedy() });
    let allowed = probe.unwrap().grammar_allowed_tokens(false).unwrap();
    let is_allowed = |t: usize| allowed.binary_search(&(t as Token)).is_ok();
    let mut disallowed: Vec<usize> = (0..n).filter(|&t| !is_allowed(t)).take(601).collect();
    let d = disallowed.pop().unwrap();
    let (a, b, c) = (allowed[0] as usize, allowed[1] as usize, allowed[2] as usize);
    let check = |params: SamplingParams, logits: &[f32], history: &[Token], want: usize| {
        let mut lazy = Sampler::new(&m, &params).unwrap();
        let mut reference = Sampler::new(&m, &params).unwrap();
        for &t in history {
            lazy.accept(t).unwrap();
            reference.accept(t).unwrap();
        }
        assert_eq!(reference.sample_logits_full_mask(logits).unwrap(), want as Token, "{params:?}");
        assert_eq!(lazy.sample_logits(logits).unwrap(), want as Token, "{params:?}: {:?}", lazy.grammar_steps());
    };
    // `a` has the best raw logit of the allowed tokens, 600 rejected tokens
    // follow, then `b`. A frequency penalty on `a` (seen 3 times) makes `b`
    // the greedy choice, although only `a` is allowed among the top 512.
    let mut logits = vec![0.0f32; n];
    logits[a] = 10.0;
    for (i, &t) in disallowed.iter().enumerate() {
        logits[t] = 9.0 - i as f32 * 0.001;
    }
    logits[b] = 5.0;
    let penalized = SamplingParams {
        grammar: Some(grammar.into()),
        frequency_penalty: 8.0,
        repeat_last_n: 16,
        ..SamplingParams::greedy()
    };
    check(penalized.clone(), &logits, &[a as Token; 3], b);
    check(penalized, &logits, &[], a);
    // `c` has a low raw logit (far below the top 4096) but a bias that
    // lifts it above `a`; the rejected `d` is lifted higher still, so the
    // chain's first choice is rejected.
    logits[c] = -5.0;
    let biased = SamplingParams {
        grammar: Some(grammar.into()),
        logit_bias: vec![(c as Token, 30.0), (d as Token, 40.0)],
        ..SamplingParams::greedy()
    };
    check(biased, &logits, &[], c);
    // A banned allowed token is skipped like in the full mask.
    let banned = SamplingParams {
        grammar: Some(grammar.into()),
        logit_bias: vec![(a as Token, f32::NEG_INFINITY)],
        ..SamplingParams::greedy()
    };
    check(banned, &logits, &[], b);
}

/// Whether `text` is a prefix of `item ("," item)*`, `item ::= [a-z]+ "=" [0-9]+`;
/// `Some(true)` when it is also complete.
fn key_value_prefix(text: &str) -> Option<bool> {
    let mut state = 0; // 0: item start, 1: in key, 2: after '=', 3: in value
    for ch in text.chars() {
        state = match (state, ch) {
            (0 | 1, 'a'..='z') => 1,
            (1, '=') => 2,
            (2 | 3, '0'..='9') => 3,
            (3, ',') => 0,
            _ => return None,
        };
    }
    Some(state == 3)
}

#[test]
fn lazy_grammar_output_always_matches_for_stochastic_sampling() {
    let m = model();
    let grammar = "root ::= item (\",\" item)*\nitem ::= [a-z]+ \"=\" [0-9]+";
    let prompt = m.vocab().tokenize("Settings, as key=value pairs:", true, false).unwrap();
    let wide = SamplingParams {
        temperature: 1.5,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        grammar: Some(grammar.into()),
        ..Default::default()
    };
    let run = |params: &SamplingParams| {
        let mut c = ctx(512, 1);
        let mut s = Sampler::new(&m, params).unwrap();
        let mut b = c.new_batch();
        let mut last = b.add_sequence(&prompt, 0, 0, true).unwrap();
        let (mut text, mut tokens) = (String::new(), Vec::new());
        for k in 0..10 {
            c.decode(&b).unwrap();
            let t = s.sample(&c, last).unwrap();
            tokens.push(t);
            if m.vocab().is_eog(t) {
                assert_eq!(key_value_prefix(&text), Some(true), "ended early: {text:?}");
                break;
            }
            text.push_str(&String::from_utf8_lossy(&m.vocab().token_to_piece(t, false).unwrap()));
            assert!(key_value_prefix(&text).is_some(), "{text:?} does not match the grammar ({params:?})");
            b.clear();
            last = b.add(t, prompt.len() as i32 + k, &[0], true).unwrap();
        }
        (tokens, s.grammar_steps())
    };
    let mut steps = [0u64; 3];
    let mut outputs = std::collections::HashSet::new();
    for seed in 0..16 {
        let params = SamplingParams { seed, ..wide.clone() };
        let (tokens, s) = run(&params);
        for (a, b) in steps.iter_mut().zip(s) {
            *a += b;
        }
        outputs.insert(tokens);
    }
    assert!(outputs.len() > 8, "seeds barely change the output: {} distinct", outputs.len());
    assert!(steps[1] + steps[2] > 0, "the chain's first choice was never rejected: {steps:?}");
    for params in [
        SamplingParams { seed: 5, mirostat: 2, temperature: 1.2, ..wide.clone() },
        SamplingParams { seed: 6, xtc_probability: 0.5, repeat_penalty: 1.3, ..wide.clone() },
        SamplingParams {
            seed: 7,
            logit_bias: vec![(m.vocab().tokenize(",", false, false).unwrap()[0], 8.0)],
            ..wide.clone()
        },
    ] {
        // Deterministic for a fixed seed, even though a rejection re-runs the chain.
        assert_eq!(run(&params).0, run(&params).0, "{params:?}");
    }
}

#[test]
fn an_expensive_grammar_samples_without_masking_every_token() {
    // 5000 alternatives, as in the e2e reliability test. Masking the whole
    // vocabulary costs about a second per token here; the lazy path only
    // does it when the top 4096 hold no allowed token (the first "w").
    let grammar = word_grammar(5000);
    let params = SamplingParams { grammar: Some(grammar), ..SamplingParams::greedy() };
    let (text, steps) = greedy_lockstep("Words:", &params, 3, false);
    assert!(text.starts_with('w'), "{text:?}");
    let m = model();
    let prompt = m.vocab().tokenize("Words:", true, false).unwrap();
    let mut c = ctx(512, 1);
    let mut s = Sampler::new(&m, &params).unwrap();
    let mut b = c.new_batch();
    let mut last = b.add_sequence(&prompt, 0, 0, true).unwrap();
    let mut text = String::new();
    for k in 0..24 {
        c.decode(&b).unwrap();
        let t = s.sample(&c, last).unwrap();
        text.push_str(&String::from_utf8_lossy(&m.vocab().token_to_piece(t, false).unwrap()));
        b.clear();
        last = b.add(t, prompt.len() as i32 + k, &[0], true).unwrap();
    }
    let words: Vec<&str> = text.split(' ').collect();
    assert!(words.len() > 3, "{text:?}");
    for w in &words[..words.len() - 1] {
        let n: usize = w.strip_prefix('w').and_then(|d| d.parse().ok()).unwrap_or(usize::MAX);
        assert!(n < 5000 && !w[1..].starts_with('0') || *w == "w0", "{w:?} in {text:?}");
    }
    let all = s.grammar_steps();
    assert!(all[2] * 4 < all.iter().sum::<u64>(), "too many full masks: {all:?} (first 3 tokens: {steps:?})");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = model();
    let n_vocab = m.vocab().n_tokens();
    let mut c = ctx(512, 2);
    // positions must continue the sequence
    let mut b = c.new_batch();
    b.add(1, 5, &[0], true).unwrap();
    assert!(matches!(c.decode(&b), Err(Error::PositionOutOfOrder { expected: 0, .. })));
    // context overflow (llama.cpp pads each sequence's share to 256 cells)
    assert_eq!(c.n_ctx_seq(), 256);
    let mut b = Batch::new(512, 2, n_vocab).unwrap();
    b.add_sequence(&vec![1; 300], 0, 0, true).unwrap();
    let r = c.decode(&b);
    assert!(matches!(r, Err(Error::ContextOverflow { .. })), "{r:?}");
    // batch from a bigger context
    let big = Batch::new(4096, 2, n_vocab).unwrap();
    let mut big = big;
    big.add_sequence(&vec![1; 600], 0, 0, false).unwrap();
    assert!(matches!(c.decode(&big), Err(Error::BatchFull { .. })));
    assert!(matches!(c.decode(&c.new_batch()), Err(Error::EmptyBatch)));
    // sequence ids and tokens
    let mut b = Batch::new(8, 8, n_vocab).unwrap();
    b.add(1, 0, &[5], true).unwrap();
    assert!(matches!(c.decode(&b), Err(Error::SeqIdOutOfRange { .. })));
    assert!(matches!(c.logits(0), Err(Error::NoOutput(0))));
    assert!(matches!(m.vocab().token_to_piece(n_vocab, false), Err(Error::TokenOutOfVocab { .. })));
    assert!(matches!(m.vocab().token_to_piece(-1, false), Err(Error::TokenOutOfVocab { .. })));
    assert!(matches!(m.vocab().detokenize(&[1, 2, 999_999], false, false), Err(Error::TokenOutOfVocab { .. })));
    assert!(!m.vocab().is_eog(-5));
    assert!(matches!(c.kv_seq_rm(9, None, None), Err(Error::SeqIdOutOfRange { .. })));
    // absurd context parameters
    for p in [
        ContextParams { n_ctx: 1, ..Default::default() },
        ContextParams { n_seq_max: 0, ..Default::default() },
        ContextParams { n_threads: 0, ..Default::default() },
        ContextParams { n_batch: 0, ..Default::default() },
        ContextParams { n_ubatch: 1024, n_batch: 512, ..Default::default() },
        ContextParams { n_ctx: 64, n_seq_max: 64, ..Default::default() },
        ContextParams { n_ctx: 4096, n_seq_max: 3, embeddings: true, ..Default::default() },
    ] {
        assert!(matches!(Context::new(m.clone(), &p), Err(Error::InvalidParam { .. })), "{p:?}");
    }
    // sampling parameters
    for p in [
        SamplingParams { temperature: -1.0, ..Default::default() },
        SamplingParams { top_p: 1.5, ..Default::default() },
        SamplingParams { min_p: f32::NAN, ..Default::default() },
        SamplingParams { mirostat: 3, ..Default::default() },
        SamplingParams { logit_bias: vec![(n_vocab + 1, 1.0)], ..Default::default() },
    ] {
        assert!(Sampler::new(&m, &p).is_err(), "{p:?}");
    }
    // missing file
    assert!(matches!(
        Model::load("/nonexistent/model.gguf", &ModelParams::default()),
        Err(Error::ModelNotFound { .. })
    ));
}

#[test]
fn abort_flag_stops_a_long_prefill() {
    let m = model();
    let mut c = Context::new(
        m.clone(),
        &ContextParams {
            n_ctx: 2048,
            n_batch: 1024,
            n_ubatch: 64,
            n_threads: 2,
            n_threads_batch: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let flag = c.abort_flag();
    let toks: Vec<Token> = (0..1000).map(|i| (i * 7919 + 13) % m.vocab().n_tokens()).collect();
    let mut b = c.new_batch();
    b.add_sequence(&toks, 0, 0, true).unwrap();
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    assert!(matches!(c.decode(&b), Err(Error::Aborted)));
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    flag.store(false, std::sync::atomic::Ordering::Relaxed);
    c.kv_seq_rm(0, None, None).unwrap();
    c.decode(&b).unwrap();
    assert_eq!(c.kv_seq_pos_max(0), Some(999));
    assert_eq!(c.kv_cells_used(), 1000);
}

#[test]
fn embeddings_are_normalized_and_similar_texts_are_closer() {
    let m = model();
    let mut c = Context::new(
        m.clone(),
        &ContextParams {
            n_ctx: 1024,
            n_seq_max: 4,
            embeddings: true,
            pooling: llama_core::Pooling::Mean,
            n_threads: 2,
            n_threads_batch: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let texts = ["I love cats", "I adore kittens", "Quarterly tax filing deadline"];
    let toks: Vec<Vec<Token>> = texts.iter().map(|t| m.vocab().tokenize(t, true, false).unwrap()).collect();
    let v = llama_core::embed(&mut c, &toks, true).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].len(), m.n_embd() as usize);
    for e in &v {
        let n: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-3);
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]), "cats should be closer to kittens than to taxes");
}

#[test]
fn model_metadata() {
    let m = model();
    assert_eq!(m.architecture().as_deref(), Some("llama"));
    assert_eq!(m.vocab().n_tokens(), 49152);
    assert_eq!(m.n_layer(), 30);
    assert!(m.n_params() > 100_000_000);
    assert!(m.chat_template().unwrap().contains("<|im_start|>"));
    assert!(m.metadata().iter().any(|(k, _)| k == "general.architecture"));
    assert_eq!(m.vocab().eos().map(|t| m.vocab().token_to_piece(t, true).unwrap()), Some(b"<|im_end|>".to_vec()));
}

mod tokenizer {
    use super::*;
    use proptest::prelude::*;

    fn pieces_decode(text: &str) -> String {
        let m = model();
        let toks = m.vocab().tokenize(text, false, false).unwrap();
        let mut d = TokenDecoder::new();
        let mut out = String::new();
        for t in toks {
            let s = d.push(&m.vocab().token_to_piece(t, false).unwrap());
            assert!(!s.contains('\u{FFFD}') || text.contains('\u{FFFD}'), "partial char emitted for {text:?}");
            out.push_str(&s);
        }
        out.push_str(&d.finish());
        out
    }

    #[test]
    fn cjk_and_emoji_stream_token_by_token() {
        for text in ["日本語のテキスト", "emoji 👩‍👩‍👧‍👦 and 🦀🦀", "combining e\u{301} and a\u{30a}", "mixed ascii ✓ done"]
        {
            assert_eq!(pieces_decode(text), text);
        }
    }

    #[test]
    fn special_token_text_with_and_without_parse_special() {
        let m = model();
        let t = "<|im_start|><|im_end|>";
        let parsed = m.vocab().tokenize(t, false, true).unwrap();
        assert_eq!(parsed.len(), 2);
        let plain = m.vocab().tokenize(t, false, false).unwrap();
        assert!(plain.len() > 2);
        assert!(m.vocab().tokenize("\0\0abc\0", false, false).is_ok());
        let many = "\n".repeat(200_000);
        assert!(!m.vocab().tokenize(&many, false, false).unwrap().is_empty());
    }

    /// Pieces for texts that stress the cut points of the chunked
    /// special-token tokenizer: whole special strings, partial ones,
    /// whitespace of every kind C's `isspace` knows, words, unicode.
    const PIECES: &[&str] = &[
        "<|im_end|>",
        "<|im_start|>",
        "<|endoftext|>",
        "<repo_name>",
        "<reponame>",
        "<file_sep>",
        "<empty_output>",
        "<|im_",
        "end|>",
        "|>",
        "<",
        ">",
        "<|",
        "im_end",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "\u{b}",
        "\u{c}",
        "user",
        "Hello",
        "a",
        "123",
        "日本",
        "é",
        "e\u{301}",
        "🦀",
        "\u{a0}",
        "\0",
    ];

    /// The one-call reference: no cut is ever due.
    fn tokenize_one_call(text: &str, add_special: bool) -> Vec<Token> {
        model().vocab().tokenize_chunked(text, add_special, usize::MAX).unwrap()
    }

    #[test]
    fn chunked_special_tokenization_cuts_only_after_special_strings() {
        let v = model();
        let v = v.vocab();
        let text = "<|im_end|>x<|im_end|> y<|im_start|>user\n<|im_";
        assert_eq!(v.special_cuts(text, 1), vec![10, 21, 35]);
        assert_eq!(v.special_cuts(text, 2), vec![21]);
        assert!(v.special_cuts("no specials here", 1).is_empty());
        assert!(v.special_cuts("ends with one<|im_end|>", 1).is_empty(), "a cut at the end is no cut");
        // The public path cuts long texts, with the one-call result.
        let long = "<|im_start|>user\nHi there!<|im_end|>\n".repeat(800);
        assert!(long.len() > 16 << 10);
        assert!(v.special_cuts(&long, 256).len() > 4);
        for add_special in [false, true] {
            assert_eq!(v.tokenize(&long, add_special, true).unwrap(), tokenize_one_call(&long, add_special));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn chunked_special_tokenization_equals_one_call(
            idx in proptest::collection::vec(0..PIECES.len(), 0..48),
            per_chunk in 1usize..4,
            add_special: bool,
        ) {
            let text: String = idx.iter().map(|&i| PIECES[i]).collect();
            let m = model();
            let chunked = m.vocab().tokenize_chunked(&text, add_special, per_chunk).unwrap();
            prop_assert_eq!(chunked, tokenize_one_call(&text, add_special), "{:?}", text);
        }
    }

    #[test]
    fn decoder_every_split_point() {
        let text = "añb€c𝄞d 日本 👍🏽";
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut d = TokenDecoder::new();
                let mut out = d.push(&bytes[..i]);
                out += &d.push(&bytes[i..j]);
                out += &d.push(&bytes[j..]);
                out += &d.finish();
                assert_eq!(out, text, "split at {i},{j}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn roundtrip(text in "[a-zA-Z0-9 ,.!?日本語中文한국어🦀👍🏽é\u{301}\n\t]{0,64}") {
            let m = model();
            let toks = m.vocab().tokenize(&text, false, false).unwrap();
            let back = m.vocab().detokenize(&toks, false, false).unwrap();
            prop_assert_eq!(&back, &text);
            prop_assert_eq!(pieces_decode(&text), text);
        }

        #[test]
        fn decoder_arbitrary_bytes_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..16)) {
            let mut d = TokenDecoder::new();
            let mut out = String::new();
            for c in &chunks { out += &d.push(c); }
            out += &d.finish();
            let all: Vec<u8> = chunks.concat();
            prop_assert_eq!(out, String::from_utf8_lossy(&all).into_owned());
        }
    }
}

/// Plain greedy sampling skips the candidate array (an argmax over the
/// logits); it must pick exactly what llama.cpp's greedy sampler picks,
/// ties and non-finite values included. The reference is the same chain
/// with a zero logit bias, which keeps it on llama.cpp's path.
#[test]
fn plain_greedy_argmax_matches_llama_cpp_greedy() {
    let m = model();
    let n = m.vocab().n_tokens() as usize;
    let mut fast = Sampler::new(&m, &SamplingParams::greedy()).unwrap();
    let reference_params = SamplingParams { logit_bias: vec![(0, 0.0)], ..SamplingParams::greedy() };
    let mut reference = Sampler::new(&m, &reference_params).unwrap();
    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for case in 0..200 {
        let mut logits: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 100.0 - 5.0).collect();
        match case % 5 {
            // A tie for the maximum: the first one wins.
            0 => {
                let (a, b) = (next() as usize % n, next() as usize % n);
                logits[a] = 50.0;
                logits[b] = 50.0;
            }
            // Non-finite values.
            1 => {
                logits[next() as usize % n] = f32::NAN;
                logits[next() as usize % n] = f32::NEG_INFINITY;
                logits[0] = f32::NAN;
            }
            2 => logits[n - 1] = f32::INFINITY,
            _ => {}
        }
        let a = fast.sample_logits(&logits).unwrap();
        let b = reference.sample_logits(&logits).unwrap();
        assert_eq!(a, b, "case {case}");
    }
}
