//! The one error type of the HTTP layer: every failure a client sees, in
//! OpenAI's error shape `{"error": {"message", "type", "param", "code"}}`,
//! plus `source` saying who refused (`gateway`, `portkey` or `provider`).

use std::borrow::Cow;
use std::fmt;

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use gatewayz_domain::limits::LimitKind;
use gatewayz_domain::{ChatError, ErrorSource, KeyError, UpstreamError, ValidationError};
use serde::Serialize;

/// The status of a request whose client left before its answer: logged and
/// counted, never sent (nobody is left to read it).
pub const CLIENT_CLOSED: u16 = 499;

/// An error answered to the client. Its message is safe to show: it never
/// holds a secret or an internal detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<Cow<'static, str>>,
    source: ErrorSource,
    /// Whole seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'a str>,
    source: &'static str,
}

/// The longest message and `param` an error carries: each client or upstream
/// value in them is cut already; this bounds the whole.
const MESSAGE_MAX: usize = 1024;
const PARAM_MAX: usize = 128;

/// `text`, cut to `max` characters.
fn bounded(text: String, max: usize) -> String {
    match gatewayz_domain::text::clip(&text, max) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: bounded(message.into(), MESSAGE_MAX),
            param: None,
            code: None,
            source: ErrorSource::Gateway,
            retry_after: None,
        }
    }

    /// An upstream's failure: its `source`, and its `param` and `code` when
    /// it gave them, else `code`.
    fn upstream(
        status: StatusCode,
        kind: &'static str,
        message: String,
        error: UpstreamError,
        code: &'static str,
    ) -> Self {
        Self {
            param: error.param.map(|param| bounded(param, PARAM_MAX)),
            code: Some(error.code.map_or(Cow::Borrowed(code), Cow::Owned)),
            source: error.source,
            ..Self::new(status, kind, message)
        }
    }

    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(bounded(param.into(), PARAM_MAX));
        self
    }

    #[must_use]
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(Cow::Borrowed(code));
        self
    }

    /// 400: a request the gateway cannot accept.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: no gateway key, or one the gateway does not know.
    pub fn unauthorized(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message).with_code(code)
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    /// 404: a model nothing routes.
    pub fn model_not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .with_param("model")
            .with_code("model_not_found")
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", message)
            .with_code("method_not_allowed")
    }

    /// 413: the body is larger than the configured limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
        .with_code("payload_too_large")
    }

    /// 408: the body did not arrive in time. The connection is closed: what
    /// is left of the body would be read as the next request.
    pub fn body_timeout(timeout: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "The request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )
        .with_code("request_timeout")
    }

    /// 415: a body that is declared as something other than JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            message,
        )
        .with_code("unsupported_media_type")
    }

    /// 499: the client left before the answer was ready (nobody reads it;
    /// it is for the logs and metrics).
    pub fn client_closed() -> Self {
        let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(
            status,
            "invalid_request_error",
            "The client closed the connection",
        )
        .with_code("client_closed")
    }

    /// 503 `overloaded`: the gateway sheds this request to stay within its
    /// limits; the client may retry in a second.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(whole_seconds(gatewayz_domain::budget::OVERLOADED_RETRY_AFTER)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code("overloaded")
        }
    }

    /// 500: the gateway itself is misconfigured or broken.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body, as a value to look into.
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.envelope()).unwrap_or_default()
    }

    /// The JSON body as written to the client, fields in their usual order
    /// (`message`, `type`, `param`, `code`, `source`).
    pub fn to_body(&self) -> Vec<u8> {
        // Serializing the gateway's own types into memory cannot fail.
        serde_json::to_vec(&self.envelope()).unwrap_or_default()
    }

    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
                source: self.source.as_str(),
            },
        }
    }
}

/// Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`,
/// with the gateway's `code`, `param` and `source` beside them.
#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicBody<'a>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    source: &'static str,
}

/// Anthropic's status for an overloaded service.
const ANTHROPIC_OVERLOADED: u16 = 529;

