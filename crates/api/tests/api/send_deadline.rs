//! The send deadline: a client that stops taking its answer loses it, and
//! with it go the memory budget, the in-flight slot and the upstream
//! connection the answer held; a client that reads slowly but steadily
//! gets all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wiremock::ResponseTemplate;

use crate::binary;
use crate::helpers::{KEY, TestApp, eventually, portkey_answering, sample};

const MIB: usize = 1024 * 1024;
const UPSTREAM_KEYS: [(&str, &str); 2] = [
    ("PORTKEY_API_KEY", "pk-send-deadline-test"),
    ("PROVIDER_OPENAI_API_KEY", "sk-send-deadline-test"),
];
/// The send deadline of these tests.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);
const SEND_TIMEOUT_MS: &str = "500";

/// A valid `chat.completion` whose text is `size` bytes long.
fn answer_of(size: usize) -> Vec<u8> {
    let head = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "CONTENT"},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    .to_string();
    let padding = size - (head.len() - "CONTENT".len());
    head.replace("CONTENT", &"x".repeat(padding)).into_bytes()
}

/// A client on a small receive buffer (so that its kernel takes little of
/// the answer on its behalf) that has sent a chat request and read nothing.
async fn request_then_stop_reading(address: &str, stream: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let address = address.trim_start_matches("http://").parse().unwrap();
    let mut connection = socket.connect(address).await.unwrap();
    let body = json!({"model": "@openai/gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    connection
}

/// Reads what is left on `connection` until it ends (end of file or a
/// reset), within a deadline; returns how many bytes came.
async fn read_to_its_end(connection: &mut TcpStream) -> usize {
    let mut buffer = vec![0; 64 * 1024];
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, connection.read(&mut buffer)).await {
            Err(_) => panic!("the connection is still open after {total} bytes"),
            Ok(Ok(0) | Err(_)) => return total,
            Ok(Ok(read)) => total += read,
        }
    }
}

/// The gauges the answer held: bytes of memory budget, requests in flight.
async fn held(metrics_url: &str) -> (f64, f64) {
    let metrics = reqwest::get(metrics_url).await.unwrap().text().await.unwrap();
    (
        sample(&metrics, "gatewayz_memory_budget_in_use_bytes ").unwrap(),
        sample(&metrics, "gatewayz_in_flight_requests ").unwrap(),
    )
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_answer_loses_it_at_the_send_deadline() {
    let size = 8 * MIB;
    let server =
        portkey_answering(ResponseTemplate::new(200).set_body_raw(answer_of(size), "application/json")).await;
    let base = format!("{}/v1", server.uri());
    let gateway = binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("GATEWAYZ_SEND_TIMEOUT_MS", SEND_TIMEOUT_MS),
        ("PORTKEY_BASE_URL", &base),
        UPSTREAM_KEYS[0],
        UPSTREAM_KEYS[1],
    ]);
    let metrics = format!("{}/metrics", gateway.admin);

    let mut client = request_then_stop_reading(&gateway.address, false).await;
    eventually(5, "the answer is held", || async {
        held(&metrics).await.0 >= size as f64
    })
    .await;
    let stalled = Instant::now();

    // Nothing read: the deadline alone lets go of the answer.
    eventually(5, "the budget and the slot are given back", || async {
        held(&metrics).await == (0.0, 0.0)
    })
    .await;
    assert!(
        stalled.elapsed() >= SEND_TIMEOUT / 2,
        "let go after {:?}, before the deadline could pass",
        stalled.elapsed()
    );
    let access = gateway.wait_for_event(5, "an access line", |event| event["target"] == "gatewayz::access");
    assert_eq!(access["fields"]["status"], 499, "{access}");
    let error = access["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("GATEWAYZ_SEND_TIMEOUT_MS"), "{access}");
    let read = read_to_its_end(&mut client).await;
    assert!(read < size, "the whole answer came ({read} bytes)");
}

/// A Portkey stand-in streaming 16 KiB events as fast as they are taken,
/// up to 64 MiB: it counts the events sent, and notes when the gateway
/// drops its connection.
async fn fast_stream_upstream(sent: Arc<AtomicUsize>, dropped: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "y".repeat(16 * 1024)}, "finish_reason": null}]});
        let event = format!("data: {chunk}\n\n");
        let framed = format!("{:x}\r\n{event}\r\n", event.len());
        for _ in 0..4096 {
            if socket.write_all(framed.as_bytes()).await.is_err() {
                dropped.store(true, Ordering::Relaxed);
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_loses_it_and_its_upstream_at_the_send_deadline() {
    let sent = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let base = fast_stream_upstream(sent.clone(), dropped.clone()).await;
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("GATEWAYZ_SEND_TIMEOUT_MS", SEND_TIMEOUT_MS),
        UPSTREAM_KEYS[0],
        UPSTREAM_KEYS[1],
    ])
    .await;
    let metrics = format!("{}/metrics", app.admin);

    let mut client = request_then_stop_reading(&app.address, true).await;
    eventually(5, "the stream is under way", || async {
        sent.load(Ordering::Relaxed) > 0
    })
    .await;

    eventually(5, "the upstream connection is dropped", || async {
        dropped.load(Ordering::Relaxed)
    })
    .await;
    eventually(5, "the budget and the slot are given back", || async {
        held(&metrics).await == (0.0, 0.0)
    })
    .await;
    assert!(sent.load(Ordering::Relaxed) < 4096, "the whole stream was sent");
    let text = app.metrics().await;
    let abandoned = r#"gatewayz_requests_total{model="other",portkey_provider="openai",provider="portkey",route="/v1/chat/completions",status_class="4xx"} "#;
    assert_eq!(sample(&text, abandoned), Some(1.0), "{text}");
    read_to_its_end(&mut client).await;
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_gets_its_whole_answer() {
    let size = 2 * MIB;
    let server =
        portkey_answering(ResponseTemplate::new(200).set_body_raw(answer_of(size), "application/json")).await;
    let app = TestApp::in_front_of(
        &server,
        &[
            ("GATEWAYZ_SEND_TIMEOUT_MS", SEND_TIMEOUT_MS),
            UPSTREAM_KEYS[0],
            UPSTREAM_KEYS[1],
        ],
    )
    .await;

    let mut client = request_then_stop_reading(&app.address, false).await;
    // 64 KiB every 100 ms, a fifth of the deadline apart, to the end.
    let mut received = Vec::new();
    let mut piece = vec![0; 64 * 1024];
    for _ in 0..(size / piece.len() + 8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut taken = 0;
        while taken < piece.len() {
            match tokio::time::timeout(Duration::from_secs(5), client.read(&mut piece[taken..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(read)) => taken += read,
                Err(_) => panic!("no byte in 5 s after {} bytes", received.len()),
            }
        }
        received.extend_from_slice(&piece[..taken]);
        if taken < piece.len() || answer_is_whole(&received) {
            break;
        }
    }
    assert!(
        answer_is_whole(&received),
        "cut after {} bytes: {}",
        received.len(),
        String::from_utf8_lossy(&received[..received.len().min(200)])
    );
    let body_start = received.windows(4).position(|end| end == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 200"));
    let answer: Value = serde_json::from_slice(&received[body_start..]).unwrap();
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().len() > size - 512);
    eventually(5, "the budget is given back", || async {
        app.metrics()
            .await
            .contains("gatewayz_memory_budget_in_use_bytes 0\n")
    })
    .await;
}

/// Whether `received` holds a response head and all the body its
/// `content-length` announces.
fn answer_is_whole(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|end| end == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse::<usize>().ok());
    length.is_some_and(|length| received.len() >= end + 4 + length)
}
