//! Where a request goes: the routing fields a client sends, and the typed
//! [`Route`] the gateway derives from them.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use crate::error::ValidationError;
use crate::model::ChatRequest;
use crate::portkey_routing::PortkeyRouting;
use crate::provider::{ProviderKind, UpstreamProvider};
use crate::text::{json_type, quote};

/// The routing fields of a request body. They steer the gateway and are never
/// forwarded upstream.
#[derive(Debug, Default)]
pub struct RoutingFields {
    pub provider: Option<String>,
    pub portkey_provider: Option<String>,
    /// A Portkey virtual key id. Treated as a secret: never logged.
    pub portkey_virtual_key: Option<SecretString>,
    /// A Portkey config: routing that Portkey applies itself.
    pub portkey_config: Option<PortkeyRouting>,
}

impl RoutingFields {
    /// Reads the routing fields of a request (the body the upstream is sent
    /// leaves them out: see [`ChatRequest::upstream_body`]).
    ///
    /// What an adapter can send of them is the adapter's to check: see
    /// [`RoutingFieldRules`](crate::ports::RoutingFieldRules).
    ///
    /// # Errors
    /// A [`ValidationError`] when a routing field is present but not a string,
    /// or `portkey_config` is not a Portkey config.
    pub fn of(request: &ChatRequest) -> Result<Self, ValidationError> {
        // Only a request that has one pays for reading it.
        let value = |name: &str| {
            request
                .member(name)
                .map(|text| serde_json::from_slice::<Value>(text).unwrap_or(Value::Null))
        };
        let take = |name: &str| match value(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(ValidationError::new(
                name,
                format!("`{name}` must be a string, got {}", json_type(&other)),
            )),
        };
        let provider = take("provider")?;
        let portkey_provider = take("portkey_provider")?;
        let portkey_virtual_key = take("portkey_virtual_key")?;
        let portkey_config = match value("portkey_config") {
            None | Some(Value::Null) => None,
            Some(value) => Some(PortkeyRouting::from_value("portkey_config", value)?),
        };
        Ok(Self {
            provider,
            portkey_provider,
            portkey_virtual_key: portkey_virtual_key.map(SecretString::from),
            portkey_config,
        })
    }
}

/// What a client may set on whichever Portkey route its request takes.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub virtual_key: Option<SecretString>,
    pub config: Option<PortkeyRouting>,
}

/// A resolved destination for one request.
#[derive(Debug, Clone)]
pub enum Route {
    Demo,
    Portkey {
        provider: UpstreamProvider,
        /// Overrides the provider key from the environment when present.
        virtual_key: Option<SecretString>,
        /// Routing that Portkey applies itself.
        config: Option<PortkeyRouting>,
    },
    /// An OpenAI-compatible server called without Portkey, named by the
    /// catalog (`[[upstreams]]`, or a target's own `base_url`): where it is
    /// and how to authenticate are its adapter's to know.
    Direct {
        upstream: Arc<str>,
    },
}

