//! Turning an upstream's failures into typed [`ChatError`]s: HTTP statuses
//! and error bodies, transport errors, malformed answers, one table for
//! Portkey and direct upstreams alike. No reqwest error leaves this module.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use gatewayz_domain::{BudgetedBuffer, ChatError, ErrorSource, MemoryBudget, OverBudget, UpstreamError};
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde::Deserialize;

/// Who the gateway called: what errors name, and whom they blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Portkey's gateway: an error is Portkey's own unless its body names
    /// the provider behind it.
    Portkey,
    /// An OpenAI-compatible server called directly, by its catalog name:
    /// whatever fails there is the provider's.
    Direct(std::sync::Arc<str>),
}

impl Peer {
    /// How a message names the far end of a stream: the upstream behind
    /// Portkey, or the direct upstream by name.
    pub(crate) fn upstream(&self) -> String {
        match self {
            Self::Portkey => "the upstream".to_owned(),
            Self::Direct(name) => format!("upstream `{name}`"),
        }
    }

    /// Who is blamed for a failure that no body explains.
    pub(crate) const fn source(&self) -> ErrorSource {
        match self {
            Self::Portkey => ErrorSource::Portkey,
            Self::Direct(_) => ErrorSource::Provider,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Portkey => f.write_str("Portkey"),
            Self::Direct(name) => write!(f, "upstream `{name}`"),
        }
    }
}

/// The most of an error body that is read; the rest is dropped.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// `{"error": {...}, "provider": "..."}`: a provider's error, forwarded by
/// Portkey, which names the provider; without that name the error is
/// Portkey's own.
///
/// Anthropic's own shape, `{"type": "error", "error": {"type", "message"}}`
/// (its stream's `error` event), is the provider's too: its error type is
/// its code.
#[derive(Deserialize)]
struct ProviderErrorBody {
    error: ProviderErrorDetail,
    #[serde(default)]
    provider: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct ProviderErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default, deserialize_with = "code")]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The Responses API stream's `error` event:
/// `{"type": "error", "code", "message", "param"}`.
#[derive(Deserialize)]
struct ErrorEvent {
    #[serde(rename = "type")]
    kind: String,
    message: String,
    #[serde(default)]
    param: Option<String>,
    #[serde(default, deserialize_with = "code")]
    code: Option<String>,
}

/// `{"object": "error", "message", "type", "param", "code"}`: vLLM's error
/// shape.
#[derive(Deserialize)]
struct ObjectError {
    object: String,
    message: String,
    #[serde(default)]
    param: Option<String>,
    #[serde(default, deserialize_with = "code")]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// `{"error": "...", "error_type": "..."}`: Hugging Face TGI's error shape.
#[derive(Deserialize)]
struct TextError {
    error: String,
    #[serde(default)]
    error_type: Option<String>,
}

/// `{"status": "failure", "message": "..."}`: Portkey's own refusal.
#[derive(Deserialize)]
struct PortkeyFailureBody {
    status: String,
    message: String,
}

/// OpenAI sends `code` as a string or a number, or null.
fn code<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::String(code)) => Some(code),
        Some(serde_json::Value::Number(code)) => Some(code.to_string()),
        _ => None,
    })
}

/// What a non-success body from `peer` says, and who said it.
pub(crate) fn describe_error_body(status: u16, body: &[u8], peer: &Peer) -> UpstreamError {
    if let Ok(body) = serde_json::from_slice::<ProviderErrorBody>(body) {
        let detail = body.error;
        let anthropic = body.kind.as_deref() == Some("error");
        // Portkey answers its own request timeout (408) in the provider shape.
        let source = if (body.provider.is_some() || anthropic) && status != 408 {
            ErrorSource::Provider
        } else {
            peer.source()
        };
        return UpstreamError {
            source,
            status: Some(status),
            message: detail.message.unwrap_or_else(|| format!("HTTP {status}")),
            param: detail.param,
            code: detail.code.or(detail.kind.filter(|_| anthropic)),
        };
    }
    if let Ok(event) = serde_json::from_slice::<ErrorEvent>(body)
        && event.kind == "error"
    {
        return UpstreamError {
            source: ErrorSource::Provider,
            status: Some(status),
            message: event.message,
            param: event.param,
            code: event.code,
        };
    }
    if let Ok(error) = serde_json::from_slice::<ObjectError>(body)
        && error.object == "error"
    {
        return UpstreamError {
            source: peer.source(),
            status: Some(status),
            message: error.message,
            param: error.param,
            code: error.code.or(error.kind),
        };
    }
    if let Ok(error) = serde_json::from_slice::<TextError>(body) {
        return UpstreamError {
            source: peer.source(),
            status: Some(status),
            message: error.error,
            param: None,
            code: error.error_type,
        };
    }
    if let Ok(body) = serde_json::from_slice::<PortkeyFailureBody>(body)
        && body.status == "failure"
    {
        return UpstreamError::new(peer.source(), Some(status), body.message);
    }
    // Whole: the secrets are scrubbed from it before it is cut to size.
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        text.to_owned()
    };
    UpstreamError::new(peer.source(), Some(status), message)
}

