//! Identical requests in flight: while the first waits for its (slow)
//! upstream, the others wait for its answer instead of calling; when the
//! first fails, each makes its own call.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use super::paced::{PACED_CHUNKS, Paced, events_to_done, paced_text, paced_upstream, text_of};
use super::{Answer, CHAT, Gateway, answer_text, app_before, ask, first_call_answers, portkey_after, with};
use crate::helpers::{KEY, TestApp, assert_openai_error, eventually, next_event, sample};

const CLIENTS: usize = 20;

/// How long the stand-in takes to answer: time for every client to arrive.
const UPSTREAM_DELAY: Duration = Duration::from_millis(500);

/// `CLIENTS` identical requests of `body`, all at once.
async fn all_at_once(gateway: &Gateway, body: &Value) -> Vec<Answer> {
    join_all((0..CLIENTS).map(|_| gateway.chat(body))).await
}

fn count(answers: &[Answer], cache: &str) -> usize {
    answers
        .iter()
        .filter(|answer| answer.cache() == Some(cache))
        .count()
}

async fn assert_coalesced(gateway: &Gateway, expected: f64) {
    let line = "gatewayz_cache_coalesced_total{model=\"cached\"}";
    eventually(5, "the coalesced requests are counted", || async {
        gateway.metric(line).await == expected
    })
    .await;
}

#[tokio::test]
async fn identical_json_requests_in_flight_share_one_upstream_call() {
    let gateway = Gateway::start("coalesced-json", portkey_after(UPSTREAM_DELAY).await, &[]).await;

    let answers = all_at_once(&gateway, &ask("cached", "Hello there")).await;

    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.content(), answer_text(1));
    }
    assert_eq!(
        (count(&answers, "miss"), count(&answers, "hit")),
        (1, CLIENTS - 1)
    );
    assert!(
        answers
            .iter()
            .filter(|answer| answer.cache() == Some("hit"))
            .all(|answer| answer.age == Some(0))
    );
    assert_eq!(gateway.calls(CHAT).await, 1);
    assert_coalesced(&gateway, (CLIENTS - 1) as f64).await;
}

#[tokio::test]
async fn identical_streams_in_flight_share_one_upstream_stream() {
    let gateway = Gateway::start("coalesced-stream", portkey_after(UPSTREAM_DELAY).await, &[]).await;
    let body = with(ask("cached", "Hello there"), json!({"stream": true}));

    let answers = all_at_once(&gateway, &body).await;

    for answer in &answers {
        // Each whole, to its [DONE].
        assert_eq!(answer.streamed_text(), answer_text(1));
    }
    assert_eq!(
        (count(&answers, "miss"), count(&answers, "hit")),
        (1, CLIENTS - 1)
    );
    assert_eq!(gateway.calls(CHAT).await, 1);
    assert_coalesced(&gateway, (CLIENTS - 1) as f64).await;
    // And the shared stream was stored.
    let after = gateway.chat(&ask("cached", "Hello there")).await;
    assert_eq!(after.cache(), Some("hit"));
    assert_eq!(after.content(), answer_text(1));
}

#[tokio::test]
async fn a_json_request_and_a_stream_in_flight_share_one_call() {
    let gateway = Gateway::start("coalesced-mixed", portkey_after(UPSTREAM_DELAY).await, &[]).await;
    let whole = ask("cached", "Hello there");
    let streamed = with(whole.clone(), json!({"stream": true}));

    let (first, second) = tokio::join!(gateway.chat(&streamed), async {
        // The stream leads: the JSON request joins its flight once the
        // stream's call is on its way.
        eventually(5, "the stream's upstream call", || async {
            gateway.calls(CHAT).await == 1
        })
        .await;
        gateway.chat(&whole).await
    });

    assert_eq!(first.cache(), Some("miss"));
    assert_eq!(first.streamed_text(), answer_text(1));
    assert_eq!(second.cache(), Some("hit"));
    assert_eq!(second.content(), answer_text(1));
    assert_eq!(gateway.calls(CHAT).await, 1);
}

