//! [`DegradingLimits`]: a shared store (Redis) with a policy for when it
//! fails: admit and count in this process (`open`), or refuse (`closed`).
//!
//! Never silent: while the shared store fails, [`DegradingLimits::is_degraded`]
//! is true (the `gatewayz_limits_degraded` gauge), a warning naming the mode
//! is logged at most once a minute, and a decision made locally says so
//! ([`Standing::degraded`], for the `x-gatewayz-limits: degraded` header).
//!
//! Never stuck, and never slow: while degraded, requests go straight to the
//! fallback, and a background task probes the shared store every
//! [`PROBE_EVERY`] (reading a standing, which changes nothing); its first
//! success, or that of any settlement, ends the degraded state, with or
//! without traffic. A wedged store thus costs its deadline to the requests
//! that found it failing, and to no request after them. The probe runs on
//! the runtime the store was built on (the gateway's main one), not on
//! whichever worker's first saw the failure; and should its task end
//! anyway (its runtime shut down), the next request finds the store out
//! and starts another.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gatewayz_domain::limits::{
    Admission, Decision, KeyPolicy, LimitsStore, Settlement, Standing, StoreError,
};
use serde::Deserialize;
use tokio::runtime::Handle;

use super::memory::InProcessLimits;

/// The least time between two warnings of a failing store.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How often the shared store is probed while it fails: how long after it
/// answers again its counts are used again (the probe's own round trip
/// aside), with or without traffic.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The key whose standing the probe reads. Reading changes nothing, so it
/// may be any key's, a real one's included.
const PROBE_KEY_ID: &str = "gatewayz-limits-probe";

/// What to do with a request when the shared store fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Admit it, counting in this process only: each replica then enforces
    /// the limits on its own.
    #[default]
    Open,
    /// Refuse it with the store's error (503 `limits_unavailable`).
    Closed,
}

impl OnStoreError {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

impl FromStr for OnStoreError {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("expected open or closed, not {other:?}")),
        }
    }
}

/// A shared store and what to do when it fails. Settles each request in the
/// store that admitted it. Its probe stops when it is dropped.
pub struct DegradingLimits {
    inner: Arc<Inner>,
}

struct Inner {
    primary: Arc<dyn LimitsStore>,
    local: InProcessLimits,
    mode: OnStoreError,
    /// The last call to the primary failed.
    degraded: AtomicBool,
    /// The background probe runs (from the first failure on).
    probing: AtomicBool,
    /// Where the probe runs: the runtime the store was built on, which
    /// lives as long as it; else the one that first sees a failure.
    runtime: Option<Handle>,
    last_warning: Mutex<Option<Instant>>,
}

impl DegradingLimits {
    /// Built within a runtime (the gateway's main one), the store probes on
    /// it: it must live as long as the store.
    pub fn new(primary: Arc<dyn LimitsStore>, mode: OnStoreError) -> Self {
        Self {
            inner: Arc::new(Inner {
                primary,
                local: InProcessLimits::new(),
                mode,
                degraded: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                runtime: Handle::try_current().ok(),
                last_warning: Mutex::new(None),
            }),
        }
    }

    pub fn mode(&self) -> OnStoreError {
        self.inner.mode
    }

    /// Whether the last call to the shared store failed (and no call has
    /// succeeded since).
    pub fn is_degraded(&self) -> bool {
        self.inner.is_degraded()
    }
}

impl Inner {
    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Whether a request may call the primary: while it works, or while it
    /// fails with no probe to find it back (no runtime to run one).
    fn may_call_primary(&self) -> bool {
        !self.is_degraded() || !self.probing.load(Ordering::Acquire)
    }

    async fn fall_back(&self, admission: &Admission, error: StoreError) -> Result<Decision, StoreError> {
        match self.mode {
            OnStoreError::Open => Ok(match self.local.admit(admission).await? {
                Decision::Admitted(standing) => Decision::Admitted(Standing {
                    degraded: true,
                    ..standing
                }),
                Decision::Refused {
                    limit,
                    retry_after,
                    standing,
                } => Decision::Refused {
                    limit,
                    retry_after,
                    standing: Standing {
                        degraded: true,
                        ..standing
                    },
                },
            }),
            OnStoreError::Closed => Err(error),
        }
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(
                mode = self.mode.as_str(),
                "limits store answers again: limits are shared again"
            );
        }
    }

    fn failed(self: &Arc<Self>, error: &StoreError) {
        self.degraded.store(true, Ordering::Relaxed);
        self.start_probing();
        let now = Instant::now();
        let mut last = self.last_warning.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
            *last = Some(now);
            match self.mode {
                OnStoreError::Open => tracing::warn!(
                    mode = "open",
                    %error,
                    "limits store failing: admitting and counting in this process only (each replica enforces the limits on its own)"
                ),
                OnStoreError::Closed => tracing::warn!(
                    mode = "closed",
                    %error,
                    "limits store failing: refusing requests of keys with limits (503 limits_unavailable)"
                ),
            }
        }
    }

    /// Starts the background probe, once: it runs until the store is
    /// dropped, idle while the primary works.
    fn start_probing(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Made before the task: dropped unrun (a runtime shutting down), it
        // still says the probe is not running.
        let running = Probing(Arc::downgrade(self));
        match self.runtime.clone().or_else(|| Handle::try_current().ok()) {
            Some(runtime) => {
                runtime.spawn(probe(Arc::downgrade(self), running));
            }
            // Requests probe in its stead (see `may_call_primary`).
            None => drop(running),
        }
    }
}

