//! [`DegradingLimits`]: a shared store (Redis) with a policy for when it
//! fails: admit and count in this process (`open`), or refuse (`closed`).
//!
//! Never silent: while the shared store fails, [`DegradingLimits::is_degraded`]
//! is true (the `gatewayz_limits_degraded` gauge), a warning naming the mode
//! is logged at most once a minute, and a decision made locally says so
//! ([`Standing::degraded`], for the `x-gatewayz-limits: degraded` header). Never stuck: every request while degraded may probe the shared
//! store (one at a time, so that a wedged store costs one request its
//! deadline rather than each of them), and the first success ends it.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatewayz_domain::limits::{
    Admission, Decision, KeyPolicy, LimitsStore, Settlement, Standing, StoreError,
};
use serde::Deserialize;

use super::memory::InProcessLimits;

/// The least time between two warnings of a failing store.
const WARN_EVERY: Duration = Duration::from_secs(60);

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
/// store that admitted it.
pub struct DegradingLimits {
    primary: Arc<dyn LimitsStore>,
    local: InProcessLimits,
    mode: OnStoreError,
    /// The last call to the primary failed.
    degraded: AtomicBool,
    /// A request is calling the primary while degraded.
    probing: AtomicBool,
    last_warning: Mutex<Option<Instant>>,
}

impl DegradingLimits {
    pub fn new(primary: Arc<dyn LimitsStore>, mode: OnStoreError) -> Self {
        Self {
            primary,
            local: InProcessLimits::new(),
            mode,
            degraded: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            last_warning: Mutex::new(None),
        }
    }

    pub fn mode(&self) -> OnStoreError {
        self.mode
    }

    /// Whether the last call to the shared store failed (and no call has
    /// succeeded since).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
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

    /// `Some` when this request may call the primary: always while it
    /// works, one request at a time while it fails.
    fn may_call_primary(&self) -> Option<Probe<'_>> {
        if !self.is_degraded() {
            return Some(Probe(None));
        }
        (!self.probing.swap(true, Ordering::AcqRel)).then(|| Probe(Some(&self.probing)))
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(
                mode = self.mode.as_str(),
                "limits store answers again: limits are shared again"
            );
        }
    }

    fn failed(&self, error: &StoreError) {
        self.degraded.store(true, Ordering::Relaxed);
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
}

/// The right to probe the primary while degraded, given back on drop (also
/// when the request is cancelled).
struct Probe<'a>(Option<&'a AtomicBool>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(probing) = self.0 {
            probing.store(false, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for DegradingLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DegradingLimits")
            .field("mode", &self.mode)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LimitsStore for DegradingLimits {
    /// By the shared store; when it fails, in this process with
    /// [`Standing::degraded`] set (mode `open`) or not at all (`closed`).
    ///
    /// # Errors
    /// [`StoreError`] when the shared store fails in mode `closed`; nothing
    /// is held then.
    fn is_degraded(&self) -> bool {
        DegradingLimits::is_degraded(self)
    }

    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError> {
        let Some(_probe) = self.may_call_primary() else {
            return self
                .fall_back(admission, StoreError("the limits store is failing".to_owned()))
                .await;
        };
        match self.primary.admit(admission).await {
            Ok(decision) => {
                self.succeeded();
                Ok(decision)
            }
            Err(error) => {
                self.failed(&error);
                self.fall_back(admission, error).await
            }
        }
    }

    /// In the store that admitted the request.
    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        if self.local.holds(&settlement.policy.id, &settlement.lease) {
            return self.local.settle(settlement).await;
        }
        match self.primary.settle(settlement).await {
            Ok(()) => {
                self.succeeded();
                Ok(())
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// The shared store's view; its error whatever the mode, since the local
    /// counts are one replica's only.
    async fn standing(&self, policy: &KeyPolicy, now_us: u64) -> Result<Standing, StoreError> {
        self.primary.standing(policy, now_us).await
    }
}
