//! Portkey and provider keys, read once from the environment at start.

use gatewayz_domain::{Credentials, KeyError, KeyResolver, Route, UpstreamAuth, UpstreamProvider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The environment variables holding keys. An empty variable counts as unset.
#[derive(Debug, Default, Deserialize)]
struct KeyVars {
    portkey_api_key: Option<SecretString>,
    provider_openai_api_key: Option<SecretString>,
    provider_anthropic_api_key: Option<SecretString>,
    deepinfra_api_key: Option<SecretString>,
    provider_google_ai_key: Option<SecretString>,
    provider_cohere_api_key: Option<SecretString>,
    provider_together_ai_key: Option<SecretString>,
    provider_perplexity_ai_api_key: Option<SecretString>,
    provider_mistral_ai_api_key: Option<SecretString>,
    provider_groq_api_key: Option<SecretString>,
}

impl KeyVars {
    fn provider_key(&self, provider: UpstreamProvider) -> Option<&SecretString> {
        match provider {
            UpstreamProvider::OpenAi => self.provider_openai_api_key.as_ref(),
            UpstreamProvider::Anthropic => self.provider_anthropic_api_key.as_ref(),
            UpstreamProvider::DeepInfra => self.deepinfra_api_key.as_ref(),
            UpstreamProvider::GoogleAi => self.provider_google_ai_key.as_ref(),
            UpstreamProvider::Cohere => self.provider_cohere_api_key.as_ref(),
            UpstreamProvider::TogetherAi => self.provider_together_ai_key.as_ref(),
            UpstreamProvider::PerplexityAi => self.provider_perplexity_ai_api_key.as_ref(),
            UpstreamProvider::MistralAi => self.provider_mistral_ai_api_key.as_ref(),
            UpstreamProvider::Groq => self.provider_groq_api_key.as_ref(),
        }
        .filter(|key| !key.expose_secret().is_empty())
    }
}

/// The environment variable that holds `provider`'s key.
pub const fn provider_key_var(provider: UpstreamProvider) -> &'static str {
    match provider {
        UpstreamProvider::OpenAi => "PROVIDER_OPENAI_API_KEY",
        UpstreamProvider::Anthropic => "PROVIDER_ANTHROPIC_API_KEY",
        UpstreamProvider::DeepInfra => "DEEPINFRA_API_KEY",
        UpstreamProvider::GoogleAi => "PROVIDER_GOOGLE_AI_KEY",
        UpstreamProvider::Cohere => "PROVIDER_COHERE_API_KEY",
        UpstreamProvider::TogetherAi => "PROVIDER_TOGETHER_AI_KEY",
        UpstreamProvider::PerplexityAi => "PROVIDER_PERPLEXITY_AI_API_KEY",
        UpstreamProvider::MistralAi => "PROVIDER_MISTRAL_AI_API_KEY",
        UpstreamProvider::Groq => "PROVIDER_GROQ_API_KEY",
    }
}

