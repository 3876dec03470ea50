//! A raw HTTP/1.1 server for what wiremock cannot do: an answer that stops
//! half-way and holds the connection open, or breaks it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// What the server does once it has written its answer.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Keeps the connection open, silent, until the server is dropped.
    Hold,
    /// Closes the connection.
    Close,
}

/// A server that answers one request with bytes written as given. The
/// connection is held (if asked) until this is dropped.
#[derive(Debug)]
pub struct RawServer {
    address: SocketAddr,
    _release: mpsc::Sender<()>,
}

impl RawServer {
    pub fn start(answer: Vec<u8>, then: Then) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (release, held) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut connection, _)) = listener.accept() else {
                return;
            };
            read_request(&mut connection);
            let _ = connection.write_all(&answer);
            let _ = connection.flush();
            if let Then::Hold = then {
                // Returns when the test drops the server.
                let _ = held.recv();
            }
        });
        Self {
            address,
            _release: release,
        }
    }

    /// An upstream base URL on this server.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// Reads a request's head and its `content-length` body, within a deadline.
fn read_request(connection: &mut TcpStream) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let Ok(read) = connection.read(&mut buffer) else {
            return;
        };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            return;
        }
    }
}

/// A 200's head with `content_type`, its body chunked.
pub fn chunked_head(content_type: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n")
        .into_bytes()
}

/// `data` as one chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
