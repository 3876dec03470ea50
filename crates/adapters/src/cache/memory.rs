//! [`InProcessCache`]: answers kept in this process's memory, bounded in
//! bytes, each expiring after the time to live it was stored with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatewayz_domain::cache::{CacheKey, CacheStore, CacheUsage, CachedAnswer, CachedBody};
use gatewayz_domain::limits::StoreError;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;

/// The longest time to live an entry is given: a bound for Redis's `PX` and
/// for the in-process clock's arithmetic.
pub(super) use gatewayz_domain::cache::MAX_TTL;

/// What an entry costs beside its body's bytes: its key, its value's
/// fields, and the cache's own bookkeeping, roughly.
const ENTRY_OVERHEAD: u64 = 100;

/// What each chunk of a stream's answer costs beside its bytes (its `Bytes`
/// handle).
const CHUNK_OVERHEAD: u64 = 32;

/// Answers in the process, at most `max_bytes` of them (bodies and
/// overhead): past it, moka's TinyLFU policy evicts the least useful. Each
/// expires after the time to live it was put with.
#[derive(Clone)]
pub struct InProcessCache {
    cache: Cache<CacheKey, Arc<Stored>>,
    /// Entries evicted to make room (not those expired or replaced).
    evictions: Arc<AtomicU64>,
}

/// An answer and its own time to live, which moka reads back through
/// [`OwnTtl`].
#[derive(Debug)]
struct Stored {
    answer: CachedAnswer,
    ttl: Duration,
}

/// How full the in-process cache is, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    /// Bodies and their overhead, as counted against the cache's bound.
    pub bytes: u64,
    /// Entries evicted to make room since the cache was made.
    pub evictions: u64,
}

impl std::fmt::Debug for InProcessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCache")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl InProcessCache {
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = Arc::clone(&evictions);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, stored: &Arc<Stored>| weight(&stored.answer))
            .expire_after(OwnTtl)
            .eviction_listener(move |_key, _stored, cause| {
                if cause == RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { cache, evictions }
    }

    /// The cache's size now (its pending maintenance run first, so that
    /// the numbers include the latest writes and evictions).
    pub fn stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        CacheStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// An entry's weight: its body's bytes and overhead, saturated at what a
/// weight can hold (far past any answer the gateway stores).
fn weight(answer: &CachedAnswer) -> u32 {
    let chunks = match &answer.body {
        CachedBody::Whole(_) => 0,
        CachedBody::Chunks(chunks) => chunks.len(),
    };
    let bytes = u64::try_from(answer.body.len())
        .unwrap_or(u64::MAX)
        .saturating_add(ENTRY_OVERHEAD)
        .saturating_add(CHUNK_OVERHEAD.saturating_mul(u64::try_from(chunks).unwrap_or(u64::MAX)));
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Each entry lives for the time to live it was put with; a put over an
/// entry starts the new one's.
struct OwnTtl;

impl Expiry<CacheKey, Arc<Stored>> for OwnTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        stored: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        stored: &Arc<Stored>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }
}

