//! Exporting never slows or fails a request: off without an endpoint, an
//! unreachable or silent collector, a full queue, the flush at shutdown;
//! and export over gRPC.

use std::time::{Duration, Instant};

use futures::StreamExt;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::collector::Collector;
use super::upstream;
use super::{chat, direct, export_warnings, gateway, stop};
use crate::binary::Gateway;
use crate::helpers::sample;

const CLIENT_TRACEPARENT: &str = "00-5a1e0b2f6c7d8e9fa0b1c2d3e4f5a6b7-1a2b3c4d5e6f7a8b-01";
const DROPPED: &str = "gatewayz_trace_spans_dropped_total ";

async fn metrics(gateway: &Gateway) -> String {
    reqwest::get(format!("{}/metrics", gateway.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_otel_variables_no_span_is_made_requests_work_and_none_is_dropped() {
    let portkey = upstream::portkey("hello").await;
    let gateway = gateway(&upstream::base(&portkey), &[]);

    let traced = chat(&gateway, &direct("gpt-4o-mini", "hi"), Some(CLIENT_TRACEPARENT)).await;
    let untraced = chat(&gateway, &direct("gpt-4o-mini", "hi"), None).await;

    assert_eq!(traced.status(), 200);
    assert_eq!(untraced.status(), 200);
    // An attempt span would have sent its own context upstream.
    assert_eq!(
        upstream::traceparents(&portkey).await,
        [Some(CLIENT_TRACEPARENT.to_owned()), None],
        "the client's traceparent passed on as sent, and no other"
    );
    assert_eq!(sample(&metrics(&gateway).await, DROPPED), Some(0.0));
}

#[tokio::test]
async fn with_the_sdk_disabled_or_no_traces_exporter_nothing_is_exported_even_with_an_endpoint() {
    for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
        let collector = Collector::http().await;
        let portkey = upstream::portkey("hello").await;
        let mut gateway = gateway(
            &upstream::base(&portkey),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()), off],
        );

        let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), Some(CLIENT_TRACEPARENT)).await;

        assert_eq!(response.status(), 200, "{off:?}");
        assert_eq!(
            upstream::traceparents(&portkey).await,
            [Some(CLIENT_TRACEPARENT.to_owned())],
            "{off:?}"
        );
        // A stopped gateway has sent every span it queued.
        stop(&mut gateway).await;
        assert!(collector.bodies().await.is_empty(), "{off:?}");
    }
}

#[tokio::test]
async fn the_spans_still_queued_are_sent_when_the_gateway_stops() {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello").await;
    let mut gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );
    let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), Some(CLIENT_TRACEPARENT)).await;
    assert_eq!(response.status(), 200);

    stop(&mut gateway).await;

    // No wait: the spans were sent before the process ended.
    let spans = collector.spans().await;
    let kinds: Vec<bool> = [SpanKind::Server, SpanKind::Client]
        .into_iter()
        .map(|kind| spans.iter().any(|span| span.is(kind)))
        .collect();
    assert_eq!(kinds, [true, true], "{spans:#?}");
}

#[tokio::test]
async fn over_grpc_each_requests_spans_reach_the_collector_and_no_export_fails() {
    let collector = Collector::grpc().await;
    let portkey = upstream::portkey("hello").await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );

    for trace in [
        "0102030405060708090a0b0c0d0e0f10",
        "1112131415161718191a1b1c1d1e1f20",
    ] {
        let traceparent = format!("00-{trace}-a1a2a3a4a5a6a7a8-01");
        let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), Some(&traceparent)).await;
        assert_eq!(response.status(), 200);
        let (server, clients) = collector.trace(trace, 1).await;
        assert_eq!(server.span.name, "POST /v1/chat/completions");
        assert_eq!(server.parent_id(), "a1a2a3a4a5a6a7a8");
        assert_eq!(clients[0].span.name, "chat gpt-4o-mini");
        assert_eq!(clients[0].parent_id(), server.span_id());
    }

    // The second export came after the first had its answer.
    assert_eq!(export_warnings(&gateway), Vec::<String>::new());
}

/// A closed port on loopback: bound, then let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Requests for 5 s to a gateway exporting with `protocol` to a closed port:
/// each answers 200 at once, and one warning is logged, not one per export.
async fn an_unreachable_collector_slows_nothing_and_is_logged_once(protocol: &str) {
    let portkey = upstream::portkey("hello").await;
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let gateway = gateway(
        &upstream::base(&portkey),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ],
    );

    // Past two of the exporter's 2 s batches.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(5) {
        let sent = Instant::now();
        let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), None).await;
        assert_eq!(response.status(), 200);
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(slowest < Duration::from_secs(1), "a request took {slowest:?}");
    let warnings = export_warnings(&gateway);
    assert_eq!(warnings.len(), 1, "{protocol}: {:#?}", gateway.lines());
    let others: Vec<String> = gateway
        .lines()
        .into_iter()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .filter(|line| !line.contains("traces could not be exported"))
        .collect();
    assert!(others.is_empty(), "{protocol}: other warnings: {others:#?}");
}

#[tokio::test]
async fn an_unreachable_http_collector_slows_no_request_and_is_logged_once() {
    an_unreachable_collector_slows_nothing_and_is_logged_once("http/protobuf").await;
}

#[tokio::test]
async fn an_unreachable_grpc_collector_slows_no_request_and_is_logged_once() {
    an_unreachable_collector_slows_nothing_and_is_logged_once("grpc").await;
}

/// A collector that takes connections and requests and never answers.
async fn silent_collector() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = vec![0_u8; 64 * 1024];
                while tokio::io::AsyncReadExt::read(&mut socket, &mut sink)
                    .await
                    .is_ok_and(|read| read > 0)
                {}
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request_and_the_spans_past_the_queue_are_counted() {
    let endpoint = silent_collector().await;
    let portkey = upstream::portkey("hello").await;
    let gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", gateway.address);

    // Each request is a span; the queue holds 8,192 and a stuck export 512.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut slowest = Duration::ZERO;
    let dropped = loop {
        let timings: Vec<(u16, Duration)> = futures::stream::iter(0..1000)
            .map(|_| {
                let request = client.get(&healthz).send();
                async move {
                    let sent = Instant::now();
                    let status = request.await.unwrap().status().as_u16();
                    (status, sent.elapsed())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(timings.iter().all(|(status, _)| *status == 200));
        slowest = timings.iter().map(|(_, took)| *took).max().unwrap().max(slowest);
        let dropped = sample(&metrics(&gateway).await, DROPPED).unwrap();
        if dropped > 0.0 {
            break dropped;
        }
        assert!(Instant::now() < deadline, "no span dropped within 60 s");
    };

    assert!(dropped >= 1.0);
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?}");
}
