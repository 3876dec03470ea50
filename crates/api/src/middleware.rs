//! Per-request context: the request id, the tracing span, and the line logged
//! when the response starts.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, as stored in the request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of `request`; empty only if the middleware was not installed.
    pub fn of(request: &HttpRequest) -> String {
        request
            .extensions()
            .get::<Self>()
            .map(|id| id.0.clone())
            .unwrap_or_default()
    }
}

/// A client-sent id is kept when it is short, visible ASCII; anything else is
/// replaced, so ids are safe to log and to pass upstream.
fn incoming_request_id(request: &ServiceRequest) -> Option<String> {
    let value = request.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|byte| byte.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// Gives each request an id (the client's `x-request-id` or a new one), runs
/// it inside a span carrying that id, echoes the id in the response, and logs
/// the outcome.
pub async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let request_id =
        incoming_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.path(),
    );
    request.extensions_mut().insert(RequestId(request_id.clone()));

    let mut response = next.call(request).instrument(span.clone()).await?;

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| match response.response().error() {
        Some(error) if status >= 500 => tracing::error!(status, latency_us, error = %error, "request failed"),
        Some(error) => tracing::info!(status, latency_us, error = %error, "request refused"),
        None => tracing::info!(status, latency_us, "request served"),
    });
    Ok(response)
}
