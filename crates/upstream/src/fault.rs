//! Failures on request, for reliability runs: with `--faults`, a request
//! whose body sets `"upstream_fault"` gets an error status, a stream cut
//! halfway, or a 401 that echoes its key. The gateway forwards the request body's fields it does not know,
//! so a client of the gateway chooses the upstream's failure request by
//! request.

use hyper::StatusCode;

use crate::flags::string_value;

/// The body key that asks for a fault, with its quotes.
const KEY: &[u8] = b"\"upstream_fault\"";

/// The `retry-after` a 429 carries, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What a request asked the upstream to do wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An error body with this status (4xx or 5xx), before any byte of an
    /// answer: OpenAI's shape, or Anthropic's on `/v1/messages`; a 429 also
    /// carries `retry-after`.
    Status(StatusCode),
    /// A stream whose connection is closed, without the end of its chunked
    /// body: a chat stream when its content chunk `content_chunks / 2` (at
    /// least 1) is due (no finish chunk, no usage, no `[DONE]`); a Messages
    /// or Responses stream right after its first text delta. Only a stream
    /// can be cut.
    Cut,
    /// A 401 whose message holds the key the request carried, exactly as
    /// received, as OpenAI's `invalid_api_key` error does: `Incorrect API
    /// key provided: <key>. You can find your API key at …` (`none`
    /// without a key). The key is the bearer token of `Authorization` (its
    /// whole value when it is not `Bearer`), or `api-key` on Azure's paths.
    EchoKey,
}

impl Fault {
    /// The fault `body` asks for, if any.
    ///
    /// # Errors
    /// The value, when it is neither `cut`, `echo_key` nor a 4xx or 5xx
    /// status.
    pub fn requested(body: &[u8]) -> Result<Option<Self>, String> {
        let Some(value) = string_value(body, KEY) else {
            return Ok(None);
        };
        match value {
            b"cut" => return Ok(Some(Self::Cut)),
            b"echo_key" => return Ok(Some(Self::EchoKey)),
            _ => {}
        }
        std::str::from_utf8(value)
            .ok()
            .and_then(|value| value.parse::<u16>().ok())
            .and_then(|status| StatusCode::from_u16(status).ok())
            .filter(|status| status.is_client_error() || status.is_server_error())
            .map(|status| Some(Self::Status(status)))
            .ok_or_else(|| String::from_utf8_lossy(value).into_owned())
    }

    /// How many content chunks a cut stream of `content_chunks` sends.
    pub fn cut_after(content_chunks: usize) -> usize {
        (content_chunks / 2).max(1)
    }
}

/// The error body of an injected status, as OpenAI shapes it and Portkey
/// forwards it (naming the provider).
pub fn error_body(status: StatusCode) -> String {
    let (kind, code, message) = match status.as_u16() {
        429 => (
            "rate_limit_error",
            r#""rate_limit_exceeded""#,
            "Rate limit reached (injected by gatewayz-upstream)",
        ),
        500..=599 => (
            "server_error",
            "null",
            "The server had an error (injected by gatewayz-upstream)",
        ),
        _ => (
            "invalid_request_error",
            "null",
            "The request was refused (injected by gatewayz-upstream)",
        ),
    };
    format!(
        r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":{code}}},"provider":"openai"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_status_a_cut_or_an_echo_and_nothing_when_absent() {
        assert_eq!(Fault::requested(br#"{"model":"m"}"#), Ok(None));
        assert_eq!(
            Fault::requested(br#"{"upstream_fault":"500"}"#),
            Ok(Some(Fault::Status(StatusCode::INTERNAL_SERVER_ERROR)))
        );
        assert_eq!(
            Fault::requested(br#"{"upstream_fault": "429"}"#),
            Ok(Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS)))
        );
        assert_eq!(
            Fault::requested(br#"{"stream":true,"upstream_fault":"cut"}"#),
            Ok(Some(Fault::Cut))
        );
        assert_eq!(
            Fault::requested(br#"{"upstream_fault":"echo_key"}"#),
            Ok(Some(Fault::EchoKey))
        );
    }

    #[test]
    fn refuses_a_value_that_is_not_a_failure() {
        for value in ["200", "302", "99", "abc", "", "echo"] {
            let body = format!(r#"{{"upstream_fault":"{value}"}}"#);
            assert_eq!(Fault::requested(body.as_bytes()), Err(value.to_owned()));
        }
    }

    #[test]
    fn a_cut_stream_sends_half_its_chunks_and_at_least_one() {
        assert_eq!(Fault::cut_after(16), 8);
        assert_eq!(Fault::cut_after(5), 2);
        assert_eq!(Fault::cut_after(1), 1);
    }

    #[test]
    fn the_error_bodies_are_openai_errors_typed_by_status() {
        let body = error_body(StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains(r#""type":"rate_limit_error""#), "{body}");
        assert!(body.contains(r#""code":"rate_limit_exceeded""#), "{body}");
        assert!(error_body(StatusCode::BAD_GATEWAY).contains(r#""type":"server_error""#));
        assert!(error_body(StatusCode::NOT_FOUND).contains(r#""type":"invalid_request_error""#));
    }
}
