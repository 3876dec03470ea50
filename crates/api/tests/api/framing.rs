//! Requests the HTTP layer refuses before routing (bad framing, a garbage
//! request line, an oversized or unfinished head), sent over raw TCP: each
//! gets the gateway's OpenAI-shaped answer, an access line and a metric,
//! and the server goes on serving.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary;
use crate::helpers::{TestApp, assert_openai_error, demo_service, eventually, sample};

const DEADLINE: Duration = Duration::from_secs(10);

/// One answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// The `host:port` of an `http://host:port` address.
fn socket_of(address: &str) -> &str {
    address.strip_prefix("http://").unwrap()
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(address: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(socket_of(address)).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream).await
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection before the deadline")
        .expect("the connection reads to its end");
    received
}

/// Splits what a connection received into its answers (each with a
/// `content-length`), checking nothing is left over.
fn answers(mut received: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !received.is_empty() {
        let text = String::from_utf8_lossy(received);
        let head_end = text
            .find("\r\n\r\n")
            .unwrap_or_else(|| panic!("a whole head in {text:?}"));
        let mut lines = text[..head_end].split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.parse().unwrap())
            .unwrap_or_else(|| panic!("a content-length in {text:?}"));
        let body_start = head_end + 4;
        let body = received[body_start..body_start + length].to_vec();
        received = &received[body_start + length..];
        answers.push(Answer {
            status,
            headers,
            body,
        });
    }
    answers
}

/// Asserts `received` is exactly one refusal with `status` and `code`, in
/// the gateway's shape, and returns its request id.
fn assert_refusal(received: &[u8], status: u16, code: &str) -> String {
    let mut answers = answers(received);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer = answers.remove(0);
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("connection"), Some("close"));
    let body = answer.json();
    let error = assert_openai_error(&body);
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["source"], "gateway", "{body}");
    assert_eq!(error["param"], Value::Null, "{body}");
    let request_id = answer.header("x-request-id").expect("an x-request-id");
    assert_eq!(request_id.len(), 32, "{request_id}");
    request_id.to_owned()
}

/// Waits until the refusal metric for `reason`, and the requests of route
/// `other` answered with a 4xx, are both at `count`.
async fn assert_counted(app: &TestApp, reason: &str, count: f64) {
    let refusals = format!("gatewayz_http_refusals_total{{reason=\"{reason}\"}}");
    let requests = r#"gatewayz_requests_total{model="none",portkey_provider="none",provider="none",route="other",status_class="4xx"}"#;
    eventually(5, "the refusal is counted", || async {
        let metrics = app.metrics().await;
        sample(&metrics, &refusals) == Some(count) && sample(&metrics, requests) == Some(count)
    })
    .await;
}

/// Asserts the server still answers an ordinary request.
async fn assert_still_serves(app: &TestApp) {
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
}

/// The demo gateway with `request_head_timeout`.
async fn gateway_with_head_timeout(request_head_timeout: Duration) -> TestApp {
    let millis = request_head_timeout.as_millis().to_string();
    TestApp::spawn(demo_service(), &[("GATEWAYZ_REQUEST_HEAD_TIMEOUT_MS", &millis)]).await
}

