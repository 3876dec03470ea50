//! The response cache: answers to identical requests served again, from
//! this process or from a store every replica shares, and identical
//! requests in flight answered by one upstream call.
//!
//! A request is cacheable when its catalog model or its key's policy gives
//! a time to live ([`CacheRule`]). Its key ([`CacheKey`]) is a SHA-256 of
//! everything that decides the answer; only answers that completed are
//! stored ([`CachedAnswer`]), in a [`CacheStore`].

mod flight;
mod front;
mod key;
pub(crate) mod status;
mod store;

pub use flight::{Flights, Follower, Joined, Leader, Received};
pub use front::{FLIGHT_MAX_BYTES, ResponseCache};
pub use key::{CacheKey, KeyParts, UpstreamPart};
pub use status::CacheStatus;
pub use store::{
    CacheDirectives, CacheRule, CacheStore, CacheUsage, CachedAnswer, CachedBody, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRY_BYTES, MAX_TTL, ttl_from_seconds,
};

#[cfg(any(test, feature = "mocks"))]
pub use store::MockCacheStore;
