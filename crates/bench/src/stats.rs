//! Latency histograms (in nanoseconds) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub type Hist = Histogram<u64>;

/// Two minutes: longer than any request or stream the driver waits for.
const MAX_NS: u64 = 120_000_000_000;

/// An empty histogram, 3 significant digits from 1 ns to two minutes.
pub fn hist() -> anyhow::Result<Hist> {
    Ok(Histogram::new_with_bounds(1, MAX_NS, 3)?)
}

pub fn record(hist: &mut Hist, elapsed: Duration) {
    hist.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(MAX_NS).max(1));
}

/// The value at `quantile`, in microseconds.
pub fn us_at(hist: &Hist, quantile: f64) -> f64 {
    us(hist.value_at_quantile(quantile))
}

pub fn us(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

/// Count, mean and the usual percentiles, in microseconds.
pub fn summary(hist: &Hist) -> Value {
    if hist.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": hist.len(),
        "mean_us": round(hist.mean() / 1_000.0),
        "min_us": round(us(hist.min())),
        "p50_us": round(us_at(hist, 0.50)),
        "p90_us": round(us_at(hist, 0.90)),
        "p99_us": round(us_at(hist, 0.99)),
        "p99_9_us": round(us_at(hist, 0.999)),
        "max_us": round(us(hist.max())),
    })
}

/// Three decimals are enough for microseconds and keep the JSON readable.
pub fn round(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}
