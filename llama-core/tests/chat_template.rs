//! Chat templates: the real model's template renders ChatML exactly, and
//! hostile templates fail fast with `Error::Template`.

use std::time::{Duration, Instant};

use llama_core::{ChatMessage, ChatTemplate, Error, gguf};

mod common;
use common::{model_path, vocab_model as model};

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Render `source` with no messages' worth of input and expect a template error,
/// returning its message and how long it took.
fn render_err(source: &str, messages: &[ChatMessage]) -> (String, Duration) {
    let start = Instant::now();
    let result = ChatTemplate::new(source, "<s>", "</s>").and_then(|t| t.render(messages, true));
    let elapsed = start.elapsed();
    match result {
        Err(Error::Template(m)) => (m, elapsed),
        other => panic!("expected a template error for {source:?}, got {other:?}"),
    }
}

#[test]
fn real_model_template_renders_chatml() {
    let m = model();
    let template = ChatTemplate::for_model(&m, None).unwrap();
    assert_eq!(template.bos_token(), "<|im_start|>");
    assert_eq!(template.eos_token(), "<|im_end|>");

    let conversation = [msg("system", "You are a concise assistant."), msg("user", "What is the capital of France?")];
    assert_eq!(
        template.render(&conversation, true).unwrap(),
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        template.render(&conversation, false).unwrap(),
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    );

    // Without a system message, this template inserts its own.
    let multi_turn = [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")];
    assert_eq!(
        template.render(&multi_turn, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
         <|im_start|>user\nTell me a joke.<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn model_template_matches_the_gguf_metadata() {
    let info = gguf::validate(model_path()).unwrap();
    let from_gguf = info.chat_template().expect("the default model has a chat template");
    assert_eq!(model().chat_template().as_deref(), Some(from_gguf));
    assert_eq!(ChatTemplate::for_model(&model(), None).unwrap().source(), from_gguf);
}

#[test]
fn for_model_prefers_an_explicit_template_and_falls_back_to_chatml() {
    let m = model();
    // The model's own: no fallback.
    assert_eq!(ChatTemplate::for_model(&m, None).unwrap().fallback(), None);
    // An explicit template wins and sees the model's BOS/EOS texts.
    let t = ChatTemplate::for_model(&m, Some("{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}")).unwrap();
    assert_eq!(t.fallback(), None);
    assert_eq!(t.render(&[msg("user", "x")], true).unwrap(), "<|im_start|>x<|im_end|>");
    // An explicit template that does not compile is an error, not a fallback.
    assert!(matches!(ChatTemplate::for_model(&m, Some("{% if %}")), Err(Error::Template(_))));
    // ChatML itself renders ChatML.
    let chatml = ChatTemplate::new(llama_core::CHATML_TEMPLATE, "", "").unwrap();
    assert_eq!(
        chatml.render(&[msg("user", "Hi")], true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn model_less_template_with_bos_and_eos() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content.strip() }}{{ eos_token }}{% endfor %}\
         {% if add_generation_prompt %}[ASSISTANT]{% endif %}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let conv = [msg("system", "  Be brief.\n"), msg("user", "Hi")];
    assert_eq!(t.render(&conv, true).unwrap(), "<s>[SYSTEM] Be brief.</s>[USER] Hi</s>[ASSISTANT]");
    assert_eq!(t.render(&conv, false).unwrap(), "<s>[SYSTEM] Be brief.</s>[USER] Hi</s>");
    assert_eq!(t.render(&[], false).unwrap(), "<s>");
}

#[test]
fn blocks_are_trimmed_like_transformers() {
    // transformers renders with trim_blocks and lstrip_blocks: the newline
    // after a block tag and the indentation before it disappear.
    let t = ChatTemplate::new(
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n  {{ m.content }}\n    {% endif %}\n{% endfor %}\n",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[msg("user", "a"), msg("assistant", "b"), msg("user", "c")], false).unwrap(), "  a\n  c\n");
}

#[test]
fn python_methods_filters_and_helpers_work() {
    let t = ChatTemplate::new(
        "{% set parts = messages[0].content.split(',') %}{{ parts | length }}|{{ parts[1].strip().upper() }}|\
         {{ messages[0].content.startswith('x') }}|{{ messages[0].content.replace(',', ';') }}|\
         {% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ messages[1] | tojson }}|\
         {% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|\
         {% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
        "",
        "",
    )
    .unwrap();
    let out = t.render(&[msg("user", "x, y ,z"), msg("assistant", "ok \"q\"")], false).unwrap();
    // Python spellings (`True`) and insertion-ordered JSON with Python's
    // separators (`json.dumps`), as transformers renders them.
    assert_eq!(out, r#"3|Y|True|x; y ;z|a=1|{"role": "assistant", "content": "ok \"q\""}|user|2"#);
}

#[test]
fn strftime_now_formats_the_current_date() {
    let t = ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}", "", "").unwrap();
    let out = t.render(&[], false).unwrap();
    let (iso, human) = out.split_once('|').unwrap();
    assert_eq!(iso.len(), 10, "{out}");
    let year: u32 = iso[..4].parse().unwrap();
    assert!((2024..3000).contains(&year), "{out}");
    assert!(human.ends_with(&iso[..4]), "{out}");
    let (m, _) = render_err("{{ strftime_now('%Q') }}", &[]);
    assert!(m.contains("unsupported directive %Q"), "{m}");
}

#[test]
fn raise_exception_surfaces_its_message() {
    let source = "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}\
                  {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
                  {% endif %}{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    assert_eq!(t.render(&[msg("user", "a"), msg("assistant", "b")], false).unwrap(), "ab");
    match t.render(&[msg("assistant", "a")], false) {
        Err(Error::Template(m)) => {
            assert!(m.contains("Conversation roles must alternate user/assistant/user/assistant/..."), "{m}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn compile_errors_are_template_errors() {
    for source in ["{% for m in messages %}", "{{ }}", "{% if %}{% endif %}", "{{ messages[ }}"] {
        match ChatTemplate::new(source, "", "") {
            Err(Error::Template(m)) => assert!(!m.is_empty()),
            other => panic!("expected a compile error for {source:?}, got {other:?}"),
        }
    }
    // Larger than the 1 MiB source limit.
    let huge = "x".repeat((1 << 20) + 1);
    assert!(matches!(ChatTemplate::new(&huge, "", ""), Err(Error::Template(_))));
}

#[test]
fn no_file_system_access() {
    for source in [
        "{% include '/etc/passwd' %}",
        "{% include '../../../../etc/hostname' %}",
        "{% import '/etc/passwd' as p %}{{ p }}",
        "{% from '/etc/passwd' import x %}{{ x }}",
        "{% extends '/etc/passwd' %}",
    ] {
        let (m, elapsed) = render_err(source, &[msg("user", "hi")]);
        assert!(m.contains("template not found"), "{source}: {m}");
        assert!(elapsed < Duration::from_secs(10), "{source}: took {elapsed:?}");
    }
    // The template's own name: including itself recurses until the limit.
    let (m, _) = render_err("x{% include 'chat_template' %}", &[]);
    assert!(m.contains("recursion limit exceeded"), "{m}");
}

#[test]
fn endless_loops_run_out_of_fuel_quickly() {
    let (m, elapsed) = render_err(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
        &[msg("user", "hi")],
    );
    assert!(m.contains("fuel"), "{m}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[test]
fn deep_recursion_is_refused() {
    let (m, elapsed) = render_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", &[]);
    assert!(m.contains("recursion"), "{m}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    // Deeply nested syntax, not calls: refused by the parser or the limit, without a stack overflow.
    let nested = "{% if true %}".repeat(5_000) + &"{% endif %}".repeat(5_000);
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || ChatTemplate::new(&nested, "", "").and_then(|t| t.render(&[], false)))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert!(matches!(result, Err(Error::Template(_))), "{result:?}");
}

#[test]
fn huge_output_is_cut_off() {
    // 100 MB of output in 100 kB pieces.
    let (m, elapsed) = render_err("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}", &[msg("user", "hi")]);
    assert!(m.contains("exceeds the limit"), "{m}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    // One 10 MB value.
    let (m, _) = render_err("{{ 'x' * 10000000 }}", &[]);
    assert!(m.contains("exceeds the limit"), "{m}");
    // The cap grows with the conversation: a long legitimate prompt renders.
    let long = "y".repeat(3 << 20);
    let t = ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}", "", "").unwrap();
    assert_eq!(t.render(&[msg("user", &long)], false).unwrap().len(), long.len());
}

#[test]
fn chat_messages_round_trip_through_serde() {
    let m = msg("user", "hé \"quoted\"");
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"role":"user","content":"hé \"quoted\""}"#);
    assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), m);
}

/// llama.cpp's built-in formats (its `--chat-template NAME` and
/// `--no-jinja`), formatted by llama.cpp itself through the shim.
#[test]
fn builtin_formats_are_llama_cpp_s() {
    let names = llama_core::builtin_chat_templates();
    for name in ["chatml", "llama3", "mistral-v7", "gemma", "phi3", "command-r", "deepseek3"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    let llama3 = ChatTemplate::builtin("llama3", "", "").unwrap();
    assert!(llama3.is_builtin());
    assert_eq!(
        llama3.render(&messages, true).unwrap(),
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Every name llama.cpp lists formats a conversation.
    for name in &names {
        let t = ChatTemplate::builtin(name, "<s>", "</s>").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!t.render(&messages, true).unwrap().is_empty(), "{name}");
    }
    // Refusals are typed errors: an unknown name, a NUL byte.
    assert!(matches!(ChatTemplate::builtin("no-such-format", "", ""), Err(Error::Template(_))));
    let nul = [ChatMessage::new("user", "a\0b")];
    assert!(matches!(llama3.render(&nul, true), Err(Error::Template(_))));
    // --no-jinja on the default model: llama.cpp recognizes its ChatML template.
    let model = common::model();
    let t = ChatTemplate::builtin_for_model(&model, None).unwrap();
    assert!(t.is_builtin() && t.fallback().is_none());
    let jinja = ChatTemplate::for_model(&model, None).unwrap();
    let user = [ChatMessage::new("user", "Hi")];
    assert!(t.render(&user, true).unwrap().ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    assert!(jinja.render(&user, true).unwrap().ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
}
