//! Streams from a direct upstream: chunks in order, `[DONE]`, the failures
//! before the first chunk returned as plain errors, the failures after it
//! ending the stream, and the first-byte and idle deadlines.

use std::time::Duration;

use futures::StreamExt;
use gatewayz_adapters::http::Timeouts;
use gatewayz_domain::{ChatChunk, ChatError, ChatProvider, ErrorSource};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{
    KEY, UPSTREAM, chunk_json, client_with, completion_json, direct, only_request, openai_error,
    server_answering, spec, sse, sse_response, stream_call, timeouts, upstream_of,
};
use crate::raw::{LAST_CHUNK, RawServer, Then, chunk, chunked_head};

async fn collect(server: &wiremock::MockServer) -> Vec<Result<ChatChunk, ChatError>> {
    direct(server)
        .stream(stream_call())
        .await
        .unwrap()
        .collect()
        .await
}

fn content(chunk: &ChatChunk) -> String {
    let value: Value = serde_json::from_slice(chunk.json()).unwrap();
    value["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn short_timeouts(first_byte: u64, idle: u64) -> Timeouts {
    Timeouts {
        first_byte: Duration::from_millis(first_byte),
        idle: Duration::from_millis(idle),
        ..timeouts()
    }
}

#[tokio::test]
async fn chunks_arrive_in_order_and_done_ends_the_stream() {
    let mut last = chunk_json("!", Some("stop"));
    last["x_upstream"] = json!("kept");
    let events = [
        chunk_json("Hel", None).to_string(),
        chunk_json("lo", None).to_string(),
        last.to_string(),
        "[DONE]".into(),
        // Nothing after [DONE] is read.
        chunk_json(" late", None).to_string(),
    ];
    let server = server_answering(sse_response(
        sse(&events).replace("\n\n", "\r\n\r\n") + ": trailing comment\n\n",
    ))
    .await;

    let items = collect(&server).await;

    let chunks: Vec<ChatChunk> = items.into_iter().map(Result::unwrap).collect();
    let text: String = chunks.iter().map(content).collect();
    assert_eq!(text, "Hello!");
    let value: Value = serde_json::from_slice(chunks[2].json()).unwrap();
    assert_eq!(value["x_upstream"], "kept");
    let request = only_request(&server).await;
    assert_eq!(request.headers["accept"], "text/event-stream");
    assert_eq!(request.headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).unwrap()["stream"],
        true
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_it_with_the_providers_error() {
    let server = server_answering(sse_response(sse(&[
        chunk_json("a", None).to_string(),
        json!({"error": {"message": "CUDA out of memory", "code": "server_error"}}).to_string(),
        chunk_json("never", None).to_string(),
    ])))
    .await;

    let items = collect(&server).await;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(content(items[0].as_ref().unwrap()), "a");
    let error = items[1].as_ref().unwrap_err();
    assert!(matches!(error, ChatError::UpstreamFailed(_)), "{error:?}");
    let upstream = upstream_of(error);
    assert_eq!(
        (upstream.source, upstream.status, upstream.message.as_str()),
        (ErrorSource::Provider, None, "CUDA out of memory")
    );
}

#[tokio::test]
async fn a_rate_limit_event_mid_stream_is_rate_limited() {
    let server = server_answering(sse_response(sse(&[
        chunk_json("a", None).to_string(),
        json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}).to_string(),
    ])))
    .await;

    let items = collect(&server).await;

    assert!(
        matches!(&items[..], [Ok(_), Err(ChatError::RateLimited { .. })]),
        "{items:?}"
    );
}

#[tokio::test]
async fn a_stream_cut_before_done_ends_with_unavailable() {
    let server = server_answering(sse_response(sse(&[chunk_json("a", None).to_string()]))).await;

    let items = collect(&server).await;

    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items[0].is_ok());
    let error = items[1].as_ref().unwrap_err();
    assert!(matches!(error, ChatError::Unavailable(_)), "{error:?}");
    let upstream = upstream_of(error);
    assert_eq!(upstream.source, ErrorSource::Provider);
    assert!(upstream.message.contains("before [DONE]"), "{}", upstream.message);
}

#[tokio::test]
async fn a_finished_stream_closed_without_done_ends_cleanly() {
    let server = server_answering(sse_response(sse(&[chunk_json("a", Some("stop")).to_string()]))).await;

    let items = collect(&server).await;

    assert!(matches!(&items[..], [Ok(_)]), "{items:?}");
}

