//! The cache as the use case sees it: a store, the flights of this
//! process, the largest answer kept, and a pause after a store error.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::StoreError;

use super::flight::{Flights, Joined};
use super::key::CacheKey;
use super::store::{CacheStore, CachedAnswer};

/// How long the store is left alone after it failed, at first: its
/// requests are misses meanwhile. Each failure in a row doubles it, up to
/// [`LONGEST_PAUSE`]; then one request at a time tries the store again,
/// so that a store that hangs costs one request its deadline now and then,
/// not every request.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Whether the store is being left alone.
#[derive(Debug, Default)]
struct Health {
    /// Until when, after a failure.
    paused_until: Option<Instant>,
    /// The pause the next failure starts.
    next_pause: Option<Duration>,
    /// A request is trying the store after a pause.
    probing: bool,
}

/// The most a flight keeps of an answer for its followers (in the memory
/// budget): past it, followers that have started get an error event and the
/// others make their own calls.
pub const FLIGHT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A store, with this process's flights.
#[derive(Clone)]
pub struct ResponseCache {
    store: Arc<dyn CacheStore>,
    flights: Flights,
    max_entry_bytes: usize,
    health: Arc<Mutex<Health>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// Keeps answers of at most `max_entry_bytes` in `store`.
    pub fn new(store: Arc<dyn CacheStore>, max_entry_bytes: usize) -> Self {
        Self {
            store,
            flights: Flights::default(),
            max_entry_bytes,
            health: Arc::default(),
        }
    }

    pub const fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// Joins the flight of `key` (see [`Flights::join`]): a flight keeps
    /// up to [`FLIGHT_MAX_BYTES`] (or the largest entry, if more) for its
    /// followers, so an answer too large to store is still shared.
    pub fn join(&self, key: CacheKey) -> Joined {
        self.flights.join(key, FLIGHT_MAX_BYTES.max(self.max_entry_bytes))
    }

    /// How many identical-request flights are in the air.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// The answer under `key`; `Ok(None)` while the store is paused.
    ///
    /// # Errors
    /// The store's error (which pauses it).
    pub async fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, StoreError> {
        if !self.may_call() {
            return Ok(None);
        }
        let answer = self.store.get(key).await;
        self.note(answer.is_ok());
        answer
    }

    /// Stores `answer` under `key` for `ttl`: whether it was written
    /// (nothing is, while the store is paused).
    ///
    /// # Errors
    /// The store's error (which pauses it).
    pub async fn put(
        &self,
        key: &CacheKey,
        answer: &CachedAnswer,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if !self.may_call() {
            return Ok(false);
        }
        let stored = self.store.put(key, answer, ttl).await;
        self.note(stored.is_ok());
        stored.map(|()| true)
    }

    /// What the store holds, when it is in this process.
    pub fn usage(&self) -> Option<super::store::CacheUsage> {
        self.store.usage()
    }

    /// Whether a call may go to the store: always while it is healthy;
    /// after a failure, none until the pause ends, then one at a time.
    fn may_call(&self) -> bool {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match health.paused_until {
            None => true,
            Some(until) if Instant::now() < until || health.probing => false,
            Some(_) => {
                health.probing = true;
                true
            }
        }
    }

    fn note(&self, succeeded: bool) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if succeeded {
            *health = Health::default();
            return;
        }
        let pause = health.next_pause.unwrap_or(PAUSE_AFTER_ERROR);
        health.paused_until = Some(Instant::now() + pause);
        health.next_pause = Some((pause * 2).min(LONGEST_PAUSE));
        health.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::{CachedBody, MockCacheStore};

    #[tokio::test]
    async fn after_the_pause_one_request_at_a_time_tries_the_store_and_failures_lengthen_the_pause() {
        let mut store = MockCacheStore::new();
        let mut calls = mockall::Sequence::new();
        for _ in 0..2 {
            store
                .expect_get()
                .times(1)
                .in_sequence(&mut calls)
                .returning(|_| Err(StoreError("down".into())));
        }
        store
            .expect_get()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Ok(None));
        let cache = ResponseCache::new(Arc::new(store), 1024);
        let key = CacheKey::from_bytes([1; 32]);
        assert!(cache.get(&key).await.is_err());
        assert!(!cache.may_call(), "paused");
        std::thread::sleep(PAUSE_AFTER_ERROR);
        // One probe goes through; the others meanwhile are misses.
        assert!(cache.may_call());
        assert!(!cache.may_call());
        cache.note(false);
        std::thread::sleep(PAUSE_AFTER_ERROR);
        assert!(!cache.may_call(), "the second pause is twice as long");
        std::thread::sleep(PAUSE_AFTER_ERROR);
        assert!(cache.get(&key).await.is_err());
        std::thread::sleep(4 * PAUSE_AFTER_ERROR);
        assert_eq!(cache.get(&key).await, Ok(None));
        assert!(
            cache.may_call() && cache.may_call(),
            "healthy again: every request"
        );
    }

    #[tokio::test]
    async fn after_a_store_error_the_store_is_left_alone_for_a_while() {
        let mut store = MockCacheStore::new();
        store
            .expect_get()
            .times(1)
            .returning(|_| Err(StoreError("down".into())));
        let cache = ResponseCache::new(Arc::new(store), 1024);
        let key = CacheKey::from_bytes([1; 32]);
        assert!(cache.get(&key).await.is_err());
        // Paused: neither asked nor written (the mock allows no more calls).
        assert_eq!(cache.get(&key).await, Ok(None));
        let answer = CachedAnswer {
            stored_at: 0,
            body: CachedBody::Whole("{}".into()),
        };
        assert_eq!(cache.put(&key, &answer, Duration::from_secs(1)).await, Ok(false));
    }
}
