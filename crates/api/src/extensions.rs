//! What the middleware and the handlers leave each other in a request's
//! extensions: the middleware the request's id, a handler the news that it
//! read the whole body.

use actix_web::{HttpMessage, HttpRequest};

/// Put in a request's extensions by the handler that read its whole body.
#[derive(Debug, Clone, Copy)]
pub struct BodyRead;

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
