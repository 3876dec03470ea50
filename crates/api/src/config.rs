//! The HTTP service's settings, from the `GATEWAYZ_*` environment variables
//! (the gateway's section of [`crate::settings::Settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use gatewayz_adapters::env::EnvSettings;
use gatewayz_adapters::limits::OnStoreError;
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
    /// `GATEWAYZ_SEND_TIMEOUT_MS`: how long a client may leave bytes of its
    /// answer untaken (a stream, or a whole answer over 64 KiB); past it,
    /// the connection is closed and the answer dropped (logged as 499).
    #[serde(default = "default_send_timeout_ms", deserialize_with = "send_timeout_ms")]
    pub send_timeout_ms: u64,
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
    /// `GATEWAYZ_MEMORY_BUDGET_BYTES`: what the gateway may hold at once in
    /// the buffers of requests (bodies, whole answers, stream events); half
    /// the container's memory limit by default, 512 MiB without one.
    #[serde(default, deserialize_with = "some_memory_budget_bytes")]
    pub memory_budget_bytes: Option<usize>,
    /// `GATEWAYZ_MAX_IN_FLIGHT`: requests served at once on the public
    /// listener; the budget divided by 128 KiB by default.
    #[serde(default, deserialize_with = "some_max_in_flight")]
    pub max_in_flight: Option<usize>,
    /// `GATEWAYZ_OVERLOAD_GRACE_MS`: how long the gateway may shed load
    /// before `/readyz` says it is not ready.
    #[serde(default = "default_overload_grace_ms", deserialize_with = "overload_grace_ms")]
    pub overload_grace_ms: u64,
    /// `GATEWAYZ_REDIS_URL`: where keys' limits are counted for every
    /// replica (`redis://` or `rediss://`); unset, in this process.
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// `GATEWAYZ_REDIS_CA_FILE`: a PEM file of the CA that signed a
    /// `rediss://` server's certificate, trusted instead of the system's
    /// roots (a self-hosted Redis with a private CA).
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// `GATEWAYZ_LIMITS_ON_STORE_ERROR`: `open` (admit, counting in this
    /// process, and say so) or `closed` (503) while Redis cannot answer.
    #[serde(default, deserialize_with = "limits_on_store_error")]
    pub limits_on_store_error: OnStoreError,
    /// `GATEWAYZ_RESPONSE_TTL_SECS`: how long the gateway remembers which
    /// target made a Responses API response (30 days, as long as OpenAI
    /// keeps one), for its follow-ups and calls by id.
    #[serde(default = "default_response_ttl_secs", deserialize_with = "response_ttl_secs")]
    pub response_ttl_secs: u64,
    /// `GATEWAYZ_CACHE_REDIS_URL`: a Redis of the response cache's own
    /// (unset: the cache shares `GATEWAYZ_REDIS_URL`'s, on connections of
    /// its own, or stays in process without it).
    #[serde(default)]
    pub cache_redis_url: Option<SecretString>,
    /// `GATEWAYZ_CACHE_MAX_BYTES`: the most the in-process response cache
    /// holds; unset, 256 MiB or a quarter of the container's memory limit,
    /// whichever is less.
    #[serde(default, deserialize_with = "some_cache_max_bytes")]
    pub cache_max_bytes: Option<u64>,
    /// `GATEWAYZ_CACHE_MAX_ENTRY_BYTES`: the largest answer the response
    /// cache stores (1 MiB).
    #[serde(
        default = "default_cache_max_entry_bytes",
        deserialize_with = "cache_max_entry_bytes"
    )]
    pub cache_max_entry_bytes: usize,
    /// `GATEWAYZ_OTEL_CAPTURE_CONTENT`: record prompts and completions on
    /// the exported spans (never by default).
    #[serde(default)]
    pub otel_capture_content: bool,
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

const fn default_send_timeout_ms() -> u64 {
    30_000
}

const fn default_request_timeout_ms() -> u64 {
    600_000
}

const fn default_overload_grace_ms() -> u64 {
    5_000
}

const fn default_response_ttl_secs() -> u64 {
    gatewayz_domain::responses::DEFAULT_RESPONSE_TTL.as_secs()
}

const fn default_cache_max_entry_bytes() -> usize {
    gatewayz_domain::cache::DEFAULT_MAX_ENTRY_BYTES
}

fn some_cache_max_bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    cache_max_bytes(deserializer).map(Some)
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
    send_timeout_ms: u64 = "GATEWAYZ_SEND_TIMEOUT_MS";
    request_timeout_ms: u64 = "GATEWAYZ_REQUEST_TIMEOUT_MS";
    log_format: LogFormat = "GATEWAYZ_LOG_FORMAT";
    memory_budget_bytes: usize = "GATEWAYZ_MEMORY_BUDGET_BYTES";
    max_in_flight: usize = "GATEWAYZ_MAX_IN_FLIGHT";
    overload_grace_ms: u64 = "GATEWAYZ_OVERLOAD_GRACE_MS";
    limits_on_store_error: OnStoreError = "GATEWAYZ_LIMITS_ON_STORE_ERROR";
    response_ttl_secs: u64 = "GATEWAYZ_RESPONSE_TTL_SECS";
    cache_max_bytes: u64 = "GATEWAYZ_CACHE_MAX_BYTES";
    cache_max_entry_bytes: usize = "GATEWAYZ_CACHE_MAX_ENTRY_BYTES";
}

fn some_memory_budget_bytes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    memory_budget_bytes(deserializer).map(Some)
}

