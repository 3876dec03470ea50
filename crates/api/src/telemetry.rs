//! Log set-up: JSON lines in production, readable lines locally. The level
//! comes from `RUST_LOG` (default `info`).
//!
//! Lines are written to stdout by a background thread, so that a request
//! never waits on the log's pipe; when that thread falls 16,384 lines
//! behind, writers wait for it rather than lose lines. (The queue's slots
//! are allocated up front: tracing-appender's default of 128k lines would
//! cost 3 MiB of idle memory.)

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Keep the guard until the process ends:
/// dropping it writes out the lines still queued. A second call is a no-op
/// (and returns `None`), so tests may call it freely.
#[must_use]
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("gatewayz-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stdout().is_terminal());
    // `try_init` fails only when a subscriber is already installed.
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    installed.ok().map(|()| guard)
}
