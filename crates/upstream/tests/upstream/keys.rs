//! Keys: `--require-key` on OpenAI's, Anthropic's and Azure's paths, and
//! the `echo_key` fault that sends the request's key back in a 401.

use std::net::SocketAddr;

use gatewayz_upstream::Config;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Answer, GATEWAY_BODY, STREAM_BODY, call_with, events, faulty, spawn, with_fault};

const KEY: &str = "sk-upstream-test";
const AZURE_CHAT: &str = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21";

fn keyed() -> Config {
    Config {
        chunks: 2,
        require_key: Some(KEY.parse().unwrap()),
        ..Config::default()
    }
}

async fn post(address: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    call_with(address, "POST", path, headers, body).await
}

fn invalid_api_key() -> Value {
    json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
        "param": null, "code": "invalid_api_key"}})
}

fn echoed(key: &str) -> String {
    format!(
        "Incorrect API key provided: {key}. You can find your API key at \
         https://platform.openai.com/account/api-keys."
    )
}

#[tokio::test]
async fn without_require_key_no_key_is_checked() {
    let address = spawn(Config::default()).await;

    let openai = post(address, "/v1/chat/completions", &[], GATEWAY_BODY).await;
    let wrong = post(
        address,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-anything")],
        GATEWAY_BODY,
    )
    .await;
    let azure = post(address, AZURE_CHAT, &[], GATEWAY_BODY).await;

    assert_eq!(openai.status, StatusCode::OK);
    assert_eq!(wrong.status, StatusCode::OK);
    assert_eq!(azure.status, StatusCode::OK);
}

