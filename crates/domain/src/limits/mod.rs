//! Per-key limits: who may call which model, and how much.
//!
//! A request of a key with limits is admitted by the [`LimitsStore`] before
//! any upstream call: one request against its requests-a-minute limit, a
//! reservation of tokens (the prompt's estimate plus the output limit)
//! against its tokens-a-minute limit and of their price against its budget,
//! and a lease on one of its parallel slots. When the answer or the stream
//! ends, however it ends, the reservation is settled exactly once with what
//! was really used, and the lease given back. A lease a crashed replica never
//! gave back expires by itself.

mod gcra;
pub(crate) mod headers;
pub(crate) mod policy;
pub(crate) mod store;
mod ticket;

pub use gcra::{Denied, Gcra, WINDOW_US, WindowState};
pub use headers::{openai_duration, standing_headers};
pub use policy::{BudgetPeriod, KeyPolicy, ModelPattern, PeriodWindow, SpendLimit, usd_to_micros};
#[cfg(any(test, feature = "mocks"))]
pub use store::MockLimitsStore;
pub use store::{
    Admission, Decision, LEASE_TTL, LimitKind, LimitsStore, Settlement, Spend, Standing, StoreError,
};
pub use ticket::Limits;
pub(crate) use ticket::{Ticket, now_unix};

#[cfg(test)]
mod tests;
