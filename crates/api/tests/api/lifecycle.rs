//! The binary's life in production: graceful shutdown during a stream,
//! cancellation when a client leaves, and no secret in any log or body.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::binary::{Gateway, start};
use crate::helpers::{eventually, sample};
use crate::upstream::{Behaviour, SlowUpstream};

const KEY: &str = "gk-lifecycle-key";

fn gateway_for(upstream: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut vars = vec![
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("PORTKEY_BASE_URL", upstream),
        ("PORTKEY_API_KEY", "pk-lifecycle"),
        ("PROVIDER_OPENAI_API_KEY", "sk-lifecycle"),
    ];
    vars.extend_from_slice(extra);
    start(&vars)
}

fn ask(stream: bool) -> Value {
    json!({"model": "@openai/slow", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn in_flight(gateway: &Gateway) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gateway.admin))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample(&text, "gatewayz_in_flight_requests ")
}

/// Reads one SSE event from a body stream (with a deadline).
async fn next_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Option<String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            return Some(event.trim_end().trim_start_matches("data: ").to_owned());
        }
        let bytes = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")?;
        buffer.push_str(std::str::from_utf8(&bytes.ok()?).unwrap());
    }
}

#[tokio::test]
async fn sigterm_lets_a_slow_stream_finish_turns_unready_and_exits_zero() {
    let upstream = SlowUpstream::start(Behaviour::Stream {
        chunks: 8,
        gap: Duration::from_millis(200),
    })
    .await;
    let mut gateway = gateway_for(&upstream.base_url, &[]);
    let client = reqwest::Client::new();
    let readyz = |client: reqwest::Client, admin: String| async move {
        client
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    assert_eq!(readyz(client.clone(), gateway.admin.clone()).await, Some(200));

    let response = client
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(KEY)
        .json(&ask(true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let first = next_event(&mut body, &mut buffer).await.unwrap();
    assert!(first.contains("c0 "), "{first}");

    let status = Command::new("kill")
        .args(["-TERM", &gateway.pid()])
        .status()
        .unwrap();
    assert!(status.success());

    eventually(5, "/readyz turns 503", || {
        readyz(client.clone(), gateway.admin.clone()).map(|s| s == Some(503))
    })
    .await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", gateway.address);
    eventually(5, "the public listener stops accepting", || {
        fresh.get(&healthz).send().map(|result| result.is_err())
    })
    .await;
    let mut events = vec![first];
    while let Some(event) = next_event(&mut body, &mut buffer).await {
        let done = event == "[DONE]";
        events.push(event);
        if done {
            break;
        }
    }
    let text: String = events
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(event).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "c0 c1 c2 c3 c4 c5 c6 c7 ", "the stream finished whole");

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gateway.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after its stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}\n{:#?}", gateway.lines());
}

async fn assert_upstream_closed_within_a_second(upstream: &SlowUpstream, left: Instant) {
    eventually(5, "the upstream connection closes", || async {
        !upstream.closed_at().is_empty()
    })
    .await;
    let closed = upstream.closed_at()[0];
    let after = closed.saturating_duration_since(left);
    assert!(
        after < Duration::from_secs(1),
        "the upstream was closed {after:?} after the client left"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_stops_the_upstream_within_a_second() {
    let upstream = SlowUpstream::start(Behaviour::Stream {
        chunks: 100,
        gap: Duration::from_millis(300),
    })
    .await;
    let gateway = gateway_for(&upstream.base_url, &[]);
    let before = in_flight(&gateway).await;

    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(KEY)
        .json(&ask(true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    next_event(&mut body, &mut String::new()).await.unwrap();
    drop(body);
    let left = Instant::now();

    assert_upstream_closed_within_a_second(&upstream, left).await;
    let access = gateway.wait_for_event(5, "an access line with 499", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["status"] == 499
    });
    assert_eq!(access["fields"]["stream"], true);
    eventually(5, "the in-flight gauge returns", || async {
        in_flight(&gateway).await == before
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_while_waiting_stops_the_upstream_within_a_second() {
    let upstream = SlowUpstream::start(Behaviour::Hang).await;
    let gateway = gateway_for(&upstream.base_url, &[]);
    let before = in_flight(&gateway).await;

    let result = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(500))
        .json(&ask(false))
        .send()
        .await;
    let left = Instant::now();
    assert!(result.is_err(), "the upstream never answers");

    assert_upstream_closed_within_a_second(&upstream, left).await;
    let access = gateway.wait_for_event(5, "an access line with 499", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["status"] == 499
    });
    assert_eq!(access["fields"]["stream"], false);
    eventually(5, "the in-flight gauge returns", || async {
        in_flight(&gateway).await == before
    })
    .await;
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_body() {
    const GATEWAY_KEY: &str = "gk-never-log-me-7d1f";
    const PORTKEY_KEY: &str = "pk-never-log-me-93ab";
    const OPENAI_KEY: &str = "sk-never-log-me-51c0";
    const ANTHROPIC_KEY: &str = "sk-ant-never-log-me-0e44";
    const VIRTUAL_KEY: &str = "vk-never-log-me-c2d9";
    let secrets = [GATEWAY_KEY, PORTKEY_KEY, OPENAI_KEY, ANTHROPIC_KEY, VIRTUAL_KEY];

    let portkey = MockServer::start().await;
    let chat = || Mock::given(method("POST")).and(path("/v1/chat/completions"));
    chat()
        .and(header("x-portkey-provider", "openai"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message":
            format!("Incorrect API key provided: {OPENAI_KEY}; portkey key {PORTKEY_KEY}")}, "provider": "openai"})))
        .mount(&portkey)
        .await;
    chat()
        .and(header("x-portkey-virtual-key", VIRTUAL_KEY))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3").set_body_json(
            json!({"error": {"message": format!("virtual key {VIRTUAL_KEY} is over its budget")}, "provider": "openai"}),
        ))
        .mount(&portkey)
        .await;
    chat()
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                "data: {}\n\ndata: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]}),
                json!({"error": {"message": format!("mid-stream failure for {ANTHROPIC_KEY}")}})
            ),
            "text/event-stream",
        ))
        .with_priority(1)
        .mount(&portkey)
        .await;
    chat()
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("crash with {ANTHROPIC_KEY}")))
        .mount(&portkey)
        .await;
    let base = format!("{}/v1", portkey.uri());
    let gateway = start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", GATEWAY_KEY),
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
        ("PROVIDER_ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("RUST_LOG", "debug"),
    ]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gateway.address);
    let message = json!([{"role": "user", "content": "hi"}]);
    let requests: Vec<(Option<String>, Value)> = vec![
        (
            Some(GATEWAY_KEY.into()),
            json!({"model": "@openai/gpt-4o-mini", "messages": message}),
        ),
        (
            Some(GATEWAY_KEY.into()),
            json!({"model": "@openai/gpt-4o-mini", "portkey_virtual_key": VIRTUAL_KEY, "messages": message}),
        ),
        (
            Some(GATEWAY_KEY.into()),
            json!({"model": "@anthropic/claude", "messages": message}),
        ),
        (
            Some(GATEWAY_KEY.into()),
            json!({"model": "@anthropic/claude", "stream": true, "messages": message}),
        ),
        (
            Some(GATEWAY_KEY.into()),
            json!({"model": "demo-1", "messages": message}),
        ),
        (Some(GATEWAY_KEY.into()), json!({"model": "", "messages": []})),
        (
            Some(format!("{GATEWAY_KEY}x")),
            json!({"model": "demo-1", "messages": message}),
        ),
        (
            Some(GATEWAY_KEY[..GATEWAY_KEY.len() - 1].into()),
            json!({"model": "demo-1", "messages": message}),
        ),
        (None, json!({"model": "demo-1", "messages": message})),
    ];
    let mut answers = Vec::new();
    for (key, body) in requests {
        let mut request = client.post(&url).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        answers.push(format!("{:?}", response.headers()));
        answers.push(response.text().await.unwrap());
    }
    gateway.wait_for_event(5, "the last access line", |event| {
        event["target"] == "gatewayz::access"
            && event["fields"]["status"] == 401
            && event["fields"]["error"]
                .as_str()
                .is_some_and(|error| error.contains("Missing"))
    });

    let lines = gateway.lines();
    assert!(lines.len() > 10, "the logs were captured: {lines:#?}");
    for secret in secrets {
        for line in &lines {
            assert!(!line.contains(secret), "{secret} in a log line: {line}");
        }
        for answer in &answers {
            assert!(!answer.contains(secret), "{secret} in an answer: {answer}");
        }
    }
    assert!(
        answers.iter().any(|answer| answer.contains("[REDACTED]")),
        "the echoing upstream was exercised"
    );
}