#[tokio::test]
async fn require_key_accepts_the_bearer_key_on_openai_paths() {
    let address = spawn(keyed()).await;
    let bearer = format!("Bearer {KEY}");
    let headers = [("authorization", bearer.as_str())];
    let embedding = json!({"model": "text-embedding-3-small", "input": "hi"}).to_string();
    let response = json!({"model": "gpt-4o-mini", "input": "hi"}).to_string();

    let chat = post(address, "/v1/chat/completions", &headers, GATEWAY_BODY).await;
    let bare = post(address, "/chat/completions", &headers, GATEWAY_BODY).await;
    let stream = post(address, "/v1/chat/completions", &headers, STREAM_BODY).await;
    let embeddings = post(address, "/v1/embeddings", &headers, &embedding).await;
    let responses = post(address, "/v1/responses", &headers, &response).await;

    assert_eq!(chat.status, StatusCode::OK);
    assert_eq!(chat.json()["object"], "chat.completion");
    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(events(&stream).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(embeddings.status, StatusCode::OK);
    assert_eq!(responses.status, StatusCode::OK);
}

#[tokio::test]
async fn require_key_refuses_a_missing_wrong_or_misplaced_key_on_openai_paths_with_invalid_api_key() {
    let address = spawn(keyed()).await;
    let wrong = "Bearer sk-other".to_owned();
    let unschemed = KEY.to_owned();
    let refused: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", &wrong)],
        &[("authorization", &unschemed)],
        &[("api-key", KEY)],
    ];

    for headers in refused {
        for path in ["/v1/chat/completions", "/chat/completions", "/v1/embeddings"] {
            let answer = post(address, path, headers, GATEWAY_BODY).await;

            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
            assert_eq!(answer.content_type.as_deref(), Some("application/json"));
            assert_eq!(answer.json(), invalid_api_key(), "{path} {headers:?}");
        }
        let stored = call_with(address, "GET", "/v1/responses/resp_1", headers, "").await;
        assert_eq!(stored.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn require_key_refuses_on_anthropics_paths_in_anthropics_shape() {
    let address = spawn(keyed()).await;
    let bearer = format!("Bearer {KEY}");
    let message = json!({"model": "claude-3-5-haiku", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let version = ("anthropic-version", "2023-06-01");

    let refused = post(address, "/v1/messages", &[version], &message).await;
    let accepted = post(
        address,
        "/v1/messages",
        &[version, ("authorization", &bearer)],
        &message,
    )
    .await;

    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json(),
        json!({"type": "error", "error": {"type": "authentication_error",
            "message": "Incorrect API key provided."}})
    );
    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(accepted.json()["type"], "message");
}

#[tokio::test]
async fn require_key_takes_the_api_key_header_on_azure_paths_and_ignores_authorization() {
    let address = spawn(keyed()).await;
    let bearer = format!("Bearer {KEY}");
    let embeddings = "/openai/deployments/ada/embeddings?api-version=1";
    let embedding = json!({"input": "hi"}).to_string();

    let accepted = post(address, AZURE_CHAT, &[("api-key", KEY)], GATEWAY_BODY).await;
    let accepted_embeddings = post(address, embeddings, &[("api-key", KEY)], &embedding).await;
    let bearer_only = post(address, AZURE_CHAT, &[("authorization", &bearer)], GATEWAY_BODY).await;
    let wrong = post(
        address,
        AZURE_CHAT,
        &[("api-key", "sk-other"), ("authorization", &bearer)],
        GATEWAY_BODY,
    )
    .await;
    let missing = post(address, embeddings, &[], &embedding).await;

    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(accepted.json()["model"], "gpt-4o-prod");
    assert_eq!(accepted_embeddings.status, StatusCode::OK);
    for refused in [bearer_only, wrong, missing] {
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused.json(), invalid_api_key());
    }
}

#[tokio::test]
async fn echo_key_answers_401_with_the_bearer_token_as_received() {
    let address = spawn(faulty(2)).await;
    let key = "sk-proj-Secret_42";
    let bearer = format!("Bearer {key}");

    for body in [GATEWAY_BODY, STREAM_BODY] {
        let answer = post(
            address,
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            &with_fault(body, "echo_key"),
        )
        .await;

        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            answer.json(),
            json!({"error": {"message": echoed(key), "type": "invalid_request_error",
                "param": null, "code": "invalid_api_key"}})
        );
    }
    let embeddings = post(
        address,
        "/v1/embeddings",
        &[("authorization", &bearer)],
        &with_fault(r#"{"model":"m","input":"hi"}"#, "echo_key"),
    )
    .await;
    assert_eq!(embeddings.json()["error"]["message"], echoed(key));
}

#[tokio::test]
async fn echo_key_answers_with_the_api_key_on_azure_paths_and_none_without_a_key() {
    let address = spawn(faulty(2)).await;
    let body = with_fault(GATEWAY_BODY, "echo_key");

    let azure = post(
        address,
        AZURE_CHAT,
        &[("api-key", "azure-key-1"), ("authorization", "Bearer sk-other")],
        &body,
    )
    .await;
    let azure_without = post(
        address,
        AZURE_CHAT,
        &[("authorization", "Bearer sk-other")],
        &body,
    )
    .await;
    let openai_without = post(address, "/v1/chat/completions", &[], &body).await;
    let unschemed = post(
        address,
        "/v1/chat/completions",
        &[("authorization", "Token abc")],
        &body,
    )
    .await;

    assert_eq!(azure.status, StatusCode::UNAUTHORIZED);
    assert_eq!(azure.json()["error"]["message"], echoed("azure-key-1"));
    assert_eq!(azure.json()["error"]["code"], "invalid_api_key");
    assert_eq!(azure_without.json()["error"]["message"], echoed("none"));
    assert_eq!(openai_without.json()["error"]["message"], echoed("none"));
    assert_eq!(unschemed.json()["error"]["message"], echoed("Token abc"));
}

#[tokio::test]
async fn echo_key_answers_in_anthropics_shape_on_anthropics_paths() {
    let address = spawn(faulty(2)).await;
    let message = json!({"model": "claude-3-5-haiku", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}], "upstream_fault": "echo_key"})
    .to_string();

    let answer = post(
        address,
        "/v1/messages",
        &[("authorization", "Bearer sk-ant-1")],
        &message,
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": echoed("sk-ant-1")}})
    );
}

#[tokio::test]
async fn echo_key_behind_require_key_echoes_the_accepted_key() {
    let address = spawn(Config {
        faults: true,
        ..keyed()
    })
    .await;
    let bearer = format!("Bearer {KEY}");
    let body = with_fault(GATEWAY_BODY, "echo_key");

    let echoed_key = post(
        address,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &body,
    )
    .await;
    let refused = post(address, "/v1/chat/completions", &[], &body).await;

    assert_eq!(echoed_key.json()["error"]["message"], echoed(KEY));
    assert_eq!(refused.json(), invalid_api_key());
}
