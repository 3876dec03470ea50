//! Azure OpenAI's paths: a deployment's chat completions (whole and
//! streamed) and embeddings naming the deployment, the Responses API under
//! `/openai`, Azure's 404 without an `api-version`, and faults.

use gatewayz_upstream::Config;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{GATEWAY_BODY, STREAM_BODY, call, events, faulty, spawn, with_fault};

const CHAT: &str = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21";

#[tokio::test]
async fn answers_a_deployment_chat_completion_naming_the_deployment_as_its_model() {
    let address = spawn(Config::default()).await;

    let answer = call(address, "POST", CHAT, GATEWAY_BODY).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.content_length, Some(answer.body().len().to_string()));
    let json = answer.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-4o-prod");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(json["usage"]["total_tokens"], 9 + 14);
}

#[tokio::test]
async fn streams_a_deployment_chat_completion_naming_the_deployment_in_every_chunk() {
    let address = spawn(Config {
        chunks: 3,
        ..Config::default()
    })
    .await;

    let answer = call(address, "POST", CHAT, STREAM_BODY).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    let events = events(&answer);
    assert_eq!(events.len(), 3 + 3, "{events:?}");
    for event in &events[..5] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-prod");
    }
    let usage: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(events[5], "[DONE]");
}

#[tokio::test]
async fn the_deployment_is_percent_decoded_and_the_openai_path_keeps_its_model() {
    let address = spawn(Config::default()).await;

    let azure = call(
        address,
        "POST",
        "/openai/deployments/my%20gpt%2D4o/chat/completions?api-version=1",
        GATEWAY_BODY,
    )
    .await;
    let openai = call(address, "POST", "/v1/chat/completions", GATEWAY_BODY).await;

    assert_eq!(azure.json()["model"], "my gpt-4o");
    assert_eq!(openai.json()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn answers_embeddings_on_a_deployment_path_naming_the_deployment_without_a_model_in_the_body() {
    let address = spawn(Config::default()).await;
    let path = "/openai/deployments/ada-prod/embeddings?api-version=2024-10-21";

    let without_model = call(address, "POST", path, &json!({"input": "two words"}).to_string()).await;
    let with_model = call(
        address,
        "POST",
        path,
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}).to_string(),
    )
    .await;
    let openai = call(
        address,
        "POST",
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "two words"}).to_string(),
    )
    .await;

    assert_eq!(without_model.status, StatusCode::OK);
    let list = without_model.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["model"], "ada-prod");
    assert_eq!(list["usage"]["prompt_tokens"], 2);
    // The same input gives the same vector as on OpenAI's path.
    assert_eq!(
        list["data"][0]["embedding"],
        openai.json()["data"][0]["embedding"]
    );
    let list = with_model.json();
    assert_eq!(list["model"], "ada-prod");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["data"][1]["embedding"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn serves_the_responses_api_under_openai_with_an_api_version() {
    let address = spawn(Config::default()).await;
    let request = json!({"model": "gpt-4o-prod", "input": "hello there", "background": true});

    let created = call(
        address,
        "POST",
        "/openai/responses?api-version=preview",
        &request.to_string(),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let at = |rest: &str| format!("/openai/responses/{id}{rest}?api-version=preview");
    let retrieved = call(address, "GET", &at(""), "").await;
    let items = call(address, "GET", &at("/input_items"), "").await;
    let cancelled = call(address, "POST", &at("/cancel"), "").await;
    let deleted = call(address, "DELETE", &at(""), "").await;
    let gone = call(address, "GET", &at(""), "").await;

    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.json()["model"], "gpt-4o-prod");
    assert_eq!(
        created.json()["output"][0]["content"][0]["text"],
        "You said: hello there"
    );
    assert_eq!(retrieved.json(), created.json());
    assert_eq!(items.json()["data"][0]["content"][0]["text"], "hello there");
    assert_eq!(cancelled.json()["id"], id.as_str());
    assert_eq!(deleted.json()["deleted"], true);
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn answers_azures_404_to_an_openai_path_without_an_api_version_or_unknown() {
    let address = spawn(Config::default()).await;
    let request = json!({"model": "m", "input": "hi"}).to_string();

    for (method, path) in [
        ("POST", "/openai/deployments/gpt-4o-prod/chat/completions"),
        ("POST", "/openai/deployments/gpt-4o-prod/chat/completions?foo=bar"),
        ("POST", "/openai/deployments/ada-prod/embeddings"),
        ("POST", "/openai/responses"),
        ("GET", "/openai/responses/resp_1"),
        (
            "POST",
            "/openai/deployments/gpt-4o-prod/images/generations?api-version=1",
        ),
        ("POST", "/openai/chat/completions?api-version=1"),
    ] {
        let answer = call(address, method, path, &request).await;

        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            answer.body(),
            br#"{"error":{"code":"404","message":"Resource not found"}}"#,
            "{path}"
        );
    }
}

#[tokio::test]
async fn refuses_a_deployment_chat_completion_with_another_method() {
    let address = spawn(Config::default()).await;

    let answer = call(address, "GET", CHAT, "").await;

    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn injects_a_status_and_cuts_a_stream_on_a_deployment_path() {
    let address = spawn(faulty(4)).await;

    let failed = call(address, "POST", CHAT, &with_fault(GATEWAY_BODY, "503")).await;
    let cut = call(address, "POST", CHAT, &with_fault(STREAM_BODY, "cut")).await;

    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.json()["error"]["type"], "server_error");
    assert!(cut.broke, "the body ended cleanly");
    let events = events(&cut);
    assert_eq!(events.len(), 2, "{events:?}");
    let chunk: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(chunk["model"], "gpt-4o-prod");
}