/// The error for a non-success response, reading at most
/// [`ERROR_BODY_LIMIT`] bytes of its body.
pub(crate) async fn from_status(response: Response, peer: &Peer) -> ChatError {
    let status = response.status();
    let retry_after = retry_after(response.headers(), SystemTime::now());
    // What could be read is still worth showing; the rest is dropped.
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = ERROR_BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    classify(
        status,
        describe_error_body(status.as_u16(), &body, peer),
        retry_after,
    )
}

/// Why a whole answer could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Transport(reqwest::Error),
    /// Longer than the limit (declared, or as read so far).
    TooLarge,
    /// The memory budget cannot hold it.
    OverBudget(OverBudget),
}

/// The whole body, in a buffer taken from `budget`: its declared length at
/// once, else as it arrives. Reads no further than `limit` bytes.
pub(crate) async fn read_within(
    response: Response,
    limit: usize,
    budget: &MemoryBudget,
) -> Result<Bytes, ReadError> {
    let declared = response
        .content_length()
        .map(|length| usize::try_from(length).unwrap_or(usize::MAX));
    if declared.is_some_and(|length| length > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body =
        BudgetedBuffer::with_capacity(budget, declared.unwrap_or(8 * 1024)).map_err(ReadError::OverBudget)?;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(ReadError::Transport)?;
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk).map_err(ReadError::OverBudget)?;
    }
    Ok(body.freeze())
}

/// The error table: which upstream status becomes which failure.
pub(crate) fn classify(status: StatusCode, error: UpstreamError, retry_after: Option<Duration>) -> ChatError {
    match status.as_u16() {
        401 | 403 => ChatError::UpstreamAuth(error),
        429 => ChatError::RateLimited { error, retry_after },
        408 => ChatError::Timeout(error),
        400..=499 => ChatError::UpstreamRejected(error),
        _ => ChatError::UpstreamFailed(error),
    }
}

