//! Under overload the gateway sheds load and stays alive: answers its
//! memory budget cannot hold and requests past its in-flight limit get 503
//! `overloaded` with `Retry-After`; probes and metrics always answer; the
//! gateway is not ready while it sheds, and ready again by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::binary;
use crate::helpers::{KEY, TestApp, assert_openai_error, eventually, sample};

const MIB: usize = 1024 * 1024;
const UPSTREAM_KEYS: [(&str, &str); 2] = [
    ("PORTKEY_API_KEY", "pk-overload-test"),
    ("PROVIDER_OPENAI_API_KEY", "sk-overload-test"),
];

fn body(stream: bool) -> Value {
    json!({"model": "@openai/gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

/// A valid `chat.completion` whose text is `size` bytes long.
fn answer_of(size: usize) -> Vec<u8> {
    let head = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "CONTENT"},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    .to_string();
    let padding = size - (head.len() - "CONTENT".len());
    head.replace("CONTENT", &"x".repeat(padding)).into_bytes()
}

async fn upstream(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

/// A process's memory in KiB: `VmRSS` (now) or `VmHWM` (its peak).
fn memory_kib(pid: &str, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn assert_overloaded(status: u16, retry_after: Option<&str>, text: &str) {
    assert_eq!(status, 503, "{text}");
    assert_eq!(retry_after, Some("1"));
    let body: Value = serde_json::from_str(text).unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "overloaded", "{body}");
    assert_eq!(error["source"], "gateway", "{body}");
}

/// What the gateway may hold beyond its idle size and its budget: the
/// allocator's and the runtime's own, measured at ~10 MiB here.
const MARGIN_MIB: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_budget_cannot_hold_are_refused_and_memory_stays_within_it() {
    let answer = answer_of(31 * MIB);
    let server = upstream(ResponseTemplate::new(200).set_body_raw(answer.clone(), "application/json")).await;
    let base = format!("{}/v1", server.uri());
    let budget = (64 * MIB).to_string();
    let gateway = binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("GATEWAYZ_MEMORY_BUDGET_BYTES", &budget),
        ("PORTKEY_BASE_URL", &base),
        UPSTREAM_KEYS[0],
        UPSTREAM_KEYS[1],
    ]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let post = || {
        client
            .post(format!("{}/v1/chat/completions", gateway.address))
            .bearer_auth(KEY)
            .json(&body(false))
            .send()
    };
    // Warm: one answer through, so the idle size counts what serving costs.
    let warm = post().await.unwrap();
    assert_eq!(warm.status(), 200);
    assert!(warm.bytes().await.unwrap().len() > 31 * MIB);
    let idle_kib = memory_kib(&gateway.pid(), "VmRSS:");

    // Eight at once; no body is read until every status is in, so each
    // answer admitted holds its budget meanwhile.
    let responses = futures::future::join_all((0..8).map(|_| post())).await;
    let mut served = 0;
    let mut refused = 0;
    let mut admitted = Vec::new();
    for response in responses {
        let response = response.unwrap();
        if response.status() == 200 {
            served += 1;
            admitted.push(response);
        } else {
            refused += 1;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            assert_overloaded(status, retry_after.as_deref(), &response.text().await.unwrap());
        }
    }
    assert_eq!((served, refused), (2, 6), "two answers of 31 MiB fit in 64 MiB");
    for response in admitted {
        let text = response.bytes().await.unwrap();
        let parsed: Value = serde_json::from_slice(&text).unwrap();
        assert!(parsed["choices"][0]["message"]["content"].as_str().unwrap().len() > 31 * MIB - 512);
        assert!(parsed["gateway_usage"].is_object());
    }
    let peak_kib = memory_kib(&gateway.pid(), "VmHWM:");
    let bound_kib = idle_kib + (64 + MARGIN_MIB) * 1024;
    eprintln!("idle {idle_kib} KiB, peak {peak_kib} KiB, bound {bound_kib} KiB");
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over idle {idle_kib} KiB + budget 64 MiB + margin {MARGIN_MIB} MiB"
    );

    // Still up, and serving as before once the answers are out.
    let again = post().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.bytes().await.unwrap().len() > 31 * MIB);
    let metrics = client
        .get(format!("{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, "gatewayz_memory_budget_bytes "),
        Some((64 * MIB) as f64)
    );
    assert_eq!(
        sample(&metrics, "gatewayz_memory_budget_in_use_bytes "),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "gatewayz_overload_refusals_total{reason=\"memory\"}"),
        Some(6.0)
    );
}

