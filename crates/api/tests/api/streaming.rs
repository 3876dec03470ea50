use futures::StreamExt;
use futures::channel::mpsc;
use gatewayz_adapters::mock::MockChatProvider;
use gatewayz_domain::{ChatChunk, ChatError, ValidationError};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_openai_error, chat_body_with, next_event, sse_data};

fn chunk(content: &str) -> ChatChunk {
    let chunk = json!({"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1,
        "model": "demo-model", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    ChatChunk::from_json(serde_json::to_vec(&chunk).unwrap().into()).unwrap()
}

/// A provider whose stream yields exactly what the test sends down the channel.
fn channel_provider() -> (
    MockChatProvider,
    mpsc::UnboundedSender<Result<ChatChunk, ChatError>>,
) {
    let (sender, receiver) = mpsc::unbounded();
    let mut provider = MockChatProvider::new();
    provider
        .expect_stream()
        .times(1)
        .return_once(move |_| Ok(receiver.boxed()));
    (provider, sender)
}

#[tokio::test]
async fn a_stream_is_sse_events_in_order_ending_with_done() {
    let app = TestApp::demo().await;

    let response = app.post_chat(&chat_body_with(json!({"stream": true}))).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let events = sse_data(response).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|chunk| chunk["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "You said: Hello there");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last.get("usage").is_none(), "no usage unless asked for: {last}");
    assert!(last["gateway_usage"]["request_ms"].is_number(), "{last}");
}

#[tokio::test]
async fn stream_options_include_usage_adds_a_final_usage_chunk() {
    let app = TestApp::demo().await;

    let response = app
        .post_chat(&chat_body_with(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .await;

    let events = sse_data(response).await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn each_chunk_reaches_the_client_before_the_next_is_produced() {
    let (provider, sender) = channel_provider();
    let app = TestApp::with_provider(provider).await;

    let response = app.post_chat(&chat_body_with(json!({"stream": true}))).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();

    for word in ["one", "two", "three"] {
        sender.unbounded_send(Ok(chunk(word))).unwrap();
        let event: Value = serde_json::from_str(&next_event(&mut body, &mut buffer).await).unwrap();
        assert_eq!(event["choices"][0]["delta"]["content"], word);
    }
    drop(sender);
    let closing: Value = serde_json::from_str(&next_event(&mut body, &mut buffer).await).unwrap();
    assert!(closing["gateway_usage"]["upstream_ms"].is_number(), "{closing}");
    assert_eq!(next_event(&mut body, &mut buffer).await, "[DONE]");
}

#[tokio::test]
async fn a_failure_after_the_first_chunk_is_an_error_event_then_done() {
    let (provider, sender) = channel_provider();
    let app = TestApp::with_provider(provider).await;
    sender.unbounded_send(Ok(chunk("partial"))).unwrap();
    sender
        .unbounded_send(Err(ValidationError::body("upstream went away").into()))
        .unwrap();
    sender.unbounded_send(Ok(chunk("never sent"))).unwrap();
    drop(sender);

    let response = app.post_chat(&chat_body_with(json!({"stream": true}))).await;

    let events = sse_data(response).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(assert_openai_error(&error)["message"], "upstream went away");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn a_failure_before_the_first_chunk_is_a_plain_http_error() {
    let mut provider = MockChatProvider::new();
    provider
        .expect_stream()
        .times(1)
        .returning(|_| Err(ValidationError::new("model", "no such model").into()));
    let app = TestApp::with_provider(provider).await;

    let response = app.post_chat(&chat_body_with(json!({"stream": true}))).await;

    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["param"], "model");
}
