//! Each upstream status becomes the failure the error table names.

use std::time::Duration;

use gatewayz_domain::{ChatError, ChatProvider, ErrorSource};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{chat_body, openai_call, provider, server_answering, sse, sse_response};

fn provider_error(message: &str) -> serde_json::Value {
    json!({"error": {"message": message, "type": "x", "param": null, "code": null}, "provider": "openai"})
}

async fn failure(response: ResponseTemplate) -> ChatError {
    let server = server_answering(response).await;
    provider(&server, &[])
        .complete(openai_call(chat_body()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn upstream_401_and_403_are_authentication_errors() {
    for status in [401, 403] {
        let error =
            failure(ResponseTemplate::new(status).set_body_json(provider_error("openai error: bad key")))
                .await;
        assert!(
            matches!(&error, ChatError::UpstreamAuth(e) if e.message == "openai error: bad key" && e.source == ErrorSource::Provider),
            "{status}: {error:?}"
        );
    }
}

#[tokio::test]
async fn upstream_429_is_rate_limited_with_retry_after() {
    let error = failure(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "17")
            .set_body_json(provider_error("slow down")),
    )
    .await;
    assert!(
        matches!(&error, ChatError::RateLimited { retry_after: Some(after), error } if *after == Duration::from_secs(17) && error.message == "slow down"),
        "{error:?}"
    );
}

#[tokio::test]
async fn upstream_408_is_a_timeout_from_portkey() {
    let error =
        failure(ResponseTemplate::new(408).set_body_json(provider_error("Request exceeded the timeout")))
            .await;
    assert!(
        matches!(&error, ChatError::Timeout(e) if e.source == ErrorSource::Portkey),
        "{error:?}"
    );
}

#[tokio::test]
async fn other_4xx_keep_their_status_and_message() {
    for status in [400, 404, 413, 422] {
        let error = failure(ResponseTemplate::new(status).set_body_json(provider_error("nope"))).await;
        assert!(
            matches!(&error, ChatError::UpstreamRejected(e) if e.status == Some(status) && e.message == "nope"),
            "{status}: {error:?}"
        );
    }
}

#[tokio::test]
async fn portkeys_own_400_is_told_apart_from_the_providers() {
    let error = failure(
        ResponseTemplate::new(400)
            .set_body_json(json!({"status": "failure", "message": "Invalid provider passed"})),
    )
    .await;
    assert!(
        matches!(&error, ChatError::UpstreamRejected(e) if e.source == ErrorSource::Portkey && e.message == "Invalid provider passed"),
        "{error:?}"
    );
}

#[tokio::test]
async fn upstream_5xx_are_service_errors() {
    for status in [500, 502, 503, 504] {
        let error = failure(ResponseTemplate::new(status).set_body_string("upstream exploded")).await;
        assert!(
            matches!(&error, ChatError::UpstreamFailed(e) if e.status == Some(status) && e.message == "upstream exploded"),
            "{status}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_refused_before_its_first_chunk_is_a_plain_error() {
    let server = server_answering(ResponseTemplate::new(429).insert_header("retry-after", "3")).await;
    let mut body = chat_body();
    body["stream"] = json!(true);

    let error = provider(&server, &[])
        .stream(openai_call(body))
        .await
        .err()
        .unwrap();

    assert!(matches!(error, ChatError::RateLimited { .. }), "{error:?}");
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_error_is_a_plain_error() {
    let server = server_answering(sse_response(sse(&[
        json!({"error": {"message": "boom"}}).to_string()
    ])))
    .await;
    let mut body = chat_body();
    body["stream"] = json!(true);

    let error = provider(&server, &[])
        .stream(openai_call(body))
        .await
        .err()
        .unwrap();

    assert!(
        matches!(&error, ChatError::UpstreamFailed(e) if e.message == "boom"),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_echoes_a_key_has_it_scrubbed_from_the_message() {
    let message = format!(
        "Incorrect API key provided: {} (portkey {})",
        crate::helpers::OPENAI_KEY,
        crate::helpers::PORTKEY_KEY
    );
    let error = failure(ResponseTemplate::new(401).set_body_json(provider_error(&message))).await;

    let text = error.to_string();
    assert!(
        !text.contains(crate::helpers::OPENAI_KEY) && !text.contains(crate::helpers::PORTKEY_KEY),
        "{text}"
    );
    assert!(text.contains("Incorrect API key provided: [REDACTED]"), "{text}");
}

#[tokio::test]
async fn a_stream_refused_with_another_4xx_keeps_its_status() {
    let server =
        server_answering(ResponseTemplate::new(404).set_body_json(provider_error("no such model"))).await;
    let mut body = chat_body();
    body["stream"] = json!(true);

    let error = provider(&server, &[])
        .stream(openai_call(body))
        .await
        .err()
        .unwrap();

    assert!(
        matches!(&error, ChatError::UpstreamRejected(e) if e.status == Some(404) && e.message == "no such model"),
        "{error:?}"
    );
}
