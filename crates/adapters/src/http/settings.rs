//! How long the gateway waits for any upstream, Portkey or direct
//! (`GATEWAYZ_UPSTREAM_*`), read once at start.

use std::time::Duration;

use serde::Deserialize;

use crate::env::EnvSettings;

/// The longest timeout accepted: a day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// How long the gateway waits for an upstream
/// (`GATEWAYZ_UPSTREAM_*_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection.
    pub connect: Duration,
    /// For a whole non-streaming call.
    pub request: Duration,
    /// Until a stream's first chunk.
    pub first_byte: Duration,
    /// The longest gap between two chunks of a stream.
    pub idle: Duration,
}

/// `GATEWAYZ_UPSTREAM_*` variables.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamSettings {
    /// `GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS`: to open a connection.
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

/// The fields carry their variables' whole names.
impl EnvSettings for UpstreamSettings {
    const PREFIX: &'static str = "";
}

/// Why the upstreams' HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("{name} must be between 1 and {MAX_TIMEOUT_MS} ms, got {value}")]
    Timeout { name: &'static str, value: u64 },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl UpstreamSettings {
    /// The timeouts, each between 1 ms and a day.
    ///
    /// # Errors
    /// [`HttpSetupError::Timeout`] naming the first variable out of range.
    pub fn timeouts(&self) -> Result<Timeouts, HttpSetupError> {
        for (name, value) in [
            (
                "GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS",
                self.gatewayz_upstream_connect_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS",
                self.gatewayz_upstream_request_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
                self.gatewayz_upstream_first_byte_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS",
                self.gatewayz_upstream_idle_timeout_ms,
            ),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                return Err(HttpSetupError::Timeout { name, value });
            }
        }
        Ok(Timeouts {
            connect: Duration::from_millis(self.gatewayz_upstream_connect_timeout_ms),
            request: Duration::from_millis(self.gatewayz_upstream_request_timeout_ms),
            first_byte: Duration::from_millis(self.gatewayz_upstream_first_byte_timeout_ms),
            idle: Duration::from_millis(self.gatewayz_upstream_idle_timeout_ms),
        })
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            gatewayz_upstream_connect_timeout_ms: connect_ms(),
            gatewayz_upstream_request_timeout_ms: request_ms(),
            gatewayz_upstream_first_byte_timeout_ms: first_byte_ms(),
            gatewayz_upstream_idle_timeout_ms: idle_ms(),
        }
    }
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
    fn the_documented_timeouts_are_the_defaults() {
        let settings = UpstreamSettings::from_vars(vars(&[])).unwrap();
        assert_eq!(
            settings.timeouts().unwrap(),
            Timeouts {
                connect: Duration::from_secs(5),
                request: Duration::from_secs(300),
                first_byte: Duration::from_secs(60),
                idle: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn a_malformed_timeout_names_its_variable() {
        let err =
            UpstreamSettings::from_vars(vars(&[("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "soon")])).unwrap_err();
        assert!(
            err.to_string().contains("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_outside_one_ms_to_a_day_stop_the_start() {
        for (name, value) in [
            ("GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS", "0"),
            ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "18446744073709551615"),
        ] {
            let settings = UpstreamSettings::from_vars(vars(&[(name, value)])).unwrap();
            let error = settings.timeouts().unwrap_err();
            assert!(error.to_string().starts_with(name), "{error}");
        }
    }
}
