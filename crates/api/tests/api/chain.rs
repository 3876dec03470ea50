//! Gatewayz → the real open-source Portkey gateway (npm `@portkey-ai/gateway`,
//! on loopback) → a local OpenAI- and Anthropic-compatible upstream.
//!
//! Needs node (see [`crate::peers`]).

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, sse_data};
use crate::peers::PortkeyGateway;

const PORTKEY_KEY: &str = "pk-chain-test";
const OPENAI_KEY: &str = "sk-chain-openai";
const ANTHROPIC_KEY: &str = "sk-ant-chain";
const DEEPINFRA_KEY: &str = "di-chain";

fn openai_completion(content: &str) -> Value {
    json!({"id": "chatcmpl-up", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
}

fn openai_stream() -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " there"}), Value::Null),
        chunk(json!({}), json!("stop")),
    ]
    .iter()
    .map(|event| format!("data: {event}\n\n"))
    .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
    .collect()
}

fn anthropic_message() -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-latest",
        "content": [{"type": "text", "text": "Hello from Claude"}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 4}})
}

fn anthropic_stream() -> String {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01", "type": "message",
            "role": "assistant", "model": "claude-3-5-sonnet-latest", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": " Claude"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
            "stop_sequence": null}, "usage": {"output_tokens": 2}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// The upstream behind Portkey: OpenAI's and Anthropic's APIs, answering
/// by model name and `stream`.
async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    let openai = || path("/v1/chat/completions");
    let mounts = [
        Mock::given(method("POST"))
            .and(openai())
            .and(body_partial_json(json!({"model": "rate-limited"})))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "7")
                    .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
            )
            .with_priority(1),
        Mock::given(method("POST"))
            .and(openai())
            .and(body_partial_json(json!({"model": "broken"})))
            .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}})))
            .with_priority(1),
        Mock::given(method("POST"))
            .and(openai())
            .and(body_partial_json(json!({"stream": true})))
            .respond_with(ResponseTemplate::new(200).set_body_raw(openai_stream(), "text/event-stream"))
            .with_priority(2),
        Mock::given(method("POST"))
            .and(openai())
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_completion("Hello from OpenAI"))),
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(body_partial_json(json!({"stream": true})))
            .respond_with(ResponseTemplate::new(200).set_body_raw(anthropic_stream(), "text/event-stream"))
            .with_priority(2),
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_message())),
    ];
    for mock in mounts {
        mock.mount(&server).await;
    }
    server
}

struct Chain {
    _portkey: PortkeyGateway,
    upstream: MockServer,
    app: TestApp,
}

async fn chain() -> Option<Chain> {
    let portkey = PortkeyGateway::start("the Portkey chain test")?;
    let upstream = upstream().await;
    let custom_host = format!("{}/v1", upstream.uri());
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &portkey.base_url()),
        ("PORTKEY_CUSTOM_HOST", &custom_host),
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
        ("PROVIDER_ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("DEEPINFRA_API_KEY", DEEPINFRA_KEY),
    ])
    .await;
    Some(Chain {
        _portkey: portkey,
        upstream,
        app,
    })
}

fn request(provider: &str, model: &str, stream: bool) -> Value {
    json!({"provider": "portkey", "portkey_provider": provider, "model": model, "stream": stream,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]})
}

async fn upstream_requests(upstream: &MockServer, path: &str) -> Vec<wiremock::Request> {
    upstream
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path() == path)
        .collect()
}

fn streamed_text(events: &[String]) -> (String, Option<String>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk"),
        "{chunks:?}"
    );
    let text = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    let finish = chunks
        .iter()
        .find_map(|chunk| chunk["choices"][0]["finish_reason"].as_str())
        .map(str::to_owned);
    (text, finish)
}

#[tokio::test]
async fn openai_json_and_stream_pass_through_portkey() {
    let Some(chain) = chain().await else { return };

    let response = chain
        .app
        .post_chat(&request("openai", "gpt-4o-mini", false))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from OpenAI");
    assert_eq!(body["usage"]["total_tokens"], 8);

    let response = chain.app.post_chat(&request("openai", "gpt-4o-mini", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (text, finish) = streamed_text(&sse_data(response).await);
    assert_eq!((text.as_str(), finish.as_deref()), ("Hello there", Some("stop")));

    let seen = upstream_requests(&chain.upstream, "/v1/chat/completions").await;
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {OPENAI_KEY}").as_str()
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(
            body.get("provider").is_none() && body.get("portkey_provider").is_none(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn anthropic_is_translated_by_portkey_with_its_key_and_max_tokens() {
    let Some(chain) = chain().await else { return };

    let response = chain
        .app
        .post_chat(&request("anthropic", "claude-3-5-sonnet-latest", false))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from Claude");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let response = chain
        .app
        .post_chat(&request("anthropic", "claude-3-5-sonnet-latest", true))
        .await;
    assert_eq!(response.status(), 200);
    let (text, finish) = streamed_text(&sse_data(response).await);
    assert_eq!((text.as_str(), finish.as_deref()), ("Hello Claude", Some("stop")));

    let seen = upstream_requests(&chain.upstream, "/v1/messages").await;
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.headers["x-api-key"], ANTHROPIC_KEY);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body["max_tokens"], 4096,
            "the gateway's default reaches Anthropic: {body}"
        );
        assert!(body["system"].to_string().contains("Be brief."), "{body}");
    }
}

#[tokio::test]
async fn deepinfra_goes_through_portkey_with_its_own_key() {
    let Some(chain) = chain().await else { return };

    let response = chain
        .app
        .post_chat(&request(
            "deepinfra",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            false,
        ))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from OpenAI");
    let seen = upstream_requests(&chain.upstream, "/v1/chat/completions").await;
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {DEEPINFRA_KEY}").as_str()
    );
}

#[tokio::test]
async fn upstream_429_and_500_are_mapped_after_crossing_portkey() {
    let Some(chain) = chain().await else { return };

    let response = chain
        .app
        .post_chat(&request("openai", "rate-limited", false))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["retry-after"],
        "7",
        "the provider's Retry-After survives Portkey"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream rate limit exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["source"], "provider");

    let response = chain.app.post_chat(&request("openai", "broken", false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream service error"),
        "{body}"
    );
}

#[tokio::test]
async fn a_portkey_config_reaches_the_real_portkey_which_retries_by_it() {
    let Some(chain) = chain().await else { return };
    let mut body = request("openai", "broken", false);
    body["portkey_config"] = json!({"retry": {"attempts": 1, "on_status_codes": [500]}});

    let response = chain.app.post_chat(&body).await;

    assert_eq!(response.status(), 502);
    // Portkey says `-1` when its retries ran out.
    assert_eq!(response.headers()["x-portkey-retry-attempt-count"], "-1");
    let seen = upstream_requests(&chain.upstream, "/v1/chat/completions").await;
    assert_eq!(seen.len(), 2, "Portkey's first call and its one retry");
}
