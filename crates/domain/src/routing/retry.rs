//! Retries of one target: only retryable failures, with exponential backoff
//! and full jitter, waiting out an upstream's `Retry-After` when it is short
//! enough, and never past the request's deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::{Answer, decorator};
use crate::error::ChatError;
use crate::policy::RoutingPolicy;
use crate::ports::{ChatProvider, ProviderCall, RoutingEvents};

pub(crate) struct Retry {
    model: Arc<str>,
    target: Arc<str>,
    inner: Arc<dyn ChatProvider>,
    retries: u32,
    policy: RoutingPolicy,
    events: Arc<dyn RoutingEvents>,
}

impl Retry {
    pub(crate) fn new(
        model: Arc<str>,
        target: Arc<str>,
        inner: Arc<dyn ChatProvider>,
        retries: u32,
        policy: RoutingPolicy,
        events: Arc<dyn RoutingEvents>,
    ) -> Self {
        Self {
            model,
            target,
            inner,
            retries,
            policy,
            events,
        }
    }

    async fn run<A: Answer>(&self, call: ProviderCall) -> Result<A, ChatError> {
        // One layer of retries: a Portkey config that retries has them.
        let retries = if call
            .route
            .portkey_config()
            .is_some_and(|config| config.retries_upstream())
        {
            0
        } else {
            self.retries
        };
        let deadline = call.context.deadline;
        let mut previous: Option<ChatError> = None;
        for attempt in 0..retries {
            let error = match (A::from(self.inner.as_ref(), call.clone()).await, previous.take()) {
                (Ok(answer), _) => return Ok(answer),
                (Err(ChatError::CircuitOpen { .. }), Some(previous)) => return Err(previous),
                (Err(error), _) if !error.is_retryable() => return Err(error),
                (Err(error), _) => error,
            };
            let Some(wait) = self.wait(attempt, &error, deadline) else {
                return Err(error);
            };
            self.events.retrying(&self.model, &self.target, &error, wait);
            tokio::time::sleep(wait).await;
            previous = Some(error);
        }
        match (A::from(self.inner.as_ref(), call).await, previous) {
            // These retries opened the circuit: what the upstream said is
            // the answer, not that the circuit is open.
            (Err(ChatError::CircuitOpen { .. }), Some(previous)) => Err(previous),
            (answer, _) => answer,
        }
    }

    /// The wait before the next attempt, or `None` to give up on this target:
    /// its `Retry-After` is longer than the gateway waits out, or the wait
    /// would end past the deadline.
    fn wait(&self, attempt: u32, error: &ChatError, deadline: Option<Instant>) -> Option<Duration> {
        let wait = match error.retry_after() {
            Some(asked) if asked > self.policy.retry_after_max => return None,
            Some(asked) => asked,
            None => backoff(&self.policy, attempt, fastrand::f64()),
        };
        match deadline {
            Some(deadline) if Instant::now() + wait >= deadline => None,
            _ => Some(wait),
        }
    }
}

/// The backoff before retry `attempt + 1`: drawn (by `draw`, in 0..1) below
/// `base · 2^attempt`, capped at `max`: "full jitter", so that clients that
/// failed together do not come back together.
pub(crate) fn backoff(policy: &RoutingPolicy, attempt: u32, draw: f64) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1_u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(policy.backoff_max);
    ceiling.mul_f64(draw.clamp(0.0, 1.0))
}

decorator!(Retry);

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("target", &self.target)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_its_ceiling_up_to_the_maximum_and_draws_below_it() {
        let policy = RoutingPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            ..RoutingPolicy::default()
        };
        let ceilings: Vec<_> = (0..6).map(|attempt| backoff(&policy, attempt, 1.0)).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1_000, 1_000].map(Duration::from_millis)
        );
        assert_eq!(backoff(&policy, 2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 3, 0.0), Duration::ZERO);
        assert_eq!(backoff(&policy, 1_000, 1.0), Duration::from_millis(1_000));
    }
}
