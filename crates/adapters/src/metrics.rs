//! Prometheus metrics, all named `gatewayz_*`, rendered in the Prometheus
//! text format for the admin listener's `/metrics`.
//!
//! Label values are bounded: routes are the gateway's own, models are
//! catalog ids (anything else is `other`), providers are the known ones.

use std::sync::Arc;
use std::time::Duration;

use gatewayz_domain::{
    BreakerState, CallFacts, ChatError, ErrorSource, MemoryBudget, ResponseCache, RoutingEvents,
};
use opentelemetry::KeyValue;
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// One finished request, as the metrics see it.
#[derive(Debug)]
pub struct RequestOutcome<'a> {
    /// The gateway key's id (a policy's `id`, or a key's digest prefix):
    /// bounded by the keys configured.
    pub key: Option<&'a str>,
    /// The route's pattern (`/v1/chat/completions`), never a raw path.
    pub route: &'static str,
    pub status: u16,
    pub duration: Duration,
    pub facts: &'a CallFacts,
}

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    overhead: HistogramVec,
    time_to_first_token: HistogramVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    in_flight: IntGauge,
    upstream_errors: IntCounterVec,
    key_reloads: IntCounterVec,
    retries: IntCounterVec,
    fallbacks: IntCounterVec,
    breaker_transitions: IntCounterVec,
    breaker_state: IntGaugeVec,
    http_refusals: IntCounterVec,
    overload_refusals: IntCounterVec,
    memory_budget: IntGauge,
    memory_budget_in_use: IntGauge,
    in_flight_limit: IntGauge,
    key_spend: CounterVec,
    key_tokens: IntCounterVec,
    key_refusals: IntCounterVec,
    limits_degraded: IntGauge,
    ready: IntGauge,
    cache_requests: IntCounterVec,
    cache_coalesced: IntCounterVec,
    cache_stored_bytes: IntCounterVec,
    cache_store_errors: IntCounterVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    cache_evictions: IntCounter,
    trace_spans_dropped: IntCounter,
    /// Read when the metrics are rendered.
    budget: Option<MemoryBudget>,
    degraded: Option<Condition>,
    readiness: Option<Condition>,
    cache: Option<ResponseCache>,
    /// Spans the trace exporter dropped, read at each render.
    trace_drops: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// A yes-or-no state of the process (limits degraded, ready), asked at
/// each render rather than pushed when it changes.
#[derive(Clone)]
struct Condition(Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition(..)")
    }
}

