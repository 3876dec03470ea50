//! Reading a request's flags (and, for reliability runs, its fault) without
//! parsing its JSON.

/// Whether `body` sets the JSON key `key` (given with its quotes, e.g.
/// `"stream"`) to `true`, whitespace allowed around the colon.
///
/// A JSON string cannot hold an unescaped `"`, so the quoted key followed by
/// a colon only occurs as a key, never inside a value. The key may belong to
/// a nested object; Gatewayz's requests have no such object, and the
/// upstream does not pay for a full parse to rule it out.
pub fn is_true(body: &[u8], key: &[u8]) -> bool {
    let mut rest = body;
    while let Some(at) = find(rest, key) {
        rest = &rest[at + key.len()..];
        let after = skip_space(rest);
        if let Some(value) = after.strip_prefix(b":")
            && skip_space(value).starts_with(b"true")
        {
            return true;
        }
    }
    false
}

/// The string value of the JSON key `key` (given with its quotes), when it
/// has one, as written: escapes are not decoded (the values looked for hold
/// none). The same reasoning as [`is_true`] tells a key from a value.
pub fn string_value<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut rest = body;
    while let Some(at) = find(rest, key) {
        rest = &rest[at + key.len()..];
        if let Some(value) = skip_space(rest).strip_prefix(b":")
            && let Some(string) = skip_space(value).strip_prefix(b"\"")
            && let Some(end) = string.iter().position(|byte| *byte == b'"')
        {
            return Some(&string[..end]);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::{is_true, string_value};

    const STREAM: &[u8] = b"\"stream\"";

    #[test]
    fn reads_true_with_or_without_spaces_around_the_colon() {
        assert!(is_true(br#"{"model":"m","stream":true}"#, STREAM));
        assert!(is_true(br#"{"model": "m", "stream": true}"#, STREAM));
        assert!(is_true(b"{\"stream\"\n :\t true }", STREAM));
    }

    #[test]
    fn false_absent_or_similar_keys_are_not_true() {
        assert!(!is_true(br#"{"stream":false}"#, STREAM));
        assert!(!is_true(br#"{"model":"m"}"#, STREAM));
        assert!(!is_true(br#"{"stream_options":{"include_usage":true}}"#, STREAM));
        assert!(!is_true(br#"{"streaming":true}"#, STREAM));
    }

    #[test]
    fn a_value_that_mentions_the_key_is_not_the_key() {
        let body = br#"{"messages":[{"role":"user","content":"say \"stream\": true"}],"stream":false}"#;
        assert!(!is_true(body, STREAM));
        let body = br#"{"messages":[{"role":"user","content":"stream"}],"stream" : true}"#;
        assert!(is_true(body, STREAM));
    }

    #[test]
    fn reads_include_usage_inside_stream_options() {
        let body = br#"{"stream":true,"stream_options":{"include_usage":true}}"#;
        assert!(is_true(body, b"\"include_usage\""));
        let body = br#"{"stream":true,"stream_options":{"include_usage": false}}"#;
        assert!(!is_true(body, b"\"include_usage\""));
    }

    #[test]
    fn reads_a_string_value_with_or_without_spaces() {
        const FAULT: &[u8] = b"\"upstream_fault\"";
        assert_eq!(
            string_value(br#"{"model":"m","upstream_fault":"500"}"#, FAULT),
            Some(&b"500"[..])
        );
        assert_eq!(
            string_value(b"{\"upstream_fault\" :\n \"cut\", \"stream\": true}", FAULT),
            Some(&b"cut"[..])
        );
        assert_eq!(string_value(br#"{"upstream_fault":""}"#, FAULT), Some(&b""[..]));
    }

    #[test]
    fn no_string_value_when_absent_mentioned_or_not_a_string() {
        const FAULT: &[u8] = b"\"upstream_fault\"";
        assert_eq!(string_value(br#"{"model":"m"}"#, FAULT), None);
        assert_eq!(string_value(br#"{"upstream_fault":500}"#, FAULT), None);
        let body = br#"{"messages":[{"content":"say \"upstream_fault\": \"500\""}],"upstream_fault":"429"}"#;
        assert_eq!(string_value(body, FAULT), Some(&b"429"[..]));
    }
}
