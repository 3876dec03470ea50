//! The cache as the use case sees it: a store, the flights of this
//! process, the largest answer kept, and a pause after a store error.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::StoreError;

use super::flight::{Flights, Joined};
use super::key::CacheKey;
use super::store::{CacheStore, CachedAnswer};

/// How long the store is left alone after it failed: its requests are
/// misses meanwhile, so that a store that hangs costs one request its
/// deadline, not every request.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A store, with this process's flights.
#[derive(Clone)]
pub struct ResponseCache {
    store: Arc<dyn CacheStore>,
    flights: Flights,
    max_entry_bytes: usize,
    paused_until: Arc<Mutex<Option<Instant>>>,
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
            paused_until: Arc::default(),
        }
    }

    pub const fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// Joins the flight of `key` (see [`Flights::join`]).
    pub fn join(&self, key: CacheKey) -> Joined {
        self.flights.join(key, self.max_entry_bytes)
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
        if self.paused() {
            return Ok(None);
        }
        let answer = self.store.get(key).await;
        self.note(answer.as_ref().err());
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
        if self.paused() {
            return Ok(false);
        }
        let stored = self.store.put(key, answer, ttl).await;
        self.note(stored.as_ref().err());
        stored.map(|()| true)
    }

    /// What the store holds, when it is in this process.
    pub fn usage(&self) -> Option<super::store::CacheUsage> {
        self.store.usage()
    }

    fn paused(&self) -> bool {
        let paused_until = self.paused_until.lock().unwrap_or_else(PoisonError::into_inner);
        paused_until.is_some_and(|until| Instant::now() < until)
    }

    fn note(&self, error: Option<&StoreError>) {
        if error.is_some() {
            *self.paused_until.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(Instant::now() + PAUSE_AFTER_ERROR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::{CachedBody, MockCacheStore};

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
