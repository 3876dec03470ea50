//! Keeping a call's keys out of what the upstream says back.
//!
//! An upstream may echo a key anywhere in its answer: in an error's
//! `message`, `param` or `code`, in a stream's error event, in a body that is
//! not JSON at all. Every string of a [`ChatError`] that came from upstream
//! passes through [`Secrets::scrub`] before it leaves the adapter: each key,
//! and each run of eight or more of its first characters, becomes
//! `[REDACTED]`; only then is the text cut to its bound, and a key's first
//! characters left dangling at a cut are redacted too.

use gatewayz_domain::{ChatError, Credentials, UpstreamAuth, UpstreamError, ValidationError};
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

/// What stands where a key was.
pub(crate) const REDACTED: &str = "[REDACTED]";
/// The fewest leading characters of a key that are redacted where they stand
/// alone: a key cut short by the upstream, or straddling a read limit.
const FRAGMENT: usize = 8;
/// At the very end of a text, which may have been cut, even fewer leading
/// characters of a key are redacted.
const TRAILING_FRAGMENT: usize = 3;
/// The most characters of an upstream's message passed on.
pub(crate) const MESSAGE_MAX: usize = 512;
/// The most characters of an upstream's `param` or `code` passed on.
const FIELD_MAX: usize = 100;

/// The keys of one call.
pub(crate) struct Secrets(Vec<SecretString>);

impl Secrets {
    /// The secrets of a call made with `credentials` on `route`.
    pub(crate) fn new(credentials: &Credentials, route: &gatewayz_domain::Route) -> Self {
        let mut secrets = match credentials {
            Credentials::Portkey { api_key, upstream } => {
                let (UpstreamAuth::ProviderKey(key) | UpstreamAuth::VirtualKey(key)) = upstream;
                vec![api_key.clone(), key.clone()]
            }
            Credentials::None => Vec::new(),
        };
        // Keys inside an inline Portkey config are secrets too.
        if let Some(config) = route.portkey_config() {
            secrets.extend_from_slice(config.secrets());
        }
        secrets.retain(|secret| !secret.expose_secret().is_empty());
        Self(secrets)
    }

    /// These keys, and `key` too when there is one.
    #[must_use]
    pub(crate) fn and(mut self, key: Option<&SecretString>) -> Self {
        self.0
            .extend(key.filter(|key| !key.expose_secret().is_empty()).cloned());
        self
    }

    /// The error with every upstream string scrubbed and bounded.
    pub(crate) fn scrub(&self, error: ChatError) -> ChatError {
        error.map_upstream(|upstream| UpstreamError {
            message: self.clean(&upstream.message, MESSAGE_MAX),
            param: upstream.param.map(|param| self.clean(&param, FIELD_MAX)),
            code: upstream.code.map(|code| self.clean(&code, FIELD_MAX)),
            ..upstream
        })
    }

    /// `text` without the keys, then cut to `max` characters.
    pub(crate) fn clean(&self, text: &str, max: usize) -> String {
        let mut text = text.to_owned();
        // Redact, then cut: a cut first could split a key and hide it from
        // the search. What is left at the end may be a key's first
        // characters, from this cut or from the upstream's own.
        for secret in &self.0 {
            text = redact(&text, secret.expose_secret());
        }
        let mut text = gatewayz_domain::text::clip(&text, max).into_owned();
        let cut = text.ends_with('…');
        if cut {
            text.pop();
        }
        for secret in &self.0 {
            redact_trailing(&mut text, secret.expose_secret());
        }
        if cut {
            text.push('…');
        }
        text
    }
}

/// `text` with each occurrence of `secret`, and of its first [`FRAGMENT`]
/// or more characters, replaced by [`REDACTED`].
fn redact(text: &str, secret: &str) -> String {
    let secret = secret.as_bytes();
    let needle = &secret[..secret.len().min(FRAGMENT)];
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], needle).map(|at| from + at) {
        let length = bytes[found..]
            .iter()
            .zip(secret)
            .take_while(|(a, b)| a == b)
            .count();
        // Keys are visible ASCII, so a match starts and ends on character
        // boundaries.
        out.push_str(&text[start..found]);
        out.push_str(REDACTED);
        start = found + length;
        from = start;
    }
    out.push_str(&text[start..]);
    out
}