#[tokio::test]
async fn a_200_that_is_not_an_event_stream_is_an_invalid_response() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    let error = direct(&server).stream(stream_call()).await.err().unwrap();

    assert!(
        matches!(&error, ChatError::InvalidUpstreamResponse(e)
            if e.source == ErrorSource::Provider && e.message.contains("`application/json`")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_failure_before_the_first_chunk_is_a_plain_error() {
    let cases = [
        sse_response(sse(&[
            json!({"error": {"message": "model is loading"}}).to_string()
        ])),
        ResponseTemplate::new(503).set_body_json(openai_error("model is loading")),
        ResponseTemplate::new(429)
            .insert_header("retry-after", "3")
            .set_body_json(openai_error("model is loading")),
    ];
    for (index, response) in cases.into_iter().enumerate() {
        let server = server_answering(response).await;

        let error = direct(&server).stream(stream_call()).await.err().unwrap();

        let expected = match index {
            0 => matches!(error, ChatError::UpstreamFailed(_)),
            1 => matches!(error, ChatError::UpstreamFailed(ref e) if e.status == Some(503)),
            _ => {
                matches!(error, ChatError::RateLimited { retry_after, .. } if retry_after == Some(Duration::from_secs(3)))
            }
        };
        assert!(expected, "case {index}: {error:?}");
        let upstream = upstream_of(&error);
        assert_eq!(
            (upstream.source, upstream.message.as_str()),
            (ErrorSource::Provider, "model is loading")
        );
    }
}

#[tokio::test]
async fn a_stream_whose_answer_is_late_times_out_at_the_first_byte_deadline() {
    let server = server_answering(
        sse_response(sse(&[chunk_json("late", Some("stop")).to_string()])).set_delay(Duration::from_secs(5)),
    )
    .await;

    let error = client_with(spec(&server.uri()), short_timeouts(200, 10_000))
        .stream(stream_call())
        .await
        .err()
        .unwrap();

    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    let upstream = upstream_of(&error);
    assert_eq!(
        (upstream.source, upstream.message.as_str()),
        (
            ErrorSource::Provider,
            format!("no answer from upstream `{UPSTREAM}` within 200 ms").as_str()
        )
    );
}

#[tokio::test]
async fn a_stream_that_answers_but_sends_no_chunk_times_out_at_the_first_byte_deadline() {
    let server = RawServer::start(chunked_head("text/event-stream"), Then::Hold);

    let started = std::time::Instant::now();
    let error = client_with(spec(&server.base()), short_timeouts(200, 10_000))
        .stream(stream_call())
        .await
        .err()
        .unwrap();

    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    let upstream = upstream_of(&error);
    assert_eq!(upstream.source, ErrorSource::Provider);
    assert!(
        upstream
            .message
            .starts_with(&format!("no stream chunk from upstream `{UPSTREAM}` within")),
        "{}",
        upstream.message
    );
    // The first-byte deadline, not the 10 s idle one.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_that_stalls_after_its_first_chunk_times_out_at_the_idle_deadline() {
    let first = format!("data: {}\n\n", chunk_json("a", None));
    let server = RawServer::start(
        [chunked_head("text/event-stream"), chunk(first.as_bytes())].concat(),
        Then::Hold,
    );

    let items: Vec<_> = client_with(spec(&server.base()), short_timeouts(10_000, 200))
        .stream(stream_call())
        .await
        .unwrap()
        .collect()
        .await;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(content(items[0].as_ref().unwrap()), "a");
    let error = items[1].as_ref().unwrap_err();
    assert!(matches!(error, ChatError::Timeout(_)), "{error:?}");
    let upstream = upstream_of(error);
    assert_eq!(
        (upstream.source, upstream.message.as_str()),
        (
            ErrorSource::Provider,
            format!("no stream chunk from upstream `{UPSTREAM}` within 200 ms").as_str()
        )
    );
}

#[tokio::test]
async fn a_connection_broken_mid_stream_ends_it_as_unavailable_without_the_upstreams_url() {
    let first = format!("data: {}\n\n", chunk_json("a", None));
    // A chunk that announces 0x100 bytes and closes after three.
    let server = RawServer::start(
        [
            chunked_head("text/event-stream"),
            chunk(first.as_bytes()),
            b"100\r\nabc".to_vec(),
        ]
        .concat(),
        Then::Close,
    );

    let items: Vec<_> = client_with(spec(&server.base()), timeouts())
        .stream(stream_call())
        .await
        .unwrap()
        .collect()
        .await;

    assert_eq!(items.len(), 2, "{items:?}");
    let error = items[1].as_ref().unwrap_err();
    assert!(matches!(error, ChatError::Unavailable(_)), "{error:?}");
    let upstream = upstream_of(error);
    assert_eq!(upstream.source, ErrorSource::Provider);
    // The upstream's address is an internal detail a client never sees.
    assert!(
        !upstream.message.contains(&server.base()) && !upstream.message.contains("127.0.0.1"),
        "{}",
        upstream.message
    );
}

#[tokio::test]
async fn a_chunked_stream_ending_with_done_is_read_whole() {
    let events = sse(&[chunk_json("a", None).to_string(), "[DONE]".into()]);
    let server = RawServer::start(
        [
            chunked_head("text/event-stream; charset=utf-8"),
            chunk(events.as_bytes()),
            LAST_CHUNK.to_vec(),
        ]
        .concat(),
        Then::Hold,
    );

    // Were [DONE] not the end, the held connection would time out.
    let items: Vec<_> = client_with(spec(&server.base()), short_timeouts(10_000, 500))
        .stream(stream_call())
        .await
        .unwrap()
        .collect()
        .await;

    assert!(matches!(&items[..], [Ok(_)]), "{items:?}");
}
