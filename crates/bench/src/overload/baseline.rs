//! The two baselines the overload soak is judged against, measured in the
//! same run just before it, on the same processes: the latency of an
//! unloaded gateway, and the highest rate it sustains without refusing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use crate::client::Target;
use crate::load::{OpenStep, open_loop};
use crate::stats::us_at;

/// The unloaded rate, as a share of the nominal capacity
/// (in-flight limit ÷ upstream delay).
const UNLOADED_SHARE: f64 = 0.1;
/// How long the unloaded rate is measured (about 1,000 requests).
const UNLOADED_WINDOW: Duration = Duration::from_secs(15);
/// The ladder's rates, as shares of the capacity measured (in-flight limit
/// ÷ unloaded p50); it stops at the first step not sustained.
const LADDER: [f64; 8] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0];
const STEP_WARMUP: Duration = Duration::from_secs(1);
const STEP_WINDOW: Duration = Duration::from_secs(5);
/// A step is sustained when nothing failed or was refused and its p99 is
/// at most this many times the unloaded p99.
pub const STEP_P99_LIMIT: f64 = 1.2;
/// A step not sustained is run again once before the ladder stops: on a
/// shared machine, one stall of a few tens of ms is a 5 s step's p99.
const ATTEMPTS: usize = 2;
/// Connections each step opens (and calls once) before it starts.
const WARM_CONNECTIONS: usize = 8;

/// One open-loop step, summed up.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub rate: f64,
    /// Requests sent and answered 200 while measuring.
    pub sent: u64,
    pub ok: u64,
    /// Refused or failed, warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    pub p50: Duration,
    pub p99: Duration,
}

