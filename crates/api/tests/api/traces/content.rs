//! Prompts and completions: never exported, unless
//! `GATEWAYZ_OTEL_CAPTURE_CONTENT=true`.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use super::collector::{Attributes, Collector, Exported};
use super::upstream;
use super::{chat, direct, gateway};

const PROMPT_MARKER: &str = "prompt-marker-5d1c8e0f";
const ANSWER_MARKER: &str = "answer-marker-9a7b3c21";

/// Sends a JSON request and a stream whose prompt holds [`PROMPT_MARKER`]
/// to a gateway whose upstream answers [`ANSWER_MARKER`], with `vars`, and
/// returns the collector once both client spans arrived, and them.
async fn traffic(vars: &[(&str, &str)]) -> (Collector, Vec<Exported>) {
    let collector = Collector::http().await;
    let portkey = upstream::portkey(&format!("the answer is {ANSWER_MARKER}")).await;
    let endpoint = collector.endpoint();
    let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    all.extend_from_slice(vars);
    let gateway = gateway(&upstream::base(&portkey), &all);
    let prompt = format!("please keep {PROMPT_MARKER} secret");
    let json_body = direct("gpt-4o-mini", &prompt);
    let mut stream_body = json_body.clone();
    stream_body["stream"] = json!(true);

    for body in [json_body, stream_body] {
        let response = chat(&gateway, &body, None).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains(ANSWER_MARKER), "{text}");
    }

    let spans = collector
        .wait_for("two server spans, two client spans", |spans| {
            let count = |kind| spans.iter().filter(|span| span.is(kind)).count();
            count(SpanKind::Server) == 2 && count(SpanKind::Client) == 2
        })
        .await;
    let clients = spans
        .into_iter()
        .filter(|span| span.is(SpanKind::Client))
        .collect();
    (collector, clients)
}

#[tokio::test]
async fn no_prompt_or_completion_text_is_exported_by_default() {
    let (collector, _) = traffic(&[]).await;

    let bodies = collector.bodies().await;
    for marker in [PROMPT_MARKER, ANSWER_MARKER] {
        assert!(
            !bodies.iter().any(|body| body
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())),
            "{marker} is in the exported bytes"
        );
        for span in collector.spans().await {
            assert!(
                !span.texts().iter().any(|text| text.contains(marker)),
                "{marker} in {span:#?}"
            );
            assert!(span.value("gen_ai.input.messages").is_none());
            assert!(span.value("gen_ai.output.messages").is_none());
        }
    }
}

#[tokio::test]
async fn with_capture_content_the_prompt_and_the_completion_are_on_the_client_spans() {
    let (_, clients) = traffic(&[("GATEWAYZ_OTEL_CAPTURE_CONTENT", "true")]).await;

    for client in &clients {
        let input = client.string("gen_ai.input.messages").unwrap_or_default();
        assert!(input.contains(PROMPT_MARKER), "{input}");
        let output = client.string("gen_ai.output.messages").unwrap_or_default();
        assert!(output.contains(ANSWER_MARKER), "{output}");
    }
}
