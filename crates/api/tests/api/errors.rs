//! Every class of bad input gets a 4xx in OpenAI's error shape, and nothing a
//! client sends crashes or wedges the server.

use std::time::Duration;

use gatewayz_adapters::mock::MockChatProvider;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_openai_error, chat_body, chat_body_with, demo_service};

async fn refused(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(content_type, "application/json", "{body}");
    assert_openai_error(&body);
    (status, body)
}

/// A gateway whose provider must never be called: every request here is
/// refused before it.
async fn guarded_app(vars: &[(&str, &str)]) -> TestApp {
    let mut provider = MockChatProvider::new();
    provider.expect_complete().never();
    provider.expect_stream().never();
    TestApp::spawn(crate::helpers::mock_service(provider), vars).await
}

#[tokio::test]
async fn invalid_bodies_get_400_naming_the_param() {
    let app = guarded_app(&[]).await;
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        // Missing fields.
        (
            chat_body_with(json!({"model": null})),
            Some("model"),
            "Missing required parameter",
        ),
        (
            chat_body_with(json!({"messages": null})),
            Some("messages"),
            "Missing required parameter",
        ),
        (
            chat_body_with(json!({"messages": [{"content": "x"}]})),
            Some("messages[0].role"),
            "Missing",
        ),
        // Wrong types.
        (
            chat_body_with(json!({"temperature": "hot"})),
            Some("temperature"),
            "invalid type",
        ),
        (
            chat_body_with(json!({"messages": "hi"})),
            Some("messages"),
            "invalid type",
        ),
        (
            chat_body_with(json!({"messages": [{"role": "user", "content": 5}]})),
            Some("messages[0].content"),
            "a string or an array",
        ),
        (
            chat_body_with(json!({"stream": "yes"})),
            Some("stream"),
            "invalid type",
        ),
        (
            chat_body_with(json!({"provider": 1})),
            Some("provider"),
            "must be a string",
        ),
        // Invalid values.
        (
            chat_body_with(json!({"messages": [{"role": "robot", "content": "x"}]})),
            Some("messages[0].role"),
            "unknown variant `robot`",
        ),
        (chat_body_with(json!({"model": ""})), Some("model"), "non-empty"),
        (
            chat_body_with(json!({"messages": []})),
            Some("messages"),
            "at least one",
        ),
        (
            chat_body_with(json!({"temperature": 2.5})),
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            chat_body_with(json!({"top_p": -0.1})),
            Some("top_p"),
            "between 0 and 1",
        ),
        (
            chat_body_with(json!({"frequency_penalty": 2.1})),
            Some("frequency_penalty"),
            "between -2 and 2",
        ),
        (
            chat_body_with(json!({"presence_penalty": -3})),
            Some("presence_penalty"),
            "between -2 and 2",
        ),
        (
            chat_body_with(json!({"max_tokens": 0})),
            Some("max_tokens"),
            "at least 1",
        ),
        (
            chat_body_with(json!({"max_completion_tokens": -5})),
            Some("max_completion_tokens"),
            "at least 1",
        ),
        (chat_body_with(json!({"n": 0})), Some("n"), "at least 1"),
        (
            chat_body_with(json!({"max_tokens": 1e40})),
            Some("max_tokens"),
            "invalid type",
        ),
        // Routing.
        (
            chat_body_with(json!({"provider": null, "model": "@acme/x"})),
            Some("model"),
            "Unsupported provider `acme`",
        ),
        (
            chat_body_with(json!({"provider": "acme"})),
            Some("provider"),
            "Supported providers: demo",
        ),
        (
            chat_body_with(json!({"provider": "portkey", "portkey_provider": "openai"})),
            Some("provider"),
            "not enabled",
        ),
    ];

    for (body, param, needle) in cases {
        let (status, response) = refused(app.post_chat(&body).await).await;
        assert_eq!(status, 400, "{body} -> {response}");
        assert_eq!(response["error"]["param"].as_str(), param, "{body} -> {response}");
        assert_eq!(response["error"]["type"], "invalid_request_error");
        let message = response["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{body}: expected {needle:?} in {message:?}"
        );
    }
}

#[tokio::test]
async fn a_model_nothing_routes_gets_404_model_not_found() {
    let app = guarded_app(&[]).await;

    let (status, body) = refused(
        app.post_chat(&chat_body_with(
            json!({"provider": null, "model": "no-such-model"}),
        ))
        .await,
    )
    .await;

    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`no-such-model`") && message.contains("@<portkey_provider>/<model>"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_json_gets_400() {
    let app = guarded_app(&[]).await;
    let trailing = format!("{} trailing", chat_body());
    let cases = [
        "{",
        "{\"model\": }",
        "not json",
        "",
        "   ",
        "[]",
        "42",
        "null",
        &trailing,
    ];

    for raw in cases {
        let response = app
            .chat()
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .send()
            .await
            .unwrap();
        let (status, body) = refused(response).await;
        assert_eq!(status, 400, "{raw:?} -> {body}");
        assert_eq!(body["error"]["code"], "invalid_json", "{raw:?} -> {body}");
    }
}

#[tokio::test]
async fn a_body_declared_as_anything_but_json_gets_415() {
    let app = guarded_app(&[]).await;

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = app
            .chat()
            .header("content-type", content_type)
            .body(chat_body().to_string())
            .send()
            .await
            .unwrap();
        let (status, body) = refused(response).await;
        assert_eq!(status, 415, "{content_type}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
}

#[tokio::test]
async fn json_with_a_charset_or_no_content_type_is_accepted() {
    let app = TestApp::demo().await;

    for content_type in [
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        None,
    ] {
        let mut request = app.chat().body(chat_body().to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{content_type:?}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_whether_or_not_its_length_is_declared() {
    let app = guarded_app(&[("GATEWAYZ_MAX_BODY_BYTES", "1024")]).await;
    let big = chat_body_with(json!({"messages": [{"role": "user", "content": "x".repeat(2048)}]}));

    let declared = app.post_chat(&big).await;
    let (status, body) = refused(declared).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let bytes = big.to_string().into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(256).map(|chunk| Ok(chunk.to_vec())).collect();
    let chunked = app
        .chat()
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, _) = refused(chunked).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_openai_shaped_errors() {
    let app = TestApp::demo().await;

    let (status, body) = refused(app.client.get(app.url("/v1/nope")).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    let (status, body) = refused(
        app.client
            .get(app.url("/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn garbage_never_crashes_or_wedges_the_server() {
    let app = TestApp::spawn(demo_service(), &[]).await;
    // Deterministic pseudo-random bodies: bounded in count, each request
    // bounded in time by the client.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let seed = chat_body().to_string().into_bytes();
    for round in 0..200 {
        let mut body = seed.clone();
        for _ in 0..(round % 8 + 1) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % body.len();
            body[at] = (state >> 32) as u8;
        }
        let response = app
            .chat()
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status == 200 || (400..500).contains(&status),
            "{status} for {:?}",
            String::from_utf8_lossy(&body)
        );
        if status != 200 {
            refused(response).await;
        }
    }

    let health = tokio::time::timeout(Duration::from_secs(5), app.client.get(app.url("/healthz")).send())
        .await
        .expect("the server still answers")
        .unwrap();
    assert_eq!(health.status(), 200);
}
