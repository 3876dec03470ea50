//! A direct upstream's key, held by the adapter, never comes back in an
//! error: an upstream that echoes it (whole, or its first characters) in an
//! error body, a stream's error event or an Azure error has it replaced by
//! `[REDACTED]` in every string of the [`ChatError`].

use futures::StreamExt;
use gatewayz_domain::{ChatError, ChatProvider, Endpoint, ResponseAction};
use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    AZURE, AZURE_KEY, KEY, UPSTREAM, azure_spec, by_id_on, call, call_on, chat_body, chat_call, chunk_json,
    client, direct, server_answering, sse, sse_response, stream_call, upstream_of,
};

/// Asserts that nothing of `key` is in any string of `error`, printed
/// either way, and that something was redacted.
fn assert_scrubbed(error: &ChatError, key: &str) {
    assert_no_key(error, key);
    let printed = format!("{error:?}");
    assert!(printed.contains("[REDACTED]"), "{printed}");
}

/// Asserts that nothing of `key` is in any string of `error`, printed
/// either way.
fn assert_no_key(error: &ChatError, key: &str) {
    let upstream = upstream_of(error);
    let fields = [
        Some(upstream.message.as_str()),
        upstream.param.as_deref(),
        upstream.code.as_deref(),
    ];
    let printed = [format!("{error:?}"), error.to_string()];
    for text in fields
        .into_iter()
        .flatten()
        .chain(printed.iter().map(String::as_str))
    {
        for fragment in [key, &key[..12], &key[..8]] {
            assert!(!text.contains(fragment), "`{fragment}` left in: {text}");
        }
    }
}

/// An error body that holds `key` whole in its message and code, and its
/// first 12 characters in its param.
fn echoing(key: &str) -> serde_json::Value {
    json!({"error": {
        "message": format!("Incorrect API key provided: {key}. You passed {}***.", &key[..12]),
        "type": "invalid_request_error",
        "param": format!("{}…", &key[..12]),
        "code": format!("Bearer {key}"),
    }})
}

#[tokio::test]
async fn a_key_echoed_in_a_json_error_is_redacted_from_message_param_and_code() {
    let server = server_answering(ResponseTemplate::new(401).set_body_json(echoing(KEY))).await;

    let error = direct(&server).complete(chat_call()).await.unwrap_err();

    assert!(matches!(error, ChatError::UpstreamAuth(_)), "{error:?}");
    assert_scrubbed(&error, KEY);
    let upstream = upstream_of(&error);
    assert_eq!(
        upstream.message,
        "Incorrect API key provided: [REDACTED]. You passed [REDACTED]***."
    );
    assert_eq!(upstream.code.as_deref(), Some("Bearer [REDACTED]"));
}

#[tokio::test]
async fn a_key_echoed_in_a_body_that_is_not_json_is_redacted() {
    let cases = [
        (
            format!("<html>Authorization: Bearer {KEY} refused</html>"),
            "<html>Authorization: Bearer [REDACTED] refused</html>".to_owned(),
        ),
        (
            format!("key {} unknown", &KEY[..12]),
            "key [REDACTED] unknown".to_owned(),
        ),
        // Cut to the message's bound in the middle of the key: the key is
        // gone before the cut, which may then cut the marker.
        (
            format!("{}{KEY}", "E".repeat(505)),
            format!("{}[REDACT…", "E".repeat(505)),
        ),
    ];
    for (body, shown) in cases {
        let server = server_answering(ResponseTemplate::new(500).set_body_string(body.clone())).await;

        let error = direct(&server).complete(chat_call()).await.unwrap_err();

        assert!(matches!(error, ChatError::UpstreamFailed(_)), "{body}: {error:?}");
        assert_no_key(&error, KEY);
        assert_eq!(upstream_of(&error).message, shown);
    }
}

#[tokio::test]
async fn a_key_echoed_in_a_stream_error_event_is_redacted_before_and_after_the_first_chunk() {
    let event = echoing(KEY).to_string();
    let first = server_answering(sse_response(sse(std::slice::from_ref(&event)))).await;
    let later = server_answering(sse_response(sse(&[chunk_json("a", None).to_string(), event]))).await;

    let before = direct(&first).stream(stream_call()).await.err().unwrap();
    let items: Vec<_> = direct(&later)
        .stream(stream_call())
        .await
        .unwrap()
        .collect()
        .await;

    assert_scrubbed(&before, KEY);
    assert!(matches!(&items[..], [Ok(_), Err(_)]), "{items:?}");
    assert_scrubbed(items[1].as_ref().unwrap_err(), KEY);
}

#[tokio::test]
async fn a_key_echoed_by_a_stream_refused_with_a_status_is_redacted() {
    let server = server_answering(ResponseTemplate::new(403).set_body_json(echoing(KEY))).await;

    let error = direct(&server).stream(stream_call()).await.err().unwrap();

    assert!(matches!(error, ChatError::UpstreamAuth(_)), "{error:?}");
    assert_scrubbed(&error, KEY);
}

#[tokio::test]
async fn an_azure_key_echoed_in_an_azure_error_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "code": "401",
            "message": format!("Access denied due to invalid subscription key {AZURE_KEY}. Key {} is wrong.", &AZURE_KEY[..12]),
        }})))
        .mount(&server)
        .await;

    let error = client(azure_spec(&server.uri()))
        .complete(call_on(AZURE, Endpoint::Chat, &chat_body()))
        .await
        .unwrap_err();

    assert!(matches!(error, ChatError::UpstreamAuth(_)), "{error:?}");
    assert_scrubbed(&error, AZURE_KEY);
    assert_eq!(
        upstream_of(&error).message,
        "Access denied due to invalid subscription key [REDACTED]. Key [REDACTED] is wrong."
    );
}

#[tokio::test]
async fn a_key_echoed_in_a_failed_call_by_id_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(401).set_body_json(echoing(KEY)))
        .mount(&server)
        .await;

    let error = direct(&server)
        .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Retrieve, None))
        .await
        .unwrap_err();

    assert_scrubbed(&error, KEY);
}

#[tokio::test]
async fn a_key_echoed_to_a_messages_call_sent_as_chat_is_redacted() {
    let json_server = server_answering(ResponseTemplate::new(401).set_body_json(echoing(KEY))).await;
    let stream_server = server_answering(sse_response(sse(&[
        chunk_json("a", None).to_string(),
        echoing(KEY).to_string(),
    ])))
    .await;
    let body = |stream: bool| {
        json!({"model": "llama-3-8b", "max_tokens": 5, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
    };

    let error = direct(&json_server)
        .complete(call(Endpoint::Messages, &body(false)))
        .await
        .unwrap_err();
    let events: Vec<_> = direct(&stream_server)
        .stream(call(Endpoint::Messages, &body(true)))
        .await
        .unwrap()
        .collect()
        .await;

    assert_scrubbed(&error, KEY);
    let failed = events
        .iter()
        .find_map(|event| event.as_ref().err())
        .expect("the stream fails");
    assert_scrubbed(failed, KEY);
}
