//! The HTTP service's settings, from the `GATEWAYZ_*` environment variables
//! (the gateway's section of [`crate::settings::Settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use gatewayz_adapters::env::EnvSettings;
use gatewayz_domain::{Route, RoutingFields, ValidationError};
use secrecy::SecretString;
use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log collectors.
    Json,
    /// Human-readable lines, for a terminal.
    #[default]
    Pretty,
}

impl FromStr for LogFormat {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err("expected `json` or `pretty`"),
        }
    }
}

/// Settings of the HTTP service (the `GATEWAYZ_` prefix is left off).
#[derive(Debug, Deserialize)]
pub struct Config {
    /// `GATEWAYZ_BIND`: the public listener's address.
    #[serde(default = "default_bind", deserialize_with = "bind")]
    pub bind: SocketAddr,
    /// `GATEWAYZ_ADMIN_BIND`: the admin listener (`/metrics`, `/healthz`,
    /// `/readyz`).
    #[serde(default = "default_admin_bind", deserialize_with = "admin_bind")]
    pub admin_bind: SocketAddr,
    /// `GATEWAYZ_API_KEYS`: comma-separated gateway keys clients must send as
    /// `Authorization: Bearer <key>`; each plain or `sha256:<hex>`.
    #[serde(default)]
    pub api_keys: Option<SecretString>,
    /// `GATEWAYZ_API_KEYS_FILE`: more keys, one a line (`#` comments), re-read
    /// when the file changes.
    #[serde(default)]
    pub api_keys_file: Option<PathBuf>,
    /// `GATEWAYZ_API_KEYS_RELOAD_MS`: how often that file is checked.
    #[serde(default = "default_reload_ms", deserialize_with = "reload_ms")]
    pub api_keys_reload_ms: u64,
    /// `GATEWAYZ_SHUTDOWN_TIMEOUT`: seconds in-flight requests and streams
    /// get to finish after SIGTERM or SIGINT.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "shutdown_timeout")]
    pub shutdown_timeout: u64,
    /// `GATEWAYZ_MAX_BODY_BYTES`: the largest request body accepted.
    #[serde(default = "default_max_body_bytes", deserialize_with = "max_body_bytes")]
    pub max_body_bytes: usize,
    /// `GATEWAYZ_REQUEST_HEAD_TIMEOUT_MS`: how long a connection may take to
    /// send a whole request head (its first, or the next on a kept-alive
    /// connection); past it, 408 and the connection is closed.
    #[serde(
        default = "default_request_head_timeout_ms",
        deserialize_with = "request_head_timeout_ms"
    )]
    pub request_head_timeout_ms: u64,
    /// `GATEWAYZ_BODY_TIMEOUT_MS`: how long a client may take to send its
    /// request body once its headers are in; past it, 408 and the
    /// connection is closed.
    #[serde(default = "default_body_timeout_ms", deserialize_with = "body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// `GATEWAYZ_REQUEST_TIMEOUT_MS`: how long a request routed directly (not
    /// through a catalog model, whose `deadline_ms` applies instead) may wait
    /// for its answer or its stream's first chunk, over every attempt.
    #[serde(
        default = "default_request_timeout_ms",
        deserialize_with = "request_timeout_ms"
    )]
    pub request_timeout_ms: u64,
    /// `GATEWAYZ_DEFAULT_MAX_TOKENS`: the output token limit sent to
    /// providers that require one (Anthropic) when the client set none.
    #[serde(default = "default_max_tokens", deserialize_with = "max_tokens")]
    pub default_max_tokens: u32,
    /// `GATEWAYZ_CATALOG`: the model catalog file; the built-in one without it.
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// `GATEWAYZ_DEFAULT_PROVIDER`: where a model that nothing else routes
    /// goes (`portkey` or `demo`); unset, such a model is a 404.
    #[serde(default)]
    pub default_provider: Option<String>,
    /// `GATEWAYZ_DEFAULT_PORTKEY_PROVIDER`: the upstream of that default,
    /// when it is `portkey`.
    #[serde(default)]
    pub default_portkey_provider: Option<String>,
    /// `GATEWAYZ_LOG_FORMAT`: `json` or `pretty`.
    #[serde(default, deserialize_with = "log_format")]
    pub log_format: LogFormat,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

const fn default_reload_ms() -> u64 {
    2_000
}

const fn default_shutdown_timeout() -> u64 {
    30
}

const fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

const fn default_request_head_timeout_ms() -> u64 {
    5_000
}

const fn default_body_timeout_ms() -> u64 {
    10_000
}

const fn default_request_timeout_ms() -> u64 {
    600_000
}

const fn default_max_tokens() -> u32 {
    gatewayz_domain::service::DEFAULT_MAX_TOKENS
}

