//! The whole gateway in front of a stand-in Portkey (wiremock): what reaches
//! Portkey, and what the client gets for each upstream failure.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use crate::helpers::{KEY, TestApp, assert_openai_error, portkey_answering};

const PORTKEY_KEY: &str = "pk-chain-secret";
const OPENAI_KEY: &str = "sk-openai-secret";

async fn gateway(server: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
    ];
    vars.extend_from_slice(extra);
    TestApp::in_front_of(server, &vars).await
}

fn body(provider: &str) -> Value {
    json!({"provider": "portkey", "portkey_provider": provider, "model": "some-model",
        "messages": [{"role": "user", "content": "hi"}]})
}

fn completion() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "some-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "provider": "openai"})
}

fn provider_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null},
        "provider": "openai"})
}

/// The client's status, error body and `Retry-After` for one upstream answer.
async fn through_gateway(response: ResponseTemplate, extra: &[(&str, &str)]) -> (u16, Value, Option<String>) {
    let server = portkey_answering(response).await;
    let app = gateway(&server, extra).await;
    let response = app.post_chat(&body("openai")).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    assert_openai_error(&body);
    (status, body, retry_after)
}

#[tokio::test]
async fn the_error_table_maps_every_upstream_failure_to_its_status() {
    let cases: Vec<(ResponseTemplate, u16, &str, &str)> = vec![
        (
            ResponseTemplate::new(401).set_body_json(provider_error("bad key")),
            500,
            "Upstream authentication error: bad key",
            "provider",
        ),
        (
            ResponseTemplate::new(403).set_body_json(provider_error("forbidden")),
            500,
            "Upstream authentication error: forbidden",
            "provider",
        ),
        (
            ResponseTemplate::new(429).set_body_json(provider_error("slow down")),
            429,
            "Upstream rate limit exceeded: slow down",
            "provider",
        ),
        (
            ResponseTemplate::new(408).set_body_json(provider_error("took too long")),
            504,
            "Upstream timeout: took too long",
            "portkey",
        ),
        (
            ResponseTemplate::new(404).set_body_json(provider_error("no such model")),
            404,
            "no such model",
            "provider",
        ),
        (
            ResponseTemplate::new(422).set_body_json(provider_error("unprocessable")),
            422,
            "unprocessable",
            "provider",
        ),
        (
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": "failure", "message": "Invalid provider passed"})),
            400,
            "Invalid provider passed",
            "portkey",
        ),
        (
            ResponseTemplate::new(500)
                .set_body_json(json!({"status": "failure", "message": "Something went wrong"})),
            502,
            "Upstream service error: Something went wrong",
            "portkey",
        ),
        (
            ResponseTemplate::new(503).set_body_json(provider_error("overloaded")),
            502,
            "Upstream service error: overloaded",
            "provider",
        ),
        (
            ResponseTemplate::new(200).set_body_string("<html>"),
            502,
            "Invalid upstream response",
            "portkey",
        ),
    ];

    for (response, status, message, source) in cases {
        let (got_status, body, _) = through_gateway(response, &[]).await;
        assert_eq!(got_status, status, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with(message),
            "{message}: {body}"
        );
        assert_eq!(body["error"]["source"], source, "{body}");
    }
}

#[tokio::test]
async fn a_429_keeps_its_retry_after() {
    let (status, _, retry_after) = through_gateway(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "42")
            .set_body_json(provider_error("slow down")),
        &[],
    )
    .await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("42")));
}

#[tokio::test]
async fn our_own_deadline_is_a_504() {
    let (status, body, _) = through_gateway(
        ResponseTemplate::new(200)
            .set_body_json(completion())
            .set_delay(Duration::from_secs(5)),
        &[("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", "200")],
    )
    .await;
    assert_eq!(status, 504);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream timeout"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unreachable_portkey_is_a_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
    ])
    .await;

    let response = app.post_chat(&body("openai")).await;

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream service unavailable"),
        "{body}"
    );
}