/// The longest `Retry-After` passed on: anything longer is an upstream's
/// mistake, not advice.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// `retry-after-ms` (as OpenAI and Azure send), else `retry-after` in
/// seconds or as an HTTP date; at most [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let seconds = |value: f64| {
        (value.is_finite() && value >= 0.0).then(|| {
            Duration::try_from_secs_f64(value)
                .unwrap_or(MAX_RETRY_AFTER)
                .min(MAX_RETRY_AFTER)
        })
    };
    if let Some(after) = header("retry-after-ms")
        .and_then(|value| value.parse::<f64>().ok())
        .and_then(|millis| seconds(millis / 1000.0))
    {
        return Some(after);
    }
    let value = header("retry-after")?;
    if let Ok(value) = value.parse::<f64>() {
        return seconds(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The error for a request to `peer` that got no HTTP answer.
pub(crate) fn from_transport(error: &reqwest::Error, waited: Duration, peer: &Peer) -> ChatError {
    if error.is_timeout() {
        return timeout(waited, peer);
    }
    let cause = root_cause(error);
    let message = if error.is_connect() {
        format!("cannot connect to {peer}: {cause}")
    } else {
        format!("the connection to {peer} failed: {cause}")
    };
    ChatError::Unavailable(UpstreamError::new(peer.source(), None, message))
}

/// Our own deadline for `peer`'s answer passed.
pub(crate) fn timeout(waited: Duration, peer: &Peer) -> ChatError {
    ChatError::Timeout(UpstreamError::new(
        peer.source(),
        None,
        format!("no answer from {peer} within {} ms", waited.as_millis()),
    ))
}

/// The innermost cause, which names what went wrong (`Connection refused`)
/// without the URL or any header.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A 2xx from `peer` whose body breaks the protocol.
pub(crate) fn invalid_response(message: impl Into<String>, peer: &Peer) -> ChatError {
    ChatError::InvalidUpstreamResponse(UpstreamError::new(peer.source(), Some(200), message))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn a_provider_error_keeps_its_message_param_and_code() {
        let body = br#"{"error": {"message": "openai error: bad model", "type": "invalid_request_error",
            "param": "model", "code": "model_not_found"}, "provider": "openai"}"#;
        let error = describe_error_body(404, body, &Peer::Portkey);
        assert_eq!(error.source, ErrorSource::Provider);
        assert_eq!(error.message, "openai error: bad model");
        assert_eq!(error.param.as_deref(), Some("model"));
        assert_eq!(error.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn an_error_body_without_a_provider_name_is_portkeys() {
        let error = describe_error_body(400, br#"{"error": {"message": "bad config"}}"#, &Peer::Portkey);
        assert_eq!(error.source, ErrorSource::Portkey);
    }

    #[test]
    fn portkeys_own_failures_are_told_apart_from_provider_errors() {
        let error = describe_error_body(
            400,
            br#"{"status": "failure", "message": "Invalid provider passed"}"#,
            &Peer::Portkey,
        );
        assert_eq!(
            (error.source, error.message.as_str()),
            (ErrorSource::Portkey, "Invalid provider passed")
        );
    }

    #[test]
    fn an_unparseable_body_is_shown_trimmed() {
        let error = describe_error_body(
            502,
            format!("  <html>{}</html> ", "x".repeat(2000)).as_bytes(),
            &Peer::Portkey,
        );
        assert_eq!(error.source, ErrorSource::Portkey);
        assert!(error.message.starts_with("<html>") && error.message.ends_with("</html>"));
        assert_eq!(
            describe_error_body(503, b"", &Peer::Portkey).message,
            "HTTP 503 with an empty body"
        );
    }

    #[test]
    fn vllms_and_tgis_own_error_shapes_are_read_as_the_providers() {
        let peer = Peer::Direct("vllm".into());
        let vllm = describe_error_body(
            400,
            br#"{"object": "error", "message": "max_tokens is too large", "type": "BadRequestError",
                "param": "max_tokens", "code": 400}"#,
            &peer,
        );
        assert_eq!(
            (
                vllm.source,
                vllm.message.as_str(),
                vllm.param.as_deref(),
                vllm.code.as_deref()
            ),
            (
                ErrorSource::Provider,
                "max_tokens is too large",
                Some("max_tokens"),
                Some("400")
            )
        );
        let tgi = describe_error_body(
            422,
            br#"{"error": "Input validation error: `inputs` must be non-empty", "error_type": "validation"}"#,
            &peer,
        );
        assert_eq!(
            (tgi.source, tgi.message.as_str(), tgi.code.as_deref()),
            (
                ErrorSource::Provider,
                "Input validation error: `inputs` must be non-empty",
                Some("validation")
            )
        );
    }

    #[test]
    fn whatever_a_direct_upstream_says_is_the_providers() {
        let peer = Peer::Direct("vllm".into());
        for body in [
            &br#"{"error": {"message": "bad model", "code": 404}}"#[..],
            br#"{"status": "failure", "message": "x"}"#,
            b"<html>oops</html>",
            b"",
        ] {
            let error = describe_error_body(404, body, &peer);
            assert_eq!(
                error.source,
                ErrorSource::Provider,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let ChatError::Timeout(error) = timeout(Duration::from_millis(5), &peer) else {
            panic!("not a timeout");
        };
        assert_eq!(
            (error.source, error.message.as_str()),
            (
                ErrorSource::Provider,
                "no answer from upstream `vllm` within 5 ms"
            )
        );
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let cases = [
            (headers(&[("retry-after", "7")]), Some(Duration::from_secs(7))),
            (
                headers(&[("retry-after", "1.5")]),
                Some(Duration::from_millis(1500)),
            ),
            (
                headers(&[("retry-after-ms", "250"), ("retry-after", "9")]),
                Some(Duration::from_millis(250)),
            ),
            (headers(&[("retry-after", &date)]), Some(Duration::from_secs(30))),
            (headers(&[("retry-after", "soon")]), None),
            (headers(&[("retry-after", "-3")]), None),
            (headers(&[("retry-after", "1e300")]), Some(MAX_RETRY_AFTER)),
            (headers(&[("retry-after-ms", "1e300")]), Some(MAX_RETRY_AFTER)),
            (headers(&[("retry-after", "NaN")]), None),
            (headers(&[]), None),
        ];
        for (map, expected) in cases {
            assert_eq!(retry_after(&map, now), expected, "{map:?}");
        }
    }
}
