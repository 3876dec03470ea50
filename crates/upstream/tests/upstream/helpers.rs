//! Starting an upstream on a free loopback port and calling it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatewayz_upstream::{Config, Upstream};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub const GATEWAY_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
pub const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;

pub async fn spawn(config: Config) -> SocketAddr {
    let upstream = Upstream::bind(&Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    })
    .await
    .unwrap();
    let address = upstream.local_addr().unwrap();
    tokio::spawn(upstream.run());
    address
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub retry_after: Option<String>,
    /// Each body frame with the moment it arrived.
    pub frames: Vec<(Instant, Bytes)>,
    /// Whether the body ended with an error rather than its end.
    pub broke: bool,
    pub sent: Instant,
}

impl Answer {
    pub fn body(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|(_, frame)| frame.to_vec()).collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body()).unwrap()
    }
}

pub async fn call(address: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    call_with(address, method, path, &[("x-portkey-provider", "openai")], body).await
}

/// A request with these headers besides `host` and `content-type`.
pub async fn call_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let sent = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|value: &hyper::header::HeaderValue| value.to_str().unwrap().to_owned())
    };
    let (status, content_type, content_length, retry_after) = (
        response.status(),
        header(CONTENT_TYPE),
        header(CONTENT_LENGTH),
        header(RETRY_AFTER),
    );
    let mut body = response.into_body();
    let mut frames = Vec::new();
    let mut broke = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), data));
                }
            }
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    Answer {
        status,
        content_type,
        content_length,
        retry_after,
        frames,
        broke,
        sent,
    }
}

/// The `data:` of each unnamed SSE event (chat completions).
pub fn events(answer: &Answer) -> Vec<String> {
    let body = String::from_utf8(answer.body()).unwrap();
    body.split_terminator("\n\n")
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

/// Each named SSE event (`event: NAME\ndata: JSON`), with its arrival.
pub fn named_events(answer: &Answer) -> Vec<(String, Value)> {
    let body = String::from_utf8(answer.body()).unwrap();
    body.split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name, data)
        })
        .collect()
}

/// `body` (a JSON object) with `"upstream_fault": fault` added.
pub fn with_fault(body: &str, fault: &str) -> String {
    let (head, _) = body.rsplit_once('}').unwrap();
    format!(r#"{head},"upstream_fault":"{fault}"}}"#)
}

pub fn faulty(chunks: usize) -> Config {
    Config {
        chunks,
        faults: true,
        ..Config::default()
    }
}

/// A paced configuration, for the tests of a stream's timing.
pub fn paced(gap: Duration) -> Config {
    Config {
        gap,
        ..Config::default()
    }
}
