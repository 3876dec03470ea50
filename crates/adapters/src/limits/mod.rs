//! The [`LimitsStore`](gatewayz_domain::LimitsStore)s: where each key's
//! request and token windows, parallel leases and budget spend are counted.
//!
//! - [`InProcessLimits`]: in the process, nothing to run; the embedded
//!   default for one replica.
//! - [`RedisLimits`]: in Redis (≥ 7) or Valkey, shared by every replica; one
//!   script a round trip for admission, another for settlement.
//! - [`DegradingLimits`]: a shared store with a local fallback, open or
//!   closed when the shared one fails.
//!
//! Both stores count the same way: the GCRA of
//! [`gatewayz_domain::limits::Gcra`] (the Redis store runs it as Lua), one
//! lease per admitted request, and spend per UTC budget period in millionths
//! of a dollar. Every admission records a lease, limited or not: settling
//! removes it, and a settlement whose lease is gone changes nothing, so a
//! second settlement of the same request is harmless. Lease ids must
//! therefore be unique per admission.

mod counters;
mod degrading;
mod memory;
mod redacted;
mod redis;

pub use counters::{PARALLEL_RETRY, TOTAL_BUDGET_RETRY};
pub use degrading::{DegradingLimits, OnStoreError, PROBE_EVERY};
pub use memory::InProcessLimits;
pub use redis::{RedisLimits, RedisSettings, RedisUrlError};
