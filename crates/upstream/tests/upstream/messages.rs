//! Anthropic's Messages API: the echo, the headers it saw, the token count,
//! the stream's events, errors in Anthropic's shape and injected faults.

use std::net::SocketAddr;
use std::time::Duration;

use gatewayz_upstream::Config;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Answer, call_with, faulty, named_events, paced, spawn, with_fault};

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn conversation(stream: bool) -> Value {
    json!({"model": "claude-3-5-haiku", "max_tokens": 64, "stream": stream, "system": "be brief",
    "messages": [
        {"role": "user", "content": "an old question"},
        {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
    ]})
}

async fn post(address: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    call_with(address, "POST", path, headers, body).await
}

#[tokio::test]
async fn answers_an_anthropic_message_echoing_the_last_user_text_and_the_headers_it_saw() {
    let address = spawn(Config::default()).await;
    let headers = [
        VERSION,
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("x-api-key", "k"),
    ];

    let answer = post(
        address,
        "/v1/messages",
        &headers,
        &conversation(false).to_string(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let message = answer.json();
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-3-5-haiku");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "You said: hello there"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 2 + 3 + 2 + 2, "output_tokens": 4,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    assert_eq!(
        message["upstream_saw"],
        json!({"anthropic_version": "2023-06-01", "anthropic_beta": "prompt-caching-2024-07-31"})
    );
}

#[tokio::test]
async fn says_which_anthropic_headers_were_missing_and_answers_without_v1() {
    let address = spawn(Config::default()).await;

    let answer = post(address, "/messages", &[], &conversation(false).to_string()).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["upstream_saw"],
        json!({"anthropic_version": null, "anthropic_beta": null})
    );
}

#[tokio::test]
async fn counts_the_tokens_the_message_would_report() {
    let address = spawn(Config::default()).await;
    let mut request = conversation(false);
    let message = post(address, "/v1/messages", &[VERSION], &request.to_string()).await;
    request.as_object_mut().unwrap().remove("max_tokens");

    let counted = post(
        address,
        "/v1/messages/count_tokens",
        &[VERSION],
        &request.to_string(),
    )
    .await;
    let bare = post(
        address,
        "/messages/count_tokens",
        &[VERSION],
        &request.to_string(),
    )
    .await;

    assert_eq!(counted.status, StatusCode::OK);
    assert_eq!(
        counted.json(),
        json!({"input_tokens": message.json()["usage"]["input_tokens"]})
    );
    assert_eq!(bare.json(), counted.json());
}

#[tokio::test]
async fn streams_anthropic_events_in_order_one_delta_per_word() {
    let address = spawn(Config::default()).await;

    let answer = post(
        address,
        "/v1/messages",
        &[VERSION],
        &conversation(true).to_string(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert!(!answer.broke);
    let events = named_events(&answer);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let deltas = ["content_block_delta"; 4];
    let expected: Vec<&str> = ["message_start", "content_block_start", "ping"]
        .into_iter()
        .chain(deltas)
        .chain(["content_block_stop", "message_delta", "message_stop"])
        .collect();
    assert_eq!(names, expected);
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "claude-3-5-haiku");
    assert_eq!(start["usage"]["input_tokens"], 9);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["upstream_saw"]["anthropic_version"], "2023-06-01");
    assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events[3..7]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "You said: hello there");
    assert_eq!(
        events[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 4}})
    );
}

#[tokio::test]
async fn paces_the_deltas_but_not_the_opening_events() {
    let gap = Duration::from_millis(50);
    let address = spawn(paced(gap)).await;

    let answer = post(
        address,
        "/v1/messages",
        &[VERSION],
        &conversation(true).to_string(),
    )
    .await;

    // One frame per event: 3 opening events, 4 deltas, 3 closing ones.
    assert_eq!(answer.frames.len(), 10);
    let since_sent = |index: usize| answer.frames[index].0 - answer.sent;
    assert!(since_sent(3) < gap, "{:?}", since_sent(3));
    assert!(since_sent(6) >= gap * 3, "{:?}", since_sent(6));
    assert!(
        since_sent(6) < gap * 3 + Duration::from_millis(100),
        "{:?}",
        since_sent(6)
    );
}

#[tokio::test]
async fn refuses_a_message_without_max_tokens_or_messages_in_anthropic_shape() {
    let address = spawn(Config::default()).await;
    let mut without_max_tokens = conversation(false);
    without_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let mut without_messages = conversation(false);
    without_messages.as_object_mut().unwrap().remove("messages");

    for (request, field) in [(without_max_tokens, "max_tokens"), (without_messages, "messages")] {
        let answer = post(address, "/v1/messages", &[VERSION], &request.to_string()).await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let body = answer.json();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let get = call_with(address, "GET", "/v1/messages", &[], "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.json()["type"], "error");
}

#[tokio::test]
async fn answers_an_injected_status_with_an_anthropic_error_typed_by_status() {
    let address = spawn(faulty(2)).await;
    let cases = [
        ("429", StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ("529", StatusCode::from_u16(529).unwrap(), "overloaded_error"),
        ("503", StatusCode::SERVICE_UNAVAILABLE, "api_error"),
        ("500", StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
    ];

    for (fault, status, kind) in cases {
        for stream in [false, true] {
            let body = with_fault(&conversation(stream).to_string(), fault);
            let answer = post(address, "/v1/messages", &[VERSION], &body).await;

            assert_eq!(answer.status, status);
            let body = answer.json();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind);
            assert_eq!(
                answer.retry_after.is_some(),
                status == StatusCode::TOO_MANY_REQUESTS
            );
        }
    }
}

#[tokio::test]
async fn cuts_a_stream_after_its_first_delta_without_message_stop() {
    let address = spawn(faulty(2)).await;
    let body = with_fault(&conversation(true).to_string(), "cut");

    let answer = post(address, "/v1/messages", &[VERSION], &body).await;
    let whole = post(
        address,
        "/v1/messages",
        &[VERSION],
        &with_fault(&conversation(false).to_string(), "cut"),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.broke, "the body ended cleanly");
    let names: Vec<String> = named_events(&answer).into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    assert_eq!(whole.status, StatusCode::BAD_REQUEST);
    assert_eq!(whole.json()["type"], "error");
}
