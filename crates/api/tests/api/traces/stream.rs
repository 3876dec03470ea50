//! The spans of a stream: the attempt's span lasts as long as the stream,
//! and carries its time to first token, usage and finish reasons.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::collector::{Attributes, Collector, Exported};
use super::upstream::{self, ANSWERING_MODEL, COMPLETION_TOKENS, PROMPT_TOKENS, Paced};
use super::{chat, direct, gateway};
use crate::helpers::sse_data;

/// How long the paced upstream waits between its first chunk and the rest.
const PAUSE: Duration = Duration::from_millis(400);

fn stream_request() -> Value {
    let mut body = direct("gpt-4o-mini", "Hello there");
    body["stream"] = json!(true);
    body
}

/// The server span and the client span of one stream from the paced
/// upstream, read to its end; and what the upstream saw.
async fn paced_stream_spans() -> (Exported, Exported, Arc<Mutex<Paced>>) {
    // The traces endpoint variable is the whole URL, used as it is.
    let collector = Collector::http_at("/collector/traces").await;
    let (portkey, paced) = upstream::paced_stream("streamed words", PAUSE).await;
    let gateway = gateway(
        &portkey,
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector.url())],
    );

    let response = chat(&gateway, &stream_request(), None).await;

    assert_eq!(response.status(), 200);
    let events = sse_data(response).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let spans = collector
        .wait_for("a client span", |spans| {
            spans.iter().any(|span| span.is(SpanKind::Client))
        })
        .await;
    let trace = spans
        .iter()
        .find(|span| span.is(SpanKind::Client))
        .unwrap()
        .trace_id();
    let (server, mut clients) = collector.trace(&trace, 1).await;
    assert_eq!(clients.len(), 1, "{clients:#?}");
    (server, clients.remove(0), paced)
}

#[tokio::test]
async fn a_streams_client_span_has_its_time_to_first_token_usage_and_finish_reasons() {
    let (server, client, paced) = paced_stream_spans().await;

    assert_eq!(client.span.name, "chat gpt-4o-mini");
    assert_eq!(client.parent_id(), server.span_id());
    assert!(
        server.parent_id().is_empty(),
        "a new trace: the server span is its root"
    );
    let ttft = client.double("gatewayz.time_to_first_token_ms").unwrap();
    assert!(
        (0.0..PAUSE.as_secs_f64() * 1000.0).contains(&ttft),
        "time to first token {ttft} ms"
    );
    let (_, first_token_at) = client.event("first_token");
    assert!(first_token_at >= client.span.start_time_unix_nano);
    assert!(server.double("gatewayz.time_to_first_token_ms").is_some());
    assert_eq!(client.string("gen_ai.response.model"), Some(ANSWERING_MODEL));
    // From the last chunks, sent after the pause: the span was still open.
    assert_eq!(client.int("gen_ai.usage.input_tokens"), Some(PROMPT_TOKENS));
    assert_eq!(client.int("gen_ai.usage.output_tokens"), Some(COMPLETION_TOKENS));
    assert_eq!(
        client.strings("gen_ai.response.finish_reasons"),
        Some(vec!["stop"])
    );
    assert!(!client.failed());
    assert_eq!(server.int("http.response.status_code"), Some(200));

    let head = paced.lock().unwrap().head.to_ascii_lowercase();
    let expected = format!("traceparent: 00-{}-{}-01", client.trace_id(), client.span_id());
    assert!(
        head.contains(&expected),
        "the stream's upstream joins the trace: {head}"
    );
}

#[tokio::test]
async fn a_streams_spans_end_when_the_stream_ends() {
    let (server, client, paced) = paced_stream_spans().await;

    let rest_sent = paced.lock().unwrap().rest_sent.unwrap();
    let rest_sent = u64::try_from(rest_sent.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    let (_, first_token_at) = client.event("first_token");
    assert!(
        client.span.end_time_unix_nano >= first_token_at,
        "the client span ended {} µs before its own first_token event",
        (first_token_at - client.span.end_time_unix_nano) / 1000
    );
    assert!(
        client.span.end_time_unix_nano >= rest_sent,
        "the client span ended {} ms before the upstream sent the stream's last chunks; it lasted {:?}",
        (rest_sent - client.span.end_time_unix_nano) / 1_000_000,
        client.duration()
    );
    assert!(
        server.span.end_time_unix_nano >= client.span.end_time_unix_nano,
        "the server span ended before its client span"
    );
    assert!(
        server.duration() >= PAUSE,
        "the server span lasted {:?}",
        server.duration()
    );
}

#[tokio::test]
async fn a_long_streams_client_span_keeps_its_usage_and_finish_reasons_and_each_attribute_once() {
    let collector = Collector::http().await;
    let portkey = MockServer::builder().start().await;
    let (first, rest) = upstream::stream_events("word ");
    let words: String = (0..200)
        .map(|_| format!("data: {}\n\n", upstream::chunk(json!({"content": "word "}), None)))
        .collect();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(first + &words + &rest, "text/event-stream"))
        .mount(&portkey)
        .await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );

    let response = chat(&gateway, &stream_request(), None).await;

    assert_eq!(response.status(), 200);
    let events = sse_data(response).await;
    assert!(events.len() > 201, "every chunk: {}", events.len());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let spans = collector
        .wait_for("a server span and a client span", |spans| {
            let has = |kind| spans.iter().any(|span: &Exported| span.is(kind));
            has(SpanKind::Server) && has(SpanKind::Client)
        })
        .await;
    let client = spans.iter().find(|span| span.is(SpanKind::Client)).unwrap();
    assert_eq!(client.int("gen_ai.usage.input_tokens"), Some(PROMPT_TOKENS));
    assert_eq!(client.int("gen_ai.usage.output_tokens"), Some(COMPLETION_TOKENS));
    assert_eq!(
        client.strings("gen_ai.response.finish_reasons"),
        Some(vec!["stop"])
    );
    assert_eq!(client.span.dropped_attributes_count, 0);
    assert_eq!(client.repeated_keys(), Vec::<&str>::new());
    assert_eq!(client.string("gen_ai.response.model"), Some(ANSWERING_MODEL));
}
