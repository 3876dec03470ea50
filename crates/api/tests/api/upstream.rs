//! A deliberately slow upstream on loopback, speaking just enough HTTP/1.1 to
//! stand in for Portkey: it streams SSE chunks with gaps, or holds a request
//! without answering, and notes when the gateway closes the connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// `chunks` SSE chunks, `gap` apart, then `[DONE]`.
    Stream { chunks: usize, gap: Duration },
    /// Reads the request and never answers.
    Hang,
}

pub struct SlowUpstream {
    pub base_url: String,
    closed: Arc<Mutex<Vec<Instant>>>,
}

impl SlowUpstream {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let closed = Arc::new(Mutex::new(Vec::new()));
        let noted = closed.clone();
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let noted = noted.clone();
                tokio::spawn(async move {
                    serve(connection, behaviour).await;
                    noted.lock().unwrap().push(Instant::now());
                });
            }
        });
        Self { base_url, closed }
    }

    /// When the gateway closed a connection, in order.
    pub fn closed_at(&self) -> Vec<Instant> {
        self.closed.lock().unwrap().clone()
    }
}

/// Reads one request (headers and a `content-length` body).
async fn read_request(connection: &mut TcpStream) -> Option<()> {
    let mut data = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = connection.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
        if let Some(end) = data.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let read = connection.read(&mut buffer).await.ok()?;
                if read == 0 {
                    return None;
                }
                data.extend_from_slice(&buffer[..read]);
            }
            return Some(());
        }
    }
}

/// Serves until the request is answered or the gateway hangs up.
async fn serve(mut connection: TcpStream, behaviour: Behaviour) {
    if read_request(&mut connection).await.is_none() {
        return;
    }
    let mut probe = [0_u8; 1];
    match behaviour {
        Behaviour::Hang => {
            // Returns when the gateway closes the connection.
            let _ = connection.read(&mut probe).await;
        }
        Behaviour::Stream { chunks, gap } => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            if connection.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for index in 0..=chunks {
                let data = if index == chunks {
                    "data: [DONE]\n\n".to_owned()
                } else {
                    let finish = if index + 1 == chunks {
                        json!("stop")
                    } else {
                        json!(null)
                    };
                    let chunk = json!({"id": "slow", "object": "chat.completion.chunk", "created": 1, "model": "slow",
                        "choices": [{"index": 0, "delta": {"content": format!("c{index} ")}, "finish_reason": finish}]});
                    format!("data: {chunk}\n\n")
                };
                let frame = format!("{:x}\r\n{data}\r\n", data.len());
                if connection.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
                if index < chunks {
                    tokio::select! {
                        () = tokio::time::sleep(gap) => {}
                        read = connection.read(&mut probe) => if matches!(read, Ok(0) | Err(_)) { return },
                    }
                }
            }
            let _ = connection.write_all(b"0\r\n\r\n").await;
            // Keep the connection until the gateway lets go of it.
            let _ = connection.read(&mut probe).await;
        }
    }
}
