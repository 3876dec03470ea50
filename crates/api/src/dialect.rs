//! Errors in the shape of the API that was called: on Anthropic's paths
//! (`/v1/messages`, `/v1/messages/count_tokens`), every refusal — a missing
//! key, an overloaded gateway, a bad body, an upstream's failure — is
//! answered as Anthropic answers it, whichever layer made it. The request
//! tracker (`track`, in the middleware), which sees every response, calls
//! [`rewrite`]: no layer of its own on any path.

use actix_web::HttpResponse;
use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;

use crate::error::{AnthropicError, ApiError};

/// Whether `path` is one of Anthropic's API paths.
pub fn is_anthropic(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// `response` with the gateway's error, if it is one, in Anthropic's shape
/// and status; any other response as it is.
pub fn rewrite(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let Some(error) = response
        .response()
        .error()
        .and_then(|error| error.as_error::<ApiError>())
        .cloned()
    else {
        return response;
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
    ServiceResponse::new(request, new)
}
