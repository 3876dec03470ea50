//! Per-request bookkeeping: the request id and its span, response headers,
//! and, when the request ends, one access log line and the request metrics.
//!
//! A request ends when its response body has been sent in full, or when it is
//! dropped early because the client left (or stopped taking it, see
//! [`crate::send_deadline`]); the latter is logged as status 499.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use bytes::Bytes;
use gatewayz_adapters::metrics::{Metrics, RequestOutcome};
use gatewayz_adapters::traces::SPAN_TARGET;
use gatewayz_domain::limits::standing_headers;
use gatewayz_domain::{CallFacts, CallRecord, KeyPolicy, ProviderKind};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use gatewayz_domain::text::quote;

use crate::access_log::{self, Access, RequestSpan};
use crate::auth::KeyId;
use crate::dialect;
use crate::error::CLIENT_CLOSED;
use crate::extensions::{BodyRead, RequestId};
use crate::overload::{Limit, Overload};
use crate::probe::ClientProbe;
use crate::routes::chat::ChatState;
use crate::send_deadline::{SendTimeout, SendWatch};
use crate::trace_context;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-gatewayz-provider");
/// `degraded` when a key's limits were counted in this process only.
const LIMITS_HEADER: HeaderName = HeaderName::from_static("x-gatewayz-limits");
/// The catalog target that served the request.
const TARGET_HEADER: HeaderName = HeaderName::from_static("x-gatewayz-target");

