//! The official OpenAI SDKs (Python `openai`, Node `openai`) drive Gatewayz
//! with nothing changed but the base URL and the key: model list, completion,
//! stream, `@provider/model`, extra-body routing, and typed errors.

use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::TestApp;
use crate::peers::{available, install_once, run_sdk_script, sdk_dir, sdk_python};

/// A stand-in Portkey: a 429 for model `rate-limited`, a completion otherwise.
async fn portkey() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "rate-limited"})))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "9")
                .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id": "chatcmpl-pk", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let usage = json!({"id": "chatcmpl-pk", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}});
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), json!(null)),
        chunk(json!({"content": "Hello from"}), json!(null)),
        chunk(json!({"content": " Portkey"}), json!("stop")),
        usage,
    ];
    let sse: String = events
        .iter()
        .map(|event| format!("data: {event}\n\n"))
        .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-pk", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from Portkey"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        })))
        .mount(&server)
        .await;
    server
}

async fn gateway(server: &MockServer) -> TestApp {
    let base = format!("{}/v1", server.uri());
    TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", "pk"),
        ("PROVIDER_OPENAI_API_KEY", "sk-openai"),
    ])
    .await
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let Some(python) = sdk_python("the Python SDK test") else {
        return;
    };
    let server = portkey().await;
    let app = gateway(&server).await;

    let mut command = tokio::process::Command::new(python);
    command.arg("openai_sdk.py");
    run_sdk_script(command, &app).await;
}

#[tokio::test]
async fn the_official_node_sdk_works_unchanged() {
    if !available("node", "the Node SDK test") {
        return;
    }
    install_once(
        &sdk_dir().join("node_modules/openai/package.json"),
        std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(sdk_dir()),
    );
    let server = portkey().await;
    let app = gateway(&server).await;

    let mut command = tokio::process::Command::new("node");
    command.arg("openai_sdk.mjs");
    run_sdk_script(command, &app).await;
}
