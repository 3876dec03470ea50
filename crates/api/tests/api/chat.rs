use gatewayz_adapters::mock::MockChatProvider;
use serde_json::{Value, json};

use crate::helpers::{TestApp, chat_body, chat_body_with, completion};

#[tokio::test]
async fn the_demo_provider_answers_a_chat_completion() {
    let app = TestApp::demo().await;

    let response = app.post_chat(&chat_body()).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "demo-model");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "You said: Hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(
        body["usage"]["total_tokens"],
        body["usage"]["prompt_tokens"].as_u64().unwrap() + 4
    );
}

#[tokio::test]
async fn unknown_fields_reach_the_provider_and_come_back_to_the_client() {
    let mut provider = MockChatProvider::new();
    provider
        .expect_complete()
        .withf(|call| {
            let request = &call.request;
            request.extra.get("x_client_field") == Some(&json!({"nested": [1, 2]}))
                && request.extra.get("parallel_tool_calls") == Some(&json!(false))
                && request.messages[0].extra.get("x_message_field") == Some(&json!("m"))
                // The routing fields steer the gateway and are never forwarded.
                && !request.extra.contains_key("provider")
                && !request.extra.contains_key("portkey_provider")
                && !request.extra.contains_key("portkey_virtual_key")
        })
        .times(1)
        .returning(|call| {
            let mut response = completion(&call.request.model, "ok");
            let choice = &mut response.choices[0];
            choice.message.extra.insert("refusal".into(), Value::Null);
            choice.extra.insert("logprobs".into(), Value::Null);
            response
                .extra
                .insert("x_upstream_field".into(), json!({"kept": true}));
            response.extra.insert("provider".into(), json!("openai"));
            Ok(response)
        });
    let app = TestApp::with_provider(provider).await;

    let response = app
        .post_chat(&chat_body_with(json!({
            "x_client_field": {"nested": [1, 2]},
            "parallel_tool_calls": false,
            "portkey_virtual_key": null,
            "messages": [{"role": "user", "content": "hi", "x_message_field": "m"}]
        })))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["x_upstream_field"], json!({"kept": true}));
    assert_eq!(body["provider"], "openai");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "ok", "refusal": null})
    );
    assert_eq!(body["choices"][0].get("logprobs"), Some(&Value::Null));
}

#[tokio::test]
async fn the_request_id_is_echoed_and_passed_to_the_provider() {
    let mut provider = MockChatProvider::new();
    provider
        .expect_complete()
        .withf(|call| call.context.request_id == "client-chosen-id-42")
        .times(1)
        .returning(|call| Ok(completion(&call.request.model, "ok")));
    let app = TestApp::with_provider(provider).await;

    let response = app
        .chat()
        .header("x-request-id", "client-chosen-id-42")
        .json(&chat_body())
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-42");
}

#[tokio::test]
async fn a_request_without_a_usable_id_gets_a_fresh_one() {
    let app = TestApp::demo().await;

    let first = app.post_chat(&chat_body()).await;
    let second = app
        .chat()
        .header("x-request-id", "has spaces, so it is replaced")
        .json(&chat_body())
        .send()
        .await
        .unwrap();

    let first_id = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let second_id = second.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(first_id.len(), 32);
    assert_eq!(second_id.len(), 32);
    assert_ne!(first_id, second_id);
}

#[tokio::test]
async fn healthz_answers_ok_without_a_key() {
    let app = TestApp::demo().await;

    let response = app.client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}