/// Whether the request comes with a body (chunked, or a non-zero length).
fn sends_body(request: &ServiceRequest) -> bool {
    let headers = request.headers();
    headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// The answer to a request whose body was not read (refused first, or cut
/// by its deadline) closes the connection, and the rest of the body gets
/// the body deadline to arrive: actix-http reads it to its end before it
/// closes (a chunked one with no deadline of its own), so a client that
/// stalls its body would otherwise hold the connection for good.
fn leave_body_unread<B>(response: &mut ServiceResponse<B>) {
    response
        .response_mut()
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    let request = response.request();
    if let (Some(probe), Some(state)) = (
        request.conn_data::<ClientProbe>(),
        request.app_data::<web::Data<ChatState>>(),
    ) {
        probe.close_after(state.body_timeout);
    }
}

/// A client-sent id is kept when it is short, visible ASCII; anything else is
/// replaced, so ids are safe to log and to pass upstream.
fn incoming_request_id(request: &ServiceRequest) -> Option<String> {
    let value = request.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|byte| byte.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// The route label of a path: the gateway's own routes, else `other`, so a
/// client cannot grow the metrics with made-up paths.
fn route_of(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/messages" => "/v1/messages",
        "/v1/messages/count_tokens" => "/v1/messages/count_tokens",
        "/v1/responses" => "/v1/responses",
        "/v1/models" => "/v1/models",
        "/healthz" => "/healthz",
        _ if path.starts_with("/v1/models/") => "/v1/models/{id}",
        _ if path.starts_with("/v1/responses/") => match path.rsplit_once('/') {
            Some((_, "cancel")) => "/v1/responses/{id}/cancel",
            Some((_, "input_items")) => "/v1/responses/{id}/input_items",
            _ => "/v1/responses/{id}",
        },
        _ => "other",
    }
}

/// Gives each request an id (the client's `x-request-id` or a new one), runs
/// it inside a span carrying that id, adds the gateway's response headers,
/// and tracks the request until its body is sent.
pub async fn track(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<TrackedBody>, Error> {
    let request_id =
        incoming_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %quote(request.method().as_str()),
        path = %quote(request.path()),
    );
    let route = route_of(request.path());
    let otel = server_span(&request, route, &request_id);
    let record = CallRecord::default();
    request.extensions_mut().insert(RequestId(request_id.clone()));
    request.extensions_mut().insert(record.clone());
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let overload = request.app_data::<web::Data<Overload>>().cloned();
    if let Some(metrics) = &metrics {
        metrics.request_started();
    }
    let sends_body = sends_body(&request);
    // No clone of the request here: routing needs it unshared.
    let mut tracker = Tracker {
        started: Instant::now(),
        method: request.method().clone(),
        uri: request.uri().clone(),
        key_id: None,
        key: None,
        route,
        record,
        metrics,
        overload,
        span: span.clone(),
        otel: otel.clone(),
        request_id,
        status: CLIENT_CLOSED,
        error: None,
        done: false,
    };

    // The exported span is entered innermost: the attempts' spans and the
    // routing's events find it current.
    let mut response = match next.call(request).instrument(otel).instrument(span).await {
        Ok(response) => response,
        Err(error) => {
            // actix turns handler errors into responses; an error here comes
            // from below the app. Log it with its own status, not as a 499.
            tracker.status = error.as_response_error().status_code().as_u16();
            tracker.error = Some(error.to_string());
            tracker.finish(true);
            return Err(error);
        }
    };

    if sends_body && response.request().extensions().get::<BodyRead>().is_none() {
        leave_body_unread(&mut response);
    }
    // Boxed here rather than below: the same one allocation.
    let mut response = response.map_into_boxed_body();
    if dialect::is_anthropic(tracker.uri.path()) {
        // Every error on Anthropic's paths, from any layer, in its shape.
        response = dialect::rewrite(response);
    }
    tracker.status = response.status().as_u16();
    tracker.key_id = response
        .request()
        .extensions()
        .get::<KeyId>()
        .map(|id| id.0.clone());
    tracker.key = response.request().extensions().get::<Arc<KeyPolicy>>().cloned();
    tracker.error = response.response().error().map(ToString::to_string);
    tracker.add_headers(response.headers_mut());
    let watch = SendWatch::new(
        response.request().conn_data::<ClientProbe>().cloned(),
        response.request().app_data::<SendTimeout>().copied(),
    );
    Ok(response.map_body(|_, body| {
        let mut body = TrackedBody {
            body,
            sent: 0,
            tracker: Some(tracker),
            watch,
        };
        // An empty body may never be polled: it is complete already.
        if matches!(body.size(), BodySize::None | BodySize::Sized(0)) {
            body.complete();
        }
        body
    }))
}

/// Everything needed to report on a request once it has ended.
struct Tracker {
    started: Instant,
    method: Method,
    uri: actix_web::http::Uri,
    key_id: Option<String>,
    /// The key's policy, for its labels.
    key: Option<Arc<KeyPolicy>>,
    route: &'static str,
    record: CallRecord,
    metrics: Option<web::Data<Metrics>>,
    overload: Option<web::Data<Overload>>,
    span: tracing::Span,
    /// The request's exported server span (disabled unless traces are on),
    /// ended when the tracker is dropped: for a stream, when its body ends.
    otel: tracing::Span,
    request_id: String,
    status: u16,
    error: Option<String>,
    done: bool,
}

impl Tracker {
    fn add_headers(&self, headers: &mut actix_web::http::header::HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        self.record.read(|facts| {
            let provider = match (facts.provider, facts.portkey_provider, &facts.direct_upstream) {
                (Some(ProviderKind::Portkey), Some(upstream), _) => {
                    Some(HeaderValue::from_static(upstream.qualified()))
                }
                (Some(ProviderKind::Direct), _, Some(upstream)) => {
                    HeaderValue::from_str(&format!("{}/{upstream}", ProviderKind::Direct)).ok()
                }
                (kind, _, _) => kind.map(|kind| HeaderValue::from_static(kind.as_str())),
            };
            if let Some(provider) = provider {
                headers.insert(PROVIDER_HEADER, provider);
            }
            if let Some(target) = facts
                .target
                .as_deref()
                .filter(|_| facts.error.is_none())
                .and_then(|target| HeaderValue::from_str(target).ok())
            {
                headers.insert(TARGET_HEADER, target);
            }
            // The adapter's to name: a name or value no header can carry is
            // left out, never a panic.
            if let Some(standing) = &facts.limits {
                for (name, value) in standing_headers(standing) {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(HeaderName::from_static(name), value);
                    }
                }
                if standing.degraded {
                    headers.insert(LIMITS_HEADER, HeaderValue::from_static("degraded"));
                }
            }
            for (name, value) in &facts.passed_on {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.insert(name, value);
                }
            }
        });
    }

    /// Logs the access line and records the metrics, once.
    fn finish(&mut self, completed: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = self.started.elapsed();
        // Read in place: the record is this request's alone by now.
        self.record.read(|facts| self.report(facts, completed, duration));
    }

    fn report(&self, facts: &CallFacts, completed: bool, duration: std::time::Duration) {
        let status = if completed && !facts.client_gone {
            self.status
        } else {
            CLIENT_CLOSED
        };
        // The memory budget refused it, before its answer or mid-stream.
        if let (Some(overload), Some((_, "overloaded"))) = (&self.overload, facts.error) {
            overload.refused(Limit::Memory);
        }
        if let Some(metrics) = &self.metrics {
            metrics.request_finished(&RequestOutcome {
                key: self.key_id.as_deref(),
                route: self.route,
                status,
                duration,
                facts,
            });
        }
        if !self.otel.is_disabled() {
            self.note_on_span(facts, status);
        }
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        let method = quote(self.method.as_str());
        let _entered = self.span.enter();
        access_log::log(
            &Access {
                message: "access",
                request_id: &self.request_id,
                key_id: self.key_id.as_deref(),
                labels: self
                    .key
                    .as_ref()
                    .map(|key| &key.labels)
                    .filter(|labels| !labels.is_empty()),
                method: &method,
                route: self.route,
                endpoint: facts.endpoint,
                provider: facts.provider.map(ProviderKind::as_str),
                portkey_provider: facts.portkey_provider.map(|provider| provider.name()),
                upstream: facts.direct_upstream.as_deref(),
                model: facts.model.as_deref(),
                target: facts.target.as_deref(),
                attempts: facts.attempts,
                stream: facts.stream,
                status,
                duration_ms: millis(duration),
                upstream_ms: facts.upstream.map(millis),
                ttft_ms: facts.first_token.map(millis),
                prompt_tokens: facts.prompt_tokens,
                completion_tokens: facts.completion_tokens,
                cost_usd: facts.cost_usd,
                charged_tokens: facts.charged.map(|charged| charged.tokens),
                charged_usd: facts
                    .charged
                    .map(|charged| charged.usd_micros as f64 / 1_000_000.0),
                usage_estimated: facts.usage_estimated,
                unremembered: facts.unremembered,
                cache: facts.cache.map(|status| status.as_str()),
                cache_age_s: facts.cache_age,
                cache_coalesced: facts.cache_coalesced,
                cache_store_error: facts.cache_store_error,
                error_source: facts.error.map(|(source, _)| source.as_str()),
                error_kind: facts.error.map(|(_, kind)| kind),
                error: self.error.as_deref(),
            },
            &RequestSpan {
                method: &method,
                path: &quote(self.uri.path()),
                request_id: &self.request_id,
                name: "request",
            },
        );
    }
}

