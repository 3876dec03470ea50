//! An Azure OpenAI upstream: the deployment named by the body's model in
//! the path, `api-version` in the query, the key in `api-key` and never in
//! `Authorization`.

use gatewayz_adapters::direct::UpstreamSpec;
use gatewayz_domain::{ChatProvider, Endpoint, ResponseAction};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    API_VERSION, AZURE, AZURE_KEY, REQUEST_ID, TRACEPARENT, azure_spec, by_id_on, call_on, chat_body, client,
    completion_json, header_names, only_request,
};

/// A server answering anything with `answer`.
async fn server_answering_all(answer: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    server
}

fn embeddings_answer() -> Value {
    json!({"object": "list", "data": [], "model": "emb", "usage": {"prompt_tokens": 1, "total_tokens": 1}})
}

/// The path and query of the one request `server` received.
async fn path_and_query(server: &MockServer) -> (String, Option<String>) {
    let request = only_request(server).await;
    (
        request.url.path().to_owned(),
        request.url.query().map(str::to_owned),
    )
}

#[tokio::test]
async fn a_chat_goes_to_the_deployment_of_the_bodys_model_with_the_api_version_and_api_key() {
    let server = server_answering_all(completion_json()).await;

    client(UpstreamSpec {
        headers: vec![("x-ms-client-request-id".into(), "fixed".into())],
        ..azure_spec(&server.uri())
    })
    .complete(call_on(AZURE, Endpoint::Chat, &chat_body()))
    .await
    .unwrap();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.path(),
        "/openai/deployments/llama-3-8b/chat/completions"
    );
    assert_eq!(
        request.url.query(),
        Some(format!("api-version={API_VERSION}").as_str())
    );
    assert_eq!(request.headers["api-key"], AZURE_KEY);
    assert_eq!(request.headers["x-ms-client-request-id"], "fixed");
    assert_eq!(request.headers["x-request-id"], REQUEST_ID);
    assert_eq!(request.headers["traceparent"], TRACEPARENT);
    let names = header_names(&request);
    assert!(!names.contains("authorization"), "{names:?}");
    assert!(
        names.iter().all(|name| !name.starts_with("x-portkey-")),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_model_that_is_not_a_plain_segment_is_percent_encoded_as_one_deployment_segment() {
    let server = server_answering_all(embeddings_answer()).await;

    client(azure_spec(&server.uri()))
        .complete(call_on(
            AZURE,
            Endpoint::Embeddings,
            &json!({"model": "team/emb?x y#z", "input": "x"}),
        ))
        .await
        .unwrap();

    assert_eq!(
        path_and_query(&server).await,
        (
            "/openai/deployments/team%2Femb%3Fx%20y%23z/embeddings".to_owned(),
            Some(format!("api-version={API_VERSION}"))
        )
    );
}

#[tokio::test]
async fn embeddings_go_to_the_deployments_embeddings_path() {
    let server = server_answering_all(embeddings_answer()).await;

    let answer = client(azure_spec(&server.uri()))
        .complete(call_on(
            AZURE,
            Endpoint::Embeddings,
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        ))
        .await
        .unwrap();

    assert_eq!(answer.usage().map(|usage| usage.prompt_tokens), Some(1));
    let request = only_request(&server).await;
    assert_eq!(
        request.url.path(),
        "/openai/deployments/text-embedding-3-small/embeddings"
    );
    assert_eq!(
        request.url.query(),
        Some(format!("api-version={API_VERSION}").as_str())
    );
    assert_eq!(request.headers["api-key"], AZURE_KEY);
    assert!(!header_names(&request).contains("authorization"));
}

#[tokio::test]
async fn responses_go_to_the_resources_responses_path_not_a_deployments() {
    let server = server_answering_all(
        json!({"id": "resp_1", "object": "response", "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )
    .await;

    client(azure_spec(&server.uri()))
        .complete(call_on(
            AZURE,
            Endpoint::Responses,
            &json!({"model": "gpt-4o", "input": "x"}),
        ))
        .await
        .unwrap();

    assert_eq!(
        path_and_query(&server).await,
        (
            "/openai/responses".to_owned(),
            Some(format!("api-version={API_VERSION}"))
        )
    );
}

#[tokio::test]
async fn calls_by_id_go_under_openai_with_the_clients_query_then_the_api_version() {
    let server = server_answering_all(json!({"id": "resp_1", "object": "response"})).await;
    let adapter = client(azure_spec(&server.uri()));
    let cases = [
        (
            ResponseAction::Retrieve,
            None,
            "GET",
            "/openai/responses/resp_1",
            String::new(),
        ),
        (
            ResponseAction::Delete,
            None,
            "DELETE",
            "/openai/responses/resp_1",
            String::new(),
        ),
        (
            ResponseAction::Cancel,
            None,
            "POST",
            "/openai/responses/resp_1/cancel",
            String::new(),
        ),
        (
            ResponseAction::InputItems,
            Some("limit=2"),
            "GET",
            "/openai/responses/resp_1/input_items",
            "limit=2&".to_owned(),
        ),
    ];

    for (action, query, verb, at, client_query) in cases {
        adapter
            .respond_by_id(by_id_on(AZURE, action, query))
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        let request = requests.last().unwrap();
        assert_eq!(
            (request.method.as_str(), request.url.path(), request.url.query()),
            (
                verb,
                at,
                Some(format!("{client_query}api-version={API_VERSION}").as_str())
            ),
            "{action:?}"
        );
        assert_eq!(request.headers["api-key"], AZURE_KEY);
        assert!(!header_names(request).contains("authorization"));
    }
}

#[tokio::test]
async fn a_base_with_a_path_prefix_keeps_it_before_openai() {
    let server = server_answering_all(completion_json()).await;

    client(azure_spec(&format!("{}/gateway/aoai/", server.uri())))
        .complete(call_on(AZURE, Endpoint::Chat, &chat_body()))
        .await
        .unwrap();

    assert_eq!(
        path_and_query(&server).await.0,
        "/gateway/aoai/openai/deployments/llama-3-8b/chat/completions"
    );
}

#[tokio::test]
async fn a_messages_call_goes_to_the_deployments_chat_completions_and_comes_back_as_a_message() {
    let server = server_answering_all(completion_json()).await;

    let message = client(azure_spec(&server.uri()))
        .complete(call_on(
            AZURE,
            Endpoint::Messages,
            &json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .unwrap();

    assert_eq!(
        path_and_query(&server).await,
        (
            "/openai/deployments/gpt-4o/chat/completions".to_owned(),
            Some(format!("api-version={API_VERSION}"))
        )
    );
    let value: Value = serde_json::from_slice(&message.json()).unwrap();
    assert_eq!(value["type"], "message");
}

/// A deployment named `.` or `..` must not vanish from the path (the `url`
/// crate drops such segments), sending the call to another path: the call
/// is refused, or sent to that deployment escaped.
#[tokio::test]
async fn a_dot_segment_model_never_leaves_the_deployments_path() {
    let mut wrong = Vec::new();
    for model in [".", ".."] {
        let server = server_answering_all(completion_json()).await;
        let mut body = chat_body();
        body["model"] = json!(model);

        let sent = client(azure_spec(&server.uri()))
            .complete(call_on(AZURE, Endpoint::Chat, &body))
            .await;

        let requests = server.received_requests().await.unwrap();
        let paths: Vec<_> = requests
            .iter()
            .map(|request| request.url.path().to_owned())
            .collect();
        let escaped = format!(
            "/openai/deployments/{}/chat/completions",
            model.replace('.', "%2E")
        );
        if !((sent.is_err() && paths.is_empty()) || paths == [escaped]) {
            wrong.push(format!("model {model:?} was sent to {paths:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The catalog's `api-version` is the one Azure gets: a client's query
/// naming another must not send two.
#[tokio::test]
async fn a_clients_api_version_in_a_by_id_query_never_reaches_azure_beside_the_catalogs() {
    for query in [
        "api-version=2025-01-01-preview&limit=1",
        "api%2Dversion=2099-01-01&limit=1",
        "API-Version=2099-01-01&limit=1",
    ] {
        let server = server_answering_all(json!({"id": "resp_1", "object": "list"})).await;

        let sent = client(azure_spec(&server.uri()))
            .respond_by_id(by_id_on(AZURE, ResponseAction::InputItems, Some(query)))
            .await;

        let requests = server.received_requests().await.unwrap();
        let versions: Vec<Vec<String>> = requests
            .iter()
            .map(|request| {
                request
                    .url
                    .query_pairs()
                    .filter(|(name, _)| name.eq_ignore_ascii_case("api-version"))
                    .map(|(_, value)| value.into_owned())
                    .collect()
            })
            .collect();
        // Sent with the catalog's version alone, the client's other
        // parameters kept.
        assert!(sent.is_ok(), "{query}: {sent:?}");
        assert_eq!(versions, [vec![API_VERSION.to_owned()]], "{query}");
        assert_eq!(
            requests[0]
                .url
                .query_pairs()
                .find(|(name, _)| name == "limit")
                .map(|(_, v)| v.into_owned()),
            Some("1".to_owned()),
            "{query}"
        );
    }
}
