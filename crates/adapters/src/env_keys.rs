//! Portkey and provider keys, read once from the environment at start.

use gatewayz_domain::{Credentials, KeyError, KeyResolver, Route, UpstreamAuth, UpstreamProvider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::env::EnvSettings;

/// The Portkey and provider keys, each from its environment variable (an
/// empty variable counts as unset). Only keys that can be sent are held:
/// reading refuses the others (see [`UnsendableKey`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "KeyVars")]
pub struct KeySettings {
    vars: KeyVars,
}

impl EnvSettings for KeySettings {
    const PREFIX: &'static str = "";
}

/// The environment variables holding keys, as envy reads them.
#[derive(Debug, Clone, Default, Deserialize)]
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

    fn portkey_key(&self) -> Option<&SecretString> {
        self.portkey_api_key
            .as_ref()
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

/// A key variable holding characters that cannot be sent in an HTTP header;
/// reading the keys fails with it, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0} contains characters that cannot be sent in an HTTP header (visible ASCII only)")]
pub struct UnsendableKey(&'static str);

/// Whether a key can be sent as a header value: visible ASCII, no spaces.
pub fn is_header_safe(key: &str) -> bool {
    key.bytes().all(|byte| byte.is_ascii_graphic())
}

impl TryFrom<KeyVars> for KeySettings {
    type Error = UnsendableKey;

    /// Refuses keys that could never be sent: every key ends up in an HTTP
    /// header, so it must be visible ASCII.
    fn try_from(vars: KeyVars) -> Result<Self, Self::Error> {
        let portkey = std::iter::once(("PORTKEY_API_KEY", vars.portkey_key()));
        let providers = UpstreamProvider::ALL
            .into_iter()
            .map(|provider| (provider_key_var(provider), vars.provider_key(provider)));
        if let Some((name, _)) = portkey
            .chain(providers)
            .find(|(_, key)| key.is_some_and(|key| !is_header_safe(key.expose_secret())))
        {
            return Err(UnsendableKey(name));
        }
        Ok(Self { vars })
    }
}

impl KeySettings {
    /// Whether a Portkey key is configured.
    pub fn has_portkey_key(&self) -> bool {
        self.vars.portkey_key().is_some()
    }
}

/// A [`KeyResolver`] over keys read once from the environment.
#[derive(Debug, Default)]
pub struct EnvKeyResolver {
    keys: KeySettings,
}

impl EnvKeyResolver {
    pub fn new(keys: KeySettings) -> Self {
        Self { keys }
    }

    /// Reads the keys from `(name, value)` pairs, as tests and embedders do.
    ///
    /// # Errors
    /// When a key variable holds characters that cannot be sent in an HTTP
    /// header (the message names it).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Self, envy::Error> {
        KeySettings::from_vars(vars).map(Self::new)
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
        let keys = &self.keys.vars;
        let api_key = keys.portkey_key().ok_or(KeyError::PortkeyKeyMissing)?.clone();
        let upstream = match virtual_key.as_ref().filter(|key| !key.expose_secret().is_empty()) {
            Some(virtual_key) => UpstreamAuth::VirtualKey(virtual_key.clone()),
            None => UpstreamAuth::ProviderKey(
                keys.provider_key(*provider)
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
    fn the_variables_are_the_documented_ones() {
        let mut expected = vec!["PORTKEY_API_KEY"];
        expected.extend(UpstreamProvider::ALL.map(provider_key_var));
        let mut variables = KeySettings::variables();
        variables.sort();
        expected.sort_unstable();
        assert_eq!(variables, expected);
    }

    #[test]
    fn debug_output_prints_no_key() {
        let mut vars = vec![("PORTKEY_API_KEY", "pk-secret-value")];
        vars.extend(UpstreamProvider::ALL.map(|provider| (provider_key_var(provider), "sk-secret-value")));
        let printed = format!("{:?}", resolver(&vars));
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
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
