//! Chat completions: answers' shapes, the pacing and framing of streams,
//! and the failures a request may ask for.

use std::time::Duration;

use bytes::Bytes;
use gatewayz_upstream::Config;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::helpers::{GATEWAY_BODY, STREAM_BODY, call, events, faulty, spawn, with_fault};

#[tokio::test]
async fn answers_a_chat_completion_with_usage_and_a_length() {
    let address = spawn(Config::default()).await;

    let answer = call(address, "POST", "/v1/chat/completions", GATEWAY_BODY).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.content_length, Some(answer.body().len().to_string()));
    let json = answer.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-4o-mini");
    assert!(json["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(json["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(json["choices"][0]["index"], 0);
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert!(
        !json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    let usage = &json["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn answers_on_the_path_portkey_is_called_on_too_and_refuses_others() {
    let address = spawn(Config::default()).await;

    let bare = call(address, "POST", "/chat/completions", GATEWAY_BODY).await;
    let elsewhere = call(address, "POST", "/v1/images/generations", GATEWAY_BODY).await;
    let get = call(address, "GET", "/v1/chat/completions", "").await;

    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(bare.json()["object"], "chat.completion");
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert!(elsewhere.json()["error"]["message"].is_string());
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn streams_the_chunks_then_finish_usage_and_done() {
    let address = spawn(Config {
        chunks: 5,
        ..Config::default()
    })
    .await;

    let answer = call(address, "POST", "/v1/chat/completions", STREAM_BODY).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    let events = events(&answer);
    assert_eq!(events.len(), 5 + 3, "{events:?}");
    let chunks: Vec<Value> = events[..7]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    for (index, chunk) in chunks[..5].iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], format!("tok{index} "));
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"], serde_json::json!([]));
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 5);
    assert_eq!(events[7], "[DONE]");
}

#[tokio::test]
async fn reads_the_stream_flag_with_a_space_after_the_colon() {
    let address = spawn(Config::default()).await;
    let body = r#"{"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": []}"#;

    let answer = call(address, "POST", "/v1/chat/completions", body).await;

    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert_eq!(events(&answer).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn leaves_the_usage_chunk_out_when_not_asked_for_it() {
    let address = spawn(Config {
        chunks: 2,
        ..Config::default()
    })
    .await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;

    let answer = call(address, "POST", "/v1/chat/completions", body).await;

    let events = events(&answer);
    assert_eq!(events.len(), 2 + 2, "{events:?}");
    assert!(events.iter().all(|event| !event.contains("\"usage\"")));
}

#[tokio::test]
async fn sends_each_chunk_as_its_own_frame_the_gap_apart() {
    let gap = Duration::from_millis(60);
    let address = spawn(Config {
        chunks: 5,
        gap,
        ..Config::default()
    })
    .await;

    let answer = call(address, "POST", "/v1/chat/completions", STREAM_BODY).await;

    // Each frame holds exactly one whole event.
    assert!(
        answer.frames.iter().all(|(_, frame)| frame.starts_with(b"data: ")
            && frame.ends_with(b"\n\n")
            && frame.windows(6).filter(|window| window == b"data: ").count() == 1),
        "{:?}",
        answer.frames
    );
    assert_eq!(answer.frames.len(), 5 + 3);
    // Content chunk k is due k gaps after the first, which left after the
    // request: it cannot arrive sooner. The upper bound leaves room for a
    // loaded machine yet fails if the chunks were held back and sent
    // together (the second would then arrive at 240 ms, not before 210).
    for (index, (arrived, _)) in answer.frames[..5].iter().enumerate() {
        let since_sent = *arrived - answer.sent;
        let due = gap * u32::try_from(index).unwrap();
        assert!(
            since_sent >= due,
            "chunk {index} after {since_sent:?}, due at {due:?}"
        );
        assert!(
            since_sent < due + Duration::from_millis(100),
            "chunk {index} after {since_sent:?}"
        );
    }
    // The chunks are paced: no two of them arrived together.
    for pair in answer.frames[..5].windows(2) {
        assert!(
            pair[1].0 - pair[0].0 > Duration::from_millis(5),
            "{:?}",
            pair[1].0 - pair[0].0
        );
    }
}

#[tokio::test]
async fn waits_the_delay_before_answering() {
    let delay = Duration::from_millis(60);
    let address = spawn(Config {
        delay,
        ..Config::default()
    })
    .await;

    let answer = call(address, "POST", "/v1/chat/completions", GATEWAY_BODY).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.frames[0].0 - answer.sent >= delay);
}

#[tokio::test]
async fn answers_the_status_a_request_asks_for_with_an_openai_error_body() {
    let address = spawn(faulty(4)).await;

    for body in [GATEWAY_BODY, STREAM_BODY] {
        let failed = call(address, "POST", "/v1/chat/completions", &with_fault(body, "500")).await;
        let limited = call(address, "POST", "/v1/chat/completions", &with_fault(body, "429")).await;

        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failed.content_type.as_deref(), Some("application/json"));
        assert_eq!(failed.json()["error"]["type"], "server_error");
        assert!(failed.json()["error"]["message"].is_string());
        assert_eq!(failed.json()["provider"], "openai");
        assert_eq!(failed.retry_after, None);
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
        assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
        assert_eq!(limited.retry_after.as_deref(), Some("1"));
    }
}

#[tokio::test]
async fn cuts_a_stream_halfway_closing_the_connection_before_finish_usage_and_done() {
    let address = spawn(faulty(6)).await;

    let answer = call(
        address,
        "POST",
        "/v1/chat/completions",
        &with_fault(STREAM_BODY, "cut"),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert!(answer.broke, "the body ended cleanly");
    let events = events(&answer);
    assert_eq!(events.len(), 3, "{events:?}");
    for (index, event) in events.iter().enumerate() {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["content"], format!("tok{index} "));
    }
}

#[tokio::test]
async fn the_same_connection_serves_a_good_answer_after_an_injected_status() {
    let address = spawn(faulty(2)).await;
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut statuses = Vec::new();

    for body in [with_fault(GATEWAY_BODY, "503"), GATEWAY_BODY.to_owned()] {
        sender.ready().await.unwrap();
        let request = Request::post("/v1/chat/completions")
            .header("host", address.to_string())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        statuses.push(response.status());
        response.into_body().collect().await.unwrap();
    }

    assert_eq!(statuses, [StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK]);
}

#[tokio::test]
async fn refuses_an_unknown_fault_and_a_cut_of_a_whole_answer() {
    let address = spawn(faulty(2)).await;

    let unknown = call(
        address,
        "POST",
        "/v1/chat/completions",
        &with_fault(GATEWAY_BODY, "slow"),
    )
    .await;
    let whole_cut = call(
        address,
        "POST",
        "/v1/chat/completions",
        &with_fault(GATEWAY_BODY, "cut"),
    )
    .await;

    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream_fault")
    );
    assert_eq!(whole_cut.status, StatusCode::BAD_REQUEST);
    assert!(
        whole_cut.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cut")
    );
}

#[tokio::test]
async fn ignores_the_fault_field_unless_started_with_faults() {
    let address = spawn(Config {
        chunks: 2,
        ..Config::default()
    })
    .await;

    let whole = call(
        address,
        "POST",
        "/v1/chat/completions",
        &with_fault(GATEWAY_BODY, "500"),
    )
    .await;
    let stream = call(
        address,
        "POST",
        "/v1/chat/completions",
        &with_fault(STREAM_BODY, "cut"),
    )
    .await;

    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.json()["object"], "chat.completion");
    assert!(!stream.broke);
    assert_eq!(events(&stream).last().map(String::as_str), Some("[DONE]"));
}