/// Why the keys in the environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error("cannot read the key variables: {0}")]
    Env(#[from] envy::Error),
    #[error("{0} contains characters that cannot be sent in an HTTP header (visible ASCII only)")]
    Unsendable(&'static str),
}

/// Whether a key can be sent as a header value: visible ASCII, no spaces.
pub fn is_header_safe(key: &str) -> bool {
    key.bytes().all(|byte| byte.is_ascii_graphic())
}

/// A [`KeyResolver`] over keys read once from the environment.
#[derive(Debug, Default)]
pub struct EnvKeyResolver {
    vars: KeyVars,
}

impl EnvKeyResolver {
    /// Reads the keys from the process environment.
    ///
    /// # Errors
    /// When a key variable is not valid Unicode, or holds characters that
    /// cannot be sent in an HTTP header.
    pub fn from_env() -> Result<Self, KeyConfigError> {
        Self::checked(envy::from_env()?)
    }

    /// Reads the keys from `(name, value)` pairs, as tests and embedders do.
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Self, KeyConfigError> {
        Self::checked(envy::from_iter(vars)?)
    }

    /// Refuses keys that could never be sent: every key ends up in an HTTP
    /// header, so it must be visible ASCII.
    fn checked(vars: KeyVars) -> Result<Self, KeyConfigError> {
        let portkey = std::iter::once(("PORTKEY_API_KEY", vars.portkey_api_key.as_ref()));
        let providers = UpstreamProvider::ALL
            .into_iter()
            .map(|provider| (provider_key_var(provider), vars.provider_key(provider)));
        if let Some((name, _)) = portkey
            .chain(providers)
            .find(|(_, key)| key.is_some_and(|key| !is_header_safe(key.expose_secret())))
        {
            return Err(KeyConfigError::Unsendable(name));
        }
        Ok(Self { vars })
    }

    /// Whether a Portkey key is configured.
    pub fn has_portkey_key(&self) -> bool {
        self.portkey_key().is_some()
    }

    fn portkey_key(&self) -> Option<&SecretString> {
        self.vars
            .portkey_api_key
            .as_ref()
            .filter(|key| !key.expose_secret().is_empty())
    }
}

impl KeyResolver for EnvKeyResolver {
    fn resolve(&self, route: &Route) -> Result<Credentials, KeyError> {
        let Route::Portkey {
            provider,
            virtual_key,
            ..
        } = route
        else {
            return Ok(Credentials::None);
        };
        let api_key = self.portkey_key().ok_or(KeyError::PortkeyKeyMissing)?.clone();
        let upstream = match virtual_key.as_ref().filter(|key| !key.expose_secret().is_empty()) {
            Some(virtual_key) => UpstreamAuth::VirtualKey(virtual_key.clone()),
            None => UpstreamAuth::ProviderKey(
                self.vars
                    .provider_key(*provider)
                    .ok_or(KeyError::ProviderKeyMissing {
                        provider: *provider,
                        env_var: provider_key_var(*provider),
                    })?
                    .clone(),
            ),
        };
        Ok(Credentials::Portkey { api_key, upstream })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(vars: &[(&str, &str)]) -> EnvKeyResolver {
        EnvKeyResolver::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))).unwrap()
    }

    fn portkey(provider: UpstreamProvider, virtual_key: Option<&str>) -> Route {
        Route::Portkey {
            provider,
            virtual_key: virtual_key.map(SecretString::from),
            config: None,
        }
    }

    fn exposed(credentials: Credentials) -> (String, String, &'static str) {
        match credentials {
            Credentials::Portkey { api_key, upstream } => match upstream {
                UpstreamAuth::ProviderKey(key) => (
                    api_key.expose_secret().to_owned(),
                    key.expose_secret().to_owned(),
                    "provider",
                ),
                UpstreamAuth::VirtualKey(key) => (
                    api_key.expose_secret().to_owned(),
                    key.expose_secret().to_owned(),
                    "virtual",
                ),
            },
            Credentials::None => panic!("expected Portkey credentials"),
        }
    }

    #[test]
    fn a_key_that_cannot_be_a_header_stops_start_up_naming_its_variable() {
        let err =
            EnvKeyResolver::from_vars([("DEEPINFRA_API_KEY".to_owned(), "abc\ndef".to_owned())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DEEPINFRA_API_KEY contains characters that cannot be sent in an HTTP header (visible ASCII only)"
        );
    }

    #[test]
    fn the_demo_route_needs_no_credentials() {
        assert!(matches!(
            resolver(&[]).resolve(&Route::Demo),
            Ok(Credentials::None)
        ));
    }

    #[test]
    fn every_provider_reads_its_own_variable() {
        for provider in UpstreamProvider::ALL {
            let var = provider_key_var(provider);
            let keys = resolver(&[("PORTKEY_API_KEY", "pk"), (var, "secret-for-this-one")]);
            let (_, key, mode) = exposed(keys.resolve(&portkey(provider, None)).unwrap());
            assert_eq!(
                (key.as_str(), mode),
                ("secret-for-this-one", "provider"),
                "{provider}"
            );
        }
    }

    #[test]
    fn a_virtual_key_overrides_the_provider_key() {
        let keys = resolver(&[("PORTKEY_API_KEY", "pk"), ("PROVIDER_OPENAI_API_KEY", "sk")]);
        let resolved = exposed(
            keys.resolve(&portkey(UpstreamProvider::OpenAi, Some("vk-1")))
                .unwrap(),
        );
        assert_eq!(resolved, ("pk".into(), "vk-1".into(), "virtual"));
    }

    #[test]
    fn a_missing_or_empty_portkey_key_is_reported_first() {
        for vars in [
            &[("PROVIDER_OPENAI_API_KEY", "sk")][..],
            &[("PORTKEY_API_KEY", ""), ("PROVIDER_OPENAI_API_KEY", "sk")],
        ] {
            let err = resolver(vars)
                .resolve(&portkey(UpstreamProvider::OpenAi, None))
                .unwrap_err();
            assert_eq!(err, KeyError::PortkeyKeyMissing);
        }
    }

    #[test]
    fn a_missing_provider_key_names_the_variable_and_the_virtual_key_alternative() {
        let err = resolver(&[("PORTKEY_API_KEY", "pk")])
            .resolve(&portkey(UpstreamProvider::GoogleAi, None))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("Provider API key not configured for google-ai"),
            "{message}"
        );
        assert!(message.contains("PROVIDER_GOOGLE_AI_KEY"), "{message}");
        assert!(message.contains("portkey_virtual_key"), "{message}");
    }
}