#[tokio::test]
async fn when_the_first_request_fails_each_waiting_request_makes_its_own_call() {
    let portkey = portkey_after(Duration::ZERO).await;
    first_call_answers(
        &portkey,
        ResponseTemplate::new(500)
            .set_body_json(
                json!({"error": {"message": "upstream says 500", "type": "server_error",
                "param": null, "code": null}}),
            )
            .set_delay(UPSTREAM_DELAY),
    )
    .await;
    let gateway = Gateway::start("coalesced-failure", portkey, &[]).await;
    let body = ask("cached", "Hello there");

    let answers = all_at_once(&gateway, &body).await;

    let failed: Vec<&Answer> = answers.iter().filter(|answer| answer.status != 200).collect();
    assert_eq!(failed.len(), 1, "only the first failed: {failed:?}");
    assert!(failed[0].status >= 500, "{:?}", failed[0]);
    let served: Vec<&Answer> = answers.iter().filter(|answer| answer.status == 200).collect();
    assert_eq!(served.len(), CLIENTS - 1);
    assert!(
        served.iter().all(|answer| answer.cache() == Some("miss")),
        "each called the upstream itself: {served:?}"
    );
    assert_eq!(gateway.calls(CHAT).await, CLIENTS);
    assert_coalesced(&gateway, 0.0).await;
    let after = gateway.chat(&body).await;
    assert_eq!(after.cache(), Some("hit"), "and their answers were stored");
    assert_eq!(gateway.calls(CHAT).await, CLIENTS);
}

/// A stream request of `body` to `app`, its cache header checked, ready
/// to read.
async fn open_stream(
    app: &TestApp,
    body: &Value,
    cache: &str,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let response = app.post_chat(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gatewayz-cache"], cache);
    response.bytes_stream()
}

#[tokio::test]
async fn a_stream_waiting_on_an_identical_one_gets_its_chunks_as_they_come() {
    let paced = Paced::default();
    let (app, _files) = app_before("coalesced-paced", &paced_upstream(paced.clone()).await, None, &[]).await;
    let body = with(ask("cached", "Hello there"), json!({"stream": true}));
    let (mut first, mut first_buffer) = (open_stream(&app, &body, "miss").await, String::new());
    let opening = next_event(&mut first, &mut first_buffer).await;

    let (mut second, mut second_buffer) = (open_stream(&app, &body, "hit").await, String::new());
    let early = next_event(&mut second, &mut second_buffer).await;
    let sent_by_then = paced.sent();

    assert!(
        sent_by_then < PACED_CHUNKS,
        "the waiting stream's first chunk came while the upstream still streamed ({sent_by_then} sent)"
    );
    assert_eq!(early, opening, "from the first chunk on");
    let rest = events_to_done(&mut first, &mut first_buffer).await;
    let shared_rest = events_to_done(&mut second, &mut second_buffer).await;
    let opening = text_of(&[opening]);
    assert_eq!(format!("{opening}{}", text_of(&rest)), paced_text());
    assert_eq!(format!("{opening}{}", text_of(&shared_rest)), paced_text());
    assert_eq!(paced.calls(), 1, "one upstream stream");
}

#[tokio::test]
async fn when_the_first_client_leaves_a_waiting_stream_gets_an_error_and_a_waiting_json_request_its_own_call()
{
    let paced = Paced::default();
    let (app, _files) = app_before("coalesced-left", &paced_upstream(paced.clone()).await, None, &[]).await;
    let body = with(ask("cached", "Hello there"), json!({"stream": true}));
    let (mut first, mut first_buffer) = (open_stream(&app, &body, "miss").await, String::new());
    next_event(&mut first, &mut first_buffer).await;
    let (mut second, mut second_buffer) = (open_stream(&app, &body, "hit").await, String::new());
    next_event(&mut second, &mut second_buffer).await;
    let whole = tokio::spawn({
        let client = app.client.clone();
        let request = client
            .post(app.url(CHAT))
            .bearer_auth(KEY)
            .json(&ask("cached", "Hello there"));
        async move { Answer::read(request.send().await.unwrap()).await }
    });
    eventually(5, "the JSON request is in flight", || async {
        sample(&app.metrics().await, "gatewayz_in_flight_requests ") == Some(3.0)
    })
    .await;

    drop(first);

    let rest = events_to_done(&mut second, &mut second_buffer).await;
    let (last, chunks) = rest.split_last().expect("an event after the leader left");
    let error: Value = serde_json::from_str(last).unwrap();
    assert_openai_error(&error);
    assert!(text_of(chunks).len() < paced_text().len(), "{rest:?}");
    let whole = whole.await.unwrap();
    assert_eq!(
        (whole.status, whole.cache()),
        (200, Some("miss")),
        "{}",
        whole.text
    );
    assert_eq!(whole.content(), paced_text());
    assert_eq!(paced.calls(), 2, "the JSON request made its own call");
}
