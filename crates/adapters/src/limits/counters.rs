//! What both stores share: a key's counters as the headers and the admin
//! API read them, budget periods and the refusals' `Retry-After`.

use std::time::Duration;

use gatewayz_domain::limits::{BudgetPeriod, Gcra, KeyPolicy, Standing};

/// The `Retry-After` of a refusal by a `total` budget, which never resets: a
/// day, so that clients back off rather than retry at once.
pub const TOTAL_BUDGET_RETRY: Duration = Duration::from_secs(24 * 60 * 60);

/// The `Retry-After` of a refusal for want of a parallel slot: slots free up
/// when requests end, which nothing predicts.
pub const PARALLEL_RETRY: Duration = Duration::from_secs(1);

pub(super) const MICROS_PER_SECOND: u64 = 1_000_000;

/// A key's counters at one instant, as either store reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    /// The instant they were read at (Unix µs).
    pub(super) now_us: u64,
    pub(super) requests_tat: u64,
    pub(super) tokens_tat: u64,
    pub(super) in_flight: u64,
    /// Spend of the current budget period, reservations included (µ$).
    pub(super) spent_usd_micros: u64,
}

impl Counters {
    /// What `policy`'s headers and admin view say of these counters.
    pub(super) fn standing(&self, policy: &KeyPolicy) -> Standing {
        Standing {
            requests: policy
                .rpm
                .map(|rpm| Gcra::per_minute(rpm).state(self.requests_tat, self.now_us)),
            tokens: policy
                .tpm
                .map(|tpm| Gcra::per_minute(tpm).state(self.tokens_tat, self.now_us)),
            in_flight: policy.max_parallel.map(|_| self.in_flight),
            spent_usd_micros: policy.budget.map(|_| self.spent_usd_micros),
            budget_remaining_usd: policy.budget.map(|budget| {
                budget.micros().saturating_sub(self.spent_usd_micros) as f64 / MICROS_PER_SECOND as f64
            }),
            ..Standing::default()
        }
    }
}

/// The budget period holding `now_us` (Unix µs): its start and end in Unix
/// seconds.
pub(super) fn period_of(period: BudgetPeriod, now_us: u64) -> (i64, Option<i64>) {
    let window = period.window(unix_seconds(now_us));
    (window.start, window.end)
}

/// How long a key refused by its budget waits: until its period ends.
pub(super) fn budget_retry(period: BudgetPeriod, now_us: u64) -> Duration {
    match period_of(period, now_us).1 {
        Some(end) => {
            let end_us = u64::try_from(end).unwrap_or(0).saturating_mul(MICROS_PER_SECOND);
            Duration::from_micros(end_us.saturating_sub(now_us).max(1))
        }
        None => TOTAL_BUDGET_RETRY,
    }
}

pub(super) fn unix_seconds(now_us: u64) -> i64 {
    i64::try_from(now_us / MICROS_PER_SECOND).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewayz_domain::limits::SpendLimit;

    #[test]
    fn a_budget_refusal_waits_until_its_period_ends() {
        // 2030-01-01T23:59:30Z
        let now_us = 1_893_542_370 * MICROS_PER_SECOND;
        assert_eq!(budget_retry(BudgetPeriod::Day, now_us), Duration::from_secs(30));
        assert_eq!(budget_retry(BudgetPeriod::Total, now_us), TOTAL_BUDGET_RETRY);
    }

    #[test]
    fn the_standing_names_only_the_limits_the_policy_sets() {
        let mut policy = KeyPolicy::unlimited("k");
        policy.rpm = Some(60);
        policy.budget = Some(SpendLimit {
            usd: 1.0,
            period: BudgetPeriod::Day,
        });
        let counters = Counters {
            now_us: 100 * MICROS_PER_SECOND,
            requests_tat: 102 * MICROS_PER_SECOND,
            tokens_tat: 0,
            in_flight: 3,
            spent_usd_micros: 250_000,
        };
        let standing = counters.standing(&policy);
        assert_eq!(standing.requests.map(|state| state.remaining), Some(58));
        assert_eq!(standing.tokens, None);
        assert_eq!(standing.in_flight, None);
        assert_eq!(standing.spent_usd_micros, Some(250_000));
        assert_eq!(standing.budget_remaining_usd, Some(0.75));
    }
}
