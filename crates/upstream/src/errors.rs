//! Error answers in the two dialects the upstream speaks: OpenAI's
//! `{"error":{"message","type","param","code"}}` and Anthropic's
//! `{"type":"error","error":{"type","message"}}`; and Azure's 404.

use bytes::Bytes;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::fault;
use crate::reply::{Reply, json_response};

/// Whose error shape a path answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// An OpenAI `invalid_request_error` naming the parameter at fault (and a
/// code, as OpenAI gives one for some errors).
pub fn openai(status: StatusCode, message: &str, param: Option<&str>, code: Option<&str>) -> Response<Reply> {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    json_response(status, body.to_string())
}

/// An Anthropic error, typed by its status as Anthropic types them.
pub fn anthropic(status: StatusCode, message: &str) -> Response<Reply> {
    let body = json!({"type": "error", "error": {"type": anthropic_type(status), "message": message}});
    json_response(status, body.to_string())
}

/// A refusal in `dialect`, with no parameter named.
pub fn refused(dialect: Dialect, status: StatusCode, message: &str) -> Response<Reply> {
    match dialect {
        Dialect::OpenAi => openai(status, message, None, None),
        Dialect::Anthropic => anthropic(status, message),
    }
}

/// The answer to a request that asked for `status`; a 429 also carries
/// `retry-after`.
pub fn injected(dialect: Dialect, status: StatusCode) -> Response<Reply> {
    let body = match dialect {
        Dialect::OpenAi => fault::error_body(status),
        Dialect::Anthropic => {
            let message = format!("injected by gatewayz-upstream: {status}");
            json!({"type": "error", "error": {"type": anthropic_type(status), "message": message}})
                .to_string()
        }
    };
    let mut response = json_response(status, body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(fault::RETRY_AFTER_SECONDS));
    }
    response
}

/// Azure OpenAI's answer to a path it does not know, or to one without an
/// `api-version`.
pub fn azure_not_found() -> Response<Reply> {
    json_response(
        StatusCode::NOT_FOUND,
        Bytes::from_static(br#"{"error":{"code":"404","message":"Resource not found"}}"#),
    )
}

/// Anthropic's error `type` for `status` (see its errors page).
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::anthropic_type;
    use hyper::StatusCode;

    #[test]
    fn anthropic_errors_are_typed_by_status() {
        let kind = |status| anthropic_type(StatusCode::from_u16(status).unwrap_or_default());
        assert_eq!(kind(400), "invalid_request_error");
        assert_eq!(kind(429), "rate_limit_error");
        assert_eq!(kind(529), "overloaded_error");
        assert_eq!(kind(503), "api_error");
        assert_eq!(kind(404), "not_found_error");
    }
}
