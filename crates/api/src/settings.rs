//! The gateway's settings: one tree, read once at start from the
//! environment, each section handed to what it configures. The sections are
//! the structs envy fills, owned by their users (the HTTP service's
//! [`Config`], the Portkey adapter's [`PortkeySettings`], the key resolver's
//! [`KeySettings`]); the list of variables the gateway reads is derived from
//! their fields.

use std::collections::BTreeMap;
use std::fmt;

use gatewayz_adapters::env::EnvSettings;
use gatewayz_adapters::http::UpstreamSettings;
use gatewayz_adapters::{KeySettings, PortkeySettings};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Variables read outside envy, each by the name its reader uses:
/// `RUST_LOG`, the log filter that [`crate::telemetry::init`] reads through
/// [`EnvFilter`].
const READ_ELSEWHERE: &[&str] = &[EnvFilter::DEFAULT_ENV];

/// Everything the gateway is configured with.
#[derive(Debug)]
pub struct Settings {
    /// `GATEWAYZ_*`: listeners, gateway keys, limits, the catalog, logs.
    pub gateway: Config,
    /// `PORTKEY_BASE_URL`, `PORTKEY_CUSTOM_HOST`.
    pub portkey: PortkeySettings,
    /// `GATEWAYZ_UPSTREAM_*`: every upstream's timeouts.
    pub upstreams: UpstreamSettings,
    /// `PORTKEY_API_KEY` and the provider keys.
    pub keys: KeySettings,
    /// Every variable as it was read, for the names only the catalog knows
    /// (its entries' `virtual_key_env`).
    pub environment: Environment,
}

/// Why the settings cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable is present but malformed; the message names it.
    #[error(transparent)]
    Malformed(#[from] envy::Error),
    /// A variable the gateway reads is not valid Unicode.
    #[error("{0} is not valid Unicode")]
    NotUnicode(String),
}

impl Settings {
    /// Reads the settings from the process environment. Variables that are
    /// not valid Unicode are skipped, unless the gateway reads them.
    ///
    /// # Errors
    /// As [`Self::from_vars`], and when a variable the gateway reads is not
    /// valid Unicode.
    pub fn from_env() -> Result<Self, SettingsError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => vars.push((name, value)),
                (Ok(name), Err(_)) if Self::variables().contains(&name) => {
                    return Err(SettingsError::NotUnicode(name));
                }
                _ => {}
            }
        }
        Self::from_vars(vars)
    }

    /// Reads the settings from `(name, value)` pairs, as tests do.
    ///
    /// # Errors
    /// When a variable is present but malformed (`GATEWAYZ_BIND=nonsense`,
    /// a key that cannot be sent in a header); the message names it.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Self, SettingsError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        Ok(Self {
            gateway: Config::from_vars(vars.iter().cloned())?,
            portkey: PortkeySettings::from_vars(vars.iter().cloned())?,
            upstreams: UpstreamSettings::from_vars(vars.iter().cloned())?,
            keys: KeySettings::from_vars(vars.iter().cloned())?,
            environment: Environment(
                vars.into_iter()
                    .map(|(name, value)| (name, SecretString::from(value)))
                    .collect(),
            ),
        })
    }

    /// Every variable the gateway reads, besides those a catalog names: each
    /// section's, derived from its struct, then those read outside envy.
    /// (The manifests in `deploy/` may set no other; a test holds them to it.)
    pub fn variables() -> Vec<String> {
        [
            Config::variables(),
            PortkeySettings::variables(),
            UpstreamSettings::variables(),
            KeySettings::variables(),
            READ_ELSEWHERE.iter().map(|name| (*name).to_owned()).collect(),
        ]
        .concat()
    }
}

/// The variables as read at start. Values are held as secrets: any of them
/// may be a key.
pub struct Environment(BTreeMap<String, SecretString>);

