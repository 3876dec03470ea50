//! What is never stored: an upstream's error status, a stream the upstream
//! cut or ended with an error event, a stream its client left, an answer
//! over the entry limit. Each is served as it came, and the next identical
//! request calls the upstream.

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use super::paced::{Paced, paced_text, paced_upstream};
use super::{
    Answer, CHAT, Gateway, answer_text, app_before, ask, chunks, first_call_answers, portkey, sse, with,
};
use crate::helpers::{assert_openai_error, eventually, next_event, sample};

fn failing(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": format!("upstream says {status}"),
        "type": "server_error", "param": null, "code": null}}))
}

#[tokio::test]
async fn an_upstream_error_status_is_not_stored() {
    for status in [500, 429] {
        let portkey = portkey().await;
        first_call_answers(&portkey, failing(status)).await;
        let gateway = Gateway::start(&format!("error-{status}"), portkey, &[]).await;
        let body = ask("cached", "Hello there");

        let failed = gateway.chat(&body).await;
        let next = gateway.chat(&body).await;
        let then = gateway.chat(&body).await;

        assert!(failed.status >= 400, "{status}: {}", failed.text);
        assert_openai_error(&failed.json());
        assert_eq!(
            (next.status, next.cache()),
            (200, Some("miss")),
            "{status}: {}",
            next.text
        );
        assert_eq!(next.content(), answer_text(1));
        assert_eq!(gateway.calls(CHAT).await, 2, "{status}");
        assert_eq!(then.cache(), Some("hit"), "{status}");
        assert_eq!(then.content(), answer_text(1));
    }
}

/// The data of each event of an SSE body.
fn events(text: &str) -> Vec<&str> {
    text.split_terminator("\n\n")
        .map(|event| event.strip_prefix("data: ").unwrap())
        .collect()
}

#[tokio::test]
async fn a_stream_the_upstream_cut_or_failed_is_not_stored() {
    let text = "Cut short by the upstream";
    let mut cut = chunks(text);
    cut.truncate(3);
    let mut failed = chunks(text);
    failed.truncate(3);
    failed.push(
        json!({"error": {"message": "overloaded mid-stream", "type": "server_error",
        "param": null, "code": null}}),
    );
    for (name, body) in [("cut", sse(&cut, false)), ("error-event", sse(&failed, true))] {
        let portkey = portkey().await;
        first_call_answers(
            &portkey,
            ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"),
        )
        .await;
        let gateway = Gateway::start(&format!("stream-{name}"), portkey, &[]).await;
        let request = with(ask("cached", "Hello there"), json!({"stream": true}));

        let broken = gateway.chat(&request).await;
        let next = gateway.chat(&request).await;
        let whole = gateway.chat(&ask("cached", "Hello there")).await;

        assert_eq!((broken.status, broken.cache()), (200, Some("miss")), "{name}");
        let error = events(&broken.text)
            .into_iter()
            .filter(|event| *event != "[DONE]")
            .map(|event| serde_json::from_str::<Value>(event).unwrap())
            .find(|event| event.get("error").is_some());
        assert!(
            error.is_some(),
            "{name}: the client saw the failure: {}",
            broken.text
        );
        assert_eq!(next.cache(), Some("miss"), "{name}: {}", next.text);
        assert_eq!(next.streamed_text(), answer_text(1), "{name}");
        assert_eq!(gateway.calls(CHAT).await, 2, "{name}");
        assert_eq!(whole.cache(), Some("hit"), "{name}: the whole stream was stored");
        assert_eq!(whole.content(), answer_text(1), "{name}");
    }
}

#[tokio::test]
async fn an_answer_over_the_entry_limit_is_served_but_not_stored() {
    let gateway = Gateway::start(
        "entry-limit",
        portkey().await,
        &[("GATEWAYZ_CACHE_MAX_ENTRY_BYTES", "200")],
    )
    .await;
    let whole = ask("cached", "Hello there");
    let streamed = with(ask("cached", "Something else"), json!({"stream": true}));

    let answers = [
        gateway.chat(&whole).await,
        gateway.chat(&whole).await,
        gateway.chat(&streamed).await,
        gateway.chat(&streamed).await,
    ];

    for answer in &answers {
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{}",
            answer.text
        );
    }
    assert_eq!(answers[1].content(), answer_text(2), "served whole, every time");
    assert_eq!(answers[3].streamed_text(), answer_text(4));
    assert_eq!(gateway.calls(CHAT).await, 4);
    let stored = gateway
        .metric("gatewayz_cache_stored_bytes_total{model=\"cached\"}")
        .await;
    assert_eq!(stored, 0.0);
}

#[tokio::test]
async fn a_stream_its_client_left_midway_is_not_stored() {
    let paced = Paced::default();
    let (app, _files) = app_before("client-left", &paced_upstream(paced.clone()).await, None, &[]).await;
    let body = with(ask("cached", "Hello there"), json!({"stream": true}));
    let left = app.post_chat(&body).await;
    assert_eq!(left.headers()["x-gatewayz-cache"], "miss");
    let mut left_body = left.bytes_stream();
    next_event(&mut left_body, &mut String::new()).await;

    drop(left_body);
    let line = "gatewayz_cache_requests_total{model=\"cached\",result=\"miss\"}";
    eventually(5, "the left stream has ended", || async {
        sample(&app.metrics().await, line) == Some(1.0)
    })
    .await;
    let next = Answer::read(app.post_chat(&body).await).await;
    let then = Answer::read(app.post_chat(&ask("cached", "Hello there")).await).await;

    assert_eq!(next.cache(), Some("miss"), "{}", next.text);
    assert_eq!(next.streamed_text(), paced_text());
    assert_eq!(paced.calls(), 2);
    assert_eq!(then.cache(), Some("hit"), "the whole stream was stored");
    assert_eq!(then.content(), paced_text());
}
