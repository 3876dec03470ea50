//! How a catalog model is routed over its targets: the policy of retries,
//! deadlines and circuit breakers, and the strategy of a group of targets.
//! The catalog sets them; the routing in [`crate::routing`] follows them.

use std::time::Duration;

/// How a catalog model is routed over its targets. The catalog's `[routing]`
/// table sets these for every model; a model may set its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingPolicy {
    /// Retries of a target after its first attempt.
    pub retries: u32,
    /// The first backoff's ceiling; each retry doubles it, up to `backoff_max`.
    /// The wait is drawn uniformly below the ceiling (full jitter).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest upstream `Retry-After` the gateway waits out; a longer one
    /// moves on to the next target, or reaches the client.
    pub retry_after_max: Duration,
    /// The time all attempts of one request share, until the answer (or a
    /// stream's first chunk).
    pub deadline: Duration,
    /// Consecutive retryable failures that open a target's circuit; 0 never
    /// opens it.
    pub breaker_failures: u32,
    /// How long an open circuit skips its target before one probe is let
    /// through.
    pub breaker_cooldown: Duration,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            retry_after_max: Duration::from_secs(5),
            deadline: Duration::from_secs(300),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// How a group picks among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order given: the first, then the next when it fails.
    Fallback,
    /// A weighted random order: each member first with the chance of its
    /// weight, the others after it the same way.
    LoadBalance,
}

impl Strategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::LoadBalance => "loadbalance",
        }
    }
}
