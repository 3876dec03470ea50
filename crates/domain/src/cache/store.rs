//! What the cache keeps and where: the rules and directives that decide
//! whether a request is cached, what is stored, and the store's port.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::limits::StoreError;

use super::key::CacheKey;

/// The default largest answer stored (`GATEWAYZ_CACHE_MAX_ENTRY_BYTES`).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// The default size of the in-process cache (`GATEWAYZ_CACHE_MAX_BYTES`).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The longest time an answer is cached (`cache_ttl_s`): a year.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A `cache_ttl_s` as written in the catalog or a key policy: whole
/// seconds from 0 (off) to a year.
///
/// # Errors
/// What is wrong with any other value, to name it by.
pub fn ttl_from_seconds(value: i64) -> Result<Duration, String> {
    u64::try_from(value)
        .ok()
        .map(Duration::from_secs)
        .filter(|ttl| *ttl <= MAX_TTL)
        .ok_or_else(|| format!("must be between 0 and {} seconds, got {value}", MAX_TTL.as_secs()))
}

/// When a catalog model's answers are cached, and who shares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRule {
    /// How long an answer is served again.
    pub ttl: Duration,
    /// Shared by every key (`cache_scope = "shared"`); else each key has its
    /// own answers.
    pub shared: bool,
}

/// What a client asked of the cache (its `Cache-Control` header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// `max-age=N`: use an answer at most this old.
    pub max_age: Option<Duration>,
    /// `no-cache`: do not use a stored answer, but store a fresh one.
    pub no_cache: bool,
    /// `no-store`: neither use nor store.
    pub no_store: bool,
}

/// A stored answer, as the upstream sent it (before the gateway added its
/// `gateway_usage`): a whole JSON answer, or a stream's events' JSON texts
/// in order. Either can be replayed as the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedBody {
    Whole(Bytes),
    Chunks(Vec<Bytes>),
}

impl CachedBody {
    /// The bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Self::Whole(json) => json.len(),
            Self::Chunks(chunks) => chunks.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An answer in the cache, and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    /// Unix time, in seconds, of its storing.
    pub stored_at: u64,
    pub body: CachedBody,
}

/// Where answers are kept: in the process, or in a store every replica
/// shares.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The answer stored under `key`, if any (an expired one is none).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer: the request is then a
    /// miss, never a failure.
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, StoreError>;

    /// Stores `answer` under `key` for `ttl`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    async fn put(&self, key: &CacheKey, answer: &CachedAnswer, ttl: Duration) -> Result<(), StoreError>;

    /// What it holds, when it is this process's to tell (a shared store
    /// is measured where it runs).
    fn usage(&self) -> Option<CacheUsage> {
        None
    }
}

/// What an in-process store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: u64,
    pub bytes: u64,
    /// Answers evicted to make room, since the start.
    pub evictions: u64,
}
