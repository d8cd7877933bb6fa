//! Reranking over HTTP (`--reranking`), on the tiny random-weight BERT
//! reranker the suite builds (`llama_e2e::reranker`): the four paths,
//! Jina's and TEI's shapes, `top_n`, `return_text`, the ordering, usage,
//! 400s for bad input, 501 when reranking is off, and the flags that turn
//! it on. The weights are random: what a score says is not tested.

mod common;

use std::sync::{Mutex, Weak};

use common::{Server, assert_schema};
use llama_e2e::reranker;
use serde_json::{Value, json};

const PATHS: [&str; 4] = ["/reranking", "/rerank", "/v1/rerank", "/v1/reranking"];
const QUERY: &str = "what is a panda";
const DOCS: [&str; 4] = ["hi", "it is a bear", "the giant panda is a bear species endemic to china", "a"];

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(s.url(path)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn model() -> String {
    reranker::path().to_str().unwrap().to_owned()
}

/// The `--reranking` server these tests share.
async fn server() -> std::sync::Arc<Server> {
    static SLOT: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    static ARGS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let args = ARGS.get_or_init(|| vec!["-m", Box::leak(model().into_boxed_str()), "--reranking"]);
    let args: &'static [&'static str] = args.as_slice();
    common::shared(&SLOT, args).await
}

fn scores(v: &Value, key: &str) -> Vec<(usize, f64)> {
    let list = v.as_array().unwrap_or_else(|| v["results"].as_array().expect("results"));
    list.iter().map(|r| (r["index"].as_u64().unwrap() as usize, r[key].as_f64().unwrap())).collect()
}

#[tokio::test]
async fn every_path_ranks_every_document_in_jina_shape() {
    let s = server().await;
    let body = json!({"model": "some-model", "query": QUERY, "documents": DOCS});
    let mut first: Option<Value> = None;
    for path in PATHS {
        let (status, v) = post(&s, path, body.clone()).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_schema("RerankList", &v);
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "tiny-reranker.gguf", "the model actually used");
        let ranked = scores(&v, "relevance_score");
        let mut indices: Vec<usize> = ranked.iter().map(|r| r.0).collect();
        assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1), "{path}: best first: {ranked:?}");
        assert!(ranked.iter().all(|r| r.1.is_finite()), "{ranked:?}");
        indices.sort_unstable();
        assert_eq!(indices, [0, 1, 2, 3], "one result per document");
        // usage: every pair's prompt, laid out `[CLS] query [SEP] [SEP] document [SEP]`.
        let n: usize = DOCS.iter().map(|d| reranker::rerank_tokens(QUERY, d).len()).sum();
        assert_eq!(v["usage"]["prompt_tokens"], n, "{v}");
        assert_eq!(v["usage"]["total_tokens"], n, "{v}");
        match &first {
            None => first = Some(v),
            Some(f) => assert_eq!(f["results"], v["results"], "{path}: deterministic, the same on every path"),
        }
    }
    // A document's score does not depend on the others.
    let all = scores(first.as_ref().unwrap(), "relevance_score");
    let (_, v) = post(&s, "/rerank", json!({"query": QUERY, "documents": [DOCS[2]]})).await;
    let one = scores(&v, "relevance_score");
    let in_all = all.iter().find(|r| r.0 == 2).unwrap().1;
    assert_eq!(one, [(0, in_all)], "{v}");
}

#[tokio::test]
async fn top_n_cuts_the_ranking() {
    let s = server().await;
    let (_, full_body) = post(&s, "/v1/rerank", json!({"query": QUERY, "documents": DOCS})).await;
    let full = scores(&full_body, "relevance_score");
    for (top_n, want) in [(2usize, 2usize), (0, 0), (4, 4), (100, 4)] {
        let (status, v) = post(&s, "/v1/rerank", json!({"query": QUERY, "documents": DOCS, "top_n": top_n})).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(scores(&v, "relevance_score"), full[..want], "top_n {top_n}");
        // usage counts every document scored, not only those returned.
        assert_eq!(v["usage"], full_body["usage"]);
    }
}

