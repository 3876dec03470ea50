//! Where spans go: over OTLP (HTTP/protobuf or gRPC) to a collector, in
//! batches, from a bounded queue on a thread of its own, so that exporting
//! never slows or fails a request. A span that finds the queue full is
//! dropped and counted; a collector that cannot be reached is logged at
//! most once a minute.
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on;
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `..._ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS` are read by the OpenTelemetry SDK and
//! exporter themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

/// Spans waiting to be exported; past it, new spans are dropped. (With
/// content captured a span may hold 32 KiB: 64 MiB at most.)
const QUEUE: usize = 2048;
/// The most spans sent at once.
const BATCH: usize = 512;
/// How long a span may wait for its batch.
const DELAY: Duration = Duration::from_secs(2);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a failing collector is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The spans dropped by this process's exporter, once it started.
static DROPPED: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();

/// How many spans this process's exporter dropped (its queue full), when
/// traces are exported.
pub fn dropped_spans() -> Option<Arc<AtomicU64>> {
    DROPPED.get().cloned()
}

/// How traces are exported, read from the standard variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// Whether an OTLP endpoint is set (and the SDK not disabled).
    pub enabled: bool,
    pub grpc: bool,
}

/// Why the traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    #[error("{name} must be `http/protobuf` or `grpc`, got `{value}`")]
    Protocol { name: &'static str, value: String },
    #[error("cannot start the trace exporter: {0}")]
    Exporter(String),
}

impl TraceSettings {
    /// The settings `var` gives (the environment, in production).
    ///
    /// # Errors
    /// A protocol other than `http/protobuf` or `grpc`.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Self, TraceSetupError> {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let disabled = set("OTEL_SDK_DISABLED")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|value| value.trim().eq_ignore_ascii_case("none"));
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let protocol = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| set(name).map(|value| (name, value)));
        let grpc = match protocol {
            None => false,
            Some((_, value)) if value.trim() == "http/protobuf" => false,
            Some((_, value)) if value.trim() == "grpc" => true,
            Some((name, value)) => return Err(TraceSetupError::Protocol { name, value }),
        };
        Ok(Self {
            enabled: endpoint && !disabled,
            grpc,
        })
    }
}

/// The export pipeline, while traces are on.
#[derive(Debug, Clone)]
pub struct Traces {
    provider: SdkTracerProvider,
    dropped: Arc<AtomicU64>,
}

impl Traces {
    /// Starts exporting as `settings` say; `None` when traces are off.
    ///
    /// # Errors
    /// When the exporter's thread cannot start.
    pub fn start(settings: &TraceSettings) -> Result<Option<Self>, TraceSetupError> {
        if !settings.enabled {
            return Ok(None);
        }
        let dropped = DROPPED.get_or_init(Arc::default).clone();
        let processor = Queued::start(settings.grpc, dropped.clone())?;
        let mut resource = Resource::builder();
        // A blank name is no name, as for every other variable here.
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                .is_ok_and(|attributes| attributes.contains("service.name="));
        if !named {
            resource = resource.with_service_name("gatewayz");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        Ok(Some(Self { provider, dropped }))
    }

    /// The tracer spans are made with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("gatewayz")
    }

    /// How many spans were dropped because the queue was full.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Exports what is queued and stops (at shutdown).
    pub fn shutdown(&self) {
        // Past one export's own timeout, so that the last batch is waited for.
        if let Err(error) = self
            .provider
            .shutdown_with_timeout(EXPORT_TIMEOUT + Duration::from_secs(5))
        {
            tracing::warn!(%error, "the trace exporter did not shut down cleanly");
        }
    }
}

