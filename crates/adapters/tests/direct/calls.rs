//! What the direct adapter sends to an OpenAI-compatible upstream: its
//! headers, its paths under the base URL, the calls by id, and nothing to a
//! host a redirect names.

use gatewayz_adapters::direct::UpstreamSpec;
use gatewayz_domain::{ChatError, ChatProvider, Endpoint, ErrorSource, ResponseAction};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    KEY, REQUEST_ID, TRACEPARENT, TRACESTATE, UPSTREAM, assert_no_request, by_id_on, call, chat_call, client,
    completion_json, direct, header_names, only_request, server_answering, spec, upstream_of,
};

#[tokio::test]
async fn a_call_carries_the_bearer_key_static_headers_request_id_and_trace_headers_and_no_portkey_header() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    direct(&server).complete(chat_call()).await.unwrap();

    let request = only_request(&server).await;
    let headers = &request.headers;
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(headers["x-team"], "ml");
    assert_eq!(headers["x-request-id"], REQUEST_ID);
    assert_eq!(headers["traceparent"], TRACEPARENT);
    assert_eq!(headers["tracestate"], TRACESTATE);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["user-agent"].to_str().unwrap().starts_with("gatewayz/"),
        "{headers:?}"
    );
    let names = header_names(&request);
    assert!(
        names.iter().all(|name| !name.starts_with("x-portkey-")),
        "no Portkey header goes to a direct upstream: {names:?}"
    );
    assert!(!names.contains("api-key"), "{names:?}");
}

#[tokio::test]
async fn an_upstream_without_a_key_is_called_without_an_authorization_header() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    client(UpstreamSpec {
        api_key: None,
        ..spec(&server.uri())
    })
    .complete(chat_call())
    .await
    .unwrap();

    let names = header_names(&only_request(&server).await);
    assert!(!names.contains("authorization"), "{names:?}");
    assert!(!names.contains("api-key"), "{names:?}");
    assert!(names.contains("x-request-id"), "{names:?}");
}

#[tokio::test]
async fn without_a_client_traceparent_no_trace_header_is_sent() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let mut call = chat_call();
    call.context.traceparent = None;

    direct(&server).complete(call).await.unwrap();

    let names = header_names(&only_request(&server).await);
    // A tracestate means nothing without its traceparent.
    assert!(
        !names.contains("traceparent") && !names.contains("tracestate"),
        "{names:?}"
    );
}

#[tokio::test]
async fn chat_embeddings_and_responses_are_posted_under_the_bases_path_prefix_as_they_came() {
    let server = MockServer::start().await;
    let cases = [
        (
            Endpoint::Chat,
            "/v1/chat/completions",
            json!({"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "x_client": {"deep": [1]}}),
            completion_json(),
        ),
        (
            Endpoint::Embeddings,
            "/v1/embeddings",
            json!({"model": "bge", "input": "x"}),
            json!({"object": "list", "data": [], "model": "bge", "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        ),
        (
            Endpoint::Responses,
            "/v1/responses",
            json!({"model": "llama-3-8b", "input": "x"}),
            json!({"id": "resp_1", "object": "response", "usage": {"input_tokens": 5, "output_tokens": 6}}),
        ),
    ];
    for (_, at, _, answer) in &cases {
        Mock::given(method("POST"))
            .and(path(*at))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .expect(1)
            .mount(&server)
            .await;
    }
    let adapter = direct(&server);

    for (endpoint, at, body, answer) in cases {
        let call = call(endpoint, &body);
        let sent = call.body.clone();

        let response = adapter.complete(call).await.unwrap();

        assert_eq!(
            serde_json::from_slice::<Value>(&response.json()).unwrap(),
            answer,
            "{at}"
        );
        let requests = server.received_requests().await.unwrap();
        let request = requests.last().unwrap();
        assert_eq!(request.url.path(), at);
        assert_eq!(request.url.query(), None, "{at}");
        assert_eq!(request.body, sent, "{at}: the body passes byte for byte");
    }
}

#[tokio::test]
async fn calls_by_id_reach_their_paths_and_methods_with_the_clients_query() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "resp_1", "object": "response"})))
        .mount(&server)
        .await;
    let adapter = direct(&server);
    let cases = [
        (
            ResponseAction::Retrieve,
            None,
            "GET",
            "/v1/responses/resp_1",
            None,
            "",
        ),
        (
            ResponseAction::Delete,
            None,
            "DELETE",
            "/v1/responses/resp_1",
            None,
            "",
        ),
        (
            ResponseAction::Cancel,
            None,
            "POST",
            "/v1/responses/resp_1/cancel",
            None,
            "{}",
        ),
        (
            ResponseAction::InputItems,
            Some("limit=2&order=asc"),
            "GET",
            "/v1/responses/resp_1/input_items",
            Some("limit=2&order=asc"),
            "",
        ),
    ];

    for (action, query, verb, at, sent_query, body) in cases {
        let answer = adapter
            .respond_by_id(by_id_on(UPSTREAM, action, query))
            .await
            .unwrap();

        assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["id"], "resp_1");
        let requests = server.received_requests().await.unwrap();
        let request = requests.last().unwrap();
        assert_eq!(
            (request.method.as_str(), request.url.path(), request.url.query()),
            (verb, at, sent_query),
            "{action:?}"
        );
        assert_eq!(request.body, body.as_bytes(), "{action:?}");
        assert_eq!(request.headers["authorization"], format!("Bearer {KEY}").as_str());
        assert_eq!(request.headers["x-request-id"], REQUEST_ID);
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_key_never_reaches_another_host() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(completion_json()))
        .mount(&elsewhere)
        .await;
    let server = server_answering(
        ResponseTemplate::new(307)
            .insert_header("location", format!("{}/v1/chat/completions", elsewhere.uri())),
    )
    .await;

    let error = direct(&server).complete(chat_call()).await.unwrap_err();

    assert!(
        matches!(&error, ChatError::UpstreamFailed(e) if e.status == Some(307) && e.source == ErrorSource::Provider),
        "{error:?}"
    );
    assert_no_request(&elsewhere).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_route_to_an_undeclared_upstream_is_the_gateways_failure_and_sends_nothing() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let mut call = chat_call();
    call.route = crate::helpers::route("nowhere");

    let error = direct(&server).complete(call).await.unwrap_err();

    let upstream = upstream_of(&error);
    assert!(matches!(error, ChatError::Unavailable(_)), "{error:?}");
    assert_eq!(upstream.source, ErrorSource::Gateway);
    assert!(upstream.message.contains("`nowhere`"), "{}", upstream.message);
    assert_no_request(&server).await;
}

#[tokio::test]
async fn a_200_that_is_not_a_chat_completion_is_an_invalid_response_from_the_upstream() {
    for body in ["not json", "{\"id\": \"x\"}", "[]", ""] {
        let server = server_answering(ResponseTemplate::new(200).set_body_string(body)).await;

        let error = direct(&server).complete(chat_call()).await.unwrap_err();

        assert!(
            matches!(&error, ChatError::InvalidUpstreamResponse(e)
                if e.source == ErrorSource::Provider && e.message.contains("not a chat.completion")),
            "{body:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_call_by_id_answered_with_what_is_not_a_json_object_is_an_invalid_response() {
    for body in ["[1]", "not json", "{\"id\": "] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;

        let error = direct(&server)
            .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Retrieve, None))
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ChatError::InvalidUpstreamResponse(e) if e.source == ErrorSource::Provider),
            "{body:?}: {error:?}"
        );
    }
}
