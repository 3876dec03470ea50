//! The APIs beside chat on a direct upstream: the Messages API asked as a
//! chat completion and answered as a message, Anthropic's token count
//! refused, the Responses API served only where the catalog lists it.

use futures::StreamExt;
use gatewayz_adapters::direct::UpstreamSpec;
use gatewayz_domain::{ChatError, ChatProvider, Endpoint, ResponseAction, Service};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    UPSTREAM, assert_no_request, by_id_on, call, client, direct, only_request, spec, sse, sse_response,
};

/// Asserts that `error` is the 400 refusing an API the upstream lacks.
fn assert_not_served(error: &ChatError, api: &str) {
    let ChatError::Invalid(refusal) = error else {
        panic!("not refused as invalid: {error:?}");
    };
    assert_eq!(refusal.code.as_deref(), Some("endpoint_not_supported"));
    assert_eq!(refusal.param.as_deref(), Some("model"));
    assert!(
        refusal.message.contains(api) && refusal.message.contains(&format!("upstream `{UPSTREAM}`")),
        "{}",
        refusal.message
    );
}

#[tokio::test]
async fn a_messages_call_is_sent_as_a_chat_completion_and_answered_as_a_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_json(json!({"model": "llama-3-8b", "max_tokens": 10,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "chatcmpl-1",
            "object": "chat.completion", "created": 1, "model": "llama-3-8b",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 10}})))
        .expect(1)
        .mount(&server)
        .await;
    let body = json!({"model": "llama-3-8b", "max_tokens": 10, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]});

    let message = direct(&server)
        .complete(call(Endpoint::Messages, &body))
        .await
        .unwrap();

    let value: Value = serde_json::from_slice(&message.json()).unwrap();
    assert_eq!(value["type"], "message");
    assert_eq!(value["role"], "assistant");
    assert_eq!(value["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(value["stop_reason"], "max_tokens");
    assert_eq!(value["usage"]["input_tokens"], 9);
    assert_eq!(message.usage().map(|usage| usage.completion_tokens), Some(10));
    let request = only_request(&server).await;
    assert!(request.headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_messages_stream_is_sent_as_a_chat_stream_and_written_as_anthropic_events() {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "llama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let events = sse(&[
        chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), json!("stop")),
        json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "llama",
            "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
        .to_string(),
        "[DONE]".to_owned(),
    ]);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(sse_response(events))
        .expect(1)
        .mount(&server)
        .await;
    let body = json!({"model": "llama", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});

    let items: Vec<Value> = direct(&server)
        .stream(call(Endpoint::Messages, &body))
        .await
        .unwrap()
        .map(|item| serde_json::from_slice(item.unwrap().json()).unwrap())
        .collect()
        .await;

    let kinds: Vec<_> = items
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let text: String = items
        .iter()
        .filter_map(|event| event["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(items[5]["usage"]["output_tokens"], 2);
    assert_eq!(items[5]["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn a_messages_stream_refused_before_its_first_chunk_is_a_plain_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"message": "The model `llama` does not exist.", "type": "NotFoundError"}}),
        ))
        .mount(&server)
        .await;
    let body = json!({"model": "llama", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});

    let error = direct(&server)
        .stream(call(Endpoint::Messages, &body))
        .await
        .err()
        .unwrap();

    assert!(
        matches!(&error, ChatError::UpstreamRejected(e) if e.status == Some(404)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_token_count_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let body = json!({"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]});

    let error = direct(&server)
        .complete(call(Endpoint::CountTokens, &body))
        .await
        .unwrap_err();

    assert_not_served(&error, "token count");
    assert_no_request(&server).await;
}

#[tokio::test]
async fn the_responses_api_is_refused_without_a_request_where_the_catalog_does_not_list_it() {
    let server = MockServer::start().await;
    // The default services: chat, embeddings, messages.
    let adapter = client(UpstreamSpec {
        services: None,
        ..spec(&server.uri())
    });
    let body = json!({"model": "llama-3-8b", "input": "x"});
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);

    let errors = [
        adapter
            .complete(call(Endpoint::Responses, &body))
            .await
            .unwrap_err(),
        adapter
            .stream(call(Endpoint::Responses, &stream_body))
            .await
            .err()
            .unwrap(),
        adapter
            .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Retrieve, None))
            .await
            .unwrap_err(),
        adapter
            .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Cancel, None))
            .await
            .unwrap_err(),
    ];

    for error in &errors {
        assert_not_served(error, "Responses API");
    }
    assert_no_request(&server).await;
}

#[tokio::test]
async fn embeddings_are_refused_without_a_request_where_the_catalog_does_not_list_them() {
    let server = MockServer::start().await;
    let adapter = client(UpstreamSpec {
        services: Some(vec![Service::Chat]),
        ..spec(&server.uri())
    });

    let error = adapter
        .complete(call(Endpoint::Embeddings, &json!({"model": "bge", "input": "x"})))
        .await
        .unwrap_err();

    assert_not_served(&error, "/embeddings");
    assert_no_request(&server).await;
}

#[tokio::test]
async fn a_listed_responses_stream_is_read_event_by_event_to_its_last_event() {
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_9"}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "delta": "a"}),
        json!({"type": "response.completed", "sequence_number": 2,
            "response": {"id": "resp_9", "usage": {"input_tokens": 1, "output_tokens": 1}}}),
    ]
    .iter()
    .map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap()))
    .collect::<String>();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response(events))
        .expect(1)
        .mount(&server)
        .await;

    let items: Vec<_> = direct(&server)
        .stream(call(
            Endpoint::Responses,
            &json!({"model": "llama-3-8b", "input": "x", "stream": true}),
        ))
        .await
        .unwrap()
        .collect()
        .await;

    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().response_id(), Some("resp_9"));
    let last = items[2].as_ref().unwrap();
    assert!(last.usage_is_final() && last.is_finished());
}

/// The Messages API is sent to a direct upstream as chat completions: an
/// upstream that would offer it without chat is refused when it is
/// declared, not on every call.
#[test]
fn an_upstream_listing_messages_without_chat_is_refused_when_declared() {
    let error = gatewayz_adapters::direct::DirectUpstream::new(UpstreamSpec {
        services: Some(vec![Service::Messages]),
        ..spec("http://127.0.0.1:9")
    })
    .unwrap_err();

    assert_eq!(error.0, "endpoints");
    assert!(error.1.contains("list `chat` too"), "{}", error.1);
}

/// A Messages call to an upstream that offers neither chat nor messages is
/// refused naming the Messages API the client called, not chat completions.
#[tokio::test]
async fn a_messages_call_to_an_upstream_without_it_is_refused_naming_the_messages_api() {
    let server = MockServer::start().await;
    let adapter = client(UpstreamSpec {
        services: Some(vec![Service::Embeddings]),
        ..spec(&server.uri())
    });
    let body =
        json!({"model": "llama-3-8b", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});

    let error = adapter
        .complete(call(Endpoint::Messages, &body))
        .await
        .unwrap_err();

    assert_not_served(&error, "/v1/messages");
    assert_no_request(&server).await;
}
