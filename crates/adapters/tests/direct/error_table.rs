//! A direct upstream's failures through the error table: each status its
//! variant, every failure the provider's (there is no Portkey to blame), and
//! the failures without an answer naming the upstream.

use std::time::Duration;

use gatewayz_adapters::http::Timeouts;
use gatewayz_domain::{ChatError, ChatProvider, ErrorSource, ResponseAction};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{
    UPSTREAM, by_id_on, chat_call, client_with, completion_json, direct, openai_error, server_answering,
    spec, stream_call, timeouts, upstream_of,
};
use crate::raw::{RawServer, Then};

async fn failure(response: ResponseTemplate) -> ChatError {
    let server = server_answering(response).await;
    direct(&server).complete(chat_call()).await.unwrap_err()
}

/// Asserts that `error` is the provider's, with `status`.
fn assert_providers(error: &ChatError, status: Option<u16>) {
    let upstream = upstream_of(error);
    assert_eq!(upstream.source, ErrorSource::Provider, "{error:?}");
    assert_eq!(error.source(), ErrorSource::Provider, "{error:?}");
    assert_eq!(upstream.status, status, "{error:?}");
}

#[tokio::test]
async fn each_status_becomes_its_variant_with_the_upstreams_message_param_and_code() {
    // Each variant by its stable name (`ChatError::kind`).
    let cases = [
        (400, "upstream_rejected"),
        (401, "upstream_auth"),
        (403, "upstream_auth"),
        (404, "upstream_rejected"),
        (408, "timeout"),
        (422, "upstream_rejected"),
        (429, "rate_limited"),
        (500, "upstream_failed"),
        (502, "upstream_failed"),
        (503, "upstream_failed"),
    ];
    for (status, kind) in cases {
        let error = failure(ResponseTemplate::new(status).set_body_json(json!({"error": {
            "message": format!("said with {status}"), "type": "invalid_request_error",
            "param": "messages", "code": "some_code"}})))
        .await;

        assert_eq!(error.kind(), kind, "{status}: {error:?}");
        assert_providers(&error, Some(status));
        let upstream = upstream_of(&error);
        assert_eq!(upstream.message, format!("said with {status}"));
        assert_eq!(upstream.param.as_deref(), Some("messages"));
        assert_eq!(upstream.code.as_deref(), Some("some_code"));
    }
}

#[tokio::test]
async fn a_numeric_code_as_vllm_sends_it_is_kept_as_text() {
    let error = failure(
        ResponseTemplate::new(400)
            .set_body_json(json!({"error": {"message": "bad", "type": "BadRequestError", "code": 400}})),
    )
    .await;

    assert_eq!(upstream_of(&error).code.as_deref(), Some("400"));
}

#[tokio::test]
async fn a_429_passes_on_retry_after_ms_before_retry_after() {
    let cases = [
        (
            vec![("retry-after-ms", "1500")],
            Some(Duration::from_millis(1500)),
        ),
        (vec![("retry-after", "17")], Some(Duration::from_secs(17))),
        (
            vec![("retry-after-ms", "250"), ("retry-after", "9")],
            Some(Duration::from_millis(250)),
        ),
        (vec![], None),
    ];
    for (headers, expected) in cases {
        let mut response = ResponseTemplate::new(429).set_body_json(openai_error("slow down"));
        for (name, value) in &headers {
            response = response.insert_header(*name, *value);
        }

        let error = failure(response).await;

        assert!(
            matches!(&error, ChatError::RateLimited { retry_after, error }
                if *retry_after == expected && error.message == "slow down"),
            "{headers:?}: {error:?}"
        );
        assert_eq!(error.retry_after(), expected);
        assert_providers(&error, Some(429));
    }
}

#[tokio::test]
async fn bodies_that_are_not_openai_errors_are_shown_as_they_came_and_still_the_providers() {
    let cases = [
        (
            502,
            "<html><body>Bad Gateway</body></html>",
            "<html><body>Bad Gateway</body></html>",
        ),
        (503, "", "HTTP 503 with an empty body"),
        (400, "  model not loaded\n", "model not loaded"),
        // Portkey's own failure shape means nothing from a direct upstream.
        (400, r#"{"status": "failure", "message": "nope"}"#, "nope"),
    ];
    for (status, body, message) in cases {
        let error = failure(ResponseTemplate::new(status).set_body_string(body)).await;

        assert_providers(&error, Some(status));
        assert_eq!(upstream_of(&error).message, message, "{body:?}");
    }
}

#[tokio::test]
async fn a_408_is_a_timeout_blamed_on_the_provider() {
    let error = failure(ResponseTemplate::new(408).set_body_json(openai_error("Request timed out"))).await;

    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    assert_providers(&error, Some(408));
}

#[tokio::test]
async fn a_failed_call_by_id_goes_through_the_same_table() {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(404).set_body_json(openai_error("No response with id resp_1")))
        .mount(&server)
        .await;

    let error = direct(&server)
        .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Retrieve, None))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, ChatError::UpstreamRejected(e) if e.message == "No response with id resp_1"),
        "{error:?}"
    );
    assert_providers(&error, Some(404));
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_and_names_the_upstream() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let adapter = client_with(spec(&base), timeouts());

    let errors = [
        adapter.complete(chat_call()).await.unwrap_err(),
        adapter.stream(stream_call()).await.err().unwrap(),
        adapter
            .respond_by_id(by_id_on(UPSTREAM, ResponseAction::Retrieve, None))
            .await
            .unwrap_err(),
    ];

    for error in errors {
        assert!(matches!(error, ChatError::Unavailable(_)), "{error:?}");
        assert_providers(&error, None);
        let message = &upstream_of(&error).message;
        assert!(
            message.starts_with(&format!("cannot connect to upstream `{UPSTREAM}`")),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1"),
            "no address in the message: {message}"
        );
    }
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_unavailable_and_names_the_upstream() {
    let server = RawServer::start(Vec::new(), Then::Close);

    let error = client_with(spec(&server.base()), timeouts())
        .complete(chat_call())
        .await
        .unwrap_err();

    assert!(matches!(error, ChatError::Unavailable(_)), "{error:?}");
    assert_providers(&error, None);
    let message = &upstream_of(&error).message;
    assert!(message.contains(&format!("upstream `{UPSTREAM}`")), "{message}");
}

#[tokio::test]
async fn an_answer_slower_than_the_request_timeout_times_out_naming_the_upstream() {
    let server = server_answering(
        ResponseTemplate::new(200)
            .set_body_json(completion_json())
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let adapter = client_with(
        spec(&server.uri()),
        Timeouts {
            request: Duration::from_millis(200),
            ..timeouts()
        },
    );

    let error = adapter.complete(chat_call()).await.unwrap_err();

    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    assert_providers(&error, None);
    assert_eq!(
        upstream_of(&error).message,
        format!("no answer from upstream `{UPSTREAM}` within 200 ms")
    );
}

#[tokio::test]
async fn a_body_that_stalls_after_its_headers_times_out_at_the_request_deadline() {
    let server = RawServer::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\": "
            .to_vec(),
        Then::Hold,
    );
    let adapter = client_with(
        spec(&server.base()),
        Timeouts {
            request: Duration::from_millis(200),
            ..timeouts()
        },
    );

    let error = adapter.complete(chat_call()).await.unwrap_err();

    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    assert_providers(&error, None);
    assert_eq!(
        upstream_of(&error).message,
        format!("no answer from upstream `{UPSTREAM}` within 200 ms")
    );
}
