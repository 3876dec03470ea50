//! The gateway's answers to requests the HTTP layer refuses before they
//! reach a route.
//!
//! actix-http's HTTP/1 dispatcher answers some requests itself: 400 when it
//! cannot parse one (a garbage request line, `Content-Length` beside
//! `Transfer-Encoding`, two different `Content-Length`s), 431 when its head
//! passes 128 KiB or 96 headers, 408 when no whole head arrives within the
//! request head timeout, 500 on an inconsistency of its own. Those answers
//! have empty bodies, no request id, and no hook to change them, and actix
//! logs them as errors. So the public listener is served here, from
//! actix-server and actix-http directly, with each connection's socket
//! wrapped in a [`RefusalStream`]: it recognises those answers on their way
//! out and writes the gateway's instead, an OpenAI-shaped error with an
//! `x-request-id` and `connection: close`, logged as an access line and
//! counted in `gatewayz_http_refusals_total`.
//!
//! Recognising them costs one comparison of a write's last 9 bytes. actix's
//! refusals have a fixed shape (status line, `content-length: 0`, maybe
//! `connection`, `date`) that no answer of the app has, since the
//! [`track`](crate::middleware::track) middleware puts an `x-request-id` on
//! each; and a refusal is always the last thing written on its connection,
//! so it ends the write that carries it. (A body whose last bytes were
//! exactly such a head, current date included, would be mistaken for one;
//! the gateway's bodies, JSON or SSE events, never end that way.)

use std::any::Any;
use std::future::ready;
use std::io;
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, KeepAlive, Request, Response};
use actix_server::Server;
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::web;
use gatewayz_adapters::metrics::Metrics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// actix-http's limits on a request head (`MAX_BUFFER_SIZE` and
/// `MAX_HEADERS` in its `h1/decoder.rs`), for the 431 message.
const MAX_HEAD_BYTES: usize = 128 * 1024;
const MAX_HEADERS: usize = 96;

/// How long a refused connection is read and discarded before it is closed,
/// and how much of it at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Serves `app` on `listener` as `actix_web::HttpServer` would with
/// `shutdown_timeout` (seconds in-flight requests get at a graceful stop),
/// `client_request_timeout` set to `request_head_timeout`, `disable_signals`
/// and otherwise its defaults (worker count, keep-alive), with each
/// connection wrapped in a [`RefusalStream`] and `on_connect` called with
/// its `actix_web::rt::net::TcpStream`.
///
/// # Errors
/// When the listener cannot be set up for the server.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    shutdown_timeout: u64,
    request_head_timeout: Duration,
    metrics: web::Data<Metrics>,
    on_connect: fn(&dyn Any, &mut Extensions),
    app: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let address = listener.local_addr()?;
    let builder = Server::build();
    let stopping = builder.graceful_shutdown_signal();
    let builder = builder
        .shutdown_timeout(shutdown_timeout)
        .disable_signals()
        .listen("gatewayz-public", listener, move || {
            let stopping = stopping.clone();
            let refusals = Rc::new(Refusals {
                metrics: metrics.clone(),
                request_head_timeout,
            });
            // Nothing in the app reads the host or address of `AppConfig`.
            let app = map_config(
                app()
                    .into_factory()
                    .map_err(|error| error.into().error_response()),
                |()| AppConfig::default(),
            );
            let http = HttpService::build()
                // Lets open keep-alive connections close after their current
                // answer once a graceful stop begins. A hidden setting of
                // actix-http, but the one `HttpServer` itself sets.
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(request_head_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(address)
                .on_connect_ext(move |stream: &RefusalStream, data: &mut Extensions| {
                    on_connect(&stream.stream, data);
                })
                .h1(app);
            fn_service(move |stream: TcpStream| {
                let peer = stream.peer_addr().ok();
                ready(Ok::<_, DispatchError>((
                    RefusalStream::new(stream, refusals.clone()),
                    peer,
                )))
            })
            .and_then(http)
        })?;
    Ok(builder.run())
}

/// What the connections of one worker thread share.
#[derive(Debug)]
struct Refusals {
    metrics: web::Data<Metrics>,
    request_head_timeout: Duration,
}

impl Refusals {
    /// The gateway's answer in place of actix's `found`, logged and counted.
    fn answer(&self, found: &Found<'_>) -> Vec<u8> {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let refusal = found.refusal;
        let error = refusal.error(self.request_head_timeout);
        let status = refusal.status();
        self.metrics.http_refused(refusal.code(), status);
        // The fields of the middleware's access line that apply; nothing of
        // what the client sent.
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "gatewayz::access",
                    $level,
                    request_id = %request_id,
                    route = "other",
                    status,
                    error_source = "gateway",
                    error_kind = refusal.code(),
                    error = %error,
                    "access"
                )
            };
        }
        if status >= 500 {
            access!(tracing::Level::ERROR);
        } else {
            access!(tracing::Level::INFO);
        }

        let body = error.to_body();
        let mut answer = Vec::with_capacity(256 + body.len());
        answer.extend_from_slice(found.status_line);
        answer.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        answer.extend_from_slice(body.len().to_string().as_bytes());
        answer.extend_from_slice(b"\r\nconnection: close\r\nx-request-id: ");
        answer.extend_from_slice(request_id.as_bytes());
        answer.extend_from_slice(b"\r\ndate: ");
        answer.extend_from_slice(found.date);
        answer.extend_from_slice(b"\r\n\r\n");
        answer.extend_from_slice(&body);
        answer
    }
}