impl Environment {
    /// The value of the variable `name`, if it was set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|value| value.expose_secret().to_owned())
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("variables", &self.0.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What each section holds after reading `pairs`, as text.
    fn sections_read(pairs: &[(&str, &str)]) -> String {
        let settings = Settings::from_vars(vars(pairs)).unwrap();
        format!(
            "{:?} {:?} {:?} {:?}",
            settings.gateway, settings.portkey, settings.upstreams, settings.keys
        )
    }

    #[test]
    fn every_listed_variable_is_read() {
        let defaults = sections_read(&[]);
        let sample = |name: &str| match name {
            "GATEWAYZ_BIND" | "GATEWAYZ_ADMIN_BIND" => "127.0.0.1:7",
            "GATEWAYZ_LOG_FORMAT" => "json",
            "GATEWAYZ_OTEL_CAPTURE_CONTENT" => "true",
            "GATEWAYZ_LIMITS_ON_STORE_ERROR" => "closed",
            "GATEWAYZ_DEFAULT_PROVIDER" => "demo",
            "GATEWAYZ_DEFAULT_PORTKEY_PROVIDER" => "groq",
            "PORTKEY_BASE_URL" | "PORTKEY_CUSTOM_HOST" => "http://127.0.0.1:7/v1",
            "GATEWAYZ_API_KEYS_FILE" | "GATEWAYZ_CATALOG" | "GATEWAYZ_REDIS_CA_FILE" => "/nowhere",
            name if name.ends_with("_MS") || name.ends_with("_BYTES") || name.ends_with("_TOKENS") => "7",
            "GATEWAYZ_SHUTDOWN_TIMEOUT" | "GATEWAYZ_MAX_IN_FLIGHT" | "GATEWAYZ_RESPONSE_TTL_SECS" => "7",
            _ => "a-value",
        };
        let variables = Settings::variables();
        assert!(variables.len() > 30, "{variables:?}");
        // Those read outside envy are read where they are listed.
        for name in variables
            .iter()
            .filter(|name| !READ_ELSEWHERE.contains(&name.as_str()))
        {
            assert_ne!(
                sections_read(&[(name, sample(name))]),
                defaults,
                "{name} is not read"
            );
        }
    }

    #[test]
    fn no_variable_is_read_by_two_sections() {
        let variables = Settings::variables();
        let unique: BTreeSet<&String> = variables.iter().collect();
        assert_eq!(unique.len(), variables.len(), "{variables:?}");
    }

    #[test]
    fn the_readme_documents_every_variable_and_no_other() {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|section| section.split("\n## ").next())
            .unwrap();
        let documented: BTreeSet<&str> = table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|line| line.split(" | ").next())
            .flat_map(|names| names.split(", "))
            .map(|name| name.trim_matches('`'))
            .collect();
        let variables = Settings::variables();
        let read: BTreeSet<&str> = variables.iter().map(String::as_str).collect();
        assert_eq!(documented, read);
    }

    #[test]
    fn each_section_gets_its_variables_from_one_reading() {
        let settings = Settings::from_vars(vars(&[
            ("GATEWAYZ_BIND", "0.0.0.0:9000"),
            ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "1500"),
            ("PORTKEY_API_KEY", "pk"),
            ("VK_TEAM", "vk-team"),
        ]))
        .unwrap();
        assert_eq!(settings.gateway.bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(settings.upstreams.gatewayz_upstream_idle_timeout_ms, 1500);
        assert!(settings.keys.has_portkey_key());
        assert_eq!(settings.environment.get("VK_TEAM").as_deref(), Some("vk-team"));
        assert_eq!(settings.environment.get("VK_OTHER"), None);
    }

    #[test]
    fn a_malformed_variable_of_any_section_is_an_error_naming_it() {
        for (name, value) in [
            ("GATEWAYZ_BIND", "nowhere"),
            ("PORTKEY_BASE_URL", "not a url"),
            ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "soon"),
            ("DEEPINFRA_API_KEY", "abc\ndef"),
        ] {
            let err = Settings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn debug_output_prints_no_key() {
        let keys: Vec<String> = Settings::variables()
            .into_iter()
            .filter(|name| name.ends_with("_KEY") || name.ends_with("_KEYS"))
            .collect();
        assert!(keys.len() > 10, "{keys:?}");
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|name| (name.clone(), format!("secret-of-{name}")))
            .chain([("VK_TEAM".to_owned(), "secret-of-VK_TEAM".to_owned())])
            .collect();
        let printed = format!("{:?}", Settings::from_vars(pairs).unwrap());
        assert!(!printed.contains("secret-of"), "{printed}");
    }
}
