//! Keys: the one `--require-key` asks every request for, and the one a
//! request carries, which the `echo_key` fault sends back as OpenAI does
//! (so a gateway's tests can check that such an echo reaches no log and no
//! client).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderName};
use hyper::{Response, StatusCode};

use crate::errors::{self, Dialect};
use crate::reply::Reply;
use crate::route::Family;

/// Azure's key header.
const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The key every request must carry; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// A key that no header could carry: empty, or with a byte that is not
/// visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKey;

impl FromStr for ApiKey {
    type Err = InvalidKey;

    fn from_str(key: &str) -> Result<Self, InvalidKey> {
        if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InvalidKey);
        }
        Ok(Self(key.to_owned()))
    }
}

impl ApiKey {
    /// Whether `headers` carry this key where `family` carries one:
    /// `Authorization: Bearer KEY`, or `api-key: KEY` on Azure (where an
    /// `Authorization` alone does not count, as on Azure).
    pub fn is_carried(&self, headers: &HeaderMap, family: Family) -> bool {
        let carried = match family {
            Family::OpenAi => headers
                .get(AUTHORIZATION)
                .and_then(|value| bearer_token(value.as_bytes())),
            Family::Azure => headers.get(API_KEY).map(|value| value.as_bytes()),
        };
        carried == Some(self.0.as_bytes())
    }
}

/// The 401 of a request without the required key, as OpenAI words it (in
/// Anthropic's shape on Anthropic's paths).
pub fn refused(dialect: Dialect) -> Response<Reply> {
    unauthorized(dialect, "Incorrect API key provided.")
}

/// The `echo_key` fault: a 401 whose message holds the key the request
/// carried, exactly as received (`none` without one), as OpenAI's does.
pub fn echo_key(dialect: Dialect, headers: &HeaderMap, family: Family) -> Response<Reply> {
    let carried = match family {
        Family::OpenAi => headers.get(AUTHORIZATION).map(|value| {
            let value = value.as_bytes();
            bearer_token(value).unwrap_or(value)
        }),
        Family::Azure => headers.get(API_KEY).map(|value| value.as_bytes()),
    };
    let carried = carried.map_or(Cow::Borrowed("none"), String::from_utf8_lossy);
    let message = format!(
        "Incorrect API key provided: {carried}. You can find your API key at \
         https://platform.openai.com/account/api-keys."
    );
    unauthorized(dialect, &message)
}

fn unauthorized(dialect: Dialect, message: &str) -> Response<Reply> {
    match dialect {
        Dialect::OpenAi => errors::openai(StatusCode::UNAUTHORIZED, message, None, Some("invalid_api_key")),
        Dialect::Anthropic => errors::anthropic(StatusCode::UNAUTHORIZED, message),
    }
}

/// The token of a `Bearer` credential (the scheme's case does not matter).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    value
        .get(..SCHEME.len())
        .filter(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|_| &value[SCHEME.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn a_key_is_visible_ascii_and_never_shown_by_debug() {
        let key: ApiKey = "sk-test_1".parse().unwrap();

        assert_eq!(format!("{key:?}"), "ApiKey([REDACTED])");
        assert_eq!("".parse::<ApiKey>(), Err(InvalidKey));
        assert_eq!("sk test".parse::<ApiKey>(), Err(InvalidKey));
        assert_eq!("sk-é".parse::<ApiKey>(), Err(InvalidKey));
    }

    #[test]
    fn openai_paths_take_the_key_as_a_bearer_token_only() {
        let key: ApiKey = "sk-1".parse().unwrap();

        assert!(key.is_carried(&headers(&[("authorization", "Bearer sk-1")]), Family::OpenAi));
        assert!(key.is_carried(&headers(&[("authorization", "bearer sk-1")]), Family::OpenAi));
        assert!(!key.is_carried(&headers(&[("authorization", "sk-1")]), Family::OpenAi));
        assert!(!key.is_carried(&headers(&[("authorization", "Bearer sk-2")]), Family::OpenAi));
        assert!(!key.is_carried(&headers(&[("authorization", "Bearer sk-1 ")]), Family::OpenAi));
        assert!(!key.is_carried(&headers(&[("api-key", "sk-1")]), Family::OpenAi));
        assert!(!key.is_carried(&HeaderMap::new(), Family::OpenAi));
    }

    #[test]
    fn azure_paths_take_the_key_from_api_key_only() {
        let key: ApiKey = "sk-1".parse().unwrap();

        assert!(key.is_carried(&headers(&[("api-key", "sk-1")]), Family::Azure));
        assert!(!key.is_carried(&headers(&[("authorization", "Bearer sk-1")]), Family::Azure));
        assert!(!key.is_carried(&headers(&[("api-key", "Bearer sk-1")]), Family::Azure));
    }
}