/// Why actix refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Malformed,
    HeadTooLarge,
    HeadTimeout,
    Internal,
}

/// Each refusal and the end of the status line actix writes for it.
const STATUS_LINES: [(Refusal, &[u8]); 4] = [
    (Refusal::Malformed, b" 400 Bad Request"),
    (Refusal::HeadTimeout, b" 408 Request Timeout"),
    (Refusal::HeadTooLarge, b" 431 Request Header Fields Too Large"),
    (Refusal::Internal, b" 500 Internal Server Error"),
];

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::HeadTimeout => 408,
            Self::HeadTooLarge => 431,
            Self::Internal => 500,
        }
    }

    /// The error's `code`, also the access line's `error_kind` and the
    /// metric's `reason`.
    fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_request",
            Self::HeadTimeout => "request_timeout",
            Self::HeadTooLarge => "request_headers_too_large",
            Self::Internal => "internal_error",
        }
    }

    fn error(self, request_head_timeout: Duration) -> ApiError {
        let error = match self {
            Self::Malformed => ApiError::invalid_request(
                "The request is not valid HTTP/1.1: its request line, a header, or its framing \
                 (Content-Length, Transfer-Encoding) could not be parsed",
            ),
            Self::HeadTimeout => ApiError::invalid_request(format!(
                "The request head did not arrive within {} ms",
                request_head_timeout.as_millis()
            )),
            Self::HeadTooLarge => ApiError::invalid_request(format!(
                "The request head is too large: at most {MAX_HEADERS} headers and {} KiB are accepted",
                MAX_HEAD_BYTES / 1024
            )),
            Self::Internal => ApiError::internal("The gateway could not read the request"),
        };
        error.with_code(self.code())
    }
}

/// An answer of actix's own at the end of a write.
#[derive(Debug, PartialEq, Eq)]
struct Found<'a> {
    /// Where it starts in the write.
    start: usize,
    refusal: Refusal,
    /// `HTTP/1.1 400 Bad Request`, without its line end.
    status_line: &'a [u8],
    /// The `date` header's value.
    date: &'a [u8],
}

/// The end of a head whose last header is actix's `date`.
const HEAD_END: &[u8] = b" GMT\r\n\r\n";
/// An IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;

/// actix's own refusal at the end of `written`, if it ends with one: the
/// head `<status line>\r\ncontent-length: 0\r\n[connection: ...\r\n]date:
/// <date>\r\n\r\n` exactly, as its encoder writes it for an empty answer
/// with no header of its own.
fn find(written: &[u8]) -> Option<Found<'_>> {
    if !written.ends_with(HEAD_END) {
        return None;
    }
    let rest = written.strip_suffix(b"\r\n\r\n")?;
    let (rest, date) = rest.split_at(rest.len().checked_sub(DATE_LEN)?);
    let rest = rest.strip_suffix(b"date: ")?;
    let rest = rest
        .strip_suffix(b"connection: close\r\n")
        .or_else(|| rest.strip_suffix(b"connection: keep-alive\r\n"))
        .unwrap_or(rest);
    let status_end = rest.strip_suffix(b"\r\ncontent-length: 0\r\n")?.len();
    let rest = &written[..status_end];
    STATUS_LINES.iter().find_map(|&(refusal, line)| {
        let version = rest.strip_suffix(line)?;
        let start = version
            .strip_suffix(b"HTTP/1.1")
            .or_else(|| version.strip_suffix(b"HTTP/1.0"))?
            .len();
        Some(Found {
            start,
            refusal,
            status_line: &written[start..status_end],
            date,
        })
    })
}

/// A public connection's socket, through which actix's own refusals are
/// replaced by the gateway's answers (see the module docs).
#[derive(Debug)]
pub struct RefusalStream {
    stream: TcpStream,
    refusals: Rc<Refusals>,
    /// The gateway's answer, once actix refused, and how much of it is out.
    answer: Option<(Vec<u8>, usize)>,
}

impl RefusalStream {
    fn new(stream: TcpStream, refusals: Rc<Refusals>) -> Self {
        Self {
            stream,
            refusals,
            answer: None,
        }
    }

