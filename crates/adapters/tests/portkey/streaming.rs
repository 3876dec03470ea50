//! Streams through the adapter: chunks in order, `[DONE]`, failures, deadlines.

use std::time::Duration;

use futures::StreamExt;
use gatewayz_domain::{ChatChunk, ChatError, ChatProvider};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{
    chat_body, chunk_json, only_request, openai_call, provider, server_answering, sse, sse_response,
};

fn stream_body() -> Value {
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

async fn collect(server: &wiremock::MockServer) -> Vec<Result<ChatChunk, ChatError>> {
    provider(server, &[])
        .stream(openai_call(stream_body()))
        .await
        .unwrap()
        .collect()
        .await
}

#[tokio::test]
async fn chunks_arrive_in_order_and_done_ends_the_stream() {
    let mut events: Vec<String> = ["Hel", "lo"]
        .iter()
        .map(|text| chunk_json(text, None).to_string())
        .collect();
    let mut last = chunk_json("!", Some("stop"));
    last["x_upstream"] = json!("kept");
    events.push(last.to_string());
    events.push("[DONE]".into());
    let server = server_answering(sse_response(
        sse(&events).replace("\n\n", "\r\n\r\n") + ": trailing comment\n\n",
    ))
    .await;

    let items = collect(&server).await;

    let chunks: Vec<Value> = items
        .into_iter()
        .map(|item| serde_json::from_slice(item.unwrap().json()).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    assert_eq!(chunks[2]["x_upstream"], "kept");
    let sent: Value = serde_json::from_slice(&only_request(&server).await.body).unwrap();
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true}),
        "stream_options pass through"
    );
}

#[tokio::test]
async fn the_stream_request_asks_for_an_event_stream_with_the_first_byte_deadline() {
    let server = server_answering(sse_response(sse(&[
        chunk_json("a", Some("stop")).to_string(),
        "[DONE]".into(),
    ])))
    .await;

    provider(&server, &[("GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "4321")])
        .stream(openai_call(stream_body()))
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;

    let request = only_request(&server).await;
    assert_eq!(request.headers["accept"], "text/event-stream");
    assert_eq!(request.headers["x-portkey-request-timeout"], "4321");
}

#[tokio::test]
async fn a_broken_event_after_the_first_chunk_ends_the_stream_with_an_error() {
    let server = server_answering(sse_response(sse(&[
        chunk_json("a", None).to_string(),
        "{\"broken\": ".into(),
        chunk_json("never", None).to_string(),
    ])))
    .await;

    let items = collect(&server).await;

    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(
        matches!(items[1], Err(ChatError::InvalidUpstreamResponse(_))),
        "{:?}",
        items[1]
    );
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_an_invalid_upstream_response() {
    let server =
        server_answering(ResponseTemplate::new(200).set_body_json(crate::helpers::completion_json())).await;

    let error = provider(&server, &[])
        .stream(openai_call(stream_body()))
        .await
        .err()
        .unwrap();

    assert!(
        matches!(error, ChatError::InvalidUpstreamResponse(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stream_that_does_not_start_in_time_times_out() {
    let server = server_answering(
        sse_response(sse(&[chunk_json("late", Some("stop")).to_string()])).set_delay(Duration::from_secs(5)),
    )
    .await;

    let error = provider(&server, &[("GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "200")])
        .stream(openai_call(stream_body()))
        .await
        .err()
        .unwrap();

    assert!(
        matches!(&error, ChatError::Timeout(e) if e.message.contains("200 ms")),
        "{error:?}"
    );
}
