//! Each API on the demo provider (the default catalog's `demo-1` and
//! `demo-embedding-1`), whole and streamed: its shape, its `gateway_usage`,
//! and the gateway key sent as `x-api-key`.

use serde_json::{Value, json};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_anthropic_error, assert_gateway_usage,
    count_request, message_request, names, post, priced, response_request, status_and_json, streamed_text,
    the_event, typed_events,
};
use crate::helpers::{KEY, TestApp, assert_openai_error};

/// `demo-1`'s and `demo-embedding-1`'s prices, in dollars a million tokens.
const DEMO_INPUT: f64 = 0.10;
const DEMO_OUTPUT: f64 = 0.20;
const EMBEDDING_INPUT: f64 = 0.02;

fn floats(embedding: &Value) -> Vec<f32> {
    embedding
        .as_array()
        .unwrap_or_else(|| panic!("a float vector: {embedding}"))
        .iter()
        .map(|value| value.as_f64().unwrap() as f32)
        .collect()
}

fn norm(vector: &[f32]) -> f64 {
    vector
        .iter()
        .map(|value| f64::from(*value).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Standard base64 (with padding) decoded; this crate has no base64 library.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text = text.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut held) = (0_u32, 0_u32);
    for symbol in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|known| *known == symbol)
            .unwrap_or_else(|| panic!("`{}` is not base64", symbol as char));
        bits = (bits << 6) | value as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    bytes
}

async fn embed(app: &TestApp, body: &Value) -> Value {
    let (status, answer) = status_and_json(post(app, EMBEDDINGS, body).await).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn embeddings_are_unit_vectors_of_the_inputs_content_with_gateway_usage() {
    let app = TestApp::production(&[]).await;
    let body = json!({"model": "demo-embedding-1", "input": ["hello world", "bye", "hello world"]});

    let answer = embed(&app, &body).await;

    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "demo-embedding-1");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{answer}");
    let vectors: Vec<Vec<f32>> = data.iter().map(|item| floats(&item["embedding"])).collect();
    for (index, (item, vector)) in data.iter().zip(&vectors).enumerate() {
        assert_eq!(
            (&item["object"], &item["index"]),
            (&json!("embedding"), &json!(index))
        );
        assert_eq!(vector.len(), 64, "the default dimensions");
        assert!(
            (norm(vector) - 1.0).abs() < 1e-5,
            "a unit vector: {}",
            norm(vector)
        );
    }
    assert_eq!(vectors[0], vectors[2], "the same input, the same vector");
    assert_ne!(vectors[0], vectors[1]);
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(tokens, 5, "a token a word: {answer}");
    assert_gateway_usage(&answer, Some(priced(tokens, EMBEDDING_INPUT)));

    let again = embed(&app, &body).await;
    assert_eq!(again["data"], answer["data"], "the same on every request");
}

#[tokio::test]
async fn embeddings_have_the_dimensions_asked_and_base64_is_the_float_vector() {
    let app = TestApp::production(&[]).await;
    let floats_answer = embed(
        &app,
        &json!({"model": "demo-embedding-1", "input": "x y", "dimensions": 7}),
    )
    .await;
    let base64_answer = embed(
        &app,
        &json!({"model": "demo-embedding-1", "input": "x y", "dimensions": 7, "encoding_format": "base64"}),
    )
    .await;

    let vector = floats(&floats_answer["data"][0]["embedding"]);
    assert_eq!(vector.len(), 7);
    assert!((norm(&vector) - 1.0).abs() < 1e-5);
    let text = base64_answer["data"][0]["embedding"]
        .as_str()
        .unwrap_or_else(|| panic!("base64 is a string: {base64_answer}"));
    let decoded: Vec<f32> = base64_decode(text)
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vector, "little-endian f32s of the float vector");
    assert_gateway_usage(&base64_answer, Some(priced(2, EMBEDDING_INPUT)));
}

