//! A circuit breaker per target: after `breaker_failures` retryable failures
//! in a row the target is skipped for `breaker_cooldown`; then one probe is
//! let through, which closes the circuit or opens it again. The state lives in
//! this process: each replica learns on its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::answer::{Answer, decorator};
use super::deadline::deadline_passed;
use crate::error::ChatError;
use crate::policy::RoutingPolicy;
use crate::ports::{BreakerState, ChatProvider, ProviderCall, RoutingEvents};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub(crate) struct Breaker {
    model: Arc<str>,
    target: Arc<str>,
    inner: Arc<dyn ChatProvider>,
    failures: u32,
    cooldown: Duration,
    /// The model's deadline, to judge an attempt it cut.
    deadline: Duration,
    state: Mutex<State>,
    events: Arc<dyn RoutingEvents>,
}

/// A call let through. Dropped unsettled (its request was cancelled), a probe
/// leaves the circuit half-open for the next call to probe.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Breaker {
    pub(crate) fn new(
        model: Arc<str>,
        target: Arc<str>,
        inner: Arc<dyn ChatProvider>,
        policy: RoutingPolicy,
        events: Arc<dyn RoutingEvents>,
    ) -> Self {
        Self {
            model,
            target,
            inner,
            failures: policy.breaker_failures,
            cooldown: policy.breaker_cooldown,
            deadline: policy.deadline,
            state: Mutex::new(State::Closed { failures: 0 }),
            events,
        }
    }

    async fn run<A: Answer>(&self, call: ProviderCall) -> Result<A, ChatError> {
        let deadline = call.context.deadline;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            // No time left: not this target's failure.
            return Err(deadline_passed());
        }
        let mut permit = self.admit()?;
        call.context.record.update(|facts| facts.attempts += 1);
        let started = Instant::now();
        let attempt = A::from(self.inner.as_ref(), call);
        let answer = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                Ok(answer) => answer,
                Err(_) => {
                    // Cut by the deadline: too slow for this model if it had
                    // at least half of it; else earlier targets used the time,
                    // and the cut says nothing about this one.
                    if deadline - started < self.deadline / 2 {
                        permit.release();
                    }
                    Err(deadline_passed())
                }
            },
            None => attempt.await,
        };
        permit.settle(answer.as_ref().err());
        answer
    }

    fn admit(&self) -> Result<Permit<'_>, ChatError> {
        if self.failures == 0 {
            return Ok(self.permit(false));
        }
        let now = Instant::now();
        let mut changed = None;
        let admitted = self.with_state(|state| match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probing: true };
                changed = Some(BreakerState::HalfOpen);
                Ok(true)
            }
            State::Open { until } => Err(until - now),
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(true)
            }
            // Another request is probing; it will tell soon.
            State::HalfOpen { probing: true } => Err(Duration::from_secs(1)),
        });
        self.tell(changed);
        match admitted {
            Ok(probe) => Ok(self.permit(probe)),
            Err(retry_in) => Err(ChatError::CircuitOpen {
                target: self.target.to_string(),
                retry_in,
            }),
        }
    }

    const fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            settled: false,
        }
    }

    fn with_state<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn tell(&self, changed: Option<BreakerState>) {
        if let Some(state) = changed {
            self.events.breaker_changed(&self.model, &self.target, state);
        }
    }

    /// Notes a call's outcome. Only retryable failures count against a
    /// target: a refusal (400, 401, ...) shows it is up.
    fn outcome(&self, probe: bool, error: Option<&ChatError>) {
        let failed = error.is_some_and(ChatError::is_retryable);
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        let changed = self.with_state(|state| match (*state, failed) {
            (State::Closed { failures }, true) if failures + 1 >= self.failures => {
                *state = open;
                Some(BreakerState::Open)
            }
            (State::Closed { failures }, true) => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                None
            }
            (State::Closed { .. }, false) => {
                *state = State::Closed { failures: 0 };
                None
            }
            (State::HalfOpen { .. }, true) if probe => {
                *state = open;
                Some(BreakerState::Open)
            }
            (State::HalfOpen { .. }, false) if probe => {
                *state = State::Closed { failures: 0 };
                Some(BreakerState::Closed)
            }
            // A call admitted before the circuit opened: the probe decides.
            _ => None,
        });
        self.tell(changed);
    }
}

impl Permit<'_> {
    /// Leaves the circuit as if this call had not been made (a probe frees
    /// its slot on drop).
    fn release(&mut self) {
        self.settled = true;
        if self.probe {
            self.breaker.with_state(|state| {
                if matches!(state, State::HalfOpen { .. }) {
                    *state = State::HalfOpen { probing: false };
                }
            });
        }
    }

    fn settle(&mut self, error: Option<&ChatError>) {
        if self.settled {
            return;
        }
        self.settled = true;
        if self.breaker.failures > 0 {
            self.breaker.outcome(self.probe, error);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.with_state(|state| {
                if matches!(state, State::HalfOpen { .. }) {
                    *state = State::HalfOpen { probing: false };
                }
            });
        }
    }
}

decorator!(Breaker);

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("target", &self.target)
            .field(
                "state",
                &*self.state.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}
