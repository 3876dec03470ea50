//! The client's W3C trace context (`traceparent`, `tracestate`), checked
//! before it is passed upstream: a value that breaks the format or its
//! limits is dropped, never forwarded as sent.

use actix_web::http::header::HeaderMap;

/// A `traceparent` of version `00` is exactly this long; a later version may
/// add fields after a `-`, which are not passed on.
const TRACEPARENT_LEN: usize = 55;
/// The longest `tracestate` passed on, and its most list members (the
/// specification's limits).
const TRACESTATE_MAX_LEN: usize = 512;
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// The request's `traceparent`, when it is valid: `version-traceid-parentid-flags`
/// in lowercase hex, neither id all zeros, version not `ff`.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all("traceparent");
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let head = value.get(..TRACEPARENT_LEN)?;
    let valid_head = {
        let fields: Vec<&str> = head.split('-').collect();
        let hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        };
        let nonzero = |field: &str| field.bytes().any(|byte| byte != b'0');
        matches!(fields[..], [version, trace_id, parent_id, flags]
            if hex(version, 2) && version != "ff" && hex(trace_id, 32) && nonzero(trace_id)
                && hex(parent_id, 16) && nonzero(parent_id) && hex(flags, 2))
    };
    let valid_rest = match value.len() {
        TRACEPARENT_LEN => true,
        // Version 00 has nothing after its flags; later versions may.
        _ => !head.starts_with("00") && value.as_bytes()[TRACEPARENT_LEN] == b'-',
    };
    (valid_head && valid_rest).then(|| head.to_owned())
}

/// The client's trace, as the parent of the request's exported span: its
/// valid `traceparent` (and `tracestate`), marked remote.
pub fn remote_parent(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    let traceparent = traceparent(headers)?;
    let mut fields = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(fields.next()?).ok()?;
    let span_id = SpanId::from_hex(fields.next()?).ok()?;
    let flags = u8::from_str_radix(fields.next()?, 16).ok()?;
    let state = tracestate(headers)
        .and_then(|state| state.parse::<TraceState>().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    Some(opentelemetry::Context::new().with_remote_span_context(parent))
}

/// The request's `tracestate` (its headers joined), when there is a valid
/// `traceparent` for it and it is within the specification's limits.
pub fn tracestate(headers: &HeaderMap) -> Option<String> {
    traceparent(headers)?;
    let mut joined = String::new();
    for value in headers.get_all("tracestate") {
        let value = value.to_str().ok()?.trim();
        if value.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
        if joined.len() > TRACESTATE_MAX_LEN {
            return None;
        }
    }
    let members: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .collect();
    let valid = !members.is_empty()
        && members.len() <= TRACESTATE_MAX_MEMBERS
        && members.iter().all(|member| {
            member.split_once('=').is_some_and(|(key, value)| {
                !key.is_empty()
                    && !value.is_empty()
                    && member.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
            })
        });
    valid.then_some(joined)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_kept() {
        assert_eq!(
            traceparent(&headers(&[("traceparent", VALID)])).as_deref(),
            Some(VALID)
        );
        let later = format!("01{}-future", &VALID[2..]);
        assert_eq!(
            traceparent(&headers(&[("traceparent", &later)])),
            Some(format!("01{}", &VALID[2..]))
        );
    }

    #[test]
    fn a_malformed_or_oversized_traceparent_is_dropped() {
        let long = format!("{VALID}{}", "0".repeat(6000));
        let cases = [
            long.as_str(),
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "not a trace",
            "",
        ];
        for value in cases {
            assert_eq!(traceparent(&headers(&[("traceparent", value)])), None, "{value}");
        }
        assert_eq!(
            traceparent(&headers(&[("traceparent", VALID), ("traceparent", VALID)])),
            None
        );
    }

    #[test]
    fn tracestate_is_kept_within_its_limits_and_only_with_a_traceparent() {
        let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
        assert_eq!(
            tracestate(&headers(&[("traceparent", VALID), ("tracestate", state)])).as_deref(),
            Some(state)
        );
        assert_eq!(
            tracestate(&headers(&[
                ("traceparent", VALID),
                ("tracestate", "a=1"),
                ("tracestate", "b=2")
            ]))
            .as_deref(),
            Some("a=1,b=2")
        );
        assert_eq!(tracestate(&headers(&[("tracestate", state)])), None);
        let too_long = format!("a={}", "x".repeat(600));
        let too_many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        for value in [too_long.as_str(), too_many.as_str(), "no-equals-sign", "=v", "k="] {
            assert_eq!(
                tracestate(&headers(&[("traceparent", VALID), ("tracestate", value)])),
                None,
                "{value}"
            );
        }
    }
}