#[tokio::test]
async fn tei_shape_and_return_text() {
    let s = server().await;
    let (_, jina) = post(&s, "/rerank", json!({"query": QUERY, "documents": DOCS})).await;
    let jina = scores(&jina, "relevance_score");
    let (status, v) = post(&s, "/rerank", json!({"query": QUERY, "texts": DOCS, "return_text": true})).await;
    assert_eq!(status, 200, "{v}");
    let list = v.as_array().expect("TEI answers a bare array");
    for r in list {
        assert_schema("TeiRerankResult", r);
        assert_eq!(r["text"], DOCS[r["index"].as_u64().unwrap() as usize], "{r}");
    }
    assert_eq!(scores(&v, "score"), jina, "the same scores and order as Jina's shape");
    let (_, v) = post(&s, "/reranking", json!({"query": QUERY, "texts": DOCS, "top_n": 1})).await;
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].get("text").is_none(), "no text unless asked: {v}");
    // Jina's shape ignores return_text, as llama.cpp does.
    let (_, v) = post(&s, "/rerank", json!({"query": QUERY, "documents": DOCS, "return_text": true})).await;
    assert_schema("RerankList", &v);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let s = server().await;
    let long = "a ".repeat(200);
    for (body, param, needle) in [
        (json!({"documents": ["a"]}), "query", "\"query\" must be provided"),
        (json!({"query": 1, "documents": ["a"]}), "query", "\"query\" must be a string"),
        (json!({"query": "q"}), "documents", "\"documents\" must be a non-empty string array"),
        (json!({"query": "q", "documents": []}), "documents", "non-empty string array"),
        (json!({"query": "q", "documents": "a"}), "documents", "non-empty string array"),
        (json!({"query": "q", "documents": ["a", {"text": "b"}]}), "documents", "non-empty string array"),
        (json!({"query": "q", "documents": vec!["a"; 257]}), "documents", "at most 256 documents"),
        (json!({"query": "q", "documents": ["a"], "top_n": -1}), "top_n", "non-negative integer"),
        (json!({"query": "q", "texts": ["a"], "return_text": 1}), "return_text", "must be a boolean"),
        // Past the model's 128 positions: refused before llama.cpp sees it.
        (json!({"query": "q", "documents": ["a", long]}), "documents", "document 1: "),
    ] {
        let (status, v) = post(&s, "/rerank", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_schema("Error", &v);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    // An encoder does not generate: 501, not a failed decode.
    for (path, body) in [
        ("/completion", json!({"prompt": "hello", "n_predict": 2})),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})),
    ] {
        let (status, v) = post(&s, path, body).await;
        assert_eq!(status, 501, "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("cannot generate"), "{v}");
    }
    // The server is still up.
    let (status, _) = post(&s, "/rerank", json!({"query": "q", "documents": ["a"]})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_embeddings_routes_say_the_model_ranks() {
    let s = server().await;
    for (path, body) in [("/v1/embeddings", json!({"input": "a"})), ("/embedding", json!({"content": "a"}))] {
        let (status, v) = post(&s, path, body).await;
        assert_eq!(status, 501, "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("--reranking"), "{v}");
    }
}

#[tokio::test]
async fn without_reranking_the_paths_answer_501_and_the_model_embeds() {
    let m = model();
    let s = Server::start(&["-m", &m, "--embedding"]).await;
    for path in PATHS {
        let (status, v) = post(&s, path, json!({"query": "q", "documents": ["a"]})).await;
        assert_eq!(status, 501, "{path}: {v}");
        assert_eq!(v["error"]["type"], "not_supported_error", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("--reranking"), "{v}");
    }
    // With --embedding alone a reranker embeds (mean pooling), as an encoder.
    let (status, v) = post(&s, "/v1/embeddings", json!({"input": "what is a panda"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), reranker::N_EMBD as usize);
}

#[tokio::test]
async fn every_spelling_turns_reranking_on() {
    let m = model();
    let rerank: &[&str] = &["--rerank"];
    let embedding_rank: &[&str] = &["--embedding", "--pooling", "rank"];
    let variable: &[(&str, &str)] = &[("LLAMA_ARG_RERANKING", "1")];
    for (flags, env) in [(rerank, &[][..]), (embedding_rank, &[]), (&[], variable)] {
        let args = [&["-m", m.as_str()][..], flags].concat();
        let s = Server::spawn_with_env(&args, env);
        s.wait_healthy(std::time::Duration::from_secs(60)).await;
        let (status, v) = post(&s, "/rerank", json!({"query": "q", "documents": ["a", "b"]})).await;
        assert_eq!(status, 200, "{args:?} {env:?}: {v}");
        assert_eq!(v["results"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn another_pooling_with_reranking_stops_the_server() {
    let m = model();
    let o = std::process::Command::new(common::binary())
        .args(["-m", &m, "--reranking", "--pooling", "mean"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--pooling mean: --reranking ranks with rank pooling"), "{err}");
}

#[tokio::test]
async fn junk_bodies_never_get_a_server_error() {
    let s = server().await;
    let junk = [
        "",
        "{}",
        "[]",
        "null",
        "\"x\"",
        r#"{"query": null, "documents": null}"#,
        r#"{"query": "", "documents": [""]}"#,
        r#"{"query": "\u0000", "documents": ["\u0000", "[CLS][SEP]"]}"#,
        r#"{"query": "q", "documents": [[]], "texts": 5}"#,
        r#"{"query": "q", "texts": ["a"], "top_n": 1e30}"#,
        r#"{"query": "q", "documents": ["a"], "top_n": 18446744073709551615}"#,
    ];
    for path in PATHS {
        for body in junk {
            let r = reqwest::Client::new()
                .post(s.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert!(status < 500, "{path} {body}: {status} {v}");
            if status != 200 {
                assert_schema("Error", &v);
            }
        }
    }
}
