//! The [`LimitsStore`] port and what it is asked and answers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::gcra::WindowState;
use super::policy::KeyPolicy;

/// How long a parallel lease lives unless renewed: a replica that dies
/// stops renewing its leases, and their slots come back after this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// What a request reserves at admission, and what it really used at
/// settlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    /// Prompt and completion tokens.
    pub tokens: u64,
    /// Millionths of a dollar, as the catalog prices them.
    pub usd_micros: u64,
}

impl Spend {
    /// The most either count may be: 2^50, far past any real request
    /// (a thousand million dollars, 10^15 tokens) and within what a double
    /// (Redis's Lua) holds exactly.
    pub const MAX: u64 = 1 << 50;

    /// This spend with each count at most [`Self::MAX`]: what a client's
    /// `max_tokens` or an upstream's usage says never overflows a store.
    #[must_use]
    pub fn bounded(self) -> Self {
        Self {
            tokens: self.tokens.min(Self::MAX),
            usd_micros: self.usd_micros.min(Self::MAX),
        }
    }
}

/// One request asking to be admitted.
#[derive(Debug, Clone)]
pub struct Admission {
    pub policy: Arc<KeyPolicy>,
    /// Names the request's parallel lease (its request id).
    pub lease: String,
    pub reserve: Spend,
    /// Unix time in microseconds.
    pub now_us: u64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Parallel,
    Budget,
}

impl LimitKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Parallel => "parallel",
            Self::Budget => "budget",
        }
    }
}

/// Where a key stands against its limits: what the answer's
/// `x-ratelimit-*` and `x-gatewayz-budget-remaining-usd` headers say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Standing {
    pub requests: Option<WindowState>,
    pub tokens: Option<WindowState>,
    /// Requests of the key in flight now (with `max_parallel`).
    pub in_flight: Option<u64>,
    /// Spent in the current period, in millionths of a dollar, reservations
    /// included (with a budget).
    pub spent_usd_micros: Option<u64>,
    /// What is left of the budget, in dollars (with a budget).
    pub budget_remaining_usd: Option<f64>,
    /// Counted in this process only: the shared store could not be reached
    /// and the gateway is set to admit anyway
    /// (`GATEWAYZ_LIMITS_ON_STORE_ERROR=open`).
    pub degraded: bool,
}

/// The store's answer to an [`Admission`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admitted: its reservation and lease are held until settled.
    Admitted(Standing),
    /// Refused by `limit`; nothing is held.
    Refused {
        limit: LimitKind,
        retry_after: Duration,
        standing: Standing,
    },
}

/// The end of an admitted request: what it reserved, what it used.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub policy: Arc<KeyPolicy>,
    pub lease: String,
    pub reserved: Spend,
    pub used: Spend,
    /// Usage the upstream never reported (the client left first), estimated
    /// from what was relayed.
    pub estimated: bool,
    /// When the admission was made (Unix µs): the budget period it was
    /// charged to.
    pub admitted_us: u64,
    pub now_us: u64,
}

/// The limits store could not be reached or did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the limits store is unavailable: {0}")]
pub struct StoreError(pub String);

/// Where the counters live: in the process, or shared by every replica
/// (Redis).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LimitsStore: Send + Sync {
    /// Admits the request or names the limit that refuses it, in one atomic
    /// step: requests, tokens and budget are checked and taken together, and
    /// a refused request holds nothing.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer; nothing is held then.
    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError>;

    /// Settles an admitted request: gives back (or charges) the difference
    /// between its reservation and its real use, and releases its lease.
    /// Called exactly once per admitted request.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer; the reservation then
    /// stands (never less than was reserved is charged) and the lease
    /// expires by itself.
    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError>;

    /// Where `policy`'s key stands now, for the admin API.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn standing(&self, policy: &KeyPolicy, now_us: u64) -> Result<Standing, StoreError>;

    /// Whether the store counts in this process only for now, because the
    /// shared store it stands in for cannot be reached.
    fn is_degraded(&self) -> bool {
        false
    }
}