fn some_max_in_flight<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    max_in_flight(deserializer).map(Some)
}

/// The memory budget without a variable and without a container limit.
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 512 * 1024 * 1024;
/// The smallest budget accepted: less cannot hold one large request.
pub const MIN_MEMORY_BUDGET_BYTES: usize = 1024 * 1024;
/// The default in-flight limit gives each request this much of the budget:
/// twice what a request in flight costs outside the budget (its
/// connections, task and HTTP buffers: 35–60 KiB measured with
/// `deploy/measure_in_flight.py`), so that those costs take at most half as
/// much again as the budget (docs/deployment.md, "Sizing").
pub const BUDGET_PER_REQUEST_BYTES: usize = 128 * 1024;

/// The overload limits, settled at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadLimits {
    pub memory_budget_bytes: usize,
    /// Where the budget came from, for the start-up log line.
    pub budget_from: &'static str,
    pub max_in_flight: usize,
    pub grace: std::time::Duration,
}

/// Why the overload limits cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverloadSetupError {
    #[error("GATEWAYZ_MEMORY_BUDGET_BYTES must be at least {MIN_MEMORY_BUDGET_BYTES}, got {0}")]
    BudgetTooSmall(usize),
    #[error("GATEWAYZ_MAX_IN_FLIGHT must be at least 1")]
    NoRequests,
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

impl Config {
    /// The memory budget and the in-flight limit: the variables when set,
    /// else half the container's memory limit (`container_limit`, from its
    /// cgroup) or 512 MiB, and as many requests as that budget holds at
    /// [`BUDGET_PER_REQUEST_BYTES`] each.
    ///
    /// # Errors
    /// A budget under 1 MiB, or an in-flight limit of 0.
    pub fn overload_limits(
        &self,
        container_limit: Option<u64>,
    ) -> Result<OverloadLimits, OverloadSetupError> {
        let (memory_budget_bytes, budget_from) = match (self.memory_budget_bytes, container_limit) {
            (Some(bytes), _) => (bytes, "GATEWAYZ_MEMORY_BUDGET_BYTES"),
            (None, Some(limit)) => (
                usize::try_from(limit / 2).unwrap_or(usize::MAX),
                "half the container's memory limit",
            ),
            (None, None) => (
                DEFAULT_MEMORY_BUDGET_BYTES,
                "the default (no container memory limit)",
            ),
        };
        if memory_budget_bytes < MIN_MEMORY_BUDGET_BYTES {
            return Err(OverloadSetupError::BudgetTooSmall(memory_budget_bytes));
        }
        let max_in_flight = self
            .max_in_flight
            .unwrap_or(memory_budget_bytes / BUDGET_PER_REQUEST_BYTES);
        if max_in_flight == 0 {
            return Err(OverloadSetupError::NoRequests);
        }
        Ok(OverloadLimits {
            memory_budget_bytes,
            budget_from,
            max_in_flight,
            grace: std::time::Duration::from_millis(self.overload_grace_ms),
        })
    }
}

impl Config {
    /// The most the in-process response cache holds: the variable when
    /// set, else 256 MiB or a quarter of the container's memory limit
    /// (`container_limit`), whichever is less, so that the cache and the
    /// memory budget (half the limit) leave room for the rest.
    pub fn cache_max_bytes(&self, container_limit: Option<u64>) -> u64 {
        self.cache_max_bytes.unwrap_or_else(|| {
            container_limit.map_or(gatewayz_domain::cache::DEFAULT_MAX_BYTES, |limit| {
                (limit / 4).min(gatewayz_domain::cache::DEFAULT_MAX_BYTES)
            })
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
        assert_eq!(config.send_timeout_ms, 30_000);
        assert_eq!(config.request_timeout_ms, 600_000);
        assert!(config.api_keys.is_none() && config.api_keys_file.is_none());
        assert_eq!(config.overload_grace_ms, 5_000);
    }

    #[test]
    fn the_budget_is_half_the_container_limit_and_sizes_the_in_flight_limit() {
        let config = Config::from_vars(vars(&[])).unwrap();
        let pod = config.overload_limits(Some(256 * 1024 * 1024)).unwrap();
        assert_eq!(pod.memory_budget_bytes, 128 * 1024 * 1024);
        assert_eq!(pod.max_in_flight, 1024);
        let bare = config.overload_limits(None).unwrap();
        assert_eq!(bare.memory_budget_bytes, DEFAULT_MEMORY_BUDGET_BYTES);
        assert_eq!(bare.max_in_flight, 4096);
        let set = Config::from_vars(vars(&[
            ("GATEWAYZ_MEMORY_BUDGET_BYTES", "67108864"),
            ("GATEWAYZ_MAX_IN_FLIGHT", "50"),
            ("GATEWAYZ_OVERLOAD_GRACE_MS", "250"),
        ]))
        .unwrap()
        .overload_limits(Some(1 << 30))
        .unwrap();
        assert_eq!(
            (set.memory_budget_bytes, set.max_in_flight, set.grace),
            (64 * 1024 * 1024, 50, std::time::Duration::from_millis(250))
        );
    }

    #[test]
    fn a_budget_too_small_or_no_request_in_flight_stops_the_start() {
        for (name, value) in [
            ("GATEWAYZ_MEMORY_BUDGET_BYTES", "1000"),
            ("GATEWAYZ_MAX_IN_FLIGHT", "0"),
        ] {
            let error = Config::from_vars(vars(&[(name, value)]))
                .unwrap()
                .overload_limits(None)
                .unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
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
