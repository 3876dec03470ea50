//! The listener and the one route.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::args::Config;
use crate::fault::{self, Fault};
use crate::flags::is_true;
use crate::reply::{Reply, SseBody};
use crate::responses::Responses;

struct Shared {
    responses: Responses,
    delay: Duration,
    gap: Duration,
    faults: bool,
}

/// A bound upstream, ready to serve.
#[derive(Debug)]
pub struct Upstream {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("content_chunks", &self.responses.content_chunks())
            .field("delay", &self.delay)
            .field("gap", &self.gap)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Upstream {
    /// Binds `config.bind` and builds every answer.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let listener = TcpListener::bind(config.bind).await?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                responses: Responses::new(config.chunks, created),
                delay: config.delay,
                gap: config.gap,
                faults: config.faults,
            }),
        })
    }

    /// The bound address (with the real port when asked for port 0).
    ///
    /// # Errors
    /// When the socket cannot say.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until the task is dropped. A failed
    /// accept (out of file descriptors, say) is reported on stderr and
    /// retried after a pause.
    pub async fn run(self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("gatewayz-upstream: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Each SSE event is its own small write: Nagle would hold it back.
            if let Err(error) = stream.set_nodelay(true) {
                eprintln!("gatewayz-upstream: cannot set TCP_NODELAY: {error}");
            }
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, Arc::clone(&shared)));
                // A connection error (a client that leaves mid-stream) ends
                // that connection only.
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

async fn answer(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Reply>, Infallible> {
    if !matches!(request.uri().path(), "/v1/chat/completions" | "/chat/completions") {
        return Ok(error(StatusCode::NOT_FOUND, "unknown path"));
    }
    if request.method() != Method::POST {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "the request body broke off")),
    };
    let fault = if shared.faults {
        match Fault::requested(&body) {
            Ok(fault) => fault,
            Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "unknown upstream_fault")),
        }
    } else {
        None
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if let Some(Fault::Status(status)) = fault {
        return Ok(injected(status));
    }
    let stream = is_true(&body, b"\"stream\"");
    if fault == Some(Fault::Cut) && !stream {
        return Ok(error(StatusCode::BAD_REQUEST, "only a stream can be cut"));
    }
    if !stream {
        let mut response = Response::new(Reply::full(shared.responses.completion()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    let events = shared.responses.stream(is_true(&body, b"\"include_usage\""));
    let chunks = shared.responses.content_chunks();
    let mut body = SseBody::new(events, chunks, shared.gap);
    if fault == Some(Fault::Cut) {
        body = body.cut_at(Fault::cut_after(chunks));
    }
    let mut response = Response::new(Reply::Sse(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn error(status: StatusCode, message: &'static str) -> Response<Reply> {
    let body = format!(
        r#"{{"error":{{"message":"{message}","type":"invalid_request_error","param":null,"code":null}}}}"#
    );
    let mut response = Response::new(Reply::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The answer to a request that asked for `status`.
fn injected(status: StatusCode) -> Response<Reply> {
    let mut response = Response::new(Reply::full(fault::error_body(status)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(RETRY_AFTER, HeaderValue::from(fault::RETRY_AFTER_SECONDS));
    }
    response
}
