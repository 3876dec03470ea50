//! Settings of the Portkey adapter, read once at start.

use reqwest::Url;
use serde::Deserialize;

use crate::env::EnvSettings;

pub const DEFAULT_BASE_URL: &str = "https://api.portkey.ai/v1";

/// `PORTKEY_*` variables (the timeouts, `GATEWAYZ_UPSTREAM_*`, are every
/// upstream's: [`crate::http::UpstreamSettings`]).
#[derive(Debug, Clone, Deserialize)]
pub struct PortkeySettings {
    /// `PORTKEY_BASE_URL`: where Portkey's API lives.
    #[serde(default = "default_base_url", deserialize_with = "base_url")]
    pub portkey_base_url: Url,
    /// `PORTKEY_CUSTOM_HOST`: an OpenAI-compatible base URL Portkey should
    /// call instead of the provider's own (sent as `x-portkey-custom-host`).
    #[serde(default)]
    pub portkey_custom_host: Option<String>,
}

impl EnvSettings for PortkeySettings {
    const PREFIX: &'static str = "";
}

impl Default for PortkeySettings {
    fn default() -> Self {
        Self {
            portkey_base_url: default_base_url(),
            portkey_custom_host: None,
        }
    }
}

#[allow(clippy::expect_used)] // A constant that parses; covered by a test.
fn default_base_url() -> Url {
    Url::parse(DEFAULT_BASE_URL).expect("the default base URL parses")
}

crate::var_parsers! {
    base_url: Url = "PORTKEY_BASE_URL";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_point_at_hosted_portkey() {
        let settings = PortkeySettings::from_vars(vars(&[])).unwrap();
        assert_eq!(settings.portkey_base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(settings.portkey_custom_host, None);
    }

    #[test]
    fn a_malformed_base_url_names_its_variable() {
        let err = PortkeySettings::from_vars(vars(&[("PORTKEY_BASE_URL", "not a url")])).unwrap_err();
        assert!(err.to_string().contains("PORTKEY_BASE_URL"), "{err}");
    }
}