#[tokio::test]
async fn content_length_beside_transfer_encoding_is_refused_with_a_400_in_openai_shape() {
    let app = TestApp::demo().await;
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gatewayz\r\nContent-Length: 5\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    let received = exchange(&app.address, request).await;

    assert_refusal(&received, 400, "malformed_request");
    assert_counted(&app, "malformed_request", 1.0).await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn two_different_content_lengths_are_refused_with_a_400_in_openai_shape() {
    let app = TestApp::demo().await;
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gatewayz\r\nContent-Length: 2\r\n\
        Content-Length: 3\r\n\r\n{}";

    let received = exchange(&app.address, request).await;

    assert_refusal(&received, 400, "malformed_request");
    assert_counted(&app, "malformed_request", 1.0).await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_garbage_request_line_is_refused_with_a_400_in_openai_shape() {
    let app = TestApp::demo().await;

    let received = exchange(&app.address, b"\x16\x03\x01 not http at all\r\n\r\n").await;

    assert_refusal(&received, 400, "malformed_request");
    assert_counted(&app, "malformed_request", 1.0).await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_200_kib_header_is_refused_with_a_431_in_openai_shape() {
    let app = TestApp::demo().await;
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: gatewayz\r\nX-Big: ".to_vec();
    request.resize(request.len() + 200 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");

    let received = exchange(&app.address, &request).await;

    assert_refusal(&received, 431, "request_headers_too_large");
    assert_counted(&app, "request_headers_too_large", 1.0).await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_request_head_unfinished_past_the_head_timeout_is_refused_with_a_408_in_openai_shape() {
    // Not shorter: actix starts the timer from a clock it ticks every 500 ms.
    let app = gateway_with_head_timeout(Duration::from_secs(1)).await;

    let received = exchange(&app.address, b"GET /healthz HTTP/1.1\r\nHost: gatewayz\r\n").await;

    let request_id = assert_refusal(&received, 408, "request_timeout");
    let body = answers(&received).remove(0).json();
    assert_eq!(
        body["error"]["message"], "The request head did not arrive within 1000 ms",
        "{request_id}"
    );
    assert_counted(&app, "request_timeout", 1.0).await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_malformed_request_pipelined_after_a_good_one_gets_the_good_answer_then_the_refusal() {
    let app = TestApp::demo().await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: gatewayz\r\n\r\nGARBAGE\x01\r\n\r\n";

    let received = exchange(&app.address, request).await;

    let answers = answers(&received);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].json()["status"], "ok");
    assert!(answers[0].header("x-request-id").is_some());
    assert_eq!(answers[1].status, 400);
    assert_eq!(answers[1].json()["error"]["code"], "malformed_request");
    assert_eq!(answers[1].header("connection"), Some("close"));
    assert_counted(&app, "malformed_request", 1.0).await;
}

#[tokio::test]
async fn pipelined_keep_alive_requests_are_all_answered_in_order_on_one_connection() {
    let app = TestApp::demo().await;
    let mut stream = TcpStream::connect(socket_of(&app.address)).await.unwrap();
    let request = "GET /healthz HTTP/1.1\r\nHost: gatewayz\r\nx-request-id: pipelined-{n}\r\n\r\n";
    let mut requests: String = (1..=3).map(|n| request.replace("{n}", &n.to_string())).collect();
    requests.push_str(
        &request
            .replace("{n}", "4")
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    );

    stream.write_all(requests.as_bytes()).await.unwrap();
    let received = read_until_closed(&mut stream).await;

    let answers = answers(&received);
    let ids: Vec<Option<&str>> = answers
        .iter()
        .map(|answer| answer.header("x-request-id"))
        .collect();
    assert_eq!(
        ids,
        [
            Some("pipelined-1"),
            Some("pipelined-2"),
            Some("pipelined-3"),
            Some("pipelined-4")
        ]
    );
    assert!(answers.iter().all(|answer| answer.status == 200), "{answers:?}");
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "gatewayz_http_refusals_total"),
        None,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_binary_logs_a_refusal_as_one_info_access_line_with_its_request_id_and_no_actix_error() {
    let gateway = binary::start(&[("GATEWAYZ_BIND", "127.0.0.1:0")]);

    let received = exchange(&gateway.address, b"NOT HTTP\r\n\r\n").await;
    let request_id = assert_refusal(&received, 400, "malformed_request");
    // A later request's access line is logged after anything actix would
    // have logged for the refused connection, which it closed first.
    let response = reqwest::get(format!("{}/healthz", gateway.address))
        .await
        .unwrap();
    let later_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    gateway.wait_for_event(10, "the later request's access line", |event| {
        event["fields"]["request_id"] == later_id.as_str()
    });

    let events = gateway.events();
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|event| event["fields"]["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    let refusal = refusals[0];
    assert_eq!(refusal["level"], "INFO", "{refusal}");
    assert_eq!(refusal["target"], "gatewayz::access", "{refusal}");
    assert_eq!(refusal["fields"]["status"], 400, "{refusal}");
    assert_eq!(refusal["fields"]["error_kind"], "malformed_request", "{refusal}");
    assert!(!refusal.to_string().contains("NOT HTTP"), "{refusal}");
    let errors: Vec<&Value> = events.iter().filter(|event| event["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let lines = gateway.lines();
    assert!(
        lines.iter().all(|line| !line.contains("actix_http")),
        "{lines:#?}"
    );
}
