//! Admission and settlement as the use case runs them: a request of a key
//! with limits is admitted (or refused) before any upstream call, and the
//! [`Ticket`] it gets settles it exactly once: with the upstream's usage
//! when it reported one, else with an estimate (the prompt's, plus a token
//! for each chunk relayed), however the request ended, even when it was
//! dropped (the client left, the gateway shut down).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use super::policy::{KeyPolicy, usd_to_micros};
use super::store::{Admission, Decision, LimitsStore, Settlement, Spend};
use crate::error::ChatError;
use crate::record::CallRecord;

/// Unix time in microseconds.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Unix time in seconds.
pub(crate) fn now_unix() -> i64 {
    i64::try_from(now_us() / 1_000_000).unwrap_or(i64::MAX)
}

/// Settlements queued for the worker; past this many, the rest are given
/// up (their reservations stand, their leases expire).
const QUEUED_SETTLEMENTS: usize = 4096;

/// The store, and the settlements still on their way to it.
#[derive(Clone)]
pub struct Limits {
    store: Arc<dyn LimitsStore>,
    pending: Arc<Pending>,
    /// To the worker on the runtime that built this (the process's main
    /// one), which sends the settlements no other runtime could: those
    /// of requests dropped as a server worker's runtime ended (the drain at
    /// shutdown ran out).
    queue: Option<mpsc::Sender<Settlement>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("pending", &self.pending.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    /// One settlement reached the store, or was given up.
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Limits {
    /// The limits counted in `store`. Called within a Tokio runtime, it
    /// starts there the worker that sends settlements to the store.
    pub fn new(store: Arc<dyn LimitsStore>) -> Self {
        let pending: Arc<Pending> = Arc::default();
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (queue, mut settlements) = mpsc::channel::<Settlement>(QUEUED_SETTLEMENTS);
            let (store, pending) = (Arc::clone(&store), Arc::clone(&pending));
            runtime.spawn(async move {
                while let Some(settlement) = settlements.recv().await {
                    let (store, pending) = (Arc::clone(&store), Arc::clone(&pending));
                    tokio::spawn(async move {
                        let _ = store.settle(&settlement).await;
                        pending.done();
                    });
                }
            });
            queue
        });
        Self {
            store,
            pending,
            queue,
        }
    }

    pub fn store(&self) -> &Arc<dyn LimitsStore> {
        &self.store
    }

    /// Waits until every settlement under way has reached the store, for at
    /// most `timeout`: at shutdown, after the last request ended.
    ///
    /// Returns whether all of them did.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let drained = async {
            loop {
                let idle = self.pending.idle.notified();
                if self.pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, drained).await.is_ok()
    }

    /// Admits a request of `policy` reserving `reserve`, or refuses it.
    ///
    /// # Errors
    /// [`ChatError::LimitExceeded`] or [`ChatError::BudgetExceeded`] when a
    /// limit refuses it; [`ChatError::LimitsUnavailable`] when the store
    /// cannot answer.
    pub(crate) async fn admit(
        &self,
        policy: &Arc<KeyPolicy>,
        lease: String,
        reserve: Spend,
        record: &CallRecord,
    ) -> Result<Ticket, ChatError> {
        let admission = Admission {
            policy: Arc::clone(policy),
            lease,
            reserve,
            now_us: now_us(),
        };
        let decision = self
            .store
            .admit(&admission)
            .await
            .map_err(ChatError::LimitsUnavailable)?;
        match decision {
            Decision::Admitted(standing) => {
                record.update(|facts| facts.limits = Some(standing));
                self.pending.count.fetch_add(1, Ordering::AcqRel);
                Ok(Ticket {
                    limits: self.clone(),
                    record: record.clone(),
                    admission: Some(admission),
                    prompt_estimate: 0,
                    completion_estimate: 0,
                    price: None,
                })
            }
            Decision::Refused {
                limit,
                retry_after,
                standing,
            } => {
                record.update(|facts| {
                    facts.limits = Some(standing);
                    facts.limit_refusal = Some(limit.as_str());
                });
                Err(ChatError::refused_by(limit, retry_after, policy, reserve))
            }
        }
    }
}

/// An admitted request's reservation, settled exactly once: by
/// [`Ticket::settle`], or when dropped.
pub(crate) struct Ticket {
    limits: Limits,
    /// Where the charge is noted, for the access log and the metrics.
    record: CallRecord,
    /// `None` once settled.
    admission: Option<Admission>,
    /// What the prompt is estimated to cost, in tokens.
    pub prompt_estimate: u64,
    /// The completion's estimate, in tokens, when the upstream reports no
    /// usage: a token for each content chunk relayed, or a whole answer's
    /// size over four.
    pub completion_estimate: u64,
    /// Dollars per token (prompt, completion) for the estimate.
    pub price: Option<(f64, f64)>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("settled", &self.admission.is_none())
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Settles with `used`, as the upstream reported it.
    pub fn settle(mut self, used: Spend) {
        self.send(used, false);
    }

    /// Settles with nothing used: the request failed before any upstream
    /// answer (the upstream bills nothing for a refused call).
    pub fn release(mut self) {
        self.send(Spend::default(), false);
    }

    /// What the request is estimated to have used: the prompt, and a token
    /// for each chunk relayed.
    fn estimate(&self) -> Spend {
        let completion = self.completion_estimate;
        let usd = self.price.map_or(0.0, |(prompt, output)| {
            self.prompt_estimate as f64 * prompt + completion as f64 * output
        });
        Spend {
            tokens: self.prompt_estimate.saturating_add(completion),
            usd_micros: usd_to_micros(usd),
        }
        .bounded()
    }

    fn send(&mut self, used: Spend, estimated: bool) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let settlement = Settlement {
            policy: admission.policy,
            lease: admission.lease,
            reserved: admission.reserve,
            used,
            estimated,
            admitted_us: admission.now_us,
            now_us: now_us(),
        };
        let job = Job {
            limits: self.limits.clone(),
            settlement: Some(settlement),
        };
        // On this thread's runtime, as cheap as a task is; without one, by
        // the worker.
        let sent = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(job.run());
                true
            }
            Err(_) => job.requeue(),
        };
        if sent {
            self.record.update(|facts| {
                facts.charged = Some(used);
                facts.usage_estimated = estimated;
            });
        }
    }
}

/// One settlement on its way to the store. A job dropped before it ran
/// (its runtime shut down, as a server worker's does when the drain at
/// shutdown runs out) hands its settlement to the worker on the main
/// runtime; settling twice is harmless (the second finds no lease).
struct Job {
    limits: Limits,
    settlement: Option<Settlement>,
}

impl Job {
    async fn run(mut self) {
        if let Some(settlement) = &self.settlement {
            // A failed settlement leaves the reservation charged (never
            // less than was reserved) and the lease to expire by itself.
            let _ = self.limits.store.settle(settlement).await;
            self.settlement = None;
            self.limits.pending.done();
        }
    }

    /// Hands the settlement to the worker: whether it took it. Nowhere to
    /// send it, the reservation stands and the lease expires by itself.
    fn requeue(mut self) -> bool {
        let Some(settlement) = self.settlement.take() else {
            return false;
        };
        let taken = self
            .limits
            .queue
            .as_ref()
            .is_some_and(|queue| queue.try_send(settlement).is_ok());
        if !taken {
            self.limits.pending.done();
        }
        taken
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.settlement.is_some() {
            let job = Job {
                limits: self.limits.clone(),
                settlement: self.settlement.take(),
            };
            job.requeue();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.admission.is_some() {
            let estimate = self.estimate();
            self.send(estimate, true);
        }
    }
}
