//! A Redis URL may hold a password: how it is shown in logs, and scrubbed
//! from every error that could quote it.

/// `url` with its password (if any) replaced by `REDACTED`; a URL that does
/// not parse is not shown at all, since it may hold one.
pub(super) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have a password.
                let _ = parsed.set_password(Some("REDACTED"));
            }
            parsed.to_string()
        }
        Err(_) => "(a URL that does not parse)".to_owned(),
    }
}

/// The password of `url`, as written and percent-decoded.
pub(super) fn url_secrets(url: &str) -> Vec<String> {
    let written = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed.password().map(str::to_owned),
        // Whatever sits between "//" and "@" may be credentials.
        Err(_) => url
            .split_once("//")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .map(|(credentials, _)| credentials.to_owned()),
    };
    let Some(written) = written.filter(|secret| !secret.is_empty()) else {
        return Vec::new();
    };
    let decoded = percent_decoded(&written);
    let mut secrets = vec![written];
    if !secrets.contains(&decoded) {
        secrets.push(decoded);
    }
    // The longer first, so that no part of one survives another's replacement.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                at += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `text` with every secret replaced by `[REDACTED]`.
pub(super) fn scrub(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[REDACTED]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redacted_url("redis://user:s3cr%40t@redis.internal:6380/2"),
            "redis://user:REDACTED@redis.internal:6380/2"
        );
        assert_eq!(redacted_url("rediss://redis:6379"), "rediss://redis:6379");
        assert_eq!(
            redacted_url("redis://:hunter2@[::1"),
            "(a URL that does not parse)"
        );
    }

    #[test]
    fn errors_never_carry_the_password_written_or_decoded() {
        let secrets = url_secrets("redis://user:s3cr%40t@redis.internal:6380");
        let text = scrub("AUTH s3cr@t failed; url had s3cr%40t".to_owned(), &secrets);
        assert_eq!(text, "AUTH [REDACTED] failed; url had [REDACTED]");
        let unparsable = url_secrets("redis://:hunter2@[::1");
        assert_eq!(
            scrub("bad url :hunter2".to_owned(), &unparsable),
            "bad url [REDACTED]"
        );
    }
}