/// What the export thread is asked beside spans.
enum Control {
    Resource(Resource),
    Flush(std::sync::mpsc::SyncSender<()>),
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// A span processor that queues ended spans for the export thread, and
/// drops (and counts) those that find the queue full.
#[derive(Debug)]
struct Queued {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    dropped: Arc<AtomicU64>,
}

impl Queued {
    fn start(grpc: bool, dropped: Arc<AtomicU64>) -> Result<Self, TraceSetupError> {
        let (spans, queue) = mpsc::channel(QUEUE);
        let (control, orders) = mpsc::unbounded_channel();
        // The exporter is built on its thread, in that thread's runtime (a
        // gRPC channel needs one), and a bad setting stops the start.
        let (built, outcome) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("gatewayz-traces".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built.send(Err(TraceSetupError::Exporter(error.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match exporter(grpc) {
                        Ok(exporter) => {
                            let _ = built.send(Ok(()));
                            export(exporter, queue, orders).await;
                        }
                        Err(error) => {
                            let _ = built.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|error| TraceSetupError::Exporter(error.to_string()))?;
        outcome
            .recv()
            .map_err(|_| TraceSetupError::Exporter("the export thread ended at start".into()))??;
        Ok(Self {
            spans,
            control,
            dropped,
        })
    }

    /// Sends `order` and waits for the thread's answer, at most `timeout`.
    fn ask(
        &self,
        order: impl FnOnce(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.control
            .send(order(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn exporter(grpc: bool) -> Result<opentelemetry_otlp::SpanExporter, TraceSetupError> {
    let built = if grpc {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    };
    built.map_err(|error| TraceSetupError::Exporter(error.to_string()))
}

impl SpanProcessor for Queued {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, EXPORT_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Control::Resource(resource.clone()));
    }
}

/// The export thread: batches of at most [`BATCH`] spans, sent when full
/// or [`DELAY`] after the first waited.
async fn export(
    mut exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<SpanData>,
    mut orders: mpsc::UnboundedReceiver<Control>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failures = Failures::default();
    let mut tick = tokio::time::interval(DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = queue.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= BATCH {
                        send(&exporter, &mut batch, &mut failures).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => send(&exporter, &mut batch, &mut failures).await,
            order = orders.recv() => match order {
                Some(Control::Resource(resource)) => exporter.set_resource(&resource),
                Some(Control::Flush(done)) => {
                    drain(&mut queue, &mut batch, &exporter, &mut failures).await;
                    let _ = done.send(());
                }
                Some(Control::Shutdown(done)) => {
                    drain(&mut queue, &mut batch, &exporter, &mut failures).await;
                    let _ = exporter.shutdown();
                    let _ = done.send(());
                    break;
                }
                None => break,
            },
        }
    }
}

/// Exports every span queued now.
async fn drain(
    queue: &mut mpsc::Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
    exporter: &opentelemetry_otlp::SpanExporter,
    failures: &mut Failures,
) {
    while let Ok(span) = queue.try_recv() {
        batch.push(span);
        if batch.len() >= BATCH {
            send(exporter, batch, failures).await;
        }
    }
    send(exporter, batch, failures).await;
}

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    failures: &mut Failures,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(BATCH));
    let count = spans.len();
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => failures.note(count, &error.to_string()),
        Err(_) => failures.note(count, "no answer within the export timeout"),
    }
}

/// Export failures, logged at most once every [`LOG_EVERY`].
#[derive(Default)]
struct Failures {
    spans: u64,
    logged: Option<Instant>,
}

impl Failures {
    fn note(&mut self, spans: usize, error: &str) {
        self.spans += spans as u64;
        if self.logged.is_some_and(|logged| logged.elapsed() < LOG_EVERY) {
            return;
        }
        self.logged = Some(Instant::now());
        // Taken outside the macro: its fields are evaluated only when the
        // line is logged.
        let spans_lost = std::mem::take(&mut self.spans);
        tracing::warn!(
            spans_lost,
            error,
            "traces could not be exported to the OTLP collector (logged at most once a minute)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<TraceSettings, TraceSetupError> {
        TraceSettings::read(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn traces_are_on_only_with_an_endpoint_and_not_disabled() {
        assert!(!settings(&[]).unwrap().enabled);
        assert!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
                .unwrap()
                .enabled
        );
        assert!(
            settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")])
                .unwrap()
                .enabled
        );
        assert!(!settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap().enabled);
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert!(
                !settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off])
                    .unwrap()
                    .enabled
            );
        }
    }

    #[test]
    fn the_protocol_is_http_protobuf_or_grpc_the_traces_one_first() {
        assert!(!settings(&[]).unwrap().grpc);
        assert!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap().grpc);
        assert!(
            !settings(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ])
            .unwrap()
            .grpc
        );
        let error = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL must be `http/protobuf` or `grpc`, got `http/json`"
        );
    }

    #[test]
    fn export_failures_are_counted_between_log_lines() {
        let mut failures = Failures::default();
        failures.note(3, "refused");
        assert_eq!(failures.spans, 0, "the first failure is logged at once");
        failures.note(2, "refused");
        failures.note(4, "refused");
        assert_eq!(failures.spans, 6, "later ones wait for the next line");
    }
}