impl Step {
    fn of(step: &OpenStep) -> Self {
        let at = |quantile| Duration::from_secs_f64(us_at(&step.latency, quantile) / 1e6);
        Self {
            rate: step.rate,
            sent: step.sent,
            ok: step.ok,
            errors: step.errors,
            first_error: step.first_error.clone(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// What the soak is judged against.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub unloaded: Step,
    /// In-flight limit ÷ unloaded p50, requests a second.
    pub capacity: f64,
    /// The ladder, up to and with its first rate not sustained, each step
    /// not sustained followed by its second attempt.
    pub steps: Vec<Step>,
    /// The highest rate of the ladder sustained, with every lower one.
    pub sustainable: Option<f64>,
}

/// Whether `step` was sustained: every request answered 200, none refused,
/// and p99 at most [`STEP_P99_LIMIT`] × `unloaded_p99`.
pub fn sustained(step: &Step, unloaded_p99: Duration) -> bool {
    shortfall(step, unloaded_p99).is_none()
}

/// Why `step` was not sustained, in a few words; `None` when it was.
pub fn shortfall(step: &Step, unloaded_p99: Duration) -> Option<String> {
    if step.sent == 0 {
        return Some("nothing measured".to_owned());
    }
    if step.errors > 0 || step.ok != step.sent {
        // `status 503 Service Unavailable: {"error": …}`: the status is enough.
        let first = step.first_error.as_deref().unwrap_or("?");
        let first = first.split_once(": {").map_or(first, |(status, _)| status);
        return Some(format!("{} refused or failed, the first: {first}", step.errors));
    }
    let limit = unloaded_p99.mul_f64(STEP_P99_LIMIT);
    (step.p99 > limit).then(|| {
        format!(
            "p99 over {STEP_P99_LIMIT}× the unloaded p99 ({:.2} ms)",
            limit.as_secs_f64() * 1e3
        )
    })
}

/// The ladder's rates for `capacity`, whole requests a second.
pub fn ladder(capacity: f64) -> Vec<f64> {
    LADDER
        .iter()
        .map(|share| (share * capacity).round().max(1.0))
        .collect()
}

/// Measures the unloaded latency at a tenth of `nominal` requests a second,
/// then climbs the ladder from the capacity that latency implies for
/// `limit` requests in flight.
///
/// # Errors
/// When the unloaded run fails or is refused a request: nothing else can be
/// judged then.
pub async fn measure(
    target: &Arc<Target>,
    nominal: f64,
    limit: usize,
    pids: &[u32],
) -> anyhow::Result<Baseline> {
    let rate = (nominal * UNLOADED_SHARE).round().max(1.0);
    eprintln!("gatewayz-bench: overload: unloaded, {rate} req/s for {UNLOADED_WINDOW:?}");
    let unloaded =
        Step::of(&open_loop(target, rate, STEP_WARMUP, UNLOADED_WINDOW, WARM_CONNECTIONS, pids).await?);
    anyhow::ensure!(
        unloaded.errors == 0 && unloaded.ok == unloaded.sent && unloaded.sent > 0,
        "the unloaded gateway failed or refused {} of {} requests at {rate} req/s; the first: {}",
        unloaded.errors,
        unloaded.sent,
        unloaded.first_error.as_deref().unwrap_or("?")
    );
    print("unloaded", &unloaded);
    let capacity = limit as f64 / unloaded.p50.as_secs_f64().max(1e-6);
    eprintln!(
        "gatewayz-bench: overload: capacity {limit} in flight ÷ p50 = {capacity:.0} req/s; the ladder:"
    );
    let mut steps = Vec::new();
    let mut sustainable = None;
    for rate in ladder(capacity) {
        let mut held = false;
        for _ in 0..ATTEMPTS {
            sleep(Duration::from_millis(300)).await;
            let step =
                Step::of(&open_loop(target, rate, STEP_WARMUP, STEP_WINDOW, WARM_CONNECTIONS, pids).await?);
            held = sustained(&step, unloaded.p99);
            print("ladder", &step);
            steps.push(step);
            if held {
                break;
            }
        }
        if !held {
            break;
        }
        sustainable = Some(rate);
    }
    Ok(Baseline {
        unloaded,
        capacity,
        steps,
        sustainable,
    })
}

fn print(phase: &str, step: &Step) {
    eprintln!(
        "gatewayz-bench:   {phase} {:>6} req/s: p50 {:.2} ms, p99 {:.2} ms, {} of {} answered 200, {} refused or failed{}",
        step.rate,
        step.p50.as_secs_f64() * 1e3,
        step.p99.as_secs_f64() * 1e3,
        step.ok,
        step.sent,
        step.errors,
        step.first_error
            .as_deref()
            .map(|error| format!(" (the first: {error})"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(ok: u64, errors: u64, p99_ms: u64) -> Step {
        Step {
            rate: 500.0,
            sent: 2_500,
            ok,
            errors,
            first_error: None,
            p50: Duration::from_millis(50),
            p99: Duration::from_millis(p99_ms),
        }
    }

    #[test]
    fn a_step_is_sustained_only_with_every_answer_a_200_and_p99_within_the_limit() {
        let unloaded_p99 = Duration::from_millis(50);

        assert!(sustained(&step(2_500, 0, 60), unloaded_p99));
        assert!(!sustained(&step(2_499, 1, 51), unloaded_p99), "one refusal");
        assert!(!sustained(&step(2_500, 0, 61), unloaded_p99), "p99 over 1.2×");
        let nothing_sent = Step {
            sent: 0,
            ..step(0, 0, 50)
        };
        assert!(!sustained(&nothing_sent, unloaded_p99), "nothing measured");
    }

    #[test]
    fn a_step_not_sustained_says_why_with_the_status_of_its_first_refusal() {
        let refused = Step {
            first_error: Some(r#"status 503 Service Unavailable: {"error":{"code":"overloaded"}}"#.into()),
            ..step(2_498, 2, 51)
        };
        let unloaded_p99 = Duration::from_millis(50);

        assert_eq!(
            shortfall(&refused, unloaded_p99).as_deref(),
            Some("2 refused or failed, the first: status 503 Service Unavailable")
        );
        assert_eq!(
            shortfall(&step(2_500, 0, 61), unloaded_p99).as_deref(),
            Some("p99 over 1.2× the unloaded p99 (60.00 ms)")
        );
        assert_eq!(shortfall(&step(2_500, 0, 60), unloaded_p99), None);
    }

    #[test]
    fn the_ladder_climbs_to_the_capacity_in_whole_requests_a_second() {
        let rates = ladder(633.3);

        assert_eq!(rates.first(), Some(&317.0));
        assert_eq!(rates.last(), Some(&633.0));
        assert!(rates.windows(2).all(|pair| pair[0] < pair[1]), "{rates:?}");
    }
}
