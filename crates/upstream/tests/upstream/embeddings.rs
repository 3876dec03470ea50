//! `POST /v1/embeddings`: the OpenAI shape, deterministic unit vectors, the
//! base64 form, token inputs and refusals.

use gatewayz_upstream::Config;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{call, faulty, spawn, with_fault};

async fn embed(address: std::net::SocketAddr, request: &Value) -> Value {
    let answer = call(address, "POST", "/v1/embeddings", &request.to_string()).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body())
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    answer.json()
}

fn floats(embedding: &Value) -> Vec<f32> {
    embedding
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap() as f32)
        .collect()
}

/// A decoder independent of the server's encoder.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| match byte {
        b'A'..=b'Z' => u32::from(byte - b'A'),
        b'a'..=b'z' => u32::from(byte - b'a') + 26,
        b'0'..=b'9' => u32::from(byte - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {byte}"),
    };
    let mut out = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = group.iter().copied().filter(|byte| *byte != b'=').collect();
        let n = digits.iter().fold(0, |n, byte| n << 6 | value(*byte)) << (6 * (4 - digits.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

#[tokio::test]
async fn answers_an_openai_embedding_list_of_unit_vectors_for_a_string() {
    let address = spawn(Config::default()).await;

    let list = embed(
        address,
        &json!({"model": "text-embedding-3-small", "input": "two words"}),
    )
    .await;

    assert_eq!(list["object"], "list");
    assert_eq!(list["model"], "text-embedding-3-small");
    assert_eq!(list["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    let vector = floats(&data[0]["embedding"]);
    assert_eq!(vector.len(), 8);
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
}

#[tokio::test]
async fn the_same_input_gets_the_same_vector_and_other_inputs_other_vectors() {
    let address = spawn(Config::default()).await;
    let first = embed(address, &json!({"model": "m", "input": "alpha"})).await;
    let other_run = spawn(Config::default()).await;

    let again = embed(other_run, &json!({"model": "m", "input": "alpha"})).await;
    let batch = embed(address, &json!({"model": "m", "input": ["beta", "alpha"]})).await;

    let alpha = floats(&first["data"][0]["embedding"]);
    assert_eq!(floats(&again["data"][0]["embedding"]), alpha);
    assert_eq!(batch["data"][1]["index"], 1);
    assert_eq!(floats(&batch["data"][1]["embedding"]), alpha);
    assert_ne!(floats(&batch["data"][0]["embedding"]), alpha);
    assert_eq!(batch["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn base64_embeddings_decode_to_the_same_little_endian_floats() {
    let address = spawn(Config::default()).await;
    let request =
        |format: &str| json!({"model": "m", "input": "a b c", "dimensions": 33, "encoding_format": format});

    let as_floats = embed(address, &request("float")).await;
    let as_base64 = embed(address, &request("base64")).await;

    let expected = floats(&as_floats["data"][0]["embedding"]);
    assert_eq!(expected.len(), 33);
    let bytes = decode_base64(as_base64["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, expected);
    assert_eq!(as_base64["usage"], as_floats["usage"]);
}

#[tokio::test]
async fn embeds_token_arrays_counting_their_length() {
    let address = spawn(Config::default()).await;

    let one = embed(address, &json!({"model": "m", "input": [5, 6, 7]})).await;
    let two = embed(address, &json!({"model": "m", "input": [[5, 6, 7], [8]]})).await;

    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["usage"]["prompt_tokens"], 3);
    assert_eq!(two["data"].as_array().unwrap().len(), 2);
    assert_eq!(two["usage"]["prompt_tokens"], 4);
    assert_eq!(two["data"][0]["embedding"], one["data"][0]["embedding"]);
}

#[tokio::test]
async fn refuses_a_missing_or_invalid_input_and_bad_dimensions_with_an_openai_error() {
    let address = spawn(Config::default()).await;
    let cases = [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": [1, "x"]}), "input"),
        (json!({"model": "m", "input": {"text": "x"}}), "input"),
        (json!({"input": "x"}), "model"),
        (json!({"model": "m", "input": "x", "dimensions": 0}), "dimensions"),
        (
            json!({"model": "m", "input": "x", "dimensions": 4097}),
            "dimensions",
        ),
        (
            json!({"model": "m", "input": "x", "dimensions": "8"}),
            "dimensions",
        ),
        (
            json!({"model": "m", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
    ];

    for (request, param) in cases {
        let answer = call(address, "POST", "/embeddings", &request.to_string()).await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{request}");
        let error = &answer.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{request}");
        assert_eq!(error["param"], param, "{request}");
        assert!(error["message"].is_string());
    }
    let broken = call(address, "POST", "/v1/embeddings", "{not json").await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(broken.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn accepts_the_largest_dimensions_and_answers_an_injected_status() {
    let address = spawn(faulty(2)).await;
    let request = json!({"model": "m", "input": "x", "dimensions": 4096}).to_string();

    let largest = call(address, "POST", "/v1/embeddings", &request).await;
    let limited = call(address, "POST", "/v1/embeddings", &with_fault(&request, "429")).await;
    let cut = call(address, "POST", "/v1/embeddings", &with_fault(&request, "cut")).await;
    let get = call(address, "GET", "/v1/embeddings", "").await;

    assert_eq!(
        largest.json()["data"][0]["embedding"].as_array().unwrap().len(),
        4096
    );
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert_eq!(cut.status, StatusCode::BAD_REQUEST);
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(get.json()["error"]["message"].is_string());
}
