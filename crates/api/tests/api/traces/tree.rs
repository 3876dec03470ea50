//! The spans of a JSON request and of a catalog request that retried and
//! fell back: their tree, names, attributes and events.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::collector::{Attributes, Collector};
use super::upstream::{self, ANSWERING_MODEL, COMPLETION_TOKENS, PROMPT_TOKENS};
use super::{chat, direct, gateway, header};
use crate::helpers::{KEY, PolicyFile, sha256_hex};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The key's id, as the gateway names a key of `GATEWAYZ_API_KEYS`.
pub(super) fn key_id() -> String {
    sha256_hex(KEY)[..8].to_owned()
}

#[tokio::test]
async fn a_json_request_continues_the_clients_trace_with_a_server_span_over_a_genai_client_span_the_upstream_joins()
 {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello from upstream").await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );
    let mut body = direct("gpt-4o-mini", "Hello there");
    body["max_tokens"] = json!(50);
    body["temperature"] = json!(0.25);

    let response = chat(
        &gateway,
        &body,
        Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")),
    )
    .await;

    assert_eq!(response.status(), 200);
    let request_id = header(&response, "x-request-id").unwrap();
    let (server, clients) = collector.trace(CLIENT_TRACE, 1).await;
    let all = collector.spans().await;
    assert_eq!(all.len(), 2, "one server span, one client span: {all:#?}");
    assert!(all.iter().all(|span| span.trace_id() == CLIENT_TRACE), "{all:#?}");

    assert!(server.is(SpanKind::Server));
    assert_eq!(server.span.name, "POST /v1/chat/completions");
    assert_eq!(server.parent_id(), CLIENT_SPAN, "the client's span is the parent");
    assert_eq!(server.string("http.request.method"), Some("POST"));
    assert_eq!(server.string("http.route"), Some("/v1/chat/completions"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.string("gatewayz.request_id"), Some(request_id.as_str()));
    assert_eq!(server.string("gatewayz.key_id"), Some(key_id().as_str()));
    assert_eq!(server.string("gatewayz.endpoint"), Some("chat"));
    assert_eq!(server.int("gatewayz.attempts"), Some(1));
    assert!(!server.failed() && server.value("error.type").is_none());
    assert_eq!(
        server.resource.string("service.name"),
        Some("gatewayz"),
        "{:?}",
        server.resource
    );

    assert_eq!(clients.len(), 1, "{clients:#?}");
    let client = &clients[0];
    assert_eq!(client.span.name, "chat gpt-4o-mini");
    assert_eq!(client.parent_id(), server.span_id());
    assert_eq!(client.string("gen_ai.operation.name"), Some("chat"));
    assert_eq!(client.string("gen_ai.provider.name"), Some("openai"));
    assert_eq!(client.string("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(client.string("gen_ai.response.model"), Some(ANSWERING_MODEL));
    assert_eq!(client.int("gen_ai.request.max_tokens"), Some(50));
    assert_eq!(client.double("gen_ai.request.temperature"), Some(0.25));
    assert_eq!(client.int("gen_ai.usage.input_tokens"), Some(PROMPT_TOKENS));
    assert_eq!(client.int("gen_ai.usage.output_tokens"), Some(COMPLETION_TOKENS));
    assert_eq!(
        client.strings("gen_ai.response.finish_reasons"),
        Some(vec!["stop"])
    );
    assert_eq!(client.string("gatewayz.key_id"), Some(key_id().as_str()));
    assert_eq!(client.string("gatewayz.request_id"), Some(request_id.as_str()));
    assert_eq!(client.int("gatewayz.attempt"), Some(1));
    assert!(!client.failed() && client.value("error.type").is_none());
    assert!(
        client.span.start_time_unix_nano >= server.span.start_time_unix_nano
            && client.span.end_time_unix_nano <= server.span.end_time_unix_nano,
        "the client span lies within the server span"
    );

    for span in [&server, client] {
        assert_eq!(span.repeated_keys(), Vec::<&str>::new(), "{}", span.span.name);
    }
    assert_eq!(
        upstream::traceparents(&portkey).await,
        [Some(format!("00-{CLIENT_TRACE}-{}-01", client.span_id()))],
        "the upstream joins the trace under the attempt's span"
    );
}

const FALLBACK_CATALOG: &str = r#"
[[models]]
id = "traced-smart"
strategy = "fallback"
routing = { retries = 1, backoff_base_ms = 5 }
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
input_usd_per_million = 1000
output_usd_per_million = 2000
"#;

#[tokio::test]
async fn a_catalog_request_that_retried_and_fell_back_has_a_client_span_per_attempt_and_the_events_on_its_server_span()
 {
    let collector = Collector::http().await;
    let portkey = MockServer::builder().start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "model-a"})))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "upstream says 500",
            "type": "server_error", "param": null, "code": null}, "provider": "openai"})),
        )
        .mount(&portkey)
        .await;
    let mut answer = upstream::completion("from model-b");
    answer["model"] = json!("model-b");
    answer["usage"] = json!({"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "model-b"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&portkey)
        .await;
    let catalog = PolicyFile::new("traces-fallback-catalog", FALLBACK_CATALOG);
    let gateway = gateway(
        &upstream::base(&portkey),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("GATEWAYZ_CATALOG", catalog.path()),
        ],
    );
    let body = json!({"model": "traced-smart", "messages": [{"role": "user", "content": "Hello there"}]});

    let response = chat(
        &gateway,
        &body,
        Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")),
    )
    .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-gatewayz-target").as_deref(),
        Some("secondary")
    );
    let (server, clients) = collector.trace(CLIENT_TRACE, 3).await;
    assert_eq!(
        clients.len(),
        3,
        "two attempts at primary, one at secondary: {clients:#?}"
    );

    assert_eq!(server.string("gatewayz.catalog_model"), Some("traced-smart"));
    assert_eq!(server.string("gatewayz.target"), Some("secondary"));
    assert_eq!(server.int("gatewayz.attempts"), Some(3));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert!(!server.failed());
    let cost = 2.0 * 1000.0 / 1e6 + 2.0 * 2000.0 / 1e6;
    assert!((server.double("gatewayz.cost_usd").unwrap() - cost).abs() < 1e-9);
    let (retry, retried_at) = server.event("gatewayz.retry");
    assert_eq!(retry.string("gatewayz.target"), Some("primary"));
    assert_eq!(retry.string("gatewayz.catalog_model"), Some("traced-smart"));
    assert_eq!(retry.string("error.type"), Some("upstream_failed"));
    assert!(
        retry
            .int("gatewayz.wait_ms")
            .is_some_and(|wait| (0..=5).contains(&wait))
    );
    let (fallback, fell_back_at) = server.event("gatewayz.fallback");
    assert_eq!(
        fallback.string("gatewayz.target"),
        Some("primary"),
        "the target left"
    );
    assert_eq!(fallback.string("error.type"), Some("upstream_failed"));
    assert!(retried_at < fell_back_at);

    let names: Vec<&str> = clients.iter().map(|span| span.span.name.as_str()).collect();
    assert_eq!(names, ["chat model-a", "chat model-a", "chat model-b"]);
    let numbers: Vec<Option<i64>> = clients.iter().map(|span| span.int("gatewayz.attempt")).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    let targets: Vec<Option<&str>> = clients
        .iter()
        .map(|span| span.string("gatewayz.target"))
        .collect();
    assert_eq!(targets, [Some("primary"), Some("primary"), Some("secondary")]);
    for client in &clients {
        assert_eq!(client.parent_id(), server.span_id());
        assert_eq!(client.string("gatewayz.catalog_model"), Some("traced-smart"));
        assert_eq!(client.string("gen_ai.provider.name"), Some("openai"));
    }
    for failed in &clients[..2] {
        assert_eq!(failed.string("error.type"), Some("upstream_failed"));
        assert!(failed.failed(), "an error status: {:?}", failed.span.status);
    }
    let served = &clients[2];
    assert!(!served.failed() && served.value("error.type").is_none());
    assert_eq!(served.string("gen_ai.response.model"), Some("model-b"));
    assert!((served.double("gatewayz.cost_usd").unwrap() - cost).abs() < 1e-9);
    assert!(clients[1].span.start_time_unix_nano >= clients[0].span.end_time_unix_nano);
    assert!(clients[2].span.start_time_unix_nano >= clients[1].span.end_time_unix_nano);

    let mut sent: Vec<String> = upstream::traceparents(&portkey)
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut expected: Vec<String> = clients
        .iter()
        .map(|client| format!("00-{CLIENT_TRACE}-{}-01", client.span_id()))
        .collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "each attempt sent its own span's context");
}
