//! Requests that waited on an identical one in flight: a waiter whose
//! leader failed is charged once (for its own call), and an answer too
//! large to store is still shared with the waiters, then not stored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::{Answer, CHAT, Gateway, answer_text, ask, completion_bytes, portkey_after, post, with};
use crate::helpers::{assert_openai_error, entry, eventually};

/// How long the stand-in takes to answer the first call: time for the
/// identical requests to join it.
const FIRST_ANSWER_DELAY: Duration = Duration::from_millis(400);

/// A stand-in Portkey whose first chat call fails (500, after
/// [`FIRST_ANSWER_DELAY`]) and whose `n`-th later call answers
/// [`answer_text`]`(n)` at once; it notes when each call arrived.
struct FailsFirst {
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for FailsFirst {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        if arrivals.len() == 1 {
            return ResponseTemplate::new(500)
                .set_body_json(json!({"error": {"message": "upstream says 500",
                    "type": "server_error", "param": null, "code": null}}))
                .set_delay(FIRST_ANSWER_DELAY);
        }
        ResponseTemplate::new(200)
            .set_body_raw(completion_bytes(&answer_text(arrivals.len())), "application/json")
    }
}

#[tokio::test]
async fn a_request_that_waited_on_a_failed_one_counts_once_against_its_keys_rpm() {
    let arrivals = Arc::<Mutex<Vec<Instant>>>::default();
    let portkey = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CHAT))
        .respond_with(FailsFirst {
            arrivals: arrivals.clone(),
        })
        .mount(&portkey)
        .await;
    let policies = entry("team", "key-team", "rpm = 2");
    let gateway = Gateway::with_policies("followers-rpm", portkey, Some(&policies), &[]).await;
    let app = &gateway.app;
    let body = ask("cached", "Hello there");

    let (first, (second_sent, second)) = tokio::join!(post(app, "key-team", CHAT, &body, None), async {
        // The second joins the first's flight once the first's call is on
        // its way.
        eventually(5, "the first request's upstream call", || async {
            gateway.calls(CHAT).await == 1
        })
        .await;
        let sent = Instant::now();
        (sent, post(app, "key-team", CHAT, &body, None).await)
    });

    assert!(first.status >= 500, "{first:?}");
    assert_openai_error(&first.json());
    assert_eq!(
        (second.status, second.cache()),
        (200, Some("miss")),
        "charged once, for its own call: {}",
        second.text
    );
    assert_eq!(second.content(), answer_text(2));
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "exactly two upstream calls");
    assert!(
        second_sent < arrivals[0] + FIRST_ANSWER_DELAY,
        "the second was sent while the first's call was in flight"
    );
    assert!(
        arrivals[1] >= arrivals[0] + FIRST_ANSWER_DELAY,
        "the second waited for the first's answer before its own call"
    );
    // The key has spent its two requests: a third (a hit) is refused.
    let third = post(app, "key-team", CHAT, &body, None).await;
    assert_eq!(third.status, 429, "{}", third.text);
    assert_eq!(gateway.calls(CHAT).await, 2);
}

/// The largest answer stored: far less than the stream below.
const MAX_ENTRY_BYTES: &str = "300";
const STREAMS: usize = 5;
/// How long the stand-in takes to answer: time for every stream to join.
const UPSTREAM_DELAY: Duration = Duration::from_millis(500);

fn count(answers: &[Answer], cache: &str) -> usize {
    answers
        .iter()
        .filter(|answer| answer.cache() == Some(cache))
        .count()
}

#[tokio::test]
async fn a_stream_too_large_to_store_is_still_shared_with_identical_streams_in_flight() {
    let gateway = Gateway::start(
        "followers-too-large",
        portkey_after(UPSTREAM_DELAY).await,
        &[("GATEWAYZ_CACHE_MAX_ENTRY_BYTES", MAX_ENTRY_BYTES)],
    )
    .await;
    let body = with(ask("cached", "Hello there"), json!({"stream": true}));

    let answers = join_all((0..STREAMS).map(|_| gateway.chat(&body))).await;

    for answer in &answers {
        // Each whole, to its [DONE], without an error event.
        assert_eq!(answer.streamed_text(), answer_text(1));
    }
    let chunk_bytes: usize = answers[0]
        .chunks()
        .iter()
        .map(|chunk| chunk.to_string().len())
        .sum();
    assert!(
        chunk_bytes > MAX_ENTRY_BYTES.parse::<usize>().unwrap(),
        "the stream ({chunk_bytes} bytes) is over the entry limit"
    );
    assert_eq!(
        (count(&answers, "miss"), count(&answers, "hit")),
        (1, STREAMS - 1)
    );
    assert_eq!(gateway.calls(CHAT).await, 1, "one upstream call, shared");
    let coalesced = "gatewayz_cache_coalesced_total{model=\"cached\"}";
    eventually(5, "the coalesced streams are counted", || async {
        gateway.metric(coalesced).await == (STREAMS - 1) as f64
    })
    .await;

    let after = gateway.chat(&body).await;

    assert_eq!(after.cache(), Some("miss"), "it was not stored: {}", after.text);
    assert_eq!(after.streamed_text(), answer_text(2));
    assert_eq!(gateway.calls(CHAT).await, 2);
    let stored = gateway
        .metric("gatewayz_cache_stored_bytes_total{model=\"cached\"}")
        .await;
    assert_eq!(stored, 0.0, "nothing was stored");
}
