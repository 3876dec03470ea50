//! Portkey's wire format around the body: the headers of a call, the
//! provider slugs they carry, what a client's routing fields must be to
//! travel in them, and the headers of Portkey's answer that the gateway
//! passes on to its client.

use gatewayz_domain::{
    ChatError, Credentials, KeyError, PortkeyRouting, ProviderCall, RequestContext, Route, RoutingFieldRules,
    RoutingFields, UpstreamAuth, UpstreamProvider, ValidationError,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;

use crate::http::secrets::{bearer, sensitive};

const API_KEY: HeaderName = HeaderName::from_static("x-portkey-api-key");
const PROVIDER: HeaderName = HeaderName::from_static("x-portkey-provider");
const VIRTUAL_KEY: HeaderName = HeaderName::from_static("x-portkey-virtual-key");
const CONFIG: HeaderName = HeaderName::from_static("x-portkey-config");
const TRACE_ID: HeaderName = HeaderName::from_static("x-portkey-trace-id");
const CUSTOM_HOST: HeaderName = HeaderName::from_static("x-portkey-custom-host");
const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-portkey-request-timeout");

/// The slug Portkey expects in `x-portkey-provider`: the gateway's name of
/// the upstream, except that Portkey has no `google-ai`: Gemini is `google`.
pub(crate) const fn slug(upstream: UpstreamProvider) -> &'static str {
    match upstream {
        UpstreamProvider::GoogleAi => "google",
        other => other.name(),
    }
}

/// The longest config sent: it travels as one header value.
pub const MAX_CONFIG_BYTES: usize = 8 * 1024;

/// Whether `config` can travel in `x-portkey-config`: at most
/// [`MAX_CONFIG_BYTES`] of printable ASCII.
///
/// # Errors
/// A [`ValidationError`] on `param`, with code `invalid_portkey_config`.
pub(crate) fn check_config(param: &str, config: &PortkeyRouting) -> Result<(), ValidationError> {
    let text = config.as_str();
    let invalid = |message: String| ValidationError::new(param, message).with_code("invalid_portkey_config");
    if text.len() > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "`{param}` is {} bytes as JSON; at most {MAX_CONFIG_BYTES} are accepted",
            text.len()
        )));
    }
    if !text.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
        return Err(invalid(format!(
            "`{param}` must be ASCII: it is sent as an HTTP header"
        )));
    }
    Ok(())
}

/// What a client's routing fields must be to travel in Portkey's headers:
/// a config at most [`MAX_CONFIG_BYTES`] of printable ASCII, a virtual key
/// visible ASCII.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortkeyHeaderRules;

impl RoutingFieldRules for PortkeyHeaderRules {
    fn check(&self, fields: &RoutingFields) -> Result<(), ValidationError> {
        if let Some(config) = &fields.portkey_config {
            check_config("portkey_config", config)?;
        }
        // Its text is never echoed: it is a secret.
        if fields
            .portkey_virtual_key
            .as_ref()
            .is_some_and(|key| !key.expose_secret().bytes().all(|byte| byte.is_ascii_graphic()))
        {
            return Err(ValidationError::new(
                "portkey_virtual_key",
                "`portkey_virtual_key` must be visible ASCII characters only",
            ));
        }
        Ok(())
    }
}

/// The headers of one call: Portkey's key always; the provider slug and
/// the provider key, or the virtual key alone; the config; the request id
/// and timeout hints. Nothing else of the client's request is passed on
/// (the trace headers are added by the call: see [`crate::http`]).
pub(super) fn of_call(
    call: &ProviderCall,
    custom_host: Option<&HeaderValue>,
    timeout_ms: u128,
) -> Result<HeaderMap, ChatError> {
    of(
        &call.credentials,
        &call.route,
        &call.context,
        custom_host,
        timeout_ms,
    )
}

/// The headers of a call made with `credentials` on `route` (see
/// [`of_call`]), and the client's headers the API passes on.
pub(super) fn of(
    credentials: &Credentials,
    route: &Route,
    context: &RequestContext,
    custom_host: Option<&HeaderValue>,
    timeout_ms: u128,
) -> Result<HeaderMap, ChatError> {
    let (Credentials::Portkey { api_key, upstream }, Route::Portkey { provider, config, .. }) =
        (credentials, route)
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
    if let Ok(trace_id) = HeaderValue::from_str(&context.request_id) {
        headers.insert(TRACE_ID, trace_id);
    }
    for (name, value) in &context.passed_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            // Each of a repeated header (`anthropic-beta`) is passed on.
            headers.append(name, value);
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

/// Notes in `context`'s record the answer headers passed on to the client.
pub(super) fn note_passed_on_to(context: &RequestContext, headers: &HeaderMap) {
    let found: Vec<(&'static str, String)> = PASSED_ON
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name, value.to_owned()))
        })
        .collect();
    if !found.is_empty() {
        context.record.update(|facts| facts.passed_on = found);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_config(value: serde_json::Value) -> RoutingFields {
        RoutingFields {
            portkey_config: Some(PortkeyRouting::from_value("portkey_config", value).unwrap()),
            ..RoutingFields::default()
        }
    }

    #[test]
    fn a_config_that_cannot_be_a_header_value_is_refused_with_the_field_named() {
        let long = json!({"x": "a".repeat(MAX_CONFIG_BYTES)});
        for (value, needle) in [(json!({"name": "café"}), "must be ASCII"), (long, "at most")] {
            let error = PortkeyHeaderRules.check(&with_config(value.clone())).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("portkey_config"));
            assert_eq!(error.code.as_deref(), Some("invalid_portkey_config"));
            assert!(error.message.contains(needle), "{value}: {}", error.message);
        }
    }

    #[test]
    fn a_virtual_key_that_is_not_visible_ascii_is_refused_without_its_text() {
        for key in ["vk with spaces", "vk-café", "vk\r\nx-injected: 1"] {
            let fields = RoutingFields {
                portkey_virtual_key: Some(key.into()),
                ..RoutingFields::default()
            };
            let error = PortkeyHeaderRules.check(&fields).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("portkey_virtual_key"));
            assert!(!error.message.contains(key), "{}", error.message);
        }
    }

    #[test]
    fn configs_and_keys_that_fit_in_a_header_pass() {
        let mut fields = with_config(json!({"retry": {"attempts": 2}, "note": "a b"}));
        fields.portkey_virtual_key = Some("vk-openai-1".into());
        assert_eq!(PortkeyHeaderRules.check(&fields), Ok(()));
        assert_eq!(
            PortkeyHeaderRules.check(&with_config(json!("pc-abc-123"))),
            Ok(())
        );
    }

    #[test]
    fn google_ai_goes_as_portkeys_google_slug_and_the_others_by_their_name() {
        assert_eq!(slug(UpstreamProvider::GoogleAi), "google");
        for upstream in UpstreamProvider::ALL
            .into_iter()
            .filter(|upstream| *upstream != UpstreamProvider::GoogleAi)
        {
            assert_eq!(slug(upstream), upstream.name());
        }
    }
}