#[tokio::test]
async fn missing_keys_get_the_exact_messages() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let base = format!("{}/v1", server.uri());

    let no_portkey = TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
    ])
    .await;
    let response = no_portkey.post_chat(&body("openai")).await;
    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["message"], "Portkey API key not configured");

    let no_provider =
        TestApp::production(&[("PORTKEY_BASE_URL", &base), ("PORTKEY_API_KEY", PORTKEY_KEY)]).await;
    let response = no_provider.post_chat(&body("groq")).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Provider API key not configured for groq"),
        "{message}"
    );
    assert!(
        message.contains("PROVIDER_GROQ_API_KEY") && message.contains("portkey_virtual_key"),
        "{message}"
    );

    // A virtual key needs no provider key.
    let mut virtual_body = body("groq");
    virtual_body["portkey_virtual_key"] = json!("vk-groq");
    assert_eq!(no_provider.post_chat(&virtual_body).await.status(), 200);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "only the virtual-key request went upstream"
    );
}

#[tokio::test]
async fn portkey_provider_is_required_and_must_be_supported() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let app = gateway(&server, &[]).await;

    let mut missing = body("openai");
    missing.as_object_mut().unwrap().remove("portkey_provider");
    for (request, needle) in [
        (missing, "is required"),
        (body("acme"), "openai, anthropic, deepinfra, google-ai"),
    ] {
        let response = app.post_chat(&request).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], "portkey_provider");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_what_portkey_needs_reaches_it() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let app = gateway(&server, &[]).await;

    let response = app
        .chat()
        .header("x-request-id", "trace-me-1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("cookie", "session=client-cookie")
        .header("x-custom-client", "private")
        .json(&body("openai"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["provider"], "openai", "Portkey's extra field stays");

    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(request.headers["x-portkey-trace-id"], "trace-me-1");
    assert_eq!(
        request.headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {OPENAI_KEY}").as_str()
    );
    for leaked in ["cookie", "x-custom-client", "x-request-id"] {
        assert!(request.headers.get(leaked).is_none(), "{leaked} leaked upstream");
    }
    assert!(
        !format!("{:?}", request.headers).contains(KEY),
        "the gateway key never goes upstream"
    );
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    for routing in ["provider", "portkey_provider", "portkey_virtual_key"] {
        assert!(
            sent.get(routing).is_none(),
            "{routing} forwarded upstream: {sent}"
        );
    }
}

#[tokio::test]
async fn anthropic_gets_a_max_tokens_default_and_others_do_not() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let app = gateway(
        &server,
        &[
            ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant"),
            ("GATEWAYZ_DEFAULT_MAX_TOKENS", "777"),
        ],
    )
    .await;

    app.post_chat(&body("anthropic")).await;
    app.post_chat(&body("openai")).await;

    let requests = server.received_requests().await.unwrap();
    let sent: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent[0]["max_tokens"], 777);
    assert!(sent[1].get("max_tokens").is_none());
}

#[tokio::test]
async fn a_stream_passes_through_and_a_late_failure_is_an_error_event() {
    let chunk = |content: &str| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    };
    let upstream = format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\n",
        chunk("one"),
        chunk("two"),
        json!({"error": {"message": "provider fell over"}})
    );
    let server =
        portkey_answering(ResponseTemplate::new(200).set_body_raw(upstream, "text/event-stream")).await;
    let app = gateway(&server, &[]).await;
    let mut request = body("openai");
    request["stream"] = json!(true);

    let response = app.post_chat(&request).await;

    assert_eq!(response.status(), 200);
    let events = crate::helpers::sse_data(response).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let contents: Vec<Value> = events[..2]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"].clone())
        .collect();
    assert_eq!(contents, [json!("one"), json!("two")]);
    let error: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(
        error["error"]["message"],
        "Upstream service error: provider fell over"
    );
    assert_eq!(error["error"]["source"], "provider");
    assert_eq!(events[3], "[DONE]");
}
