//! The other cached APIs: embeddings, and Anthropic Messages (a whole
//! message replayed as Anthropic's events, a stream replayed whole).

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Answer, Gateway, assert_cached_usage, upstream_calls};
use crate::endpoints::{
    EMBEDDINGS, MESSAGES, RESPONSES, message_request, names, streamed_text, typed_events,
};
use crate::helpers::KEY;

async fn answering(server: &MockServer, at: &str, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(answer)
        .mount(server)
        .await;
}

async fn send(gateway: &Gateway, at: &str, body: &Value) -> reqwest::Response {
    gateway
        .app
        .client
        .post(gateway.app.url(at))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn cache_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-gatewayz-cache")
        .map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn embeddings_are_cached() {
    let portkey = MockServer::start().await;
    let list = json!({"object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}});
    answering(
        &portkey,
        EMBEDDINGS,
        ResponseTemplate::new(200).set_body_json(&list),
    )
    .await;
    let gateway = Gateway::start("embeddings", portkey, &[]).await;
    let body = json!({"model": "embedder", "input": "hi there"});

    let first = Answer::read(send(&gateway, EMBEDDINGS, &body).await).await;
    let second = Answer::read(send(&gateway, EMBEDDINGS, &body).await).await;
    let other = Answer::read(
        send(
            &gateway,
            EMBEDDINGS,
            &json!({"model": "embedder", "input": "bye"}),
        )
        .await,
    )
    .await;

    assert_eq!(
        (first.status, first.cache()),
        (200, Some("miss")),
        "{}",
        first.text
    );
    assert_eq!(
        (second.status, second.cache()),
        (200, Some("hit")),
        "{}",
        second.text
    );
    assert!(second.age.is_some());
    let (stored, _) = first.without_gateway_usage();
    let (replayed, usage) = second.without_gateway_usage();
    assert_eq!(replayed, stored);
    assert_eq!(serde_json::from_str::<Value>(&replayed).unwrap(), list);
    assert_cached_usage(&usage);
    assert_eq!(other.cache(), Some("miss"), "another input, another key");
    assert_eq!(upstream_calls(&gateway.portkey, EMBEDDINGS).await, 2);
}

fn message(text: &str) -> Value {
    json!({"id": "msg_cache", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 9, "output_tokens": 3}})
}

fn message_stream(words: &[&str]) -> String {
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_cache", "type": "message",
                "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    events.extend(words.iter().map(|word| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        )
    }));
    events.extend([
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

#[tokio::test]
async fn a_whole_message_is_cached_and_replayed_as_anthropic_events_to_a_stream() {
    let portkey = MockServer::start().await;
    answering(
        &portkey,
        MESSAGES,
        ResponseTemplate::new(200).set_body_json(message("Hello from Claude")),
    )
    .await;
    let gateway = Gateway::start("messages-whole", portkey, &[]).await;

    let first = Answer::read(send(&gateway, MESSAGES, &message_request("claude", "hi", false)).await).await;
    let second = Answer::read(send(&gateway, MESSAGES, &message_request("claude", "hi", false)).await).await;
    let streamed = send(&gateway, MESSAGES, &message_request("claude", "hi", true)).await;
    let streamed_cache = cache_header(&streamed);
    let events = typed_events(streamed).await;

    assert_eq!(
        (first.status, first.cache()),
        (200, Some("miss")),
        "{}",
        first.text
    );
    assert_eq!(
        (second.status, second.cache()),
        (200, Some("hit")),
        "{}",
        second.text
    );
    let (stored, _) = first.without_gateway_usage();
    let (replayed, usage) = second.without_gateway_usage();
    assert_eq!(replayed, stored);
    assert_cached_usage(&usage);
    assert_eq!(streamed_cache.as_deref(), Some("hit"));
    let order = names(&events);
    assert_eq!(order.first(), Some(&"message_start"), "{order:?}");
    assert_eq!(order.last(), Some(&"message_stop"), "{order:?}");
    for name in [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
    ] {
        assert!(order.contains(&name), "{name} in {order:?}");
    }
    assert_eq!(streamed_text(&events), "Hello from Claude");
    let usage = events
        .iter()
        .find_map(|event| event.data.get("gateway_usage"))
        .unwrap_or_else(|| panic!("no gateway_usage in {order:?}"));
    assert_cached_usage(usage);
    assert_eq!(upstream_calls(&gateway.portkey, MESSAGES).await, 1);
}

#[tokio::test]
async fn a_streamed_message_is_cached_and_replayed_whole_to_a_json_request() {
    let portkey = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(message_stream(&["Hello", " again"]), "text/event-stream"),
        )
        .mount(&portkey)
        .await;
    let gateway = Gateway::start("messages-stream", portkey, &[]).await;

    let streamed = send(&gateway, MESSAGES, &message_request("claude", "hi", true)).await;
    let streamed_cache = cache_header(&streamed);
    let events = typed_events(streamed).await;
    let whole = Answer::read(send(&gateway, MESSAGES, &message_request("claude", "hi", false)).await).await;

    assert_eq!(streamed_cache.as_deref(), Some("miss"));
    assert_eq!(streamed_text(&events), "Hello again");
    assert_eq!(
        (whole.status, whole.cache()),
        (200, Some("hit")),
        "{}",
        whole.text
    );
    let answer = whole.json();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["id"], "msg_cache", "{answer}");
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "Hello again"}]),
        "{answer}"
    );
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert_eq!(answer["usage"]["input_tokens"], 9, "{answer}");
    assert_eq!(answer["usage"]["output_tokens"], 3, "{answer}");
    assert_cached_usage(&answer["gateway_usage"]);
    assert_eq!(upstream_calls(&gateway.portkey, MESSAGES).await, 1);
}

#[tokio::test]
async fn the_responses_api_is_never_cached() {
    let portkey = MockServer::start().await;
    let response = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-4o-mini",
        "output": [], "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}});
    answering(
        &portkey,
        RESPONSES,
        ResponseTemplate::new(200).set_body_json(response),
    )
    .await;
    let gateway = Gateway::start("responses", portkey, &[]).await;
    let body = json!({"model": "cached", "input": "hi"});

    let first = Answer::read(send(&gateway, RESPONSES, &body).await).await;
    let second = Answer::read(send(&gateway, RESPONSES, &body).await).await;

    for answer in [&first, &second] {
        assert_eq!((answer.status, answer.cache()), (200, None), "{}", answer.text);
    }
    assert_eq!(upstream_calls(&gateway.portkey, RESPONSES).await, 2);
}