/// Redacts the end of `text` when it is the first characters of `secret`.
fn redact_trailing(text: &mut String, secret: &str) {
    let longest = secret.len().min(text.len());
    if let Some(length) = (TRAILING_FRAGMENT..=longest)
        .rev()
        .find(|length| text.as_bytes().ends_with(&secret.as_bytes()[..*length]))
    {
        text.truncate(text.len() - length);
        text.push_str(REDACTED);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A header value marked sensitive, so that no HTTP library prints it.
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, ChatError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ValidationError::body("a credential contains characters that are not allowed in an HTTP header")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

pub(crate) fn bearer(key: &SecretString) -> Result<HeaderValue, ChatError> {
    sensitive(&format!("Bearer {}", key.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pk-live-0123456789abcdefghij";

    fn secrets() -> Secrets {
        Secrets(vec![
            SecretString::from(KEY),
            SecretString::from("sk-provider-zyxwvutsrq"),
        ])
    }

    #[test]
    fn a_whole_key_anywhere_is_redacted() {
        let text = format!("bad key {KEY}, also Bearer sk-provider-zyxwvutsrq.");
        assert_eq!(
            secrets().clean(&text, 512),
            "bad key [REDACTED], also Bearer [REDACTED]."
        );
    }

    #[test]
    fn a_keys_first_characters_alone_are_redacted() {
        let text = format!("key {}*** was refused", &KEY[..12]);
        assert_eq!(secrets().clean(&text, 512), "key [REDACTED]*** was refused");
    }

    #[test]
    fn a_key_straddling_the_cut_leaves_nothing_of_itself() {
        // "E" x 498 + key, cut at 512 characters: 14 characters of the key
        // would have been shown.
        let text = format!("{}{KEY}", "E".repeat(498));
        let clean = secrets().clean(&text, 512);
        assert!(!clean.contains(&KEY[..3]), "{clean}");
        assert!(clean.starts_with(&"E".repeat(498)));
    }

    #[test]
    fn a_keys_first_characters_at_the_end_of_a_cut_text_are_redacted() {
        let text = format!("{}{}", "E".repeat(505), &KEY[..5]);
        let clean = secrets().clean(&text, 510);
        assert_eq!(clean, format!("{}{REDACTED}", "E".repeat(505)));
    }

    #[test]
    fn param_and_code_are_scrubbed_as_well_as_the_message() {
        let error = ChatError::UpstreamRejected(UpstreamError {
            param: Some(KEY.to_owned()),
            code: Some("Bearer sk-provider-zyxwvutsrq".to_owned()),
            ..UpstreamError::new(gatewayz_domain::ErrorSource::Provider, Some(400), "x")
        });
        let ChatError::UpstreamRejected(error) = secrets().scrub(error) else {
            panic!("the kind changed");
        };
        assert_eq!(error.param.as_deref(), Some(REDACTED));
        assert_eq!(error.code.as_deref(), Some("Bearer [REDACTED]"));
    }

    #[test]
    fn long_fields_are_cut_and_marked() {
        let error = ChatError::UpstreamFailed(UpstreamError {
            param: Some("p".repeat(10_000)),
            ..UpstreamError::new(
                gatewayz_domain::ErrorSource::Provider,
                Some(500),
                "m".repeat(100_000),
            )
        });
        let ChatError::UpstreamFailed(error) = secrets().scrub(error) else {
            panic!("the kind changed");
        };
        assert_eq!(error.message.chars().count(), MESSAGE_MAX + 1);
        assert_eq!(
            error.param.map(|param| param.chars().count()),
            Some(FIELD_MAX + 1)
        );
    }

    #[test]
    fn text_without_keys_is_unchanged() {
        assert_eq!(
            secrets().clean("model not found: gpt-5", 512),
            "model not found: gpt-5"
        );
        assert_eq!(secrets().clean("ends with pk", 512), "ends with pk");
    }
}