impl ApiError {
    /// The status on an Anthropic API path: the same, except that the
    /// gateway shedding load answers 529, as Anthropic does.
    pub fn anthropic_status(&self) -> StatusCode {
        if matches!(self.code.as_deref(), Some("overloaded" | "overloaded_error")) {
            return StatusCode::from_u16(ANTHROPIC_OVERLOADED).unwrap_or(self.status);
        }
        self.status
    }

    /// Anthropic's error type: the upstream's own when it gave one (an
    /// Anthropic provider's), else the status's.
    fn anthropic_type(&self) -> &'static str {
        const TYPES: [&str; 10] = [
            "invalid_request_error",
            "authentication_error",
            "billing_error",
            "permission_error",
            "not_found_error",
            "request_too_large",
            "rate_limit_error",
            "timeout_error",
            "api_error",
            "overloaded_error",
        ];
        if let Some(kind) = TYPES.into_iter().find(|kind| self.code.as_deref() == Some(kind)) {
            return kind;
        }
        match self.anthropic_status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            ANTHROPIC_OVERLOADED => "overloaded_error",
            status if status >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The error in Anthropic's shape, as written to the client (also the
    /// data of a stream's `error` event).
    pub fn to_anthropic_body(&self) -> Vec<u8> {
        let envelope = AnthropicEnvelope {
            kind: "error",
            error: AnthropicBody {
                kind: self.anthropic_type(),
                message: &self.message,
                code: self.code.as_deref(),
                param: self.param.as_deref(),
                source: self.source.as_str(),
            },
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The error in the Responses API's stream shape: the data of an
    /// `error` event.
    pub fn to_responses_event(&self) -> Vec<u8> {
        let event = serde_json::json!({
            "type": "error",
            "code": self.code.as_deref(),
            "message": &self.message,
            "param": self.param.as_deref(),
            "source": self.source.as_str(),
        });
        serde_json::to_vec(&event).unwrap_or_default()
    }

    /// The response's status and headers, whichever shape its body has.
    fn response_head(&self, status: StatusCode) -> actix_web::HttpResponseBuilder {
        let mut response = HttpResponse::build(status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response.force_close();
        }
        response
    }
}

/// An [`ApiError`] answered on an Anthropic API path, in Anthropic's shape.
#[derive(Debug)]
pub struct AnthropicError(pub ApiError);

impl fmt::Display for AnthropicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for AnthropicError {
    fn status_code(&self) -> StatusCode {
        self.0.anthropic_status()
    }

    fn error_response(&self) -> HttpResponse {
        self.0
            .response_head(self.0.anthropic_status())
            .content_type(actix_web::http::header::ContentType::json())
            .body(self.0.to_anthropic_body())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.response_head(self.status).json(self.envelope())
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        let ValidationError { param, message, code } = error;
        Self {
            param: param.map(|param| bounded(param, PARAM_MAX)),
            code,
            ..Self::invalid_request(message)
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        let message = error.to_string();
        match error {
            ChatError::Invalid(error) => error.into(),
            ChatError::Keys(KeyError::PortkeyKeyMissing) => {
                Self::internal(message).with_code("portkey_key_not_configured")
            }
            ChatError::Keys(KeyError::ProviderKeyMissing { .. }) => {
                Self::invalid_request(message).with_code("provider_key_not_configured")
            }
            ChatError::ModelNotFound(_) => Self::model_not_found(message),
            ChatError::ProviderDisabled(_) => Self::invalid_request(message)
                .with_param("provider")
                .with_code("unsupported_provider"),
            ChatError::UpstreamAuth(upstream) => Self::upstream(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                message,
                upstream,
                "upstream_auth_error",
            ),
            ChatError::RateLimited { error, retry_after } => Self {
                retry_after: retry_after.map(whole_seconds),
                ..Self::upstream(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    message,
                    error,
                    "rate_limit_exceeded",
                )
            },
            ChatError::Timeout(upstream) => Self::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                message,
                upstream,
                "upstream_timeout",
            ),
            ChatError::UpstreamRejected(upstream) => {
                let status = upstream
                    .status
                    .and_then(|status| StatusCode::from_u16(status).ok())
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_REQUEST);
                Self::upstream(
                    status,
                    "invalid_request_error",
                    message,
                    upstream,
                    "upstream_rejected",
                )
            }
            ChatError::UpstreamFailed(upstream) => Self::upstream(
                StatusCode::BAD_GATEWAY,
                "server_error",
                message,
                upstream,
                "upstream_error",
            ),
            ChatError::Unavailable(upstream) => Self::upstream(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                message,
                upstream,
                "upstream_unavailable",
            ),
            ChatError::InvalidUpstreamResponse(upstream) => Self::upstream(
                StatusCode::BAD_GATEWAY,
                "server_error",
                message,
                upstream,
                "invalid_upstream_response",
            ),
            ChatError::CircuitOpen { retry_in, .. } => Self {
                retry_after: Some(whole_seconds(retry_in).max(1)),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                    .with_code("circuit_open")
            },
            ChatError::Overloaded(_) => Self::overloaded(message),
            ChatError::KeyExpired(_) => Self::unauthorized(message, "key_expired"),
            ChatError::ModelNotAllowed { .. } => {
                Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message)
                    .with_param("model")
                    .with_code("model_not_allowed")
            }
            ChatError::LimitExceeded {
                limit, retry_after, ..
            } => {
                // OpenAI's types for its own requests and tokens limits.
                let kind = match limit {
                    LimitKind::Requests => "requests",
                    LimitKind::Tokens => "tokens",
                    LimitKind::Parallel | LimitKind::Budget => "rate_limit_error",
                };
                Self {
                    // None for a request that can never fit: retrying is pointless.
                    retry_after: (!retry_after.is_zero()).then(|| whole_seconds(retry_after).max(1)),
                    ..Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message).with_code("rate_limit_exceeded")
                }
            }
            ChatError::BudgetExceeded { retry_after, .. } => Self {
                retry_after: Some(whole_seconds(retry_after).max(1)),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                    .with_code("budget_exceeded")
            },
            ChatError::ResponseNotFound { follow_up, .. } => {
                let error = Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
                    .with_code("response_not_found");
                if follow_up {
                    error.with_param("previous_response_id")
                } else {
                    error
                }
            }
            ChatError::ResponsesUnavailable(_) => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                    .with_code("responses_unavailable")
            },
            ChatError::LimitsUnavailable(_) => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                    .with_code("limits_unavailable")
            },
        }
    }
}

