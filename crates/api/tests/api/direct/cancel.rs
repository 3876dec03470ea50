//! A client that leaves lets go of the direct upstream: the gateway closes
//! its connection to the upstream long before the upstream would have
//! finished, logs the request as 499 under the upstream's name, and its
//! in-flight gauge returns. The slow upstream ([`SlowUpstream`]) speaks
//! OpenAI's chat completions at `http://127.0.0.1:PORT/v1` and notes when
//! the gateway hangs up.

use std::time::Duration;

use serde_json::{Value, json};

use super::{CHAT, DirectGateway, upstream_entry};
use crate::helpers::{KEY, eventually, next_event, sample};
use crate::upstream::{Behaviour, SlowUpstream};

/// How long the slow upstream's stream would last: 200 chunks 300 ms apart.
const CHUNKS: usize = 200;
const GAP: Duration = Duration::from_millis(300);

fn ask(stream: bool) -> Value {
    json!({"model": "@slow/m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn in_flight(gateway: &DirectGateway) -> Option<f64> {
    sample(&gateway.metrics().await, "gatewayz_in_flight_requests ")
}

/// Waits until the upstream has seen its connection closed: within 10 s,
/// where the stream would have taken a minute.
async fn assert_upstream_let_go(upstream: &SlowUpstream) {
    eventually(10, "the gateway closes the upstream connection", || async {
        !upstream.closed_at().is_empty()
    })
    .await;
}

fn gateway_before(test: &str, upstream: &SlowUpstream) -> DirectGateway {
    DirectGateway::start(test, &upstream_entry("slow", &upstream.base_url, ""), &[])
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_closes_the_direct_upstream_connection() {
    let upstream = SlowUpstream::start(Behaviour::Stream {
        chunks: CHUNKS,
        gap: GAP,
    })
    .await;
    let gateway = gateway_before("cancel-stream", &upstream);
    let before = in_flight(&gateway).await;

    let response = gateway.post(CHAT, "cancel-stream", &ask(true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = next_event(&mut body, &mut String::new()).await;
    assert!(first.contains("c0 "), "{first}");
    assert!(upstream.closed_at().is_empty(), "the stream is under way");
    drop(body);

    assert_upstream_let_go(&upstream).await;
    let access = gateway.access_line("cancel-stream");
    assert_eq!(
        (&access["status"], &access["stream"], &access["upstream"]),
        (&json!(499), &json!(true), &json!("slow")),
        "{access}"
    );
    eventually(5, "the in-flight gauge returns", || async {
        in_flight(&gateway).await == before
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_while_waiting_closes_the_direct_upstream_connection() {
    let upstream = SlowUpstream::start(Behaviour::Hang).await;
    let gateway = gateway_before("cancel-waiting", &upstream);

    let result = gateway
        .client
        .post(gateway.url(CHAT))
        .bearer_auth(KEY)
        .header("x-request-id", "cancel-waiting")
        .timeout(Duration::from_millis(500))
        .json(&ask(false))
        .send()
        .await;
    assert!(result.is_err(), "the upstream never answers");

    assert_upstream_let_go(&upstream).await;
    let access = gateway.access_line("cancel-waiting");
    assert_eq!(
        (&access["status"], &access["stream"], &access["upstream"]),
        (&json!(499), &json!(false), &json!("slow")),
        "{access}"
    );
}
