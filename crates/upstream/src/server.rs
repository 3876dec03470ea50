//! The listener and the dispatch: chat completions on the hot path, then
//! the other APIs (embeddings, Anthropic messages, the Responses API) and
//! Azure's paths (see [`Target`]), each behind the optional key check.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::args::Config;
use crate::auth::{self, ApiKey};
use crate::errors;
use crate::fault::Fault;
use crate::flags::is_true;
use crate::ids::Ids;
use crate::reply::{Reply, SseBody};
use crate::response_store::ResponseStore;
use crate::responses::Responses;
use crate::responses_api::{self, Creation};
use crate::route::{Family, Route, Target};
use crate::{embeddings, messages, stored_responses};

/// The largest request body read; a larger one is answered 413 unread.
pub const MAX_BODY: usize = 8 << 20;

struct Shared {
    responses: Responses,
    delay: Duration,
    gap: Duration,
    faults: bool,
    require_key: Option<ApiKey>,
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
            .field("require_key", &self.require_key)
            .finish()
    }
}

impl Shared {
    /// The 401 of a request without the required key; `None` when no key
    /// is required (nothing is read then) or the request carries it.
    fn refuses_key(&self, headers: &HeaderMap, target: &Target<'_>) -> Option<Response<Reply>> {
        let key = self.require_key.as_ref()?;
        (!key.is_carried(headers, target.family)).then(|| auth::refused(target.dialect()))
    }

    /// The fault `body` asks for, when faults are on (see
    /// [`Fault::requested`]).
    fn fault(&self, body: &[u8]) -> Result<Option<Fault>, String> {
        if !self.faults {
            return Ok(None);
        }
        Fault::requested(body)
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
                require_key: config.require_key.clone(),
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
    let (parts, body) = request.into_parts();
    if matches!(parts.uri.path(), "/v1/chat/completions" | "/chat/completions") {
        if let Some(refusal) = shared.refuses_key(&parts.headers, &Target::CHAT) {
            return Ok(refusal);
        }
        return Ok(chat(&Target::CHAT, &parts, body, &shared).await);
    }
    Ok(elsewhere(&parts, body, &shared).await)
}

/// The answer a requested fault puts in place of the real one, before any
/// byte of it (a stream cut, which comes later, is not one).
fn faulted(fault: Option<Fault>, target: &Target<'_>, headers: &HeaderMap) -> Option<Response<Reply>> {
    match fault? {
        Fault::Status(status) => Some(errors::injected(target.dialect(), status)),
        Fault::EchoKey => Some(auth::echo_key(target.dialect(), headers, target.family)),
        Fault::Cut => None,
    }
}

/// Chat completions, the hot path: every answer is precomputed, except an
/// Azure deployment's, which names the deployment as its model.
async fn chat(target: &Target<'_>, parts: &Parts, body: Incoming, shared: &Shared) -> Response<Reply> {
    if parts.method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(status) => return error(status, unread(status)),
    };
    let Ok(fault) = shared.fault(&body) else {
        return error(StatusCode::BAD_REQUEST, "unknown upstream_fault");
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if let Some(response) = faulted(fault, target, &parts.headers) {
        return response;
    }
    let stream = is_true(&body, b"\"stream\"");
    if fault == Some(Fault::Cut) && !stream {
        return error(StatusCode::BAD_REQUEST, "only a stream can be cut");
    }
    let deployment_responses;
    let responses = match &target.deployment {
        Some(deployment) => {
            deployment_responses = shared.responses.for_model(deployment);
            &deployment_responses
        }
        None => &shared.responses,
    };
    if !stream {
        let mut response = Response::new(Reply::full(responses.completion()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let events = responses.stream(is_true(&body, b"\"include_usage\""));
    let chunks = responses.content_chunks();
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

/// Every path but OpenAI's chat completions: its other APIs (with or
/// without `/v1`), Anthropic's and Azure's.
async fn elsewhere(parts: &Parts, body: Incoming, shared: &Shared) -> Response<Reply> {
    let path = parts.uri.path();
    let Some(target) = Target::of(path, parts.uri.query()) else {
        return match Family::of(path) {
            Family::OpenAi => error(StatusCode::NOT_FOUND, "unknown path"),
            Family::Azure => errors::azure_not_found(),
        };
    };
    if let Some(refusal) = shared.refuses_key(&parts.headers, &target) {
        return refusal;
    }
    if target.route == Route::Chat {
        return chat(&target, parts, body, shared).await;
    }
    let dialect = target.dialect();
    if let Some(instead) = target.route.refuses(&parts.method) {
        return errors::refused(dialect, StatusCode::METHOD_NOT_ALLOWED, instead);
    }
    let store = &shared.store;
    let about_stored = match target.route {
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
    create(&target, parts, &body, shared).await
}

/// A `POST` that creates: embeddings, a message, a token count, a response.
async fn create(target: &Target<'_>, parts: &Parts, body: &Bytes, shared: &Shared) -> Response<Reply> {
    let dialect = target.dialect();
    let Ok(fault) = shared.fault(body) else {
        return errors::refused(dialect, StatusCode::BAD_REQUEST, "unknown upstream_fault");
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if let Some(response) = faulted(fault, target, &parts.headers) {
        return response;
    }
    let cut = fault == Some(Fault::Cut);
    if cut && matches!(target.route, Route::Embeddings | Route::CountTokens) {
        return errors::refused(dialect, StatusCode::BAD_REQUEST, "only a stream can be cut");
    }
    match target.route {
        Route::Embeddings => embeddings::answer(body, target.deployment.as_deref()),
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
