//! A hostile or broken upstream: keys it echoes back in any field, answers
//! that quote a key where a number belongs, events that never end, and
//! keep-alives that never turn into an answer. None of them may leak a key
//! to the client or the log, grow the gateway's memory, or hold the client.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::binary;
use crate::helpers::{KEY, TestApp, assert_openai_error};

const PORTKEY_KEY: &str = "pk-hostile-0123456789abcdefghij";
const OPENAI_KEY: &str = "sk-hostile-zyxwvutsrqponmlkjih";

fn body(model: &str, stream: bool) -> Value {
    json!({"provider": "portkey", "portkey_provider": "openai", "model": model, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

/// Fails if `text` holds either key, or even its first 12 characters.
fn assert_no_key(text: &str, what: &str) {
    for key in [PORTKEY_KEY, OPENAI_KEY] {
        assert!(!text.contains(&key[..12]), "{what} holds a key: {text}");
    }
}

fn chunk(content: &str, finish: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    .to_string()
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.into_bytes(), "text/event-stream")
}

/// The `data:` of each event of an SSE body.
fn data_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect()
}

/// The stand-in answers each model as `answers` says.
async fn portkey(answers: Vec<(&str, ResponseTemplate)>) -> MockServer {
    let server = MockServer::start().await;
    for (model, answer) in answers {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(json!({"model": model})))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    server
}

/// Posts `body` to the gateway at `address`; the status and the body text.
async fn post(address: &str, body: &Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn keys_an_upstream_echoes_reach_neither_the_client_nor_the_log() {
    let echoed = json!({"error": {"message": format!("bad key {PORTKEY_KEY}"), "param": PORTKEY_KEY,
        "code": format!("Bearer {OPENAI_KEY}")}, "provider": "openai"});
    let server = portkey(vec![
        // Hole 1: every field of an error, JSON and mid-stream.
        ("echo-400", ResponseTemplate::new(400).set_body_json(&echoed)),
        (
            "echo-stream",
            sse(format!("data: {}\n\ndata: {echoed}\n\n", chunk("a", None))),
        ),
        // Hole 2: a key where a number belongs.
        (
            "wrong-type",
            ResponseTemplate::new(200).set_body_json(json!({"id": "c", "object": "chat.completion",
                "created": PORTKEY_KEY, "model": "m", "choices": []})),
        ),
        // Hole 3: a key straddling the cut of a body that is not JSON.
        (
            "straddle",
            ResponseTemplate::new(500).set_body_string(format!("{}{PORTKEY_KEY}", "E".repeat(498))),
        ),
    ])
    .await;
    let base = format!("{}/v1", server.uri());
    let gateway = binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
    ]);

    let (status, text) = post(&gateway.address, &body("echo-400", false)).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_openai_error(&error);
    assert_eq!(error["error"]["param"], "[REDACTED]");
    assert_eq!(error["error"]["code"], "Bearer [REDACTED]");
    assert_no_key(&text, "the 400's body");

    let (status, text) = post(&gateway.address, &body("echo-stream", true)).await;
    assert_eq!(status, 200, "{text}");
    let events = data_events(&text);
    assert_eq!(events.len(), 3, "{text}");
    let error: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(error["error"]["param"], "[REDACTED]", "{text}");
    assert_eq!(events[2], "[DONE]");
    assert_no_key(&text, "the stream");

    let (status, text) = post(&gateway.address, &body("wrong-type", false)).await;
    assert_eq!(status, 502, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "invalid_upstream_response");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`created`") && message.contains("expected u64"),
        "{message}"
    );
    assert_no_key(&text, "the 502's body");

    let (status, text) = post(&gateway.address, &body("straddle", false)).await;
    assert_eq!(status, 502, "{text}");
    assert_no_key(&text, "the cut body");
    assert!(!text.contains(&PORTKEY_KEY[..4]), "{text}");

    // Four access lines, the errors among them, and not one line with a key.
    gateway.wait_for_event(10, "the fourth access line", |_| {
        gateway
            .events()
            .iter()
            .filter(|event| event["target"] == "gatewayz::access")
            .count()
            >= 4
    });
    for line in gateway.lines() {
        assert_no_key(&line, "a log line");
    }
}

#[tokio::test]
async fn an_event_that_never_ends_is_a_502_before_the_first_chunk_and_an_error_event_after() {
    // 9 MiB of short `data:` lines and no blank line: no line is long, the
    // event is.
    let endless = format!("data: {}\n", "x".repeat(1000)).repeat(9 * 1024);
    let server = portkey(vec![
        ("at-once", sse(endless.clone())),
        (
            "after-a-chunk",
            sse(format!("data: {}\n\n{endless}", chunk("a", None))),
        ),
    ])
    .await;
    let app = TestApp::in_front_of(
        &server,
        &[
            ("PORTKEY_API_KEY", PORTKEY_KEY),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
        ],
    )
    .await;

    let response = app.post_chat(&body("at-once", true)).await;
    assert_eq!(response.status().as_u16(), 502);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_upstream_response", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{error}"
    );

    let response = app.post_chat(&body("after-a-chunk", true)).await;
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let events = data_events(&text);
    assert_eq!(events.len(), 3, "{text}");
    let error: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(error["error"]["code"], "invalid_upstream_response", "{error}");
    assert_eq!(events[2], "[DONE]");
}

/// An upstream that answers 200 with an event stream and then sends only
/// keep-alives (a `heartbeat` event and a comment every 50 ms), for at most
/// 30 s or until the gateway hangs up.
async fn heartbeats_only() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0_u8; 64 * 1024];
                let _ = connection.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if connection.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let beat = b"event: heartbeat\ndata: {}\n\n: ping\n\n";
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(30) {
                    let chunk = [format!("{:x}\r\n", beat.len()).as_bytes(), beat, b"\r\n"].concat();
                    if connection.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    base
}

#[tokio::test]
async fn keep_alives_do_not_hold_a_client_past_the_first_byte_timeout() {
    let base = heartbeats_only().await;
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", PORTKEY_KEY),
        ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
        ("GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "400"),
    ])
    .await;

    // Were the keep-alives to move the deadline, the client's own 10 s
    // timeout would end this request instead of the gateway's 504.
    let response = app.post_chat(&body("m", true)).await;

    assert_eq!(response.status().as_u16(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout", "{error}");
}
