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

/// The median of `values` (the mean of the middle two of an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match (sorted.len() % 2, sorted.get(middle)) {
        (_, None) => f64::NAN,
        (1, Some(value)) => *value,
        (_, Some(value)) => (sorted.get(middle - 1).copied().unwrap_or(*value) + value) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[-1.0]), -1.0);
        assert!(median(&[]).is_nan());
    }
}