impl Tracker {
    /// What the request came to, on its exported span.
    fn note_on_span(&self, facts: &CallFacts, status: u16) {
        let span = &self.otel;
        // An exported span ends when it was last exited: for a stream, now,
        // as its body ends, not when its handler returned.
        let _entered = span.enter();
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_attribute("error.type", status.to_string());
            span.set_status(opentelemetry::trace::Status::error(
                facts.error.map_or("server error", |(_, kind)| kind),
            ));
        }
        if let Some(key) = &self.key_id {
            span.set_attribute("gatewayz.key_id", key.clone());
        }
        if !facts.endpoint.is_empty() {
            span.set_attribute("gatewayz.endpoint", facts.endpoint);
        }
        if let Some(model) = facts.model.as_deref().filter(|_| facts.catalog_model) {
            span.set_attribute("gatewayz.catalog_model", model.to_owned());
        }
        if let Some(target) = facts.target.as_deref() {
            span.set_attribute("gatewayz.target", target.to_owned());
        }
        span.set_attribute("gatewayz.attempts", i64::from(facts.attempts));
        if let Some(cost) = facts.cost_usd {
            span.set_attribute("gatewayz.cost_usd", cost);
        }
        if let Some(cache) = facts.cache {
            span.set_attribute("gatewayz.cache", cache.as_str());
        }
        if let Some(first_token) = facts.first_token {
            span.set_attribute(
                "gatewayz.time_to_first_token_ms",
                first_token.as_secs_f64() * 1000.0,
            );
        }
        if let Some((source, kind)) = facts.error {
            span.set_attribute("gatewayz.error.source", source.as_str());
            span.set_attribute("gatewayz.error.kind", kind);
        }
    }
}

/// The request's exported server span (HTTP conventions), continuing the
/// client's trace when it sent a valid `traceparent`; a disabled span,
/// at no cost, when traces are off.
fn server_span(request: &ServiceRequest, route: &'static str, request_id: &str) -> tracing::Span {
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" | "CONNECT" | "TRACE") => {
            known
        }
        _ => "_OTHER",
    };
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.kind = "server",
        otel.name = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
    );
    if span.is_disabled() {
        return span;
    }
    let name = if route == "other" {
        method.to_owned()
    } else {
        format!("{method} {route}")
    };
    span.record("otel.name", name.as_str());
    span.set_attribute("gatewayz.request_id", request_id.to_owned());
    if let Some(parent) = trace_context::remote_parent(request.headers()) {
        let _ = span.set_parent(parent);
    }
    span
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped without the body sent: the client left.
        self.finish(false);
    }
}

/// A response body that reports on its request when it has been sent, or
/// dropped unsent, under the send deadline.
pub struct TrackedBody {
    body: BoxBody,
    sent: u64,
    tracker: Option<Tracker>,
    watch: SendWatch,
}

impl std::fmt::Debug for TrackedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedBody")
            .field("sent", &self.sent)
            .field("tracking", &self.tracker.is_some())
            .finish()
    }
}

impl TrackedBody {
    fn complete(&mut self) {
        self.watch.stop();
        if let Some(mut tracker) = self.tracker.take() {
            tracker.finish(true);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // Reported as the client leaving (the tracker's own drop), and why.
        if let Some(tracker) = self.tracker.as_mut().filter(|_| self.watch.closed()) {
            tracker.record.update(|facts| facts.client_gone = true);
            tracker.error = Some(SEND_TIMEOUT_ERROR.to_owned());
        }
    }
}

/// The access line's `error` of an answer cut by the send deadline.
const SEND_TIMEOUT_ERROR: &str =
    "the client took none of its answer for GATEWAYZ_SEND_TIMEOUT_MS: connection closed";

impl MessageBody for TrackedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_next(cx);
        match &polled {
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Ok(bytes))) => {
                this.sent += bytes.len() as u64;
                // A sized body may not be polled again once all of it is out.
                if matches!(this.body.size(), BodySize::Sized(size) if this.sent >= size) {
                    this.complete();
                } else {
                    this.watch.polled(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.watch.stop(),
            Poll::Pending => this.watch.polled(false),
        }
        polled
    }
}
