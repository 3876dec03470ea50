//! The standard variables: the resource, the sampler, the protocol.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::collector::{Attributes, Collector};
use super::upstream;
use super::{chat, direct, gateway, stop};
use crate::binary;
use crate::helpers::KEY;

/// The resource of the spans of one request made to a gateway with `vars`.
async fn resource_with(vars: &[(&str, &str)]) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello").await;
    let endpoint = collector.endpoint();
    let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    all.extend_from_slice(vars);
    let gateway = gateway(&upstream::base(&portkey), &all);
    let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), None).await;
    assert_eq!(response.status(), 200);
    let spans = collector
        .wait_for("a server span", |spans| {
            spans.iter().any(|span| span.is(SpanKind::Server))
        })
        .await;
    spans[0].resource.clone()
}

#[tokio::test]
async fn otel_service_name_and_otel_resource_attributes_make_the_resource() {
    let resource = resource_with(&[
        ("OTEL_SERVICE_NAME", "checkout-gateway"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,team=platform",
        ),
    ])
    .await;

    assert_eq!(resource.string("service.name"), Some("checkout-gateway"));
    assert_eq!(resource.string("deployment.environment"), Some("test"));
    assert_eq!(resource.string("team"), Some("platform"));
}

#[tokio::test]
async fn a_service_name_in_otel_resource_attributes_is_kept() {
    let resource = resource_with(&[(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-attributes,team=platform",
    )])
    .await;

    assert_eq!(resource.string("service.name"), Some("from-attributes"));
    assert_eq!(resource.string("team"), Some("platform"));
}

#[tokio::test]
async fn a_blank_otel_service_name_leaves_the_default_service_name() {
    // Blank is unset for the gateway's other OTEL variables (a blank
    // endpoint does not turn traces on).
    let resource = resource_with(&[("OTEL_SERVICE_NAME", "")]).await;

    assert_eq!(resource.string("service.name"), Some("gatewayz"), "{resource:?}");
}

#[tokio::test]
async fn the_always_off_sampler_exports_nothing_and_requests_still_work() {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello").await;
    let mut gateway = gateway(
        &upstream::base(&portkey),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    );

    for stream in [false, true] {
        let mut body = direct("gpt-4o-mini", "hi");
        body["stream"] = stream.into();
        let response = chat(&gateway, &body, None).await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("hello"));
    }

    // A stopped gateway has sent every span it queued.
    stop(&mut gateway).await;
    assert!(collector.bodies().await.is_empty());
}

#[tokio::test]
async fn a_trace_the_client_did_not_sample_is_not_exported_by_default() {
    let collector = Collector::http().await;
    let portkey = upstream::portkey("hello").await;
    let mut gateway = gateway(
        &upstream::base(&portkey),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())],
    );
    let unsampled = "6e0c63257de34c926f9efcd03927272e";
    let sampled = "7e0c63257de34c926f9efcd03927272f";

    for traceparent in [
        format!("00-{unsampled}-00f067aa0ba902b7-00"),
        format!("00-{sampled}-00f067aa0ba902b7-01"),
    ] {
        let response = chat(&gateway, &direct("gpt-4o-mini", "hi"), Some(&traceparent)).await;
        assert_eq!(response.status(), 200);
    }

    collector.trace(sampled, 1).await;
    stop(&mut gateway).await;
    let spans = collector.spans().await;
    assert!(spans.iter().all(|span| span.trace_id() == sampled), "{spans:#?}");
}

/// Runs the binary with `vars` until it exits, at most 10 s; its status
/// and all it wrote.
fn run_to_exit(vars: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = binary::command(vars).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[test]
fn an_unknown_otlp_protocol_stops_the_start_with_the_variables_name() {
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        let (status, output) = run_to_exit(&[
            ("GATEWAYZ_BIND", "127.0.0.1:0"),
            ("GATEWAYZ_API_KEYS", KEY),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            (name, "http/json"),
        ]);

        assert!(!status.success(), "{name}: {output}");
        assert!(
            output.contains(&format!(
                "{name} must be `http/protobuf` or `grpc`, got `http/json`"
            )),
            "{name}: {output}"
        );
        assert!(!output.contains("gatewayz listening"), "{output}");
    }
}