#[async_trait]
impl CacheStore for InProcessCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, StoreError> {
        Ok(self.cache.get(key).map(|stored| stored.answer.clone()))
    }

    async fn put(&self, key: &CacheKey, answer: &CachedAnswer, ttl: Duration) -> Result<(), StoreError> {
        let stored = Stored {
            answer: answer.clone(),
            ttl: ttl.min(MAX_TTL),
        };
        self.cache.insert(*key, Arc::new(stored));
        Ok(())
    }

    fn usage(&self) -> Option<CacheUsage> {
        let stats = self.stats();
        Some(CacheUsage {
            entries: stats.entries,
            bytes: stats.bytes,
            evictions: stats.evictions,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(index: u32) -> CacheKey {
        let mut bytes = [0; 32];
        bytes[..4].copy_from_slice(&index.to_le_bytes());
        CacheKey::from_bytes(bytes)
    }

    fn whole(text: &'static str) -> CachedAnswer {
        CachedAnswer {
            stored_at: 1_906_545_600,
            body: CachedBody::Whole(Bytes::from_static(text.as_bytes())),
        }
    }

    fn chunks(texts: &[&'static str]) -> CachedAnswer {
        CachedAnswer {
            stored_at: 1_906_545_601,
            body: CachedBody::Chunks(
                texts
                    .iter()
                    .map(|text| Bytes::from_static(text.as_bytes()))
                    .collect(),
            ),
        }
    }

    #[tokio::test]
    async fn an_answer_put_is_got_back_equal_and_another_key_is_a_miss() {
        let cache = InProcessCache::new(1024 * 1024);
        cache.put(&key(1), &whole(r#"{"id":"a"}"#), MINUTE).await.unwrap();
        cache
            .put(&key(2), &chunks(&["{}", r#"{"b":1}"#]), MINUTE)
            .await
            .unwrap();

        assert_eq!(cache.get(&key(1)).await.unwrap(), Some(whole(r#"{"id":"a"}"#)));
        assert_eq!(
            cache.get(&key(2)).await.unwrap(),
            Some(chunks(&["{}", r#"{"b":1}"#]))
        );
        assert_eq!(cache.get(&key(3)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn each_answer_expires_after_its_own_ttl() {
        let cache = InProcessCache::new(1024 * 1024);
        cache
            .put(&key(1), &whole("brief"), Duration::from_millis(50))
            .await
            .unwrap();
        cache.put(&key(2), &whole("lasting"), MINUTE).await.unwrap();
        // Put for a minute, then again for 50 ms: the second ttl holds.
        cache.put(&key(3), &whole("first"), MINUTE).await.unwrap();
        cache
            .put(&key(3), &whole("shortened"), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(cache.get(&key(1)).await.unwrap().is_some());

        // moka reads the real clock: tokio's paused time would not move it.
        tokio::time::sleep(Duration::from_millis(100)).await;

        assert_eq!(cache.get(&key(1)).await.unwrap(), None);
        assert_eq!(cache.get(&key(2)).await.unwrap(), Some(whole("lasting")));
        assert_eq!(cache.get(&key(3)).await.unwrap(), None);
        assert_eq!(cache.stats().evictions, 0, "an expiry is not an eviction");
    }

    #[tokio::test]
    async fn a_full_cache_stays_within_its_bytes_and_counts_its_evictions() {
        let max_bytes = 10_000;
        let cache = InProcessCache::new(max_bytes);
        let body = "x".repeat(100);
        for index in 0..1_000 {
            let answer = CachedAnswer {
                stored_at: 0,
                body: CachedBody::Whole(Bytes::from(body.clone())),
            };
            cache.put(&key(index), &answer, MINUTE).await.unwrap();
        }

        let stats = cache.stats();
        assert!(stats.bytes <= max_bytes, "{stats:?}");
        assert!(stats.entries > 0 && stats.entries < 1_000, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }

    #[tokio::test]
    async fn stats_count_entries_and_their_bytes_with_overhead() {
        let cache = InProcessCache::new(1024 * 1024);
        assert_eq!(cache.stats(), CacheStats::default());

        cache.put(&key(1), &whole("0123456789"), MINUTE).await.unwrap();
        let one = cache.stats();
        assert_eq!((one.entries, one.bytes), (1, 10 + ENTRY_OVERHEAD));

        cache.put(&key(2), &chunks(&["abc", "de"]), MINUTE).await.unwrap();
        let two = cache.stats();
        assert_eq!(
            (two.entries, two.bytes),
            (2, 10 + ENTRY_OVERHEAD + 5 + ENTRY_OVERHEAD + 2 * CHUNK_OVERHEAD)
        );
        assert_eq!(two.evictions, 0);

        let shown = format!("{cache:?}");
        assert!(shown.contains("entries: 2") && !shown.contains("abc"), "{shown}");
    }
}