impl Route {
    /// Derives the route from a request's routing fields.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the offending field when `provider` is
    /// missing or unknown, or when `portkey_provider` is missing or unknown
    /// for the Portkey provider.
    pub fn from_fields(fields: RoutingFields) -> Result<Self, ValidationError> {
        // Only error messages list the providers: no work on the happy path.
        // A direct upstream is named by `@<upstream>/<model>`, not by a field.
        let supported = || {
            ProviderKind::ALL
                .into_iter()
                .filter(|kind| *kind != ProviderKind::Direct)
                .map(ProviderKind::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(name) = fields.provider.as_deref() else {
            return Err(ValidationError::new(
                "provider",
                format!("`provider` is required. Supported providers: {}.", supported()),
            )
            .with_code("missing_provider"));
        };
        match ProviderKind::parse(name) {
            Some(ProviderKind::Demo) => Ok(Self::Demo),
            Some(ProviderKind::Direct) => Err(ValidationError::new(
                "provider",
                "A direct upstream is chosen by its catalog name: send `model` as `@<upstream>/<model>`",
            )
            .with_code("unsupported_provider")),
            Some(ProviderKind::Portkey) => {
                let provider = Self::parse_portkey_provider(fields.portkey_provider.as_deref())?;
                Ok(Self::Portkey {
                    provider,
                    virtual_key: fields.portkey_virtual_key,
                    config: fields.portkey_config,
                })
            }
            None => Err(ValidationError::new(
                "provider",
                format!(
                    "Unsupported provider `{}`. Supported providers: {}.",
                    quote(name),
                    supported()
                ),
            )
            .with_code("unsupported_provider")),
        }
    }

    fn parse_portkey_provider(name: Option<&str>) -> Result<UpstreamProvider, ValidationError> {
        let Some(name) = name else {
            return Err(ValidationError::new(
                "portkey_provider",
                format!(
                    "`portkey_provider` is required when `provider` is `portkey`. Supported: {}.",
                    UpstreamProvider::supported()
                ),
            )
            .with_code("missing_provider"));
        };
        UpstreamProvider::parse(name).ok_or_else(|| {
            ValidationError::new(
                "portkey_provider",
                format!(
                    "Unsupported portkey_provider `{}`. Supported: {}.",
                    quote(name),
                    UpstreamProvider::supported()
                ),
            )
            .with_code("unsupported_provider")
        })
    }

    /// The adapter that serves this route.
    pub const fn kind(&self) -> ProviderKind {
        match self {
            Self::Demo => ProviderKind::Demo,
            Self::Portkey { .. } => ProviderKind::Portkey,
            Self::Direct { .. } => ProviderKind::Direct,
        }
    }

    /// The Portkey config sent with this route, if any.
    pub const fn portkey_config(&self) -> Option<&PortkeyRouting> {
        match self {
            Self::Portkey { config, .. } => config.as_ref(),
            Self::Demo | Self::Direct { .. } => None,
        }
    }

    /// The direct upstream's catalog name, if this is a direct route.
    pub const fn direct_upstream(&self) -> Option<&Arc<str>> {
        match self {
            Self::Direct { upstream } => Some(upstream),
            Self::Demo | Self::Portkey { .. } => None,
        }
    }

    /// Who answers behind the adapter: the Portkey provider's name, or the
    /// direct upstream's; `None` for the demo.
    pub fn upstream_name(&self) -> Option<&str> {
        match self {
            Self::Demo => None,
            Self::Portkey { provider, .. } => Some(provider.name()),
            Self::Direct { upstream } => Some(upstream),
        }
    }

    /// This route with a client's virtual key and config, which win over the
    /// route's own. A demo route takes neither.
    #[must_use]
    pub fn overridden(self, overrides: &Overrides) -> Self {
        match self {
            Self::Portkey {
                provider,
                virtual_key,
                config,
            } => Self::Portkey {
                provider,
                virtual_key: overrides.virtual_key.clone().or(virtual_key),
                config: overrides.config.clone().or(config),
            },
            Self::Demo | Self::Direct { .. } => self,
        }
    }

    /// The `max_tokens` to send when the client set no output limit: the
    /// catalog model's own limit, or `default` for an upstream that requires
    /// one (see [`UpstreamProvider::requires_max_tokens`]).
    pub(crate) fn output_limit(
        &self,
        request: &ChatRequest,
        model_limit: Option<u32>,
        default: u32,
    ) -> Option<i64> {
        if request.output_token_limit().is_some() {
            return None;
        }
        let required = self
            .portkey_provider()
            .is_some_and(UpstreamProvider::requires_max_tokens);
        model_limit.or(required.then_some(default)).map(i64::from)
    }

    /// The upstream provider behind Portkey, if this is a Portkey route.
    pub const fn portkey_provider(&self) -> Option<UpstreamProvider> {
        match self {
            Self::Demo | Self::Direct { .. } => None,
            Self::Portkey { provider, .. } => Some(*provider),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(provider: Option<&str>, portkey_provider: Option<&str>) -> RoutingFields {
        RoutingFields {
            provider: provider.map(str::to_owned),
            portkey_provider: portkey_provider.map(str::to_owned),
            portkey_virtual_key: None,
            portkey_config: None,
        }
    }

    fn request(body: serde_json::Value) -> ChatRequest {
        ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap()
    }

    #[test]
    fn routing_fields_are_read_and_left_out_of_the_upstream_body() {
        let request = request(serde_json::json!({
            "model": "m", "messages": [],
            "provider": "portkey", "portkey_provider": "openai", "portkey_virtual_key": "vk", "seed_field": 1,
            "portkey_config": {"retry": {"attempts": 2}}
        }));
        let fields = RoutingFields::of(&request).unwrap();
        assert_eq!(
            fields.portkey_config.as_ref().map(PortkeyRouting::as_str),
            Some(r#"{"retry":{"attempts":2}}"#)
        );
        assert_eq!(fields.provider.as_deref(), Some("portkey"));
        assert_eq!(fields.portkey_provider.as_deref(), Some("openai"));
        assert!(fields.portkey_virtual_key.is_some());
        let upstream = request.upstream_body(crate::model::UpstreamEdits {
            model: "m",
            ..Default::default()
        });
        assert_eq!(&upstream[..], br#"{"messages":[],"model":"m","seed_field":1}"#);
    }

    #[test]
    fn a_routing_field_of_the_wrong_type_is_rejected() {
        let request = request(serde_json::json!({"model": "m", "messages": [], "provider": 7}));
        let err = RoutingFields::of(&request).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("provider"));
        assert_eq!(err.message, "`provider` must be a string, got a number");
    }

    #[test]
    fn google_ai_and_google_both_route_to_google_ai() {
        for name in ["google-ai", "google"] {
            let route = Route::from_fields(fields(Some("portkey"), Some(name))).unwrap();
            assert_eq!(route.portkey_provider(), Some(UpstreamProvider::GoogleAi));
        }
    }

    #[test]
    fn routing_errors_name_the_field_and_the_supported_values() {
        let cases = [
            (fields(None, None), "provider", "required"),
            (fields(Some("acme"), None), "provider", "demo, portkey"),
            (fields(Some("portkey"), None), "portkey_provider", "required"),
            (
                fields(Some("portkey"), Some("acme")),
                "portkey_provider",
                "openai, anthropic",
            ),
        ];
        for (input, param, needle) in cases {
            let err = Route::from_fields(input).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param));
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }
}