const CALL_LABELS: &[&str] = &["provider", "portkey_provider", "model"];

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Errors
    /// Only if two metrics shared a name, which would be a bug.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        };
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "gatewayz_requests_total",
                    "Requests answered, by route, upstream, model and status class",
                ),
                &["route", "provider", "portkey_provider", "model", "status_class"],
            )?,
            request_duration: histogram(
                "gatewayz_request_duration_seconds",
                "Time from a request's arrival to the end of its answer",
                LATENCY_BUCKETS,
                &["route", "provider", "portkey_provider", "model"],
            )?,
            upstream_duration: histogram(
                "gatewayz_upstream_duration_seconds",
                "Time spent waiting on the upstream (for a stream, until it ended)",
                LATENCY_BUCKETS,
                CALL_LABELS,
            )?,
            overhead: histogram(
                "gatewayz_overhead_seconds",
                "Time the gateway added: request time minus upstream time",
                OVERHEAD_BUCKETS,
                &["route"],
            )?,
            time_to_first_token: histogram(
                "gatewayz_time_to_first_token_seconds",
                "Time from a streamed request's arrival to its first chunk",
                LATENCY_BUCKETS,
                CALL_LABELS,
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "gatewayz_tokens_total",
                    "Tokens the upstream reported, by kind (prompt, completion)",
                ),
                &["kind", "provider", "portkey_provider", "model"],
            )?,
            cost: CounterVec::new(
                Opts::new("gatewayz_cost_usd_total", "Cost in US dollars of priced models"),
                CALL_LABELS,
            )?,
            in_flight: IntGauge::new("gatewayz_in_flight_requests", "Requests being served now")?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "gatewayz_upstream_errors_total",
                    "Upstream failures, by kind and by who failed",
                ),
                &["kind", "source", "provider", "portkey_provider"],
            )?,
            key_reloads: IntCounterVec::new(
                Opts::new(
                    "gatewayz_api_key_reloads_total",
                    "Re-reads of GATEWAYZ_API_KEYS_FILE after it changed, by result (ok, error)",
                ),
                &["result"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "gatewayz_retries_total",
                    "Retries of a catalog model's target, by the failure retried",
                ),
                &["model", "target", "reason"],
            )?,
            fallbacks: IntCounterVec::new(
                Opts::new(
                    "gatewayz_fallbacks_total",
                    "Requests moved from a failed target to the next one, by the failure",
                ),
                &["model", "from_target", "reason"],
            )?,
            breaker_transitions: IntCounterVec::new(
                Opts::new(
                    "gatewayz_breaker_transitions_total",
                    "Circuit breaker changes of a target, by the state entered",
                ),
                &["model", "target", "state"],
            )?,
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    "gatewayz_breaker_state",
                    "A target's circuit in this process: 0 closed, 1 half-open, 2 open",
                ),
                &["model", "target"],
            )?,
            http_refusals: IntCounterVec::new(
                Opts::new(
                    "gatewayz_http_refusals_total",
                    "Requests the HTTP layer refused before routing (unparsable, head too large, \
                     head too slow), by reason",
                ),
                &["reason"],
            )?,
            overload_refusals: IntCounterVec::new(
                Opts::new(
                    "gatewayz_overload_refusals_total",
                    "Requests refused with 503 overloaded, by the limit reached (in_flight, memory)",
                ),
                &["reason"],
            )?,
            memory_budget: IntGauge::new(
                "gatewayz_memory_budget_bytes",
                "The memory budget for request buffers (GATEWAYZ_MEMORY_BUDGET_BYTES)",
            )?,
            memory_budget_in_use: IntGauge::new(
                "gatewayz_memory_budget_in_use_bytes",
                "Bytes of the memory budget held by request buffers now",
            )?,
            in_flight_limit: IntGauge::new(
                "gatewayz_in_flight_limit",
                "Requests served at once before new ones are refused (GATEWAYZ_MAX_IN_FLIGHT)",
            )?,
            key_spend: CounterVec::new(
                Opts::new(
                    "gatewayz_key_spend_usd_total",
                    "Dollars charged to gateway keys' budgets at settlement, by key and whether estimated",
                ),
                &["key", "estimated"],
            )?,
            key_tokens: IntCounterVec::new(
                Opts::new(
                    "gatewayz_key_tokens_total",
                    "Tokens charged to gateway keys' limits at settlement, by key and whether estimated",
                ),
                &["key", "estimated"],
            )?,
            key_refusals: IntCounterVec::new(
                Opts::new(
                    "gatewayz_key_refusals_total",
                    "Requests a gateway key's policy refused, by key and reason (requests, tokens, \
                     parallel, budget, model_not_allowed, key_expired, limits_unavailable)",
                ),
                &["key", "reason"],
            )?,
            limits_degraded: IntGauge::new(
                "gatewayz_limits_degraded",
                "1 while the shared limits store is unreachable and limits are counted in this process",
            )?,
            ready: IntGauge::new(
                "gatewayz_ready",
                "1 while /readyz answers ready; 0 before serving, while draining or shedding load",
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "gatewayz_cache_requests_total",
                    "Cacheable requests, by model and what the cache did (hit, miss, refresh, bypass)",
                ),
                &["model", "result"],
            )?,
            cache_coalesced: IntCounterVec::new(
                Opts::new(
                    "gatewayz_cache_coalesced_total",
                    "Requests answered by an identical request in flight instead of the upstream",
                ),
                &["model"],
            )?,
            cache_stored_bytes: IntCounterVec::new(
                Opts::new(
                    "gatewayz_cache_stored_bytes_total",
                    "Bytes of answers written to the response cache",
                ),
                &["model"],
            )?,
            cache_store_errors: IntCounterVec::new(
                Opts::new(
                    "gatewayz_cache_store_errors_total",
                    "Requests whose cache lookup or store failed (served as misses)",
                ),
                &["model"],
            )?,
            cache_bytes: IntGauge::new(
                "gatewayz_cache_bytes",
                "Bytes the in-process response cache holds (GATEWAYZ_CACHE_MAX_BYTES at most)",
            )?,
            cache_entries: IntGauge::new(
                "gatewayz_cache_entries",
                "Answers the in-process response cache holds",
            )?,
            cache_evictions: IntCounter::new(
                "gatewayz_cache_evictions_total",
                "Answers the in-process response cache evicted to make room",
            )?,
            budget: None,
            degraded: None,
            readiness: None,
            trace_spans_dropped: IntCounter::new(
                "gatewayz_trace_spans_dropped_total",
                "Spans dropped because the trace exporter's queue was full",
            )?,
            cache: None,
            trace_drops: None,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 32] = [
            Box::new(metrics.trace_spans_dropped.clone()),
            Box::new(metrics.cache_requests.clone()),
            Box::new(metrics.cache_coalesced.clone()),
            Box::new(metrics.cache_stored_bytes.clone()),
            Box::new(metrics.cache_store_errors.clone()),
            Box::new(metrics.cache_bytes.clone()),
            Box::new(metrics.cache_entries.clone()),
            Box::new(metrics.cache_evictions.clone()),
            Box::new(metrics.key_spend.clone()),
            Box::new(metrics.key_tokens.clone()),
            Box::new(metrics.key_refusals.clone()),
            Box::new(metrics.limits_degraded.clone()),
            Box::new(metrics.ready.clone()),
            Box::new(metrics.overload_refusals.clone()),
            Box::new(metrics.memory_budget.clone()),
            Box::new(metrics.memory_budget_in_use.clone()),
            Box::new(metrics.in_flight_limit.clone()),
            Box::new(metrics.http_refusals.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.fallbacks.clone()),
            Box::new(metrics.breaker_transitions.clone()),
            Box::new(metrics.breaker_state.clone()),
            Box::new(metrics.key_reloads.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.upstream_duration.clone()),
            Box::new(metrics.overhead.clone()),
            Box::new(metrics.time_to_first_token.clone()),
            Box::new(metrics.tokens.clone()),
            Box::new(metrics.cost.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.upstream_errors.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Reports the memory budget (read at each render) and the in-flight
    /// limit.
    #[must_use]
    pub fn with_overload_limits(mut self, budget: MemoryBudget, max_in_flight: usize) -> Self {
        self.memory_budget.set(gauge(budget.bytes()));
        self.in_flight_limit.set(gauge(max_in_flight));
        self.budget = Some(budget);
        self
    }

    /// Reports `degraded()` (whether limits are counted locally because the
    /// shared store is down) at each render.
    #[must_use]
    pub fn with_limits_degraded(mut self, degraded: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.degraded = Some(Condition(degraded));
        self
    }

    /// Reports `ready()` (whether `/readyz` would answer ready) at each
    /// render; without it the gauge stays 0.
    #[must_use]
    pub fn with_readiness(mut self, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.readiness = Some(Condition(ready));
        self
    }

    /// Reports the in-process response cache's size and evictions at each
    /// render.
    #[must_use]
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Reports the spans the trace exporter dropped (its queue full) at
    /// each render.
    #[must_use]
    pub fn with_trace_drops(mut self, dropped: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.trace_drops = Some(dropped);
        self
    }

    /// A request was refused with 503 overloaded; `reason` is `in_flight` or
    /// `memory`.
    pub fn overload_refused(&self, reason: &'static str) {
        self.overload_refusals.with_label_values(&[reason]).inc();
    }

    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request ended (answered, failed, or abandoned by its client).
    pub fn request_finished(&self, outcome: &RequestOutcome<'_>) {
        self.in_flight.dec();
        let facts = outcome.facts;
        let provider = facts.provider.map_or("none", |provider| provider.as_str());
        // The Portkey provider, or a direct upstream's catalog name: both
        // bounded by the catalog.
        let portkey_provider = facts.upstream_name().unwrap_or("none");
        let model = match facts.model.as_deref() {
            Some(model) if facts.catalog_model => model,
            Some(_) => "other",
            None => "none",
        };
        let call = [provider, portkey_provider, model];
        self.requests
            .with_label_values(&[
                outcome.route,
                provider,
                portkey_provider,
                model,
                status_class(outcome.status),
            ])
            .inc();
        self.request_duration
            .with_label_values(&[outcome.route, provider, portkey_provider, model])
            .observe(outcome.duration.as_secs_f64());
        // An abandoned request's duration is the client's, not the gateway's.
        if let Some(upstream) = facts.upstream.filter(|_| outcome.status != 499) {
            self.upstream_duration
                .with_label_values(&call)
                .observe(upstream.as_secs_f64());
            let overhead = outcome.duration.saturating_sub(upstream);
            self.overhead
                .with_label_values(&[outcome.route])
                .observe(overhead.as_secs_f64());
        }
        if let Some(first_token) = facts.first_token {
            self.time_to_first_token
                .with_label_values(&call)
                .observe(first_token.as_secs_f64());
        }
        for (kind, count) in [
            ("prompt", facts.prompt_tokens),
            ("completion", facts.completion_tokens),
        ] {
            if let Some(count) = count {
                self.tokens
                    .with_label_values(&[kind, provider, portkey_provider, model])
                    .inc_by(count);
            }
        }
        if let Some(cost) = facts.cost_usd {
            self.cost.with_label_values(&call).inc_by(cost);
        }
        if let Some(key) = outcome.key {
            self.key_finished(key, facts);
        }
        self.cache_finished(model, facts);
        if let Some((source, kind)) = facts.error.filter(|(source, _)| *source != ErrorSource::Gateway) {
            self.upstream_errors
                .with_label_values(&[kind, source.as_str(), provider, portkey_provider])
                .inc();
        }
    }

    /// What the response cache did for a request.
    fn cache_finished(&self, model: &str, facts: &CallFacts) {
        if let Some(status) = facts.cache {
            self.cache_requests
                .with_label_values(&[model, status.as_str()])
                .inc();
        }
        if facts.cache_coalesced {
            self.cache_coalesced.with_label_values(&[model]).inc();
        }
        if let Some(bytes) = facts.cache_stored_bytes {
            self.cache_stored_bytes.with_label_values(&[model]).inc_by(bytes);
        }
        if facts.cache_store_error {
            self.cache_store_errors.with_label_values(&[model]).inc();
        }
    }

    /// A key's charge and refusal, if any.
    fn key_finished(&self, key: &str, facts: &CallFacts) {
        if let Some(charged) = facts.charged {
            let estimated = if facts.usage_estimated { "true" } else { "false" };
            self.key_spend
                .with_label_values(&[key, estimated])
                .inc_by(charged.usd_micros as f64 / 1_000_000.0);
            self.key_tokens
                .with_label_values(&[key, estimated])
                .inc_by(charged.tokens);
        }
        let refusal = match facts.error {
            Some((_, "limit_exceeded" | "budget_exceeded")) => facts.limit_refusal,
            Some((_, kind @ ("model_not_allowed" | "key_expired" | "limits_unavailable"))) => Some(kind),
            _ => None,
        };
        if let Some(reason) = refusal {
            self.key_refusals.with_label_values(&[key, reason]).inc();
        }
    }

    /// The HTTP layer refused a request before it reached a route (`reason`
    /// is one of a few fixed codes) and answered `status`: counted as a
    /// refusal, and as an answered request of route `other`.
    pub fn http_refused(&self, reason: &'static str, status: u16) {
        self.http_refusals.with_label_values(&[reason]).inc();
        self.requests
            .with_label_values(&["other", "none", "none", "none", status_class(status)])
            .inc();
    }

    /// The gateway keys file was re-read: taken (`true`) or rejected.
    pub fn key_reload(&self, taken: bool) {
        self.key_reloads
            .with_label_values(&[if taken { "ok" } else { "error" }])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(budget) = &self.budget {
            self.memory_budget_in_use.set(gauge(budget.in_use()));
        }
        if let Some(degraded) = &self.degraded {
            self.limits_degraded.set(i64::from((degraded.0)()));
        }
        if let Some(ready) = &self.readiness {
            self.ready.set(i64::from((ready.0)()));
        }
        if let Some(stats) = self.cache.as_ref().and_then(ResponseCache::usage) {
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.cache_bytes.set(gauge(stats.bytes));
            self.cache_entries.set(gauge(stats.entries));
            // The cache counts them; the counter catches up at each render.
            self.cache_evictions
                .inc_by(stats.evictions.saturating_sub(self.cache_evictions.get()));
        }
        if let Some(dropped) = &self.trace_drops {
            let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
            self.trace_spans_dropped
                .inc_by(dropped.saturating_sub(self.trace_spans_dropped.get()));
        }
        let mut text = Vec::with_capacity(16 * 1024);
        // Encoding into memory fails only on a metric that breaks the
        // format's rules, which these never do.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Routing's retries, fallbacks and breaker changes: counted, and logged in
/// the request's span (a breaker change is logged where it happens).
impl RoutingEvents for Metrics {
    fn retrying(&self, model: &str, target: &str, error: &ChatError, wait: Duration) {
        self.retries
            .with_label_values(&[model, target, error.kind()])
            .inc();
        tracing::warn!(
            model,
            target,
            reason = error.kind(),
            source = error.source().as_str(),
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "retrying target: {error}"
        );
        crate::traces::event(
            "gatewayz.retry",
            vec![
                KeyValue::new("gatewayz.catalog_model", model.to_owned()),
                KeyValue::new("gatewayz.target", target.to_owned()),
                KeyValue::new("error.type", error.kind()),
                KeyValue::new(
                    "gatewayz.wait_ms",
                    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                ),
            ],
        );
    }

    fn falling_back(&self, model: &str, from: &str, error: &ChatError) {
        self.fallbacks
            .with_label_values(&[model, from, error.kind()])
            .inc();
        tracing::warn!(
            model,
            from_target = from,
            reason = error.kind(),
            source = error.source().as_str(),
            "falling back to the next target: {error}"
        );
        crate::traces::event(
            "gatewayz.fallback",
            vec![
                KeyValue::new("gatewayz.catalog_model", model.to_owned()),
                KeyValue::new("gatewayz.target", from.to_owned()),
                KeyValue::new("error.type", error.kind()),
            ],
        );
    }

    fn breaker_changed(&self, model: &str, target: &str, state: BreakerState) {
        self.breaker_transitions
            .with_label_values(&[model, target, state.as_str()])
            .inc();
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.breaker_state.with_label_values(&[model, target]).set(value);
        crate::traces::event(
            "gatewayz.breaker",
            vec![
                KeyValue::new("gatewayz.catalog_model", model.to_owned()),
                KeyValue::new("gatewayz.target", target.to_owned()),
                KeyValue::new("gatewayz.breaker.state", state.as_str()),
            ],
        );
        match state {
            BreakerState::Open => tracing::warn!(model, target, state = state.as_str(), "circuit opened"),
            _ => tracing::info!(model, target, state = state.as_str(), "circuit changed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::{ProviderKind, UpstreamProvider};

    use super::*;

    #[test]
    fn a_finished_request_shows_in_every_family_with_bounded_labels() {
        let metrics = Metrics::new().unwrap();
        let facts = CallFacts {
            provider: Some(ProviderKind::Portkey),
            portkey_provider: Some(UpstreamProvider::OpenAi),
            model: Some("my-private-model-name".into()),
            catalog_model: false,
            stream: true,
            upstream: Some(Duration::from_millis(40)),
            first_token: Some(Duration::from_millis(10)),
            prompt_tokens: Some(12),
            completion_tokens: Some(3),
            cost_usd: Some(0.25),
            error: Some((ErrorSource::Provider, "rate_limited")),
            ..CallFacts::default()
        };
        metrics.request_started();
        metrics.request_finished(&RequestOutcome {
            key: None,
            route: "/v1/chat/completions",
            status: 429,
            duration: Duration::from_millis(41),
            facts: &facts,
        });

        let text = metrics.render();
        for line in [
            r#"gatewayz_requests_total{model="other",portkey_provider="openai",provider="portkey",route="/v1/chat/completions",status_class="4xx"} 1"#,
            r#"gatewayz_tokens_total{kind="prompt",model="other",portkey_provider="openai",provider="portkey"} 12"#,
            r#"gatewayz_tokens_total{kind="completion",model="other",portkey_provider="openai",provider="portkey"} 3"#,
            r#"gatewayz_cost_usd_total{model="other",portkey_provider="openai",provider="portkey"} 0.25"#,
            r#"gatewayz_upstream_errors_total{kind="rate_limited",portkey_provider="openai",provider="portkey",source="provider"} 1"#,
            "gatewayz_in_flight_requests 0",
            r#"gatewayz_time_to_first_token_seconds_count{model="other",portkey_provider="openai",provider="portkey"} 1"#,
            r#"gatewayz_overhead_seconds_count{route="/v1/chat/completions"} 1"#,
            r#"gatewayz_upstream_duration_seconds_count{model="other",portkey_provider="openai",provider="portkey"} 1"#,
            r#"gatewayz_request_duration_seconds_count{model="other",portkey_provider="openai",provider="portkey",route="/v1/chat/completions"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(!text.contains("my-private-model-name"));
    }

    #[test]
    fn a_direct_upstreams_name_stands_where_the_portkey_provider_goes() {
        let metrics = Metrics::new().unwrap();
        let facts = CallFacts {
            provider: Some(ProviderKind::Direct),
            direct_upstream: Some("vllm".into()),
            model: Some("llama".into()),
            catalog_model: true,
            error: Some((ErrorSource::Provider, "upstream_failed")),
            ..CallFacts::default()
        };
        metrics.request_started();
        metrics.request_finished(&RequestOutcome {
            key: None,
            route: "/v1/chat/completions",
            status: 502,
            duration: Duration::from_millis(3),
            facts: &facts,
        });
        let text = metrics.render();
        for line in [
            r#"gatewayz_requests_total{model="llama",portkey_provider="vllm",provider="openai-compatible",route="/v1/chat/completions",status_class="5xx"} 1"#,
            r#"gatewayz_upstream_errors_total{kind="upstream_failed",portkey_provider="vllm",provider="openai-compatible",source="provider"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn readiness_is_read_at_each_render_and_zero_when_nobody_reports_it() {
        use std::sync::atomic::{AtomicBool, Ordering};

        assert!(Metrics::new().unwrap().render().contains("\ngatewayz_ready 0\n"));
        let ready = Arc::new(AtomicBool::new(true));
        let metrics = Metrics::new().unwrap().with_readiness({
            let ready = Arc::clone(&ready);
            Arc::new(move || ready.load(Ordering::SeqCst))
        });

        assert!(metrics.render().contains("\ngatewayz_ready 1\n"));
        ready.store(false, Ordering::SeqCst);
        assert!(metrics.render().contains("\ngatewayz_ready 0\n"));
    }

    #[test]
    fn a_refusal_of_the_http_layer_counts_by_reason_and_as_an_answered_request_of_route_other() {
        let metrics = Metrics::new().unwrap();

        metrics.http_refused("request_timeout", 408);
        metrics.http_refused("request_timeout", 408);

        let text = metrics.render();
        for line in [
            r#"gatewayz_http_refusals_total{reason="request_timeout"} 2"#,
            r#"gatewayz_requests_total{model="none",portkey_provider="none",provider="none",route="other",status_class="4xx"} 2"#,
            "gatewayz_in_flight_requests 0",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
