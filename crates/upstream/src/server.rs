//! The listener and the routes: chat completions on the hot path, then the
//! other APIs (embeddings, Anthropic messages, the Responses API).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::args::Config;
use crate::errors::{self, Dialect};
use crate::fault::Fault;
use crate::flags::is_true;
use crate::ids::Ids;
use crate::reply::{Reply, SseBody};
use crate::response_store::ResponseStore;
use crate::responses::Responses;
use crate::responses_api::{self, Creation};
use crate::{embeddings, messages, stored_responses};

/// The largest request body read; a larger one is answered 413 unread.
pub const MAX_BODY: usize = 8 << 20;

struct Shared {
    responses: Responses,
    delay: Duration,
    gap: Duration,
    faults: bool,
    ids: Ids,
    store: ResponseStore,
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
                ids: Ids::new(),
                store: ResponseStore::default(),
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
    if matches!(request.uri().path(), "/v1/chat/completions" | "/chat/completions") {
        return Ok(chat(request, &shared).await);
    }
    Ok(elsewhere(request, &shared).await)
}

/// The hot path: every answer is precomputed.
async fn chat(request: Request<Incoming>, shared: &Shared) -> Response<Reply> {
    if request.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(status) => return error(status, unread(status)),
    };
    let fault = if shared.faults {
        match Fault::requested(&body) {
            Ok(fault) => fault,
            Err(_) => return error(StatusCode::BAD_REQUEST, "unknown upstream_fault"),
        }
    } else {
        None
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if let Some(Fault::Status(status)) = fault {
        return errors::injected(Dialect::OpenAi, status);
    }
    let stream = is_true(&body, b"\"stream\"");
    if fault == Some(Fault::Cut) && !stream {
        return error(StatusCode::BAD_REQUEST, "only a stream can be cut");
    }
    if !stream {
        let mut response = Response::new(Reply::full(shared.responses.completion()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
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
    response
}

/// The paths besides chat completions (with or without `/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Embeddings,
    Messages,
    CountTokens,
    CreateResponse,
    /// `GET` or `DELETE /responses/{id}`.
    StoredResponse(&'a str),
    CancelResponse(&'a str),
    InputItems(&'a str),
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Self> {
        let path = path
            .strip_prefix("/v1")
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path);
        Some(match path {
            "/embeddings" => Self::Embeddings,
            "/messages" => Self::Messages,
            "/messages/count_tokens" => Self::CountTokens,
            "/responses" => Self::CreateResponse,
            _ => {
                let rest = path.strip_prefix("/responses/")?;
                match rest.split_once('/') {
                    None if !rest.is_empty() => Self::StoredResponse(rest),
                    Some((id, "cancel")) if !id.is_empty() => Self::CancelResponse(id),
                    Some((id, "input_items")) if !id.is_empty() => Self::InputItems(id),
                    _ => return None,
                }
            }
        })
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::CountTokens => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// `None` when `method` is allowed, else what to use instead.
    fn refuses(self, method: &Method) -> Option<&'static str> {
        match self {
            Self::StoredResponse(_) => {
                (method != Method::GET && method != Method::DELETE).then_some("use GET or DELETE")
            }
            Self::InputItems(_) => (method != Method::GET).then_some("use GET"),
            _ => (method != Method::POST).then_some("use POST"),
        }
    }
}

async fn elsewhere(request: Request<Incoming>, shared: &Shared) -> Response<Reply> {
    let (parts, body) = request.into_parts();
    let Some(route) = Route::of(parts.uri.path()) else {
        return error(StatusCode::NOT_FOUND, "unknown path");
    };
    let dialect = route.dialect();
    if let Some(instead) = route.refuses(&parts.method) {
        return errors::refused(dialect, StatusCode::METHOD_NOT_ALLOWED, instead);
    }
    let store = &shared.store;
    let about_stored = match route {
        Route::StoredResponse(id) if parts.method == Method::DELETE => {
            Some(stored_responses::delete(store, id))
        }
        Route::StoredResponse(id) => Some(stored_responses::retrieve(store, id)),
        Route::CancelResponse(id) => Some(stored_responses::cancel(store, id)),
        Route::InputItems(id) => Some(stored_responses::input_items(store, id, parts.uri.query())),
        _ => None,
    };
    if let Some(response) = about_stored {
        if !shared.delay.is_zero() {
            tokio::time::sleep(shared.delay).await;
        }
        return response;
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(status) => return errors::refused(dialect, status, unread(status)),
    };
    create(route, &parts, &body, shared).await
}

/// A `POST` that creates: embeddings, a message, a token count, a response.
async fn create(route: Route<'_>, parts: &Parts, body: &Bytes, shared: &Shared) -> Response<Reply> {
    let dialect = route.dialect();
    let fault = if shared.faults {
        match Fault::requested(body) {
            Ok(fault) => fault,
            Err(_) => return errors::refused(dialect, StatusCode::BAD_REQUEST, "unknown upstream_fault"),
        }
    } else {
        None
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if let Some(Fault::Status(status)) = fault {
        return errors::injected(dialect, status);
    }
    let cut = fault == Some(Fault::Cut);
    if cut && matches!(route, Route::Embeddings | Route::CountTokens) {
        return errors::refused(dialect, StatusCode::BAD_REQUEST, "only a stream can be cut");
    }
    match route {
        Route::Embeddings => embeddings::answer(body),
        Route::CountTokens => messages::count_tokens(body),
        Route::Messages => messages::create(
            body,
            &parts.headers,
            &messages::Streaming {
                ids: &shared.ids,
                gap: shared.gap,
                cut,
            },
        ),
        _ => responses_api::create(
            body,
            &Creation {
                ids: &shared.ids,
                store: &shared.store,
                gap: shared.gap,
                cut,
            },
        ),
    }
}

/// The whole request body, unless it breaks off (400) or exceeds
/// [`MAX_BODY`] (413).
async fn read_body(body: Incoming) -> Result<Bytes, StatusCode> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

fn unread(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the request body is too large"
    } else {
        "the request body broke off"
    }
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

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes_with_or_without_v1_and_only_known_paths() {
        assert_eq!(Route::of("/v1/embeddings"), Some(Route::Embeddings));
        assert_eq!(Route::of("/messages/count_tokens"), Some(Route::CountTokens));
        assert_eq!(
            Route::of("/v1/responses/resp_1"),
            Some(Route::StoredResponse("resp_1"))
        );
        assert_eq!(
            Route::of("/responses/resp_1/cancel"),
            Some(Route::CancelResponse("resp_1"))
        );
        assert_eq!(
            Route::of("/v1/responses/resp_1/input_items"),
            Some(Route::InputItems("resp_1"))
        );
        for path in [
            "/v1",
            "/v1/",
            "/v1embeddings",
            "/v1/responses/",
            "/v1/responses//cancel",
            "/v1/responses/a/b",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
    }
}
