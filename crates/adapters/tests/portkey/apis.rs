//! The adapter on the APIs beside chat: each is posted to its own Portkey
//! path, Anthropic's headers are passed on, what Portkey does not serve for
//! a provider is refused before any call, typed stream events are read,
//! and the Responses API's calls by id reach their paths and methods.

use futures::StreamExt;
use gatewayz_domain::{
    ChatError, ChatProvider, ChatRequest, Endpoint, KeyResolver, ProviderCall, RequestContext,
    ResponseAction, ResponseCall, UpstreamProvider,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{keys, provider, route, sse, sse_response};

fn call_to(endpoint: Endpoint, upstream: UpstreamProvider, body: Value) -> ProviderCall {
    let bytes: bytes::Bytes = serde_json::to_vec(&body).unwrap().into();
    let route = route(upstream, None);
    ProviderCall {
        request: ChatRequest::parse_for(endpoint, bytes.clone()).unwrap(),
        body: bytes,
        credentials: keys().resolve(&route).unwrap(),
        route,
        context: RequestContext::new("req-apis"),
    }
}

fn messages_body(stream: bool) -> Value {
    json!({"model": "claude", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn each_api_is_posted_to_its_own_path_and_its_answer_read_for_usage() {
    let server = MockServer::start().await;
    let answers = [
        (
            Endpoint::Embeddings,
            UpstreamProvider::OpenAi,
            "/v1/embeddings",
            json!({"model": "e", "input": "x"}),
            json!({"object": "list", "data": [], "usage": {"prompt_tokens": 7, "total_tokens": 7}}),
            Some((7, 0)),
        ),
        (
            Endpoint::Messages,
            UpstreamProvider::Anthropic,
            "/v1/messages",
            messages_body(false),
            json!({"id": "msg_1", "type": "message", "content": [], "usage": {"input_tokens": 3, "output_tokens": 4}}),
            Some((3, 4)),
        ),
        (
            Endpoint::CountTokens,
            UpstreamProvider::Anthropic,
            "/v1/messages/count_tokens",
            json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"input_tokens": 9}),
            None,
        ),
        (
            Endpoint::Responses,
            UpstreamProvider::OpenAi,
            "/v1/responses",
            json!({"model": "g", "input": "x"}),
            json!({"id": "resp_1", "object": "response", "usage": {"input_tokens": 5, "output_tokens": 6}}),
            Some((5, 6)),
        ),
    ];
    for (_, _, at, _, answer, _) in &answers {
        Mock::given(method("POST"))
            .and(path(*at))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
    }
    let adapter = provider(&server, &[]);

    for (endpoint, upstream, at, body, answer, usage) in answers {
        let response = adapter.complete(call_to(endpoint, upstream, body)).await.unwrap();
        assert_eq!(
            response
                .usage()
                .map(|usage| (usage.prompt_tokens, usage.completion_tokens)),
            usage,
            "{at}"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&response.json()).unwrap(),
            answer,
            "{at}"
        );
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn anthropic_headers_the_client_sent_are_passed_on() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "msg_1", "type": "message", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut call = call_to(
        Endpoint::Messages,
        UpstreamProvider::Anthropic,
        messages_body(false),
    );
    call.context.passed_headers = vec![
        ("anthropic-version", "2023-06-01".into()),
        ("anthropic-beta", "tools-2024-04-04".into()),
        ("anthropic-beta", "prompt-caching-2024-07-31".into()),
    ];

    provider(&server, &[]).complete(call).await.unwrap();

    // Each of a repeated header, not the last one only.
    let sent = server.received_requests().await.unwrap();
    let betas: Vec<_> = sent[0]
        .headers
        .get_all("anthropic-beta")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(betas, ["tools-2024-04-04", "prompt-caching-2024-07-31"]);
}

#[tokio::test]
async fn an_api_portkey_does_not_serve_for_the_provider_is_refused_before_any_call() {
    let server = MockServer::start().await;
    let adapter = provider(&server, &[]);
    let refused = [
        call_to(
            Endpoint::CountTokens,
            UpstreamProvider::OpenAi,
            json!({"model": "l", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        call_to(
            Endpoint::Responses,
            UpstreamProvider::Anthropic,
            json!({"model": "c", "input": "x"}),
        ),
        call_to(
            Endpoint::Embeddings,
            UpstreamProvider::Anthropic,
            json!({"model": "c", "input": "x"}),
        ),
    ];

    for call in refused {
        let Err(ChatError::Invalid(error)) = adapter.complete(call).await else {
            panic!("not refused");
        };
        assert_eq!(error.code.as_deref(), Some("endpoint_not_supported"));
        assert!(error.message.contains("does not serve"), "{}", error.message);
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_typed_stream_is_read_event_by_event_and_an_error_event_fails_it() {
    let events = [
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]
    .iter()
    .map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap()))
    .collect::<String>();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(sse_response(events))
        .mount(&server)
        .await;

    let items: Vec<_> = provider(&server, &[])
        .stream(call_to(
            Endpoint::Messages,
            UpstreamProvider::Anthropic,
            messages_body(true),
        ))
        .await
        .unwrap()
        .collect()
        .await;

    let kinds: Vec<_> = items
        .iter()
        .map(|item| {
            item.as_ref()
                .map(|chunk| chunk.kind().unwrap_or_default().to_owned())
        })
        .collect::<Vec<_>>();
    assert!(
        // An overloaded provider stays one: unavailable, with Anthropic's type as its code.
        matches!(&kinds[..], [Ok(a), Ok(b), Ok(c), Err(ChatError::Unavailable(error))]
            if a == "message_start" && b == "ping" && c == "content_block_delta"
                && error.message == "Overloaded" && error.code.as_deref() == Some("overloaded_error")),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_responses_stream_ends_with_its_last_event_and_no_done() {
    let events = sse(&[
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_9"}}).to_string(),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "delta": "a"}).to_string(),
        json!({"type": "response.completed", "sequence_number": 2,
            "response": {"id": "resp_9", "usage": {"input_tokens": 1, "output_tokens": 1}}})
        .to_string(),
    ]);
    // Without `[DONE]`: the Responses API has none.
    let events = events.replace("data: [DONE]\n\n", "");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response(events))
        .mount(&server)
        .await;

    let items: Vec<_> = provider(&server, &[])
        .stream(call_to(
            Endpoint::Responses,
            UpstreamProvider::OpenAi,
            json!({"model": "g", "input": "x", "stream": true}),
        ))
        .await
        .unwrap()
        .collect()
        .await;

    assert_eq!(items.len(), 3, "{items:?}");
    let first = items[0].as_ref().unwrap();
    assert_eq!(first.response_id(), Some("resp_9"));
    let last = items[2].as_ref().unwrap();
    assert!(last.usage_is_final() && last.is_finished());
}

#[tokio::test]
async fn calls_by_id_reach_their_paths_and_methods_with_the_query() {
    let server = MockServer::start().await;
    for (verb, at) in [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ] {
        Mock::given(method(verb))
            .and(path(at))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"at": at, "verb": verb})))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v1/responses/resp_1/cancel"))
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "Only background responses can be cancelled", "type": "invalid_request_error"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/responses/resp_1/input_items"))
        .and(query_param("limit", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "list"})))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    let adapter = provider(&server, &[]);
    let by_id = |action, query: Option<&str>| {
        let route = route(UpstreamProvider::OpenAi, None);
        ResponseCall {
            action,
            id: "resp_1".into(),
            query: query.map(str::to_owned),
            credentials: keys().resolve(&route).unwrap(),
            route,
            context: RequestContext::new("req-by-id"),
        }
    };

    for action in [
        ResponseAction::Retrieve,
        ResponseAction::Delete,
        ResponseAction::InputItems,
    ] {
        adapter.respond_by_id(by_id(action, None)).await.unwrap();
    }
    let listed = adapter
        .respond_by_id(by_id(ResponseAction::InputItems, Some("limit=2")))
        .await
        .unwrap();
    let cancelled = adapter.respond_by_id(by_id(ResponseAction::Cancel, None)).await;

    assert_eq!(
        serde_json::from_slice::<Value>(&listed).unwrap()["object"],
        "list"
    );
    assert!(
        matches!(&cancelled, Err(ChatError::UpstreamRejected(error)) if error.status == Some(400)),
        "{cancelled:?}"
    );
}

#[tokio::test]
async fn the_messages_api_of_a_chat_only_provider_is_asked_as_a_chat_completion_and_answered_as_a_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_json(json!({"model": "gpt-4o-mini", "max_tokens": 10,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "chatcmpl-1",
            "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 10}})))
        .expect(1)
        .mount(&server)
        .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]});

    let message = provider(&server, &[])
        .complete(call_to(Endpoint::Messages, UpstreamProvider::OpenAi, body))
        .await
        .unwrap();

    let value: Value = serde_json::from_slice(&message.json()).unwrap();
    assert_eq!(value["type"], "message");
    assert_eq!(value["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(value["stop_reason"], "max_tokens");
    assert_eq!(value["usage"]["input_tokens"], 9);
    assert_eq!(message.usage().map(|usage| usage.completion_tokens), Some(10));
}

#[tokio::test]
async fn the_messages_stream_of_a_chat_only_provider_is_written_as_anthropic_events() {
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
        .and(wiremock::matchers::body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(sse_response(events))
        .expect(1)
        .mount(&server)
        .await;

    let items: Vec<_> = provider(&server, &[])
        .stream(call_to(
            Endpoint::Messages,
            UpstreamProvider::OpenAi,
            messages_body(true),
        ))
        .await
        .unwrap()
        .map(|item| serde_json::from_slice::<Value>(item.unwrap().json()).unwrap())
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
    assert_eq!(items[5]["usage"]["output_tokens"], 2);
    assert_eq!(items[5]["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn a_request_whose_translation_the_budget_cannot_hold_is_refused_before_any_call() {
    let server = MockServer::start().await;
    let many = vec![json!({"type": "text", "text": "a"}); 20_000];
    let mut call = call_to(
        Endpoint::Messages,
        UpstreamProvider::OpenAi,
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": many}]}),
    );
    // Well above the body's size, well below what its 20 000 blocks cost as a tree.
    call.context.budget = gatewayz_domain::MemoryBudget::new(4 * call.body.len());

    let refused = provider(&server, &[]).complete(call).await;

    assert!(matches!(refused, Err(ChatError::Overloaded(_))), "{refused:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
