//! What reaches Portkey (a wiremock stand-in) on each API: its path, the
//! provider's key and Anthropic's headers where they belong, a by-id call's
//! query, the client's body but for the gateway's routing fields, and never
//! the gateway key.

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_gateway_usage, call_as, count_request,
    message_request, post, status_and_json,
};
use crate::helpers::{KEY, TestApp, assert_openai_error};

const PORTKEY_KEY: &str = "pk-endpoint-calls";
const OPENAI_KEY: &str = "sk-endpoint-calls";
const ANTHROPIC_KEY: &str = "sk-ant-endpoint-calls";

async fn gateway(portkey: &MockServer) -> TestApp {
    TestApp::in_front_of(
        portkey,
        &[
            ("PORTKEY_API_KEY", PORTKEY_KEY),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
            ("PROVIDER_ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ],
    )
    .await
}

async fn answering(portkey: &MockServer, verb: &str, at: &str, answer: Value) {
    Mock::given(method(verb))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(portkey)
        .await;
}

async fn received(portkey: &MockServer, verb: &str, at: &str) -> Vec<wiremock::Request> {
    portkey
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.method.as_str() == verb && request.url.path() == at)
        .collect()
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|value| value.to_str().unwrap())
}

/// Asserts no header of `request` carries the gateway key.
fn assert_no_gateway_key(request: &wiremock::Request) {
    for (name, value) in &request.headers {
        assert!(
            !value.to_str().unwrap_or_default().contains(KEY),
            "the gateway key went upstream in `{name}`"
        );
    }
}

#[tokio::test]
async fn messages_reach_portkey_with_the_anthropic_key_and_headers_but_not_the_gateway_key() {
    let portkey = MockServer::start().await;
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 9, "output_tokens": 1}});
    answering(&portkey, "POST", MESSAGES, message.clone()).await;
    answering(&portkey, "POST", COUNT_TOKENS, json!({"input_tokens": 9})).await;
    let app = gateway(&portkey).await;
    let send = |path: &'static str, body: Value| {
        app.client
            .post(app.url(path))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "tools-2024-04-04")
            .json(&body)
            .send()
    };

    let (status, answer) = status_and_json(
        send(MESSAGES, message_request("@anthropic/claude-x", "hi", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, count) = status_and_json(
        send(COUNT_TOKENS, count_request("@anthropic/claude-x", "hi"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{count}");

    let mut passed_through = answer.clone();
    passed_through.as_object_mut().unwrap().remove("gateway_usage");
    assert_eq!(passed_through, message, "the answer as Portkey gave it");
    assert_gateway_usage(&answer, None);
    assert_eq!(count["input_tokens"], 9);
    for at in [MESSAGES, COUNT_TOKENS] {
        let calls = received(&portkey, "POST", at).await;
        assert_eq!(calls.len(), 1, "{at}");
        let call = &calls[0];
        assert_eq!(header(call, "x-portkey-api-key"), Some(PORTKEY_KEY));
        assert_eq!(header(call, "x-portkey-provider"), Some("anthropic"));
        assert_eq!(
            header(call, "authorization"),
            Some(format!("Bearer {ANTHROPIC_KEY}").as_str())
        );
        assert_eq!(header(call, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(header(call, "anthropic-beta"), Some("tools-2024-04-04"));
        assert_no_gateway_key(call);
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["model"], "claude-x", "{body}");
        assert_eq!(body["system"], "Be brief.", "{body}");
        assert!(
            body.get("provider").is_none() && body.get("portkey_provider").is_none(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn embeddings_reach_portkey_as_sent_but_for_the_model() {
    let portkey = MockServer::start().await;
    let list = json!({"object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}});
    answering(&portkey, "POST", EMBEDDINGS, list).await;
    let app = gateway(&portkey).await;
    let body = json!({"model": "text-embedding-3-small", "input": "hi there", "dimensions": 1,
        "encoding_format": "base64", "user": "u-1"});

    let (status, answer) = status_and_json(post(&app, EMBEDDINGS, &body).await).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"][0]["embedding"], "AACAPw==");
    assert_gateway_usage(&answer, Some(2.0 * 0.02 / 1_000_000.0));
    let calls = received(&portkey, "POST", EMBEDDINGS).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(header(&calls[0], "x-portkey-provider"), Some("openai"));
    assert_eq!(
        header(&calls[0], "authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_no_gateway_key(&calls[0]);
    let sent: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent, body, "the catalog's upstream model is the same name");
}

#[tokio::test]
async fn responses_calls_by_id_reach_portkey_at_the_ids_path_with_the_query() {
    let portkey = MockServer::start().await;
    let response = json!({"id": "resp_upstream_1", "object": "response", "status": "completed",
        "model": "gpt-4o-mini", "output": [],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}});
    answering(&portkey, "POST", RESPONSES, response.clone()).await;
    let by_id = "/v1/responses/resp_upstream_1";
    answering(&portkey, "GET", by_id, response).await;
    answering(
        &portkey,
        "GET",
        &format!("{by_id}/input_items"),
        json!({"object": "list", "data": []}),
    )
    .await;
    answering(
        &portkey,
        "DELETE",
        by_id,
        json!({"id": "resp_upstream_1", "object": "response", "deleted": true}),
    )
    .await;
    let app = gateway(&portkey).await;
    let create = json!({"model": "@openai/gpt-4o-mini", "input": "hi", "store": true});

    let (status, created) = status_and_json(post(&app, RESPONSES, &create).await).await;
    assert_eq!(status, 200, "{created}");
    let (status, _) = status_and_json(call_as(&app, Method::GET, KEY, by_id).await).await;
    assert_eq!(status, 200);
    let items = format!("{by_id}/input_items?limit=2&order=asc");
    let (status, listed) = status_and_json(call_as(&app, Method::GET, KEY, &items).await).await;
    assert_eq!((status, &listed["object"]), (200, &json!("list")));
    let (status, deleted) = status_and_json(call_as(&app, Method::DELETE, KEY, by_id).await).await;
    assert_eq!((status, &deleted["deleted"]), (200, &json!(true)));
    let (status, gone) = status_and_json(call_as(&app, Method::GET, KEY, by_id).await).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(assert_openai_error(&gone)["code"], "response_not_found");

    let gets = received(&portkey, "GET", by_id).await;
    assert_eq!(gets.len(), 1, "the gateway knew the deleted response was gone");
    let listed = received(&portkey, "GET", &format!("{by_id}/input_items")).await;
    assert_eq!(listed[0].url.query(), Some("limit=2&order=asc"));
    let deletes = received(&portkey, "DELETE", by_id).await;
    assert_eq!(deletes.len(), 1);
    for call in gets.iter().chain(&listed).chain(&deletes) {
        assert_eq!(header(call, "x-portkey-provider"), Some("openai"));
        assert_eq!(
            header(call, "authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
        assert_no_gateway_key(call);
    }
}

#[tokio::test]
async fn anthropics_headers_are_not_passed_on_to_other_apis() {
    let portkey = MockServer::start().await;
    answering(
        &portkey,
        "POST",
        RESPONSES,
        json!({"id": "resp_2", "object": "response", "output": [], "status": "completed"}),
    )
    .await;
    let app = gateway(&portkey).await;

    let response = app
        .client
        .post(app.url(RESPONSES))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-04-04")
        .json(&json!({"model": "@openai/gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let calls = received(&portkey, "POST", RESPONSES).await;
    assert_eq!(header(&calls[0], "anthropic-version"), None);
    assert_eq!(header(&calls[0], "anthropic-beta"), None);
}