    /// Writes what is left of the gateway's answer, if there is one.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self { stream, answer, .. } = self;
        let Some((bytes, sent)) = answer else {
            return Poll::Ready(Ok(()));
        };
        while let Some(unsent) = bytes.get(*sent..).filter(|unsent| !unsent.is_empty()) {
            match ready!(Pin::new(&mut *stream).poll_write(cx, unsent))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                written => *sent += written,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for RefusalStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RefusalStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            ready!(this.poll_answer(cx))?;
        } else if let Some(found) = find(buf) {
            if found.start > 0 {
                // The end of an answer to a pipelined request goes out first.
                return Pin::new(&mut this.stream).poll_write(cx, &buf[..found.start]);
            }
            this.answer = Some((this.refusals.answer(&found), 0));
            // actix's bytes are taken whole; what is left of ours is written
            // on the next write, flush or shutdown.
            if let Poll::Ready(Err(error)) = this.poll_answer(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl Drop for RefusalStream {
    fn drop(&mut self) {
        if self.answer.is_some() {
            linger(&self.stream);
        }
    }
}

/// Closes a refused connection without losing its answer: closing a socket
/// with unread bytes (the rest of an oversized head) resets it, and a reset
/// can destroy the answer before the client reads it. So the socket's
/// sending side is shut, and what the client still sends is read and
/// dropped, for [`LINGER`] and [`LINGER_BYTES`] at most, before it closes.
fn linger(stream: &TcpStream) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Ok(socket) = stream.as_fd().try_clone_to_owned() else {
        return;
    };
    let socket = std::net::TcpStream::from(socket);
    let _ = socket.shutdown(Shutdown::Write);
    runtime.spawn(async move {
        let Ok(mut socket) = TcpStream::from_std(socket) else {
            return;
        };
        let mut buffer = [0_u8; 8 * 1024];
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => drained += read,
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn head(status_line: &str, connection: &str) -> Vec<u8> {
        let date = std::str::from_utf8(DATE).unwrap();
        format!("{status_line}\r\ncontent-length: 0\r\n{connection}date: {date}\r\n\r\n").into_bytes()
    }

    #[test]
    fn each_refusal_of_actix_is_found_whole_with_its_status_line_and_date() {
        for (line, connection, refusal) in [
            (
                "HTTP/1.1 400 Bad Request",
                "connection: close\r\n",
                Refusal::Malformed,
            ),
            (
                "HTTP/1.1 408 Request Timeout",
                "connection: close\r\n",
                Refusal::HeadTimeout,
            ),
            (
                "HTTP/1.0 431 Request Header Fields Too Large",
                "",
                Refusal::HeadTooLarge,
            ),
            (
                "HTTP/1.0 500 Internal Server Error",
                "connection: keep-alive\r\n",
                Refusal::Internal,
            ),
        ] {
            let written = head(line, connection);

            let found = find(&written);

            assert_eq!(
                found,
                Some(Found {
                    start: 0,
                    refusal,
                    status_line: line.as_bytes(),
                    date: DATE,
                })
            );
        }
    }

    #[test]
    fn a_refusal_after_a_pipelined_answer_is_found_where_it_starts() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nok";
        let mut written = answer.to_vec();
        written.extend(head("HTTP/1.1 400 Bad Request", "connection: close\r\n"));

        let found = find(&written).unwrap();

        assert_eq!((found.start, found.refusal), (answer.len(), Refusal::Malformed));
    }

    #[test]
    fn answers_of_the_app_and_other_bytes_are_not_refusals() {
        let date = std::str::from_utf8(DATE).unwrap();
        for written in [
            // The app's empty answers carry an x-request-id.
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: abc\r\ndate: {date}\r\n\r\n"
            ),
            // Statuses actix never refuses with.
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\ndate: {date}\r\n\r\n"),
            "{\"a\":1}".to_owned(),
            "0\r\n\r\n".to_owned(),
            " GMT\r\n\r\n".to_owned(),
            String::new(),
        ] {
            assert_eq!(find(written.as_bytes()), None, "{written:?}");
        }
    }

    #[test]
    fn the_answer_in_place_of_a_refusal_is_an_openai_error_with_a_request_id_that_closes() {
        let refusals = Refusals {
            metrics: web::Data::new(Metrics::new().unwrap()),
            request_head_timeout: Duration::from_millis(1500),
        };
        let written = head("HTTP/1.1 408 Request Timeout", "connection: close\r\n");

        let answer = refusals.answer(&find(&written).unwrap());

        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 408 Request Timeout"));
        let headers: Vec<(&str, &str)> = lines.filter_map(|line| line.split_once(": ")).collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        };
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("connection"), Some("close"));
        assert_eq!(header("date"), std::str::from_utf8(DATE).ok());
        assert_eq!(header("content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(header("x-request-id").map(str::len), Some(32));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "The request head did not arrive within 1500 ms",
                "type": "invalid_request_error",
                "param": null,
                "code": "request_timeout",
                "source": "gateway",
            }})
        );
    }
}
