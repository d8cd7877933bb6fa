//! Drop-in behaviour of llama.cpp's server that needs the real model and a
//! real process: `/infill` (on a copy of the default model given FIM
//! tokens, and refused on the default model, which has none), context
//! shift, `id_slot`, any `model` name served, and `--grammar` as the
//! default constraint.

mod common;

use std::time::Duration;

use common::{Server, model_path};
use llama_e2e::gguf_edit::{Value as Meta, copy_with_metadata};
use serde_json::{Value, json};

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(server.url(path))
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

#[tokio::test]
async fn infill_lays_out_the_fim_tokens_or_refuses_a_model_without_them() {
    // The default model has no FIM tokens: a clear 400.
    let plain = Server::start(&[]).await;
    let (status, body) = post(&plain, "/infill", json!({"input_prefix": "def f():", "n_predict": 4})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("fill-in-the-middle"), "{body}");
    let (status, body) = post(&plain, "/props", json!({})).await;
    assert_eq!((status, body["error"]["type"].as_str()), (501, Some("not_supported_error")), "{body}");
    drop(plain);

    // A copy that names three of its special tokens as FIM prefix/suffix/middle.
    let dir = tempfile::tempdir().unwrap();
    let fim_model = dir.path().join("fim.gguf");
    copy_with_metadata(
        &model_path(),
        &fim_model,
        &[
            ("tokenizer.ggml.fim_pre_token_id", Meta::U32(5)),
            ("tokenizer.ggml.fim_suf_token_id", Meta::U32(6)),
            ("tokenizer.ggml.fim_mid_token_id", Meta::U32(7)),
        ],
    )
    .unwrap();
    let server = Server::start(&["-m", fim_model.to_str().unwrap()]).await;
    let request = json!({
        "input_prefix": "def add(a, b):\n    ",
        "input_suffix": "\n\nprint(add(1, 2))\n",
        "input_extra": [{"filename": "util.py", "text": "import math\n"}],
        "prompt": "return",
        "n_predict": 6,
        "temperature": 0,
        "return_tokens": true,
    });
    let (status, body) = post(&server, "/infill", request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let n = body["tokens_predicted"].as_u64().unwrap();
    assert!((1..=6).contains(&n) && !body["content"].as_str().unwrap().is_empty(), "{body}");
    // The prompt the model saw, rendered with its control tokens (ids 5, 6
    // and 7 are <file_sep>, <filename> and <gh_stars> in this vocabulary):
    // extra context, <pre> prefix, <suf> suffix, <mid>, then `prompt`.
    assert_eq!(
        body["prompt"], "import math\n<file_sep>def add(a, b):\n    <filename>\n\nprint(add(1, 2))\n<gh_stars>return",
        "{body}"
    );
    // Deterministic: the same request gives the same answer; streamed too.
    let (_, again) = post(&server, "/infill", request.clone()).await;
    assert_eq!(again["content"], body["content"]);
    let (status, wrong) = post(&server, "/infill", json!({"prompt": ["not", "a string"]})).await;
    assert_eq!((status, wrong["error"]["param"].as_str()), (400, Some("prompt")), "{wrong}");
}

#[tokio::test]
async fn context_shift_id_slot_model_names_and_a_default_grammar() {
    let server =
        Server::start(&["-c", "128", "-np", "2", "--context-shift", "--keep", "4", "--grammar", "root ::= [a-z ]+"])
            .await;
    // 64 cells per slot; 100 tokens only fit with context shift.
    let (status, body) = post(
        &server,
        "/completion",
        json!({"prompt": "Once upon a time", "n_predict": 100, "ignore_eos": true, "temperature": 0, "id_slot": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokens_predicted"], 100, "{body}");
    assert_eq!(body["truncated"], false, "{body}");
    assert_eq!(body["id_slot"], 1, "{body}");
    assert_eq!(body["generation_settings"]["n_keep"], 4, "{body}");
    // --grammar applies to requests that bring none: lower-case letters and spaces only.
    let content = body["content"].as_str().unwrap();
    assert!(content.chars().all(|c| c.is_ascii_lowercase() || c == ' '), "{content:?}");
    // A request's own n_discard: shifts drop 8 cells at a time.
    let (status, body) = post(
        &server,
        "/completion",
        json!({"prompt": "Once upon a time", "n_predict": 100, "ignore_eos": true, "n_discard": 8}),
    )
    .await;
    assert_eq!((status, &body["tokens_predicted"]), (200, &json!(100)), "{body}");
    assert_eq!(body["generation_settings"]["n_discard"], 8, "{body}");
    // A request's own n_keep is checked.
    let (status, bad) = post(&server, "/completion", json!({"prompt": "x", "n_keep": -5})).await;
    assert_eq!((status, bad["error"]["param"].as_str()), (400, Some("n_keep")), "{bad}");
    // A slot that does not exist is a 400 naming id_slot.
    let (status, bad) = post(&server, "/completion", json!({"prompt": "x", "id_slot": 7})).await;
    assert_eq!((status, bad["error"]["param"].as_str()), (400, Some("id_slot")), "{bad}");

    // Any model name is served by the one model, as llama.cpp does.
    let (status, chat) = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "grammar": "root ::= \"ok\""}),
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["choices"][0]["message"]["content"], "ok", "{chat}");
}

#[tokio::test]
async fn builtin_chat_formats_and_no_jinja() {
    let messages = json!({"messages": [{"role": "user", "content": "Hi"}]});
    // A llama.cpp built-in format by name, formatted by llama.cpp.
    let llama3 = Server::start(&["--chat-template", "llama3"]).await;
    let (status, body) = post(&llama3, "/apply-template", messages.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["prompt"],
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let props: Value = reqwest::get(llama3.url("/props")).await.unwrap().json().await.unwrap();
    assert_eq!(props["chat_template"], "llama3");
    drop(llama3);
    // --no-jinja: llama.cpp recognizes the default model's ChatML template.
    let no_jinja = Server::start(&["--no-jinja"]).await;
    let (status, body) = post(&no_jinja, "/apply-template", messages).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["prompt"].as_str().unwrap().ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{body}"
    );
}
