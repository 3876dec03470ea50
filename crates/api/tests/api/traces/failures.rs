//! Failed requests and circuit breakers, on the spans.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::collector::{Attributes, Collector};
use super::upstream;
use super::{chat, direct, gateway};
use crate::helpers::PolicyFile;

fn failing(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": format!("upstream says {status}"),
        "type": "server_error", "param": null, "code": null}, "provider": "openai"}))
}

#[tokio::test]
async fn a_request_the_upstream_failed_has_error_types_and_error_statuses_on_both_spans() {
    let collector = Collector::http().await;
    let portkey = MockServer::builder().start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(failing(503))
        .mount(&portkey)
        .await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );

    let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), None).await;

    let status = response.status().as_u16();
    assert!(status >= 500, "{status}");
    let spans = collector
        .wait_for("a server span", |spans| {
            spans.iter().any(|span| span.is(SpanKind::Server))
        })
        .await;
    let (server, clients) = collector.trace(&spans[0].trace_id(), 1).await;
    assert_eq!(server.int("http.response.status_code"), Some(i64::from(status)));
    assert_eq!(server.string("error.type"), Some(status.to_string().as_str()));
    assert!(server.failed(), "{:?}", server.span.status);
    assert_eq!(server.string("gatewayz.error.kind"), Some("upstream_failed"));
    assert!(server.string("gatewayz.error.source").is_some());
    assert_eq!(clients.len(), 1, "a request naming its upstream is not retried");
    assert_eq!(clients[0].string("error.type"), Some("upstream_failed"));
    assert!(clients[0].failed());
}

#[tokio::test]
async fn a_client_error_is_no_error_on_the_server_span() {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello").await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );

    let response = chat(&gateway, &json!({"model": "gpt-4o-mini"}), None).await;

    assert_eq!(response.status(), 400);
    let spans = collector
        .wait_for("a server span", |spans| {
            spans.iter().any(|span| span.is(SpanKind::Server))
        })
        .await;
    assert_eq!(spans.len(), 1, "no upstream attempt: {spans:#?}");
    let server = &spans[0];
    assert_eq!(server.int("http.response.status_code"), Some(400));
    assert!(server.value("error.type").is_none());
    assert!(!server.failed());
}

const BREAKING_CATALOG: &str = r#"
[[models]]
id = "traced-breaking"
strategy = "fallback"
routing = { retries = 0, breaker_failures = 1 }
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
"#;

#[tokio::test]
async fn a_circuit_that_opens_is_a_breaker_event_on_the_server_span() {
    let collector = Collector::http().await;
    let portkey = MockServer::builder().start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "model-a"})))
        .respond_with(failing(502))
        .mount(&portkey)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "model-b"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(upstream::completion("from b")))
        .mount(&portkey)
        .await;
    let catalog = PolicyFile::new("traces-breaking-catalog", BREAKING_CATALOG);
    let gateway = gateway(
        &upstream::base(&portkey),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("GATEWAYZ_CATALOG", catalog.path()),
        ],
    );
    let body = json!({"model": "traced-breaking", "messages": [{"role": "user", "content": "hi"}]});

    let response = chat(&gateway, &body, None).await;

    assert_eq!(response.status(), 200);
    let spans = collector
        .wait_for("a server span", |spans| {
            spans.iter().any(|span| span.is(SpanKind::Server))
        })
        .await;
    let server = spans.iter().find(|span| span.is(SpanKind::Server)).unwrap();
    let (breaker, _) = server.event("gatewayz.breaker");
    assert_eq!(breaker.string("gatewayz.target"), Some("primary"));
    assert_eq!(breaker.string("gatewayz.breaker.state"), Some("open"));
    assert_eq!(breaker.string("gatewayz.catalog_model"), Some("traced-breaking"));
    let (fallback, _) = server.event("gatewayz.fallback");
    assert_eq!(fallback.string("gatewayz.target"), Some("primary"));
}
