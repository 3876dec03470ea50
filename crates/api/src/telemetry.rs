//! Log set-up: JSON lines in production, readable lines locally. The level
//! comes from `RUST_LOG` (default `info`). actix-http's HTTP/1 dispatcher is
//! silenced unless `RUST_LOG` names `actix_http`: it logs each request it
//! refuses (malformed, head too large) as an `ERROR` without a request id,
//! and the gateway logs those itself (see [`crate::http_refusals`]).
//!
//! Lines are written to stdout by a background thread, so that a request
//! never waits on the log's pipe; when that thread falls 16,384 lines
//! behind, writers wait for it rather than lose lines. (The queue's slots
//! are allocated up front: tracing-appender's default of 128k lines would
//! cost 3 MiB of idle memory.)

use std::io::IsTerminal;

use gatewayz_adapters::traces::{SPAN_TARGET, TraceSettings, TraceSetupError, Traces};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter};

use crate::config::LogFormat;

/// The directive that keeps the exported spans out of the log: they are
/// the trace exporter's alone.
const NO_EXPORTED_SPANS: &str = "gatewayz::otel=off";

/// The directive that silences actix-http's dispatcher. Its other `ERROR`
/// lines are of no use here: a failed write or read is a client that left
/// (the access line says 499), and the gateway's bodies never fail.
const QUIET_DISPATCHER: &str = "actix_http::h1::dispatcher=off";

/// The filter for a `RUST_LOG` value (`info` when unset or invalid).
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let quieted = |directives: &str| {
        if directives.contains("actix_http") {
            format!("{directives},{NO_EXPORTED_SPANS}")
        } else if directives.trim().is_empty() {
            format!("{QUIET_DISPATCHER},{NO_EXPORTED_SPANS}")
        } else {
            format!("{directives},{QUIET_DISPATCHER},{NO_EXPORTED_SPANS}")
        }
    };
    EnvFilter::builder()
        .parse(quieted(rust_log.unwrap_or("info")))
        .or_else(|_| EnvFilter::builder().parse(quieted("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The trace exporter, started when the standard OpenTelemetry variables
/// name an OTLP endpoint (`None` otherwise: traces cost nothing then).
///
/// # Errors
/// A protocol the gateway cannot export with, or an exporter that cannot
/// start.
pub fn traces() -> Result<Option<Traces>, TraceSetupError> {
    let settings = TraceSettings::read(|name| std::env::var(name).ok())?;
    Traces::start(&settings)
}

/// Installs the global subscriber: the log and, when `traces` are
/// exported, the layer that turns the gateway's spans into OpenTelemetry
/// spans. Keep the guard until the process ends: dropping it writes out the
/// lines still queued. A second call is a no-op (and returns `None`), so
/// tests may call it freely.
#[must_use]
pub fn init(format: LogFormat, traces: Option<&Traces>) -> Option<WorkerGuard> {
    let filter = log_filter(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("gatewayz-log")
        .finish(std::io::stdout());
    let access_writer = writer.clone();
    let ansi = std::io::stdout().is_terminal();
    // `try_init` fails only when a subscriber is already installed.
    match traces {
        // Without traces, one global filter: no layer pays for another's.
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(ansi);
            match format {
                LogFormat::Json => builder
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .try_init(),
                LogFormat::Pretty => builder.try_init(),
            }
            .ok()?;
        }
        Some(traces) => {
            let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
                LogFormat::Json => tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_filter(filter)
                    .boxed(),
                LogFormat::Pretty => tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_filter(filter)
                    .boxed(),
            };
            let spans = tracing_opentelemetry::layer()
                .with_tracer(traces.tracer())
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .with_filter(filter::filter_fn(|metadata| metadata.target() == SPAN_TARGET))
                .boxed();
            tracing_subscriber::registry()
                .with(vec![log, spans])
                .try_init()
                .ok()?;
        }
    }
    if format == LogFormat::Json {
        crate::access_log::write_json_to(access_writer);
    }
    Some(guard)
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Whether, under `RUST_LOG=rust_log`, actix's dispatcher errors and the
    /// access lines are logged.
    fn logged(rust_log: Option<&str>) -> (bool, bool) {
        let subscriber = tracing_subscriber::registry().with(log_filter(rust_log));
        tracing::subscriber::with_default(subscriber, || {
            (
                tracing::enabled!(target: "actix_http::h1::dispatcher", Level::ERROR),
                tracing::enabled!(target: "gatewayz::access", Level::INFO),
            )
        })
    }

    #[test]
    fn exported_spans_never_reach_the_log_whatever_rust_log_says() {
        for rust_log in [
            None,
            Some("trace"),
            Some("gatewayz=trace"),
            Some("actix_http=trace"),
        ] {
            let subscriber = tracing_subscriber::registry().with(log_filter(rust_log));
            let logged = tracing::subscriber::with_default(
                subscriber,
                || tracing::enabled!(target: "gatewayz::otel", Level::ERROR),
            );
            assert!(!logged, "{rust_log:?}");
        }
    }

    #[test]
    fn actix_dispatcher_errors_are_silenced_unless_rust_log_names_actix_http() {
        assert_eq!(logged(None), (false, true));
        assert_eq!(logged(Some("debug")), (false, true));
        assert_eq!(logged(Some("warn")), (false, false));
        assert_eq!(logged(Some("not a filter[")), (false, true));
        assert_eq!(logged(Some("info,actix_http=error")), (true, true));
        assert_eq!(logged(Some("warn,actix_http::h1=trace")), (true, false));
    }
}
