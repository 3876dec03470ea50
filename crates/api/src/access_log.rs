//! The access line: one per request, the gateway's most frequent log line.
//!
//! With JSON logs it is serialized straight from a struct into the log's
//! writer, in the shape the JSON formatter gives every other line
//! (`timestamp`, `level`, `fields`, `target`, `span`). Through
//! `tracing-subscriber`'s formatter, which visits each field of an event,
//! the whole line cost ~7.5 µs of CPU a request; written this way, ~3 µs
//! less (`docs/benchmarks/history.md`): what is left is mostly the hand-off
//! to the log thread. `RUST_LOG` still decides whether it is written. With readable logs (and
//! in tests without a log set-up) it is an ordinary event.

use std::io::Write;
use std::sync::OnceLock;

use serde::Serialize;
use tracing::Level;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// The target the line is logged under, for `RUST_LOG` directives.
pub const TARGET: &str = "gatewayz::access";

/// The JSON log's writer, once JSON logs are set up.
static JSON_WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Writes access lines as JSON straight to `writer` from now on.
pub(crate) fn write_json_to(writer: NonBlocking) {
    let _ = JSON_WRITER.set(writer);
}

/// What the access line says of a request. `None` fields are left out.
#[derive(Debug, Serialize)]
pub struct Access<'a> {
    pub message: &'static str,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
    /// The key policy's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a std::collections::BTreeMap<String, String>>,
    pub method: &'a str,
    pub route: &'static str,
    /// The API called (`chat`, `embeddings`, `messages`, `count_tokens`,
    /// `responses`, `responses_retrieve`, ...), once known.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub endpoint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portkey_provider: Option<&'static str>,
    /// A direct upstream's catalog name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    pub attempts: u32,
    pub stream: bool,
    pub status: u16,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Tokens and dollars charged to the key's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charged_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charged_usd: Option<f64>,
    /// The charge is an estimate: the upstream reported no usage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// A Responses API response whose target could not be remembered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unremembered: bool,
    /// What the response cache did: `hit`, `miss`, `refresh`, `bypass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// A hit's age, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_age_s: Option<u64>,
    /// Answered by an identical request in flight.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache_coalesced: bool,
    /// The cache's store failed (served as a miss).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache_store_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// The request span's fields, as the JSON formatter writes a current span.
#[derive(Debug, Serialize)]
pub struct RequestSpan<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub name: &'static str,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    level: &'static str,
    fields: &'a Access<'a>,
    target: &'static str,
    span: &'a RequestSpan<'a>,
}

/// Logs `access` at ERROR for a 5xx, else at INFO.
pub fn log(access: &Access<'_>, span: &RequestSpan<'_>) {
    let error = access.status >= 500;
    let enabled = if error {
        tracing::enabled!(target: TARGET, Level::ERROR)
    } else {
        tracing::enabled!(target: TARGET, Level::INFO)
    };
    if !enabled {
        return;
    }
    match JSON_WRITER.get() {
        Some(writer) => {
            let mut timestamp = String::with_capacity(32);
            // Formatting a clock reading into a string cannot fail.
            let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
            let line = Line {
                timestamp: &timestamp,
                level: if error { "ERROR" } else { "INFO" },
                fields: access,
                target: TARGET,
                span,
            };
            let mut bytes = Vec::with_capacity(640);
            // The gateway's own struct serializes into memory.
            let _ = serde_json::to_writer(&mut bytes, &line);
            bytes.push(b'\n');
            // One write a line: the writer queues it whole for its thread.
            let _ = writer.clone().write_all(&bytes);
        }
        None => {
            let text = serde_json::to_string(access).unwrap_or_default();
            if error {
                tracing::event!(target: TARGET, Level::ERROR, "access {text}");
            } else {
                tracing::event!(target: TARGET, Level::INFO, "access {text}");
            }
        }
    }
}