/// Held by the probe's task: when the task ends, however it ends (the
/// store dropped, or the runtime it ran on shut down), the store knows that
/// no probe runs, so that a request calls the primary and starts another.
struct Probing(Weak<Inner>);

impl Drop for Probing {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.probing.store(false, Ordering::Release);
        }
    }
}

/// Every [`PROBE_EVERY`] while the store behind `inner` is degraded, asks
/// its primary for a standing, which changes nothing: an answer ends the
/// degraded state. Ends when the store is dropped.
async fn probe(inner: Weak<Inner>, _running: Probing) {
    let policy = KeyPolicy::unlimited(PROBE_KEY_ID);
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(store) = inner.upgrade() else {
            return;
        };
        if !store.is_degraded() {
            continue;
        }
        match store.primary.standing(&policy, now_us()).await {
            Ok(_) => store.succeeded(),
            Err(error) => store.failed(&error),
        }
    }
}

/// Unix time in microseconds.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

impl std::fmt::Debug for DegradingLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DegradingLimits")
            .field("mode", &self.inner.mode)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LimitsStore for DegradingLimits {
    fn is_degraded(&self) -> bool {
        DegradingLimits::is_degraded(self)
    }

    /// By the shared store; when it fails, or while it is known to fail, in
    /// this process with [`Standing::degraded`] set (mode `open`) or not at
    /// all (`closed`).
    ///
    /// # Errors
    /// [`StoreError`] when the shared store fails in mode `closed`; nothing
    /// is held then.
    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError> {
        let inner = &self.inner;
        if !inner.may_call_primary() {
            return inner
                .fall_back(admission, StoreError("the limits store is failing".to_owned()))
                .await;
        }
        match inner.primary.admit(admission).await {
            Ok(decision) => {
                inner.succeeded();
                Ok(decision)
            }
            Err(error) => {
                inner.failed(&error);
                inner.fall_back(admission, error).await
            }
        }
    }

    /// In the store that admitted the request.
    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.local.holds(&settlement.policy.id, &settlement.lease) {
            return inner.local.settle(settlement).await;
        }
        match inner.primary.settle(settlement).await {
            Ok(()) => {
                inner.succeeded();
                Ok(())
            }
            Err(error) => {
                inner.failed(&error);
                Err(error)
            }
        }
    }

    /// The shared store's view; its error whatever the mode, since the local
    /// counts are one replica's only.
    async fn standing(&self, policy: &KeyPolicy, now_us: u64) -> Result<Standing, StoreError> {
        self.inner.primary.standing(policy, now_us).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

    use gatewayz_domain::limits::Spend;
    use tokio::runtime::{Builder, Runtime};

    use super::*;

    /// A shared store that fails until told otherwise.
    #[derive(Debug, Default)]
    struct StandIn {
        up: AtomicBool,
    }

    impl StandIn {
        fn answer<T>(&self, value: T) -> Result<T, StoreError> {
            if self.up.load(Ordering::SeqCst) {
                Ok(value)
            } else {
                Err(StoreError("down".to_owned()))
            }
        }
    }

    #[async_trait]
    impl LimitsStore for StandIn {
        async fn admit(&self, _: &Admission) -> Result<Decision, StoreError> {
            self.answer(Decision::Admitted(Standing::default()))
        }

        async fn settle(&self, _: &Settlement) -> Result<(), StoreError> {
            self.answer(())
        }

        async fn standing(&self, _: &KeyPolicy, _: u64) -> Result<Standing, StoreError> {
            self.answer(Standing::default())
        }
    }

    /// A worker's runtime: one thread, ended when dropped.
    fn worker_runtime() -> Runtime {
        Builder::new_current_thread().enable_time().build().unwrap()
    }

    /// Whether `store` admits a request locally (degraded), on `runtime`.
    fn admitted_locally(store: &DegradingLimits, runtime: &Runtime) -> bool {
        let admission = Admission {
            policy: Arc::new(KeyPolicy::unlimited("worker")),
            lease: "lease".to_owned(),
            reserve: Spend::default(),
            now_us: now_us(),
        };
        match runtime.block_on(store.admit(&admission)).unwrap() {
            Decision::Admitted(standing) | Decision::Refused { standing, .. } => standing.degraded,
        }
    }

    #[test]
    fn the_probe_outlives_the_worker_runtime_that_first_saw_the_failure() {
        let main = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let primary = Arc::new(StandIn::default());
        let store = {
            let _main = main.enter();
            DegradingLimits::new(primary.clone(), OnStoreError::Open)
        };
        let worker = worker_runtime();
        assert!(admitted_locally(&store, &worker));
        drop(worker);

        primary.up.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + PROBE_EVERY * 6;
        while store.is_degraded() {
            assert!(Instant::now() < deadline, "still degraded, with no request");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_probe_whose_runtime_ended_is_started_again_by_the_next_request() {
        // Built outside any runtime: the probe runs where the failure is seen.
        let primary = Arc::new(StandIn::default());
        let store = DegradingLimits::new(primary.clone(), OnStoreError::Open);
        let worker = worker_runtime();
        assert!(admitted_locally(&store, &worker));
        drop(worker);
        assert!(store.is_degraded());

        primary.up.store(true, Ordering::SeqCst);
        let next = worker_runtime();
        assert!(
            !admitted_locally(&store, &next),
            "no probe runs, so the request asks the shared store itself"
        );
        assert!(!store.is_degraded());
    }
}
