//! One keep-alive HTTP/1.1 connection per [`Conn`] (hyper's raw client
//! connection: no pool, no extra task hop), and the two kinds of call: a
//! whole answer, or a stream read event by event; or, for callers that judge
//! the answer themselves, the bare response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::sse::{Event, Parser};

/// Where requests go: the upstream directly, or the gateway.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub address: SocketAddr,
    pub path: &'static str,
    host: HeaderValue,
    authorization: HeaderValue,
    pub body: Bytes,
}

impl Target {
    /// A target that receives `body` on `path`, with `Authorization: Bearer key`
    /// (the upstream ignores it; sending it keeps both requests alike).
    pub fn new(
        name: &'static str,
        address: SocketAddr,
        path: &'static str,
        key: &str,
        body: Bytes,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            name,
            address,
            path,
            host: HeaderValue::from_str(&address.to_string())?,
            authorization: HeaderValue::from_str(&format!("Bearer {key}"))?,
            body,
        }))
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::builder()
            .method(Method::POST)
            .uri(self.path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(self.body.clone()))?)
    }
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The task that drives the socket: aborting it closes the socket.
    driver: AbortHandle,
}

/// Opens a connection to `address` (TCP_NODELAY, as a real client would).
pub async fn connect(address: SocketAddr) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        // The connection ends when the sender is dropped or the peer closes.
        let _ = connection.await;
    })
    .abort_handle();
    Ok(Conn { sender, driver })
}

/// Everything timed about one stream.
#[derive(Debug)]
pub struct StreamRecord {
    pub sent: Instant,
    /// When each content event arrived, in order.
    pub content: Vec<Instant>,
    pub usage: bool,
    pub done: bool,
    pub errors: usize,
}

impl StreamRecord {
    /// All `chunks` content events, the usage event and `[DONE]`, no error.
    pub fn complete(&self, chunks: usize) -> bool {
        self.content.len() == chunks && self.usage && self.done && self.errors == 0
    }

    pub fn ttft(&self) -> Option<Duration> {
        self.content.first().map(|first| *first - self.sent)
    }

    /// The gaps between consecutive content events.
    pub fn gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        self.content.windows(2).map(|pair| pair[1] - pair[0])
    }
}

impl Conn {
    /// Whether the peer has closed the connection (an idle keep-alive that
    /// timed out, say): such a connection is dropped, not used.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Closes the socket at once, whatever is being read: a client that
    /// leaves.
    pub fn abandon(self) {
        self.driver.abort();
    }

    /// Sends one request and returns the response, its body unread.
    pub async fn send(&mut self, target: &Target) -> anyhow::Result<Response<Incoming>> {
        let request = target.request()?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Sends one request and reads the whole answer, which must be a 200.
    pub async fn call(&mut self, target: &Target) -> anyhow::Result<()> {
        let response = self.send(target).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        if body.is_empty() {
            bail!("status 200 with an empty body");
        }
        Ok(())
    }

    /// Sends one streaming request and times each SSE event as its frame
    /// arrives. `sent` is the moment the request was meant to go.
    pub async fn stream(&mut self, target: &Target) -> anyhow::Result<StreamRecord> {
        let request = target.request()?;
        self.sender.ready().await?;
        let sent = Instant::now();
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let body = body.collect().await?.to_bytes();
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        let mut record = StreamRecord {
            sent,
            content: Vec::with_capacity(80),
            usage: false,
            done: false,
            errors: 0,
        };
        let mut parser = Parser::default();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let arrived = Instant::now();
            parser.feed(&data, |event| match event {
                Event::Content => record.content.push(arrived),
                Event::Usage => record.usage = true,
                Event::Done => record.done = true,
                Event::Error => record.errors += 1,
                Event::Other => {}
            });
        }
        Ok(record)
    }
}
