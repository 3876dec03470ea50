//! Regression tests for issue #12's hostile-client holes: a body that never
//! finishes, a directly routed request whose upstream never answers, huge
//! values quoted back, a client that half-closes, a duplicate or mistyped
//! field, and a forged trace context.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::{MockServer, ResponseTemplate};

use crate::binary::{self, Gateway};
use crate::helpers::{
    KEY, TestApp, assert_openai_error, chat_body, chat_body_with, demo_service, portkey_answering, sample,
};
use crate::upstream::{Behaviour, SlowUpstream};

/// The longest any one wait on the gateway may take in these tests.
const DEADLINE: Duration = Duration::from_secs(5);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Raw connections

/// The `host:port` of an `http://host:port` address.
fn socket_of(address: &str) -> &str {
    address.strip_prefix("http://").unwrap()
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server closed it (end of file).
    Closed,
    /// The server reset it.
    Reset(std::io::ErrorKind),
}

/// Reads until the server ends the connection; panics past [`DEADLINE`].
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let ending = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return Ending::Closed,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) => return Ending::Reset(error.kind()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the server did not end the connection within {DEADLINE:?}; received {:?}",
            String::from_utf8_lossy(&received)
        )
    });
    (received, ending)
}

/// One answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status_line: String,
    body: Vec<u8>,
}

