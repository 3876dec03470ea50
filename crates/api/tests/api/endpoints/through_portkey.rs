//! Gatewayz → the real open-source Portkey gateway → `gatewayz-upstream`
//! ([`super::portkey_chain`]), for the APIs beside chat: embeddings, Messages
//! (with Anthropic's headers) and its token count, and the Responses API with
//! its calls by id.
//!
//! Needs node (see [`crate::peers`]).

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_gateway_usage, call_as, count_request,
    message_request, names, portkey_chain, post, priced, response_request, status_and_json, streamed_text,
    the_event, typed_events,
};
use crate::helpers::{KEY, TestApp, assert_openai_error};

const ANTHROPIC_VERSION: &str = "2023-06-01";
const ANTHROPIC_BETA: &str = "prompt-caching-2024-07-31";

/// A Messages API call with Anthropic's version and beta headers.
async fn anthropic_call(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-api-key", KEY)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .header("anthropic-beta", ANTHROPIC_BETA)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn upstream_saw() -> Value {
    json!({"anthropic_version": ANTHROPIC_VERSION, "anthropic_beta": ANTHROPIC_BETA})
}

#[tokio::test]
async fn embeddings_cross_the_real_portkey() {
    let Some(chain) = portkey_chain("embeddings through Portkey").await else {
        return;
    };
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 16});

    let (status, answer) = status_and_json(post(&chain.app, EMBEDDINGS, &body).await).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{answer}");
    for item in data {
        let vector = item["embedding"].as_array().unwrap();
        assert_eq!(vector.len(), 16, "{answer}");
        let norm = vector
            .iter()
            .map(|value| value.as_f64().unwrap().powi(2))
            .sum::<f64>();
        assert!((norm - 1.0).abs() < 1e-4, "a unit vector: {norm}");
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(tokens, 3, "{answer}");
    assert_gateway_usage(&answer, Some(priced(tokens, 0.02)));
}

#[tokio::test]
async fn messages_and_their_token_count_cross_the_real_portkey_with_anthropics_headers() {
    let Some(chain) = portkey_chain("messages through Portkey").await else {
        return;
    };
    let model = "claude-3-5-haiku-latest";

    let (status, message) = status_and_json(
        anthropic_call(
            &chain.app,
            MESSAGES,
            &message_request(model, "Hello there", false),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "You said: Hello there");
    assert_eq!(message["upstream_saw"], upstream_saw(), "{message}");
    let (input, output) = (
        message["usage"]["input_tokens"].as_u64().unwrap(),
        message["usage"]["output_tokens"].as_u64().unwrap(),
    );
    assert_gateway_usage(&message, Some(priced(input, 0.80) + priced(output, 4.00)));

    let events = typed_events(
        anthropic_call(&chain.app, MESSAGES, &message_request(model, "Hello there", true)).await,
    )
    .await;
    let order = names(&events);
    assert_eq!(order.first(), Some(&"message_start"), "{order:?}");
    assert_eq!(order.last(), Some(&"message_stop"), "{order:?}");
    assert_eq!(order[order.len() - 2], "message_delta", "{order:?}");
    assert_eq!(streamed_text(&events), "You said: Hello there");
    assert_eq!(
        the_event(&events, "message_start")["message"]["upstream_saw"],
        upstream_saw()
    );
    assert!(the_event(&events, "message_delta")["gateway_usage"]["cost_usd"].is_number());

    let (status, count) =
        status_and_json(anthropic_call(&chain.app, COUNT_TOKENS, &count_request(model, "Hello there")).await)
            .await;
    assert_eq!(status, 200, "{count}");
    assert_eq!(
        count["input_tokens"], input,
        "the count of the message's own prompt"
    );
}

#[tokio::test]
async fn responses_are_created_streamed_retrieved_listed_and_deleted_across_the_real_portkey() {
    let Some(chain) = portkey_chain("responses through Portkey").await else {
        return;
    };
    let app = &chain.app;

    let (status, created) = status_and_json(
        post(
            app,
            RESPONSES,
            &response_request("gpt-4o-mini", "Hello there", false),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["output"][0]["content"][0]["text"],
        "You said: Hello there"
    );
    assert!(created["gateway_usage"]["cost_usd"].is_number(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let events = typed_events(
        post(
            app,
            RESPONSES,
            &response_request("gpt-4o-mini", "Hello again", true),
        )
        .await,
    )
    .await;
    let order = names(&events);
    assert_eq!(order.first(), Some(&"response.created"), "{order:?}");
    assert_eq!(order.last(), Some(&"response.completed"), "{order:?}");
    assert_eq!(streamed_text(&events), "You said: Hello again");
    let streamed = the_event(&events, "response.completed")["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for (response_id, text) in [
        (&id, "You said: Hello there"),
        (&streamed, "You said: Hello again"),
    ] {
        let path = format!("{RESPONSES}/{response_id}");
        let (status, retrieved) = status_and_json(call_as(app, Method::GET, KEY, &path).await).await;
        assert_eq!(status, 200, "{retrieved}");
        assert_eq!(retrieved["id"], response_id.as_str());
        assert_eq!(retrieved["output"][0]["content"][0]["text"], text);
    }

    let path = format!("{RESPONSES}/{id}");
    let (status, items) =
        status_and_json(call_as(app, Method::GET, KEY, &format!("{path}/input_items")).await).await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["content"][0]["text"], "Hello there", "{items}");

    let mut follow_up = response_request("gpt-4o-mini", "And again", false);
    follow_up["previous_response_id"] = json!(id);
    let (status, followed) = status_and_json(post(app, RESPONSES, &follow_up).await).await;
    assert_eq!(status, 200, "{followed}");
    assert_eq!(followed["previous_response_id"], id.as_str());

    let (status, deleted) = status_and_json(call_as(app, Method::DELETE, KEY, &path).await).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let (status, gone) = status_and_json(call_as(app, Method::GET, KEY, &path).await).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(assert_openai_error(&gone)["code"], "response_not_found");
}
