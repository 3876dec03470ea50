//! Settings of the Portkey adapter, read once at start.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::env::EnvSettings;
use crate::http::Timeouts;

pub const DEFAULT_BASE_URL: &str = "https://api.portkey.ai/v1";

/// `PORTKEY_*` and `GATEWAYZ_UPSTREAM_*` variables.
#[derive(Debug, Clone, Deserialize)]
pub struct PortkeySettings {
    /// `PORTKEY_BASE_URL`: where Portkey's API lives.
    #[serde(default = "default_base_url", deserialize_with = "base_url")]
    pub portkey_base_url: Url,
    /// `PORTKEY_CUSTOM_HOST`: an OpenAI-compatible base URL Portkey should
    /// call instead of the provider's own (sent as `x-portkey-custom-host`).
    #[serde(default)]
    pub portkey_custom_host: Option<String>,
    /// `GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS`: to open a connection to Portkey.
    #[serde(default = "connect_ms", deserialize_with = "connect_timeout")]
    pub gatewayz_upstream_connect_timeout_ms: u64,
    /// `GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS`: for a whole non-streaming call.
    #[serde(default = "request_ms", deserialize_with = "request_timeout")]
    pub gatewayz_upstream_request_timeout_ms: u64,
    /// `GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS`: until a stream's first chunk.
    #[serde(default = "first_byte_ms", deserialize_with = "first_byte_timeout")]
    pub gatewayz_upstream_first_byte_timeout_ms: u64,
    /// `GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS`: the longest gap between two chunks.
    #[serde(default = "idle_ms", deserialize_with = "idle_timeout")]
    pub gatewayz_upstream_idle_timeout_ms: u64,
}

/// The fields carry their variables' whole names: they have two prefixes.
impl EnvSettings for PortkeySettings {
    const PREFIX: &'static str = "";
}

impl PortkeySettings {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.gatewayz_upstream_connect_timeout_ms),
            request: Duration::from_millis(self.gatewayz_upstream_request_timeout_ms),
            first_byte: Duration::from_millis(self.gatewayz_upstream_first_byte_timeout_ms),
            idle: Duration::from_millis(self.gatewayz_upstream_idle_timeout_ms),
        }
    }
}

impl Default for PortkeySettings {
    fn default() -> Self {
        Self {
            portkey_base_url: default_base_url(),
            portkey_custom_host: None,
            gatewayz_upstream_connect_timeout_ms: connect_ms(),
            gatewayz_upstream_request_timeout_ms: request_ms(),
            gatewayz_upstream_first_byte_timeout_ms: first_byte_ms(),
            gatewayz_upstream_idle_timeout_ms: idle_ms(),
        }
    }
}

#[allow(clippy::expect_used)] // A constant that parses; covered by a test.
fn default_base_url() -> Url {
    Url::parse(DEFAULT_BASE_URL).expect("the default base URL parses")
}

const fn connect_ms() -> u64 {
    5_000
}

const fn request_ms() -> u64 {
    300_000
}

const fn first_byte_ms() -> u64 {
    60_000
}

const fn idle_ms() -> u64 {
    60_000
}

crate::var_parsers! {
    base_url: Url = "PORTKEY_BASE_URL";
    connect_timeout: u64 = "GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS";
    request_timeout: u64 = "GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS";
    first_byte_timeout: u64 = "GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS";
    idle_timeout: u64 = "GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS";
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
    fn defaults_point_at_hosted_portkey_with_the_documented_timeouts() {
        let settings = PortkeySettings::from_vars(vars(&[])).unwrap();
        assert_eq!(settings.portkey_base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(settings.portkey_custom_host, None);
        assert_eq!(
            settings.timeouts(),
            Timeouts {
                connect: Duration::from_secs(5),
                request: Duration::from_secs(300),
                first_byte: Duration::from_secs(60),
                idle: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (name, value) in [
            ("PORTKEY_BASE_URL", "not a url"),
            ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "soon"),
        ] {
            let err = PortkeySettings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