impl Answer {
    /// The single answer in `received`, its body framed by `content-length`.
    fn parse(received: &[u8]) -> Self {
        let text = String::from_utf8_lossy(received);
        let head_end = text
            .find("\r\n\r\n")
            .unwrap_or_else(|| panic!("a whole head in {text:?}"));
        let mut lines = text[..head_end].split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let length: usize = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("a content-length in {text:?}"));
        let body = received[head_end + 4..].to_vec();
        assert_eq!(body.len(), length, "exactly one answer in {text:?}");
        Self { status_line, body }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A chat request's head, with the key, declaring a `length`-byte body.
fn chat_head(length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Sends a head declaring 100 body bytes and only 8 of them, then waits for
/// the server to answer and close.
async fn send_a_body_that_stalls(address: &str) -> (Vec<u8>, Ending) {
    let mut stream = TcpStream::connect(socket_of(address)).await.unwrap();
    let request = format!("{}{{\"model\"", chat_head(100));
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream).await
}

/// Asserts `received` is the body deadline's 408, ended by the server.
fn assert_body_timeout(received: &[u8], ending: &Ending) {
    assert_eq!(*ending, Ending::Closed, "{:?}", String::from_utf8_lossy(received));
    let answer = Answer::parse(received);
    assert!(
        answer.status_line.starts_with("HTTP/1.1 408 "),
        "{}",
        answer.status_line
    );
    let body = answer.json();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "request_timeout", "{body}");
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["source"], "gateway", "{body}");
    assert!(error["message"].as_str().unwrap().contains("300 ms"), "{body}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_its_connection_closed() {
    let app = TestApp::spawn(demo_service(), &[("GATEWAYZ_BODY_TIMEOUT_MS", "300")]).await;
    let started = Instant::now();

    let (received, ending) = send_a_body_that_stalls(&app.address).await;

    assert_body_timeout(&received, &ending);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the body deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn fifty_stalled_bodies_at_once_each_get_408_and_the_gateway_still_serves() {
    let app = TestApp::spawn(demo_service(), &[("GATEWAYZ_BODY_TIMEOUT_MS", "300")]).await;

    let clients = (0..50).map(|_| {
        let address = app.address.clone();
        tokio::spawn(async move { send_a_body_that_stalls(&address).await })
    });
    let endings = join_all(clients).await;

    for ending in endings {
        let (received, ending) = ending.unwrap();
        assert_body_timeout(&received, &ending);
    }
    let response = app.post_chat(&chat_body()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
}

#[tokio::test]
async fn a_chunked_body_that_stops_arriving_gets_408_and_its_connection_closed() {
    let app = TestApp::spawn(demo_service(), &[("GATEWAYZ_BODY_TIMEOUT_MS", "300")]).await;
    let mut stream = TcpStream::connect(socket_of(&app.address)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{{\"model\""
    );

    stream.write_all(head.as_bytes()).await.unwrap();
    let (received, ending) = read_until_closed(&mut stream).await;

    assert_body_timeout(&received, &ending);
}

#[tokio::test]
async fn a_chunked_body_refused_unread_gets_its_401_and_its_connection_closed_at_the_body_deadline() {
    let app = TestApp::spawn(demo_service(), &[("GATEWAYZ_BODY_TIMEOUT_MS", "300")]).await;
    let mut stream = TcpStream::connect(socket_of(&app.address)).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer wrong\r\n\
                content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"model\"";

    stream.write_all(head.as_bytes()).await.unwrap();
    let (received, ending) = read_until_closed(&mut stream).await;

    assert_eq!(ending, Ending::Closed);
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
}

#[tokio::test]
async fn a_large_body_refused_unread_still_gets_its_answer_whole() {
    let app = TestApp::demo().await;
    let mut stream = TcpStream::connect(socket_of(&app.address)).await.unwrap();
    let body = "x".repeat(2 * MIB);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer wrong\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut reader, mut writer) = stream.split();

    // The whole body is sent while the answer is read: the answer must not
    // be lost to a reset when the server closes with the body unread.
    let (written, (received, ending)) = tokio::join!(writer.write_all(request.as_bytes()), async {
        let mut received = Vec::new();
        let ending = loop {
            let mut buffer = [0_u8; 4096];
            match tokio::time::timeout(DEADLINE, reader.read(&mut buffer))
                .await
                .unwrap()
            {
                Ok(0) => break Ending::Closed,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) => break Ending::Reset(error.kind()),
            }
        };
        (received, ending)
    });

    written.unwrap();
    assert_eq!(ending, Ending::Closed);
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("invalid_api_key"), "{text}");
}

// ---------------------------------------------------------------------------
// The request deadline of direct routes

/// The production gateway in front of `upstream`, with the upstream's own
/// timeouts far off and a 300 ms request deadline.
async fn gateway_with_a_request_deadline(upstream: &SlowUpstream) -> TestApp {
    TestApp::production(&[
        ("PORTKEY_BASE_URL", upstream.base_url.as_str()),
        ("PORTKEY_API_KEY", "pk-hostile"),
        ("PROVIDER_OPENAI_API_KEY", "sk-hostile"),
        ("GATEWAYZ_REQUEST_TIMEOUT_MS", "300"),
        ("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", "60000"),
        ("GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "60000"),
    ])
    .await
}

/// A request routed explicitly to OpenAI through Portkey.
fn portkey_body(stream: bool) -> Value {
    json!({"provider": "portkey", "portkey_provider": "openai", "model": "some-model", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_directly_routed_request_whose_upstream_never_answers_gets_504_at_the_request_deadline() {
    let upstream = SlowUpstream::start(Behaviour::Hang).await;
    let app = gateway_with_a_request_deadline(&upstream).await;
    let started = Instant::now();

    let answers = join_all([false, true].map(|stream| {
        let request = app.chat().json(&portkey_body(stream)).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (stream, status, body)
        }
    }))
    .await;

    assert!(
        started.elapsed() >= Duration::from_millis(300) && started.elapsed() < DEADLINE,
        "{:?}",
        started.elapsed()
    );
    for (stream, status, body) in answers {
        assert_eq!(status, 504, "stream {stream}: {body}");
        let error = assert_openai_error(&body);
        assert_eq!(error["source"], "gateway", "stream {stream}: {body}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("the request deadline of 300 ms"),
            "stream {stream}: {body}"
        );
    }
}

// ---------------------------------------------------------------------------
// Refused values are quoted short

const ERROR_BODY_MAX: usize = 2 * 1024;
const LOG_LINE_MAX: usize = 4 * 1024;

/// One hostile request: its method and path, with the key or not, and its
/// JSON body.
struct Hostile {
    path: String,
    keyed: bool,
    body: Option<String>,
}

/// A 1 MiB `role`, a 1 MiB `max_tokens` string, a 1 MiB model name, and a
/// 30 KB unknown path without a key.
fn hostile_requests() -> Vec<Hostile> {
    let chat = |body: Value| Hostile {
        path: "/v1/chat/completions".into(),
        keyed: true,
        body: Some(body.to_string()),
    };
    vec![
        chat(chat_body_with(
            json!({"messages": [{"role": "r".repeat(MIB), "content": "hi"}]}),
        )),
        chat(chat_body_with(json!({"max_tokens": "9".repeat(MIB)}))),
        chat(json!({"model": "m".repeat(MIB), "messages": [{"role": "user", "content": "hi"}]})),
        Hostile {
            path: format!("/{}", "p".repeat(30_000)),
            keyed: false,
            body: None,
        },
    ]
}

async fn send(client: &reqwest::Client, address: &str, hostile: &Hostile) -> (u16, String) {
    let url = format!("{address}{}", hostile.path);
    let mut request = match &hostile.body {
        Some(body) => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone()),
        None => client.get(url),
    };
    if hostile.keyed {
        request = request.bearer_auth(KEY);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn huge_refused_values_come_back_cut_short_with_their_param() {
    let app = TestApp::demo().await;
    let expected = [
        (400, Some("messages[0].role")),
        (400, Some("max_tokens")),
        (404, Some("model")),
        (404, None),
    ];

    for (hostile, (status, param)) in hostile_requests().iter().zip(expected) {
        let (got, text) = send(&app.client, &app.address, hostile).await;

        let shown: String = text.chars().take(300).collect();
        assert_eq!(got, status, "{shown}");
        assert!(text.len() < ERROR_BODY_MAX, "{} bytes: {shown}", text.len());
        let body: Value = serde_json::from_str(&text).unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["param"].as_str(), param, "{body}");
        assert!(
            error["message"].as_str().unwrap().contains('…'),
            "the value is quoted, cut and marked: {body}"
        );
    }
}

/// The binary's access lines written so far.
fn access_lines(gateway: &Gateway) -> Vec<Value> {
    gateway
        .events()
        .into_iter()
        .filter(|event| event["target"] == "gatewayz::access")
        .collect()
}

#[tokio::test]
async fn huge_refused_values_never_make_a_long_log_line() {
    let gateway = binary::start(&[("GATEWAYZ_BIND", "127.0.0.1:0"), ("GATEWAYZ_API_KEYS", KEY)]);
    let client = reqwest::Client::builder().timeout(DEADLINE).build().unwrap();
    let requests = hostile_requests();

    for hostile in &requests {
        let (status, _) = send(&client, &gateway.address, hostile).await;
        assert!((400..500).contains(&status), "{status}");
    }

    let deadline = Instant::now() + DEADLINE;
    while access_lines(&gateway).len() < requests.len() {
        assert!(
            Instant::now() < deadline,
            "not every request was logged: {:#?}",
            access_lines(&gateway)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses: Vec<Value> = access_lines(&gateway)
        .iter()
        .map(|event| event["fields"]["status"].clone())
        .collect();
    assert_eq!(statuses, [400, 400, 404, 404].map(Value::from));
    let lines = gateway.lines();
    let longest = lines.iter().map(String::len).max().unwrap();
    assert!(
        longest <= LOG_LINE_MAX,
        "a log line of {longest} bytes: {}",
        lines
            .iter()
            .find(|line| line.len() == longest)
            .unwrap()
            .chars()
            .take(300)
            .collect::<String>()
    );
}

#[tokio::test]
async fn a_huge_method_never_makes_a_long_log_line() {
    let gateway = binary::start(&[("GATEWAYZ_BIND", "127.0.0.1:0"), ("GATEWAYZ_API_KEYS", KEY)]);
    let mut stream = TcpStream::connect(socket_of(&gateway.address)).await.unwrap();
    let request = format!(
        "{} /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        "M".repeat(20_000)
    );

    stream.write_all(request.as_bytes()).await.unwrap();
    let (received, _) = read_until_closed(&mut stream).await;

    let answer = Answer::parse(&received);
    assert!(
        answer.status_line.starts_with("HTTP/1.1 405 "),
        "{}",
        answer.status_line
    );
    assert!(answer.body.len() < ERROR_BODY_MAX, "{} bytes", answer.body.len());
    let access = gateway.wait_for_event(5, "an access line", |event| event["target"] == "gatewayz::access");
    assert_eq!(access["fields"]["status"], 405);
    let longest = gateway.lines().iter().map(String::len).max().unwrap();
    assert!(longest <= LOG_LINE_MAX, "a log line of {longest} bytes");
}

// ---------------------------------------------------------------------------
// A client that half-closes

#[tokio::test]
async fn a_client_that_half_closes_never_reads_499_but_is_counted_as_499() {
    let upstream = SlowUpstream::start(Behaviour::Hang).await;
    let gateway = binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("PORTKEY_BASE_URL", upstream.base_url.as_str()),
        ("PORTKEY_API_KEY", "pk-hostile"),
        ("PROVIDER_OPENAI_API_KEY", "sk-hostile"),
    ]);
    let body = portkey_body(false).to_string();
    let mut stream = TcpStream::connect(socket_of(&gateway.address)).await.unwrap();

    stream
        .write_all(format!("{}{body}", chat_head(body.len())).as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let (received, _) = read_until_closed(&mut stream).await;

    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("499"), "the client read {text:?}");
    assert!(!text.contains("client_closed"), "the client read {text:?}");
    let access = gateway.wait_for_event(5, "an access line", |event| event["target"] == "gatewayz::access");
    assert_eq!(access["fields"]["status"], 499, "{access}");
    assert_eq!(access["fields"]["route"], "/v1/chat/completions", "{access}");
    let metrics = reqwest::get(format!("{}/metrics", gateway.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let abandoned = r#"gatewayz_requests_total{model="other",portkey_provider="openai",provider="portkey",route="/v1/chat/completions",status_class="4xx"} "#;
    assert_eq!(sample(&metrics, abandoned), Some(1.0), "{metrics}");
}

// ---------------------------------------------------------------------------
// Duplicate and mistyped fields

/// Posts `body` as it is written, with the key.
async fn post_text(app: &TestApp, body: &str) -> (u16, Value) {
    let response = app
        .chat()
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_model_given_twice_is_refused_as_a_duplicate_parameter() {
    let app = TestApp::demo().await;

    let (status, body) = post_text(
        &app,
        r#"{"provider": "demo", "model": "demo-model", "model": "other-model",
            "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .await;

    assert_eq!(status, 400, "{body}");
    let error = assert_openai_error(&body);
    assert_eq!(error["param"], "model", "{body}");
    assert_eq!(error["code"], "duplicate_parameter", "{body}");
}

#[tokio::test]
async fn a_role_that_is_a_number_names_its_param_instead_of_malformed_json() {
    let app = TestApp::demo().await;

    let (status, body) = post_text(
        &app,
        r#"{"provider": "demo", "model": "demo-model", "messages": [{"role": 5, "content": "hi"}]}"#,
    )
    .await;

    assert_eq!(status, 400, "{body}");
    let error = assert_openai_error(&body);
    assert_eq!(error["param"], "messages[0].role", "{body}");
    assert_ne!(error["code"], "invalid_json", "{body}");
    assert!(
        !error["message"].as_str().unwrap().contains("Malformed JSON"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// Trace context

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn completion() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "some-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "provider": "openai"})
}

async fn gateway_before(portkey: &MockServer) -> TestApp {
    TestApp::in_front_of(
        portkey,
        &[
            ("PORTKEY_API_KEY", "pk-hostile"),
            ("PROVIDER_OPENAI_API_KEY", "sk-hostile"),
        ],
    )
    .await
}

/// Sends a request with `traceparent` and [`TRACESTATE`], checks it
/// succeeds, and returns the trace headers Portkey received for it.
async fn trace_headers_at_portkey(
    app: &TestApp,
    portkey: &MockServer,
    traceparent: &str,
) -> (Option<String>, Option<String>) {
    let response = app
        .chat()
        .header("traceparent", traceparent)
        .header("tracestate", TRACESTATE)
        .json(&portkey_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "traceparent {traceparent:.80}");
    let requests = portkey.received_requests().await.unwrap();
    let last = requests.last().expect("Portkey was called");
    let header = |name: &str| {
        last.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    (header("traceparent"), header("tracestate"))
}

#[tokio::test]
async fn a_valid_trace_context_reaches_portkey_unchanged() {
    let portkey = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let app = gateway_before(&portkey).await;

    let (traceparent, tracestate) = trace_headers_at_portkey(&app, &portkey, TRACEPARENT).await;

    assert_eq!(traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(tracestate.as_deref(), Some(TRACESTATE));
}

#[tokio::test]
async fn an_oversized_uppercase_or_zero_traceparent_is_not_forwarded_and_the_request_succeeds() {
    let portkey = portkey_answering(ResponseTemplate::new(200).set_body_json(completion())).await;
    let app = gateway_before(&portkey).await;
    let oversized = format!("{TRACEPARENT}{}", "0".repeat(6_000 - TRACEPARENT.len()));
    let uppercase = TRACEPARENT.to_ascii_uppercase();
    let zero_trace_id = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";

    for forged in [oversized.as_str(), uppercase.as_str(), zero_trace_id] {
        let (traceparent, tracestate) = trace_headers_at_portkey(&app, &portkey, forged).await;

        assert_eq!(traceparent, None, "forwarded {forged:.80}");
        assert_eq!(tracestate, None, "tracestate forwarded with {forged:.80}");
    }
    assert_eq!(portkey.received_requests().await.unwrap().len(), 3);
}
