use gatewayz_adapters::mock::MockChatProvider;
use serde_json::Value;

use crate::helpers::{KEY, TestApp, assert_openai_error, chat_body};

async fn no_calls_app() -> TestApp {
    let mut provider = MockChatProvider::new();
    provider.expect_complete().never();
    provider.expect_stream().never();
    TestApp::with_provider(provider).await
}

#[tokio::test]
async fn a_request_without_a_gateway_key_gets_401() {
    let app = no_calls_app().await;

    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&chat_body())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "missing_api_key");
}

#[tokio::test]
async fn a_wrong_or_malformed_gateway_key_gets_401() {
    let app = no_calls_app().await;
    let cases = [
        format!("Bearer {KEY}x"),
        format!("Bearer {}", &KEY[..KEY.len() - 1]),
        "Bearer ".to_owned(),
        format!("Basic {KEY}"),
        KEY.to_owned(),
    ];

    for authorization in cases {
        let response = app
            .client
            .post(app.url("/v1/chat/completions"))
            .header("authorization", &authorization)
            .json(&chat_body())
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 401, "{authorization}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            assert_openai_error(&body)["code"],
            "invalid_api_key",
            "{authorization}"
        );
        assert!(!body.to_string().contains(KEY), "the key is never echoed: {body}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::demo().await;

    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("authorization", format!("bearer {KEY}"))
        .json(&chat_body())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn any_of_several_configured_keys_is_accepted() {
    let app = TestApp::spawn(
        crate::helpers::demo_service(),
        &[("GATEWAYZ_API_KEYS", "first-key, second-key")],
    )
    .await;

    for key in ["first-key", "second-key"] {
        let response = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{key}");
    }
}