/// `Retry-After` takes whole seconds; round up so a client never retries early.
fn whole_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use gatewayz_domain::UpstreamProvider;
    use serde_json::{Value, json};

    use super::*;

    async fn rendered(error: ApiError) -> (u16, Value) {
        let response = error.error_response();
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body()).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[actix_web::test]
    async fn a_validation_error_is_a_400_in_openai_shape_naming_its_param() {
        let (status, body) =
            rendered(ValidationError::new("top_p", "`top_p` must be between 0 and 1").into()).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"error": {"message": "`top_p` must be between 0 and 1", "type": "invalid_request_error",
                "param": "top_p", "code": null, "source": "gateway"}})
        );
    }

    #[actix_web::test]
    async fn a_missing_portkey_key_is_the_gateways_fault_and_a_missing_provider_key_the_clients() {
        let (status, body) = rendered(ChatError::Keys(KeyError::PortkeyKeyMissing).into()).await;
        assert_eq!(
            (status, body["error"]["message"].as_str()),
            (500, Some("Portkey API key not configured"))
        );

        let missing = KeyError::ProviderKeyMissing {
            provider: UpstreamProvider::OpenAi,
            env_var: "PROVIDER_OPENAI_API_KEY",
        };
        let (status, body) = rendered(ChatError::Keys(missing).into()).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Provider API key not configured for openai")
        );
    }
}
