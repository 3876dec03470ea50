//! What the Lua scripts take and give back: limits and durations as
//! arguments, replies as decisions and counters.

use std::time::Duration;

use gatewayz_domain::limits::{Admission, Decision, LimitKind, StoreError};

use crate::limits::counters::{Counters, PARALLEL_RETRY, budget_retry};

/// The decision [`admit.lua`](../admit.lua) replied for `admission`.
pub(super) fn decision_of(reply: &[i64], admission: &Admission) -> Result<Decision, StoreError> {
    let [admitted, limit, retry_us, counters @ ..] = reply else {
        return Err(StoreError(match reply {
            // Only an admission already given up on meets its void marker.
            [-1] => "redis admission: cancelled before it ran".to_owned(),
            _ => format!("redis admission: unexpected reply of {} values", reply.len()),
        }));
    };
    let policy = &admission.policy;
    let standing = counters_of(counters)?.standing(policy);
    if *admitted == 1 {
        return Ok(Decision::Admitted(standing));
    }
    let (limit, retry_after) = match limit {
        1 => (LimitKind::Requests, Duration::from_micros(unsigned(*retry_us))),
        2 => (LimitKind::Tokens, Duration::from_micros(unsigned(*retry_us))),
        3 => (LimitKind::Parallel, PARALLEL_RETRY),
        4 => (
            LimitKind::Budget,
            policy.budget.map_or(PARALLEL_RETRY, |budget| {
                budget_retry(budget.period, admission.now_us)
            }),
        ),
        other => return Err(StoreError(format!("redis admission: unknown limit {other}"))),
    };
    Ok(Decision::Refused {
        limit,
        retry_after,
        standing,
    })
}

/// `{now, requests TAT, tokens TAT, in flight, spent}` as the scripts return them.
pub(super) fn counters_of(values: &[i64]) -> Result<Counters, StoreError> {
    let [now_us, requests_tat, tokens_tat, in_flight, spent] = values else {
        return Err(StoreError(format!(
            "redis: unexpected counters of {} values",
            values.len()
        )));
    };
    Ok(Counters {
        now_us: unsigned(*now_us),
        requests_tat: unsigned(*requests_tat),
        tokens_tat: unsigned(*tokens_tat),
        in_flight: unsigned(*in_flight),
        spent_usd_micros: unsigned(*spent),
    })
}

/// A count or instant of a reply (never negative).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A limit as the scripts take it: -1 for none.
pub(super) fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// A duration as the scripts take it, in µs.
pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
