//! Embeddings over HTTP (`--embeddings`): the OpenAI shape (float and
//! base64), llama.cpp's `/embedding`, normalization, and input errors.

mod common;

use common::{Server, assert_schema};
use serde_json::{Value, json};

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(s.url(path)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn unbase64(s: &str) -> Vec<f64> {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | table.iter().position(|&t| t == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
        }
    }
    bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
}

#[tokio::test]
async fn embeddings_endpoints() {
    let s = Server::start(&["--embeddings"]).await;
    let (status, v) =
        post(&s, "/v1/embeddings", json!({"input": ["I love cats", "I adore kittens", "Quarterly tax deadline"]}))
            .await;
    assert_eq!(status, 200, "{v}");
    assert_schema("EmbeddingList", &v);
    let e: Vec<Vec<f64>> = v["data"].as_array().unwrap().iter().map(|d| floats(&d["embedding"])).collect();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 576, "SmolLM2-135M has 576 dimensions");
    for x in &e {
        assert!((dot(x, x) - 1.0).abs() < 1e-3, "normalized");
    }
    assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]), "similar texts are closer");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (status, b) = post(&s, "/v1/embeddings", json!({"input": "I love cats", "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{b}");
    assert_schema("EmbeddingList", &b);
    let decoded = unbase64(b["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded.len(), 576);
    assert!(dot(&decoded, &e[0]) > 0.999, "base64 carries the same vector");

    for path in ["/embedding", "/embeddings"] {
        let (status, n) = post(&s, path, json!({"content": "I love cats"})).await;
        assert_eq!(status, 200, "{n}");
        assert_schema("NativeEmbeddingResponse", &n);
        let v = floats(&n[0]["embedding"][0]);
        assert!(dot(&v, &e[0]) > 0.999);
    }
    let (status, raw) = post(&s, "/embedding", json!({"content": "I love cats", "embd_normalize": -1})).await;
    assert_eq!(status, 200, "{raw}");
    let raw = floats(&raw[0]["embedding"][0]);
    assert!((dot(&raw, &raw) - 1.0).abs() > 1e-3, "unnormalized vector");

    for (body, param) in [
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"input": []}), "input"),
        (json!({}), "input"),
        (json!({"input": "x", "dimensions": 3}), "dimensions"),
    ] {
        let (status, v) = post(&s, "/v1/embeddings", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let (status, v) = post(&s, "/embedding", json!({"content": "x", "embd_normalize": 1})).await;
    assert_eq!(status, 400, "{v}");
}
