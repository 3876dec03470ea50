//! Portkey's wire format around the body: the headers of a call, the
//! provider slugs they carry, and the headers of Portkey's answer that the
//! gateway passes on to its client.

use gatewayz_domain::{
    ChatError, Credentials, KeyError, ProviderCall, Route, Upstream, UpstreamAuth, ValidationError,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

const API_KEY: HeaderName = HeaderName::from_static("x-portkey-api-key");
const PROVIDER: HeaderName = HeaderName::from_static("x-portkey-provider");
const VIRTUAL_KEY: HeaderName = HeaderName::from_static("x-portkey-virtual-key");
const CONFIG: HeaderName = HeaderName::from_static("x-portkey-config");
const TRACE_ID: HeaderName = HeaderName::from_static("x-portkey-trace-id");
const CUSTOM_HOST: HeaderName = HeaderName::from_static("x-portkey-custom-host");
const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-portkey-request-timeout");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The slug Portkey expects in `x-portkey-provider`: the gateway's name of
/// the upstream, except that Portkey has no `google-ai`: Gemini is `google`.
pub(crate) const fn slug(upstream: Upstream) -> &'static str {
    match upstream {
        Upstream::GoogleAi => "google",
        other => other.name(),
    }
}

/// The headers of one call: Portkey's key always; the provider slug and
/// the provider key, or the virtual key alone; the config; trace and timeout
/// hints. Nothing else of the client's request is passed on.
pub(super) fn of_call(
    call: &ProviderCall,
    custom_host: Option<&HeaderValue>,
    timeout_ms: u128,
) -> Result<HeaderMap, ChatError> {
    let (Credentials::Portkey { api_key, upstream }, Route::Portkey { provider, config, .. }) =
        (&call.credentials, &call.route)
    else {
        return Err(ChatError::Keys(KeyError::PortkeyKeyMissing));
    };
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(API_KEY, sensitive(api_key.expose_secret())?);
    match upstream {
        UpstreamAuth::ProviderKey(key) => {
            headers.insert(PROVIDER, HeaderValue::from_static(slug(*provider)));
            headers.insert(AUTHORIZATION, bearer(key)?);
        }
        UpstreamAuth::VirtualKey(key) => {
            headers.insert(VIRTUAL_KEY, sensitive(key.expose_secret())?);
        }
    }
    if let Some(config) = config {
        // A config may carry provider keys: treated as a secret.
        headers.insert(CONFIG, sensitive(config.as_str())?);
    }
    if let Ok(trace_id) = HeaderValue::from_str(&call.context.request_id) {
        headers.insert(TRACE_ID, trace_id);
    }
    if let Some(traceparent) = call
        .context
        .traceparent
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        headers.insert(TRACEPARENT, traceparent);
        if let Some(tracestate) = call
            .context
            .tracestate
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            headers.insert(TRACESTATE, tracestate);
        }
    }
    if let Some(custom_host) = custom_host {
        headers.insert(CUSTOM_HOST, custom_host.clone());
    }
    headers.insert(
        REQUEST_TIMEOUT,
        HeaderValue::from(u64::try_from(timeout_ms).unwrap_or(u64::MAX)),
    );
    Ok(headers)
}

/// Portkey's answer headers that the gateway passes on to its client.
const PASSED_ON: [&str; 3] = [
    "x-portkey-trace-id",
    "x-portkey-cache-status",
    "x-portkey-retry-attempt-count",
];

/// Notes in the call's record the answer headers passed on to the client.
pub(super) fn note_passed_on(call: &ProviderCall, headers: &HeaderMap) {
    let found: Vec<(&'static str, String)> = PASSED_ON
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name, value.to_owned()))
        })
        .collect();
    if !found.is_empty() {
        call.context.record.update(|facts| facts.upstream_headers = found);
    }
}

/// A header value marked sensitive, so that no HTTP library prints it.
fn sensitive(value: &str) -> Result<HeaderValue, ChatError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ValidationError::body("a credential contains characters that are not allowed in an HTTP header")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn bearer(key: &SecretString) -> Result<HeaderValue, ChatError> {
    sensitive(&format!("Bearer {}", key.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_ai_goes_as_portkeys_google_slug_and_the_others_by_their_name() {
        assert_eq!(slug(Upstream::GoogleAi), "google");
        for upstream in Upstream::ALL
            .into_iter()
            .filter(|upstream| *upstream != Upstream::GoogleAi)
        {
            assert_eq!(slug(upstream), upstream.name());
        }
    }
}
