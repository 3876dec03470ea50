//! Stand-in Portkeys: wiremock answering JSON and SSE, and a raw server
//! whose stream pauses between its first chunk and the rest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The model that answers, as the upstream names it.
pub const ANSWERING_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// The usage every answer reports.
pub const PROMPT_TOKENS: i64 = 11;
pub const COMPLETION_TOKENS: i64 = 7;

/// A chat completion with `text`, from [`ANSWERING_MODEL`].
pub fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-traces", "object": "chat.completion", "created": 1, "model": ANSWERING_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
        "provider": "openai"})
}

/// A chat completion chunk from [`ANSWERING_MODEL`].
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({"id": "chatcmpl-traces", "object": "chat.completion.chunk", "created": 1, "model": ANSWERING_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
}

/// A stream's events saying `text`: its first chunk, then the rest (the
/// finish reason, the usage chunk, `[DONE]`).
pub fn stream_events(text: &str) -> (String, String) {
    let usage = json!({"id": "chatcmpl-traces", "object": "chat.completion.chunk", "created": 1,
        "model": ANSWERING_MODEL, "choices": [],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}});
    let first = format!(
        "data: {}\n\n",
        chunk(json!({"role": "assistant", "content": text}), None)
    );
    let rest = [chunk(json!({}), Some("stop")), usage]
        .iter()
        .map(|event| format!("data: {event}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect();
    (first, rest)
}

/// A Portkey answering chat completions with `text`: as JSON, or as SSE to
/// a stream.
pub async fn portkey(text: &str) -> MockServer {
    // A server of its own: a gateway still running must never reach
    // another test's.
    let server = MockServer::builder().start().await;
    let (first, rest) = stream_events(text);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(first + &rest, "text/event-stream"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(text)))
        .mount(&server)
        .await;
    server
}

/// The base URL the gateway is given for `server`.
pub fn base(server: &MockServer) -> String {
    format!("{}/v1", server.uri())
}

/// The `traceparent` of each call `server` received, in order.
pub async fn traceparents(server: &MockServer) -> Vec<Option<String>> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            request
                .headers
                .get("traceparent")
                .map(|value| value.to_str().unwrap().to_owned())
        })
        .collect()
}

/// What [`paced_stream`] saw and did.
#[derive(Debug, Default)]
pub struct Paced {
    /// The head of the request it answered.
    pub head: String,
    /// When it began to send what follows the pause.
    pub rest_sent: Option<SystemTime>,
}

/// A Portkey that streams the first chunk of [`stream_events`] at once and
/// the rest `pause` later. Returns its base URL.
pub async fn paced_stream(text: &str, pause: Duration) -> (String, Arc<Mutex<Paced>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Paced::default()));
    let (first, rest) = stream_events(text);
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let head = tokio::time::timeout(Duration::from_secs(5), read_request(&mut socket))
                .await
                .expect("the request arrives within 5 s");
            record.lock().unwrap().head = head;
            let framed = |event: &str| format!("{:x}\r\n{event}\r\n", event.len());
            let start =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            socket
                .write_all(format!("{start}{}", framed(&first)).as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(pause).await;
            record.lock().unwrap().rest_sent = Some(SystemTime::now());
            let _ = socket
                .write_all(format!("{}0\r\n\r\n", framed(&rest)).as_bytes())
                .await;
        }
    });
    (format!("http://{address}/v1"), seen)
}

/// Reads one request, head and body (by its `content-length`, at most
/// 1 MiB), and returns its head.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut piece = [0_u8; 16 * 1024];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return head;
            }
        }
        assert!(buffer.len() < 1024 * 1024, "a request over 1 MiB");
        let read = socket.read(&mut piece).await.unwrap();
        assert!(read > 0, "the request ended early");
        buffer.extend_from_slice(&piece[..read]);
    }
}