gatewayz_adapters::var_parsers! {
    max_tokens: u32 = "GATEWAYZ_DEFAULT_MAX_TOKENS";
    bind: SocketAddr = "GATEWAYZ_BIND";
    admin_bind: SocketAddr = "GATEWAYZ_ADMIN_BIND";
    reload_ms: u64 = "GATEWAYZ_API_KEYS_RELOAD_MS";
    shutdown_timeout: u64 = "GATEWAYZ_SHUTDOWN_TIMEOUT";
    max_body_bytes: usize = "GATEWAYZ_MAX_BODY_BYTES";
    request_head_timeout_ms: u64 = "GATEWAYZ_REQUEST_HEAD_TIMEOUT_MS";
    body_timeout_ms: u64 = "GATEWAYZ_BODY_TIMEOUT_MS";
    request_timeout_ms: u64 = "GATEWAYZ_REQUEST_TIMEOUT_MS";
    log_format: LogFormat = "GATEWAYZ_LOG_FORMAT";
}

impl Config {
    /// The route of models nothing else routes, from
    /// `GATEWAYZ_DEFAULT_PROVIDER` and `GATEWAYZ_DEFAULT_PORTKEY_PROVIDER`.
    ///
    /// # Errors
    /// When they name an unknown provider, or `portkey` without its upstream.
    pub fn default_route(&self) -> Result<Option<Route>, ValidationError> {
        let Some(provider) = self
            .default_provider
            .clone()
            .filter(|name| !name.trim().is_empty())
        else {
            return Ok(None);
        };
        let fields = RoutingFields {
            provider: Some(provider),
            portkey_provider: self.default_portkey_provider.clone(),
            ..RoutingFields::default()
        };
        Route::from_fields(fields)
            .map(Some)
            .map_err(|error| ValidationError {
                message: format!(
                    "GATEWAYZ_DEFAULT_PROVIDER / GATEWAYZ_DEFAULT_PORTKEY_PROVIDER: {}",
                    error.message
                ),
                ..error
            })
    }
}

impl EnvSettings for Config {
    const PREFIX: &'static str = "GATEWAYZ_";
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_serve_on_loopback_with_a_4_mib_body_limit() {
        let config = Config::from_vars(vars(&[("UNRELATED", "x")])).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.default_max_tokens, 4096);
        assert_eq!(config.admin_bind, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.shutdown_timeout, 30);
        assert_eq!(config.api_keys_reload_ms, 2000);
        assert_eq!(config.request_head_timeout_ms, 5_000);
        assert_eq!(config.body_timeout_ms, 10_000);
        assert_eq!(config.request_timeout_ms, 600_000);
        assert!(config.api_keys.is_none() && config.api_keys_file.is_none());
    }

    #[test]
    fn variables_override_the_defaults() {
        let config = Config::from_vars(vars(&[
            ("GATEWAYZ_BIND", "0.0.0.0:9000"),
            ("GATEWAYZ_API_KEYS", "a,b"),
            ("GATEWAYZ_MAX_BODY_BYTES", "1024"),
            ("GATEWAYZ_LOG_FORMAT", "JSON"),
            ("GATEWAYZ_DEFAULT_MAX_TOKENS", "512"),
        ]))
        .unwrap();
        assert_eq!(config.bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.api_keys.unwrap().expose_secret(), "a,b");
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.default_max_tokens, 512);
    }

    #[test]
    fn a_malformed_variable_is_an_error_naming_it() {
        let cases = [
            ("GATEWAYZ_BIND", "nowhere"),
            ("GATEWAYZ_MAX_BODY_BYTES", "lots"),
            ("GATEWAYZ_LOG_FORMAT", "xml"),
            ("GATEWAYZ_DEFAULT_MAX_TOKENS", "-1"),
        ];
        for (name, value) in cases {
            let err = Config::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_default_route_comes_from_two_variables() {
        let none = Config::from_vars(vars(&[])).unwrap().default_route().unwrap();
        assert!(none.is_none());
        let groq = Config::from_vars(vars(&[
            ("GATEWAYZ_DEFAULT_PROVIDER", "portkey"),
            ("GATEWAYZ_DEFAULT_PORTKEY_PROVIDER", "groq"),
        ]))
        .unwrap()
        .default_route()
        .unwrap();
        assert_eq!(
            groq.and_then(|route| route.portkey_provider()).map(|p| p.name()),
            Some("groq")
        );
        let err = Config::from_vars(vars(&[("GATEWAYZ_DEFAULT_PROVIDER", "portkey")]))
            .unwrap()
            .default_route()
            .unwrap_err();
        assert!(
            err.message.starts_with("GATEWAYZ_DEFAULT_PROVIDER"),
            "{}",
            err.message
        );
    }

    #[test]
    fn debug_output_redacts_the_gateway_keys() {
        let config = Config::from_vars(vars(&[("GATEWAYZ_API_KEYS", "super-secret-key")])).unwrap();
        assert!(!format!("{config:?}").contains("super-secret-key"));
    }
}
