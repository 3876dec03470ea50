//! Traces over OpenTelemetry: the export pipeline ([`Traces`]) and the
//! client span of each upstream attempt ([`Attempt`]). Off, and free, unless
//! an OTLP endpoint is set.

mod attempt;
mod export;

pub use attempt::{Attempt, SPAN_TARGET, capture_content, event, traceparent_of};
pub use export::{TraceSettings, TraceSetupError, Traces, dropped_spans};