#[tokio::test]
async fn a_message_echoes_the_user_and_its_token_count_matches_its_usage() {
    let app = TestApp::production(&[]).await;

    let response = app
        .client
        .post(app.url(MESSAGES))
        .header("x-api-key", KEY)
        .json(&message_request("demo-1", "Hello there", false))
        .send()
        .await
        .unwrap();

    let (status, message) = status_and_json(response).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        (&message["type"], &message["role"]),
        (&json!("message"), &json!("assistant"))
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "You said: Hello there"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    let input = message["usage"]["input_tokens"].as_u64().unwrap();
    let output = message["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output, 4, "a token a word: {message}");
    assert_gateway_usage(
        &message,
        Some(priced(input, DEMO_INPUT) + priced(output, DEMO_OUTPUT)),
    );

    let response = app
        .client
        .post(app.url(COUNT_TOKENS))
        .header("x-api-key", KEY)
        .json(&count_request("demo-1", "Hello there"))
        .send()
        .await
        .unwrap();
    let (status, count) = status_and_json(response).await;
    assert_eq!(status, 200, "{count}");
    assert_eq!(count["input_tokens"], input, "{count}");
    assert_gateway_usage(&count, None);
}

#[tokio::test]
async fn a_streamed_message_is_anthropics_events_in_order_with_usage_on_message_delta() {
    let app = TestApp::production(&[]).await;

    let response = post(&app, MESSAGES, &message_request("demo-1", "Hello there", true)).await;

    let events = typed_events(response).await;
    let order = names(&events);
    let deltas = order
        .iter()
        .filter(|name| **name == "content_block_delta")
        .count();
    assert!(deltas >= 2, "a delta a word: {order:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(order, expected);
    assert_eq!(streamed_text(&events), "You said: Hello there");
    let start = the_event(&events, "message_start");
    let delta = the_event(&events, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let input = start["message"]["usage"]["input_tokens"].as_u64().unwrap();
    let output = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output, 4);
    assert_gateway_usage(
        delta,
        Some(priced(input, DEMO_INPUT) + priced(output, DEMO_OUTPUT)),
    );
    let annotated = events
        .iter()
        .filter(|event| event.data.get("gateway_usage").is_some())
        .count();
    assert_eq!(annotated, 1, "only the final usage's event");
}

#[tokio::test]
async fn a_response_is_created_with_its_output_usage_and_gateway_usage() {
    let app = TestApp::production(&[]).await;

    let (status, response) =
        status_and_json(post(&app, RESPONSES, &response_request("demo-1", "Hello there", false)).await).await;

    assert_eq!(status, 200, "{response}");
    assert_eq!(
        (&response["object"], &response["status"]),
        (&json!("response"), &json!("completed"))
    );
    assert!(
        response["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{response}"
    );
    assert_eq!(response["output"][0]["role"], "assistant");
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "You said: Hello there"
    );
    let usage = &response["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(usage["total_tokens"], input + output);
    assert_gateway_usage(
        &response,
        Some(priced(input, DEMO_INPUT) + priced(output, DEMO_OUTPUT)),
    );
}

#[tokio::test]
async fn a_streamed_response_runs_from_created_to_completed_with_usage_on_completed() {
    let app = TestApp::production(&[]).await;

    let response = post(&app, RESPONSES, &response_request("demo-1", "Hello there", true)).await;

    let events = typed_events(response).await;
    let order = names(&events);
    assert_eq!(order.first(), Some(&"response.created"), "{order:?}");
    assert_eq!(order.last(), Some(&"response.completed"), "{order:?}");
    assert_eq!(order[1], "response.in_progress");
    let first_delta = order
        .iter()
        .position(|name| *name == "response.output_text.delta")
        .unwrap();
    let done = order
        .iter()
        .position(|name| *name == "response.output_text.done")
        .unwrap();
    assert!(
        order[first_delta..done]
            .iter()
            .all(|name| *name == "response.output_text.delta"),
        "{order:?}"
    );
    let numbers: Vec<u64> = events
        .iter()
        .map(|event| event.data["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{numbers:?}"
    );
    assert_eq!(streamed_text(&events), "You said: Hello there");
    let created = the_event(&events, "response.created");
    let completed = the_event(&events, "response.completed");
    assert_eq!(created["response"]["id"], completed["response"]["id"]);
    assert_eq!(completed["response"]["status"], "completed");
    let usage = &completed["response"]["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert_gateway_usage(
        completed,
        Some(priced(input, DEMO_INPUT) + priced(output, DEMO_OUTPUT)),
    );
    let annotated = events
        .iter()
        .filter(|event| event.data.get("gateway_usage").is_some())
        .count();
    assert_eq!(annotated, 1, "only the final usage's event");
}

#[tokio::test]
async fn an_x_api_key_is_a_gateway_key_and_a_wrong_one_is_refused_in_each_apis_shape() {
    let app = TestApp::production(&[]).await;
    let send = |path: &str, key: Option<&str>, body: Value| {
        let mut request = app.client.post(app.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    let embedding = json!({"model": "demo-embedding-1", "input": "hi"});
    let message = message_request("demo-1", "hi", false);

    for (path, body) in [
        (EMBEDDINGS, embedding.clone()),
        (MESSAGES, message.clone()),
        (RESPONSES, response_request("demo-1", "hi", false)),
    ] {
        assert_eq!(send(path, Some(KEY), body).await.unwrap().status(), 200, "{path}");
    }

    let (status, body) =
        status_and_json(send(MESSAGES, Some("wrong-key"), message.clone()).await.unwrap()).await;
    assert_eq!(status, 401);
    let error = assert_anthropic_error(&body);
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("authentication_error"), &json!("invalid_api_key"))
    );
    let (status, body) = status_and_json(
        send(COUNT_TOKENS, None, count_request("demo-1", "hi"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(assert_anthropic_error(&body)["code"], "missing_api_key");

    let (status, body) = status_and_json(send(EMBEDDINGS, Some("wrong-key"), embedding).await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(assert_openai_error(&body)["code"], "invalid_api_key");
    let (status, body) = status_and_json(
        send(RESPONSES, None, response_request("demo-1", "hi", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(assert_openai_error(&body)["code"], "missing_api_key");
}
