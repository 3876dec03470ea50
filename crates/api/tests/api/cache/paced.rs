//! A Portkey stand-in that streams slowly enough for clients to join,
//! read and leave mid-stream: raw HTTP/1.1, counting its calls and the
//! chunks it sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::next_event;

/// How many chunks the paced upstream streams, and the gap between them.
pub const PACED_CHUNKS: usize = 10;
const PACED_GAP: Duration = Duration::from_millis(100);

/// What the paced upstream has done: connections taken, chunks sent.
#[derive(Clone, Default)]
pub struct Paced {
    calls: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

/// A Portkey stand-in (raw HTTP/1.1) that streams [`PACED_CHUNKS`] words,
/// one every [`PACED_GAP`], then `[DONE]`, on each connection (or answers
/// them whole to a request that asks no stream); its base URL.
pub async fn paced_upstream(paced: Paced) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            paced.calls.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(stream_paced(socket, paced.sent.clone()));
        }
    });
    format!("http://{address}/v1")
}

async fn stream_paced(mut socket: TcpStream, sent: Arc<AtomicUsize>) {
    // The whole request first (its head, then the length it declares).
    let mut request = Vec::new();
    let mut buffer = [0; 8192];
    let body_start = loop {
        let Ok(read) = socket.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |length| length.trim().parse().unwrap());
    while request.len() < body_start + length {
        let Ok(read) = socket.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let body: Value = serde_json::from_slice(&request[body_start..]).unwrap_or_default();
    if body["stream"] != true {
        let answer = super::completion(&paced_text()).to_string();
        let whole = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = socket.write_all(whole.as_bytes()).await;
        let _ = socket.shutdown().await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut events: Vec<String> = (0..PACED_CHUNKS)
        .map(|index| {
            let chunk = json!({"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": format!("w{index} ")},
                "finish_reason": null}]});
            format!("data: {chunk}\n\n")
        })
        .collect();
    events.push("data: [DONE]\n\n".to_owned());
    for event in events {
        let framed = format!("{:x}\r\n{event}\r\n", event.len());
        if socket.write_all(framed.as_bytes()).await.is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(PACED_GAP).await;
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

/// Reads `body`'s events up to `[DONE]`, which it leaves out.
pub async fn events_to_done(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let event = next_event(body, buffer).await;
        if event == "[DONE]" {
            return events;
        }
        events.push(event);
    }
}

/// The text of chat chunks (none an error).
pub fn text_of(events: &[String]) -> String {
    events
        .iter()
        .map(|event| {
            let chunk: Value = serde_json::from_str(event).unwrap_or_else(|_| panic!("JSON: {event}"));
            assert!(chunk.get("error").is_none(), "an error event: {chunk}");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The text the paced upstream streams, whole.
pub fn paced_text() -> String {
    (0..PACED_CHUNKS).map(|index| format!("w{index} ")).collect()
}

impl Paced {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}
