//! Shedding load before it hurts, as Envoy's overload manager does: a limit
//! on the requests served at once, a memory budget for their buffers (held
//! in [`MemoryBudget`]), and readiness that follows sustained shedding.
//!
//! A request past the in-flight limit gets 503 `overloaded` with
//! `Retry-After` at once, before its body is read (the connection is then
//! closed, see [`crate::middleware`]). One whose buffers the budget cannot
//! hold gets the same 503 before its answer starts, or a typed error event
//! and `[DONE]` when its stream has started. `/healthz` on the public
//! listener and every admin route are never refused.
//!
//! While refusals keep coming for longer than the grace period, `/readyz`
//! says not ready, so that the Service sends new connections elsewhere; a
//! second without a refusal ends the episode.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use bytes::Bytes;
use gatewayz_adapters::metrics::Metrics;
use gatewayz_domain::MemoryBudget;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::OverloadLimits;
use crate::error::ApiError;

/// Refusals closer together than this belong to one shedding episode.
const EPISODE_GAP: Duration = Duration::from_secs(1);

/// Which limit refused a request: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    InFlight,
    Memory,
}

impl Limit {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Memory => "memory",
        }
    }
}

/// The gateway's overload state, shared by every worker.
#[derive(Debug, Clone)]
pub struct Overload(Arc<State>);

#[derive(Debug)]
struct State {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    budget: MemoryBudget,
    grace: Duration,
    origin: Instant,
    /// Milliseconds since `origin` (plus one; 0 = never) of the episode's
    /// first refusal and of the last one.
    episode_start: AtomicU64,
    last_refusal: AtomicU64,
    metrics: Option<web::Data<Metrics>>,
}

impl Overload {
    /// The state for `limits`, whose memory budget is `budget`; refusals are
    /// counted in `metrics`.
    pub fn new(limits: &OverloadLimits, budget: MemoryBudget, metrics: Option<web::Data<Metrics>>) -> Self {
        Self(Arc::new(State {
            slots: Arc::new(Semaphore::new(limits.max_in_flight.min(Semaphore::MAX_PERMITS))),
            max_in_flight: limits.max_in_flight,
            budget,
            grace: limits.grace,
            origin: Instant::now(),
            episode_start: AtomicU64::new(0),
            last_refusal: AtomicU64::new(0),
            metrics,
        }))
    }

    /// The memory budget request buffers are taken from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.0.budget
    }

    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight
    }

    /// A slot for one more request, if the limit allows it.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0.slots).try_acquire_owned().ok()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Notes a request refused by `limit`.
    pub fn refused(&self, limit: Limit) {
        if let Some(metrics) = &self.0.metrics {
            metrics.overload_refused(limit.as_str());
        }
        let now = self.now();
        let last = self.0.last_refusal.swap(now, Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) > millis(EPISODE_GAP) {
            self.0.episode_start.store(now, Ordering::Relaxed);
        }
    }

    /// How long the gateway has been shedding without a pause, if it is.
    pub fn shedding_for(&self) -> Option<Duration> {
        let now = self.now();
        let last = self.0.last_refusal.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) > millis(EPISODE_GAP) {
            return None;
        }
        let start = self.0.episode_start.load(Ordering::Relaxed);
        Some(Duration::from_millis(now.saturating_sub(start)))
    }

    /// Whether the gateway has been shedding for longer than the grace period.
    pub fn sustained(&self) -> bool {
        self.shedding_for()
            .is_some_and(|shedding| shedding > self.0.grace)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Admits a request into one of the in-flight slots, held until its answer
/// has been sent (a stream's last event), or refuses it with 503
/// `overloaded` at once. `/healthz` is never refused.
pub async fn admit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let overload = request.app_data::<web::Data<Overload>>().cloned();
    let Some(overload) = overload.filter(|_| request.path() != "/healthz") else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let Some(slot) = overload.admit() else {
        overload.refused(Limit::InFlight);
        let error = ApiError::overloaded(format!(
            "The gateway is serving its limit of {} requests at once; retry shortly",
            overload.max_in_flight()
        ));
        return Ok(request.error_response(error));
    };
    let response = next.call(request).await?;
    Ok(response.map_body(|_, body| {
        BoxBody::new(Slotted {
            body: body.boxed(),
            slot: Some(slot),
        })
    }))
}

/// A response body that holds its request's in-flight slot until it has
/// been sent, or dropped.
struct Slotted {
    body: BoxBody,
    slot: Option<OwnedSemaphorePermit>,
}

impl MessageBody for Slotted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_next(cx);
        if let Poll::Ready(None) = polled {
            self.slot = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overload(grace_ms: u64) -> Overload {
        Overload::new(
            &OverloadLimits {
                memory_budget_bytes: 1 << 20,
                budget_from: "test",
                max_in_flight: 2,
                grace: Duration::from_millis(grace_ms),
            },
            MemoryBudget::new(1 << 20),
            None,
        )
    }

    #[test]
    fn slots_are_limited_and_come_back_when_dropped() {
        let overload = overload(0);
        let first = overload.admit().unwrap();
        let _second = overload.admit().unwrap();
        assert!(overload.admit().is_none());
        drop(first);
        assert!(overload.admit().is_some());
    }

    #[tokio::test]
    async fn shedding_is_sustained_past_the_grace_and_ends_after_a_quiet_second() {
        let overload = overload(100);
        assert_eq!(overload.shedding_for(), None);
        overload.refused(Limit::InFlight);
        assert!(overload.shedding_for().is_some());
        assert!(!overload.sustained(), "within the grace period");
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            overload.refused(Limit::Memory);
        }
        assert!(overload.sustained());
        tokio::time::sleep(EPISODE_GAP + Duration::from_millis(100)).await;
        assert!(!overload.sustained(), "a quiet second ends the episode");
        overload.refused(Limit::InFlight);
        assert!(!overload.sustained(), "a new episode starts its own grace");
    }
}
