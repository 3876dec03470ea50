use futures::StreamExt;
use gatewayz_adapters::mock::MockChatProvider;
use gatewayz_domain::{ChatChunk, ChatResponse};
use serde_json::{Value, json};

use crate::helpers::{TestApp, chat_body, chat_body_with, completion, sent, sse_data};

/// An answer as an upstream might write it: members in an unusual order,
/// unknown ones, odd spacing and number formatting.
const UNUSUAL_ANSWER: &str = "{ \"x_first\" : [1,2 , 3.50e0],\n  \"choices\":[{\"finish_reason\":\"stop\",\
    \"message\":{\"content\":\"ok\" ,\"role\":\"assistant\",\"refusal\":null},\"index\":0,\"x\":{}}],\
    \"model\":\"m\",\"created\":1,\"id\":\"c\",\t\"usage\":{\"total_tokens\":5,\"prompt_tokens\":2,\
    \"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":0}} }";

#[tokio::test]
async fn an_answer_reaches_the_client_byte_for_byte_but_for_gateway_usage_at_its_end() {
    let mut provider = MockChatProvider::new();
    provider
        .expect_complete()
        .returning(|_| Ok(ChatResponse::from_json(UNUSUAL_ANSWER.into()).unwrap()));
    let app = TestApp::with_provider(provider).await;

    let response = app.post_chat(&chat_body()).await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let (upstream, added) = text.split_at(UNUSUAL_ANSWER.len() - 1);
    assert_eq!(upstream, &UNUSUAL_ANSWER[..UNUSUAL_ANSWER.len() - 1]);
    let added: Value = serde_json::from_str(&format!("{{{}", added.trim_start_matches(','))).unwrap();
    assert!(added["gateway_usage"]["request_ms"].is_number(), "{text}");
    assert_eq!(added.as_object().unwrap().len(), 1, "{text}");
}

#[tokio::test]
async fn a_streamed_chunk_reaches_the_client_byte_for_byte() {
    const CHUNK: &str = "{\"x\": 1,  \"choices\":[{\"delta\":{\"content\":\"hi\"},\"index\":0}],\
        \"model\":\"m\", \"created\":1 ,\"id\":\"c\"}";
    let mut provider = MockChatProvider::new();
    provider.expect_stream().returning(|_| {
        let chunk = ChatChunk::from_json(CHUNK.into()).unwrap();
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    });
    let app = TestApp::with_provider(provider).await;

    let response = app.post_chat(&chat_body_with(json!({"stream": true}))).await;

    let events = sse_data(response).await;
    assert_eq!(events.first().map(String::as_str), Some(CHUNK));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

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
            let body = sent(call);
            body["x_client_field"] == json!({"nested": [1, 2]})
                && body["parallel_tool_calls"] == json!(false)
                && body["messages"][0]["x_message_field"] == json!("m")
                // The routing fields steer the gateway and are never forwarded.
                && body.get("provider").is_none()
                && body.get("portkey_provider").is_none()
                && body.get("portkey_virtual_key").is_none()
        })
        .times(1)
        .returning(|_| {
            let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
                "x_upstream_field": {"kept": true}, "provider": "openai"});
            Ok(ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap())
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
        .returning(|call| Ok(completion(call.request.model(), "ok")));
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