#[tokio::test]
async fn a_stream_whose_event_outgrows_the_budget_ends_with_an_overloaded_event() {
    let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]});
    // The second event never fits: twice over it is more than the 1 MiB budget.
    let events = format!("data: {first}\n\ndata: {}\n\n", "y".repeat(MIB));
    let server = upstream(ResponseTemplate::new(200).set_body_raw(events, "text/event-stream")).await;
    let budget = MIB.to_string();
    let app = TestApp::in_front_of(
        &server,
        &[
            ("GATEWAYZ_MEMORY_BUDGET_BYTES", &budget),
            UPSTREAM_KEYS[0],
            UPSTREAM_KEYS[1],
        ],
    )
    .await;
    let response = app.post_chat(&body(true)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect();
    assert_eq!(data.len(), 3, "{text}");
    let error: Value = serde_json::from_str(data[1]).unwrap();
    assert_eq!(error["error"]["code"], "overloaded", "{error}");
    assert_eq!(data[2], "[DONE]");
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "gatewayz_overload_refusals_total{reason=\"memory\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "gatewayz_memory_budget_in_use_bytes "),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_body_the_budget_cannot_hold_is_refused_before_it_is_read() {
    let server = upstream(ResponseTemplate::new(500)).await;
    let budget = MIB.to_string();
    let app = TestApp::in_front_of(
        &server,
        &[("GATEWAYZ_MEMORY_BUDGET_BYTES", &budget), UPSTREAM_KEYS[0]],
    )
    .await;
    // Two MiB declared, none of it sent: the answer comes anyway.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 * MIB
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{text}"
    );
    assert!(text.contains("\"code\":\"overloaded\""), "{text}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_are_refused_at_once_and_readiness_follows() {
    let completion = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow"}, "finish_reason": "stop"}]});
    let slow = Duration::from_secs(3);
    let server = upstream(
        ResponseTemplate::new(200)
            .set_body_json(completion)
            .set_delay(slow),
    )
    .await;
    let app = Arc::new(
        TestApp::in_front_of(
            &server,
            &[
                ("GATEWAYZ_MAX_IN_FLIGHT", "50"),
                ("GATEWAYZ_OVERLOAD_GRACE_MS", "300"),
                UPSTREAM_KEYS[0],
                UPSTREAM_KEYS[1],
            ],
        )
        .await,
    );

    // Probes, every 50 ms until told to stop: each must answer.
    let probing = Arc::new(AtomicBool::new(true));
    let probes = tokio::spawn({
        let (app, probing) = (app.clone(), probing.clone());
        async move {
            let mut readiness = Vec::new();
            while probing.load(Ordering::Relaxed) {
                for url in [
                    format!("{}/healthz", app.admin),
                    format!("{}/metrics", app.admin),
                    app.url("/healthz"),
                ] {
                    let status = app.client.get(&url).send().await.unwrap().status();
                    assert_eq!(status, 200, "{url}");
                }
                let ready = app
                    .client
                    .get(format!("{}/readyz", app.admin))
                    .send()
                    .await
                    .unwrap();
                readiness.push(ready.status().as_u16());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            readiness
        }
    });

    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let request = app.chat().json(&body(false));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_owned());
                let text = response.text().await.unwrap();
                (status, retry_after, text, started.elapsed())
            })
        })
        .collect();
    // Pressure while the 50 are served (once they are): refusals keep
    // coming past the grace period.
    eventually(5, "50 requests upstream", || async {
        server.received_requests().await.unwrap().len() == 50
    })
    .await;
    let mut pressure = Vec::new();
    while started.elapsed() < slow - Duration::from_millis(500) {
        let response = app.post_chat(&body(false)).await;
        pressure.push(response.status().as_u16());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for request in requests {
        let (status, retry_after, text, took) = request.await.unwrap();
        if status == 200 {
            served.push(took);
        } else {
            assert_overloaded(status, retry_after.as_deref(), &text);
            refused.push(took);
        }
    }
    assert_eq!((served.len(), refused.len()), (50, 150));
    assert!(pressure.iter().all(|status| *status == 503), "{pressure:?}");
    // At once: every refusal came back before the first admitted answer.
    let first_served = served.iter().min().unwrap();
    let last_refused = refused.iter().max().unwrap();
    assert!(
        last_refused < first_served,
        "{last_refused:?} vs {first_served:?}"
    );
    assert!(*first_served >= slow);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        50,
        "the refused never went upstream"
    );

    // Ready again by itself once the load is gone.
    eventually(5, "ready again", || async {
        app.client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    // A few more rounds of probes, all after readiness came back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    probing.store(false, Ordering::Relaxed);
    let readiness = probes.await.unwrap();
    let not_ready = readiness.iter().position(|status| *status == 503);
    let not_ready = not_ready.unwrap_or_else(|| panic!("readiness never went: {readiness:?}"));
    assert!(
        readiness[..not_ready].contains(&200),
        "ready before the load: {readiness:?}"
    );
    assert_eq!(readiness.last(), Some(&200), "{readiness:?}");

    let metrics = app.metrics().await;
    let in_flight_refusals = sample(&metrics, "gatewayz_overload_refusals_total{reason=\"in_flight\"}");
    assert_eq!(in_flight_refusals, Some((150 + pressure.len()) as f64));
    assert_eq!(sample(&metrics, "gatewayz_in_flight_limit "), Some(50.0));
    assert_eq!(sample(&metrics, "gatewayz_in_flight_requests "), Some(0.0));
}

#[tokio::test]
async fn a_refused_request_is_answered_without_its_body_being_read() {
    let completion = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": []});
    let server = upstream(
        ResponseTemplate::new(200)
            .set_body_json(completion)
            .set_delay(Duration::from_secs(2)),
    )
    .await;
    let app = TestApp::in_front_of(
        &server,
        &[
            ("GATEWAYZ_MAX_IN_FLIGHT", "1"),
            UPSTREAM_KEYS[0],
            UPSTREAM_KEYS[1],
        ],
    )
    .await;
    let holder = tokio::spawn(app.chat().json(&body(false)).send());
    eventually(5, "the slot is taken", || async {
        !server.received_requests().await.unwrap().is_empty()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    // A body is declared and never sent.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut received = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut received))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&received[..read]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
}
