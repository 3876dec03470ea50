//! Errors in the shape of the API that was called: on Anthropic's paths
//! (`/v1/messages`, `/v1/messages/count_tokens`), every refusal — a missing
//! key, an overloaded gateway, a bad body, an upstream's failure — is
//! answered as Anthropic answers it, whichever layer made it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

use crate::error::{AnthropicError, ApiError};

/// Whether `path` is one of Anthropic's API paths.
pub fn is_anthropic(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// Rewrites the gateway's errors on Anthropic's paths into Anthropic's
/// shape and statuses; every other response passes as it is.
pub async fn dialect(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if !is_anthropic(request.path()) {
        return next.call(request).await.map(ServiceResponse::map_into_left_body);
    }
    let response = next.call(request).await?;
    let Some(error) = response
        .response()
        .error()
        .and_then(|error| error.as_error::<ApiError>())
        .cloned()
    else {
        return Ok(response.map_into_left_body());
    };
    let (request, old) = response.into_parts();
    let mut new = HttpResponse::from_error(AnthropicError(error));
    // Headers the layers below added (rate limits, request id) stay, each
    // value of a repeated one.
    let own: Vec<header::HeaderName> = new.headers().keys().cloned().collect();
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !own.contains(name) {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, new).map_into_right_body())
}
