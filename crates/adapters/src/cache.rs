//! The [`CacheStore`](gatewayz_domain::cache::CacheStore)s: where answers
//! to identical requests are kept.
//!
//! - [`InProcessCache`]: in this process's memory, bounded in bytes, each
//!   entry expiring after its own time to live.
//! - [`RedisCache`]: in Redis beside the key limits (the same connections
//!   and deadline), shared by every replica.

mod encoding;
mod memory;
mod redis;

pub use memory::{CacheStats, InProcessCache};
pub use redis::RedisCache;
