//! [`RedisCache`]: answers kept in Redis beside the key limits, so that
//! what one replica stored every replica serves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gatewayz_domain::cache::{CacheKey, CacheStore, CachedAnswer};
use gatewayz_domain::limits::StoreError;

use super::encoding::{decode, encode};
use super::memory::MAX_TTL;
use crate::limits::RedisLimits;

/// Answers in Redis (the limits store's connections, deadline and key
/// prefix), under `<prefix>:cache:<key in hex>`, each expiring after the
/// time to live it was put with.
pub struct RedisCache {
    redis: Arc<RedisLimits>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.redis.shown_url())
            .finish()
    }
}

impl RedisCache {
    pub fn new(redis: Arc<RedisLimits>) -> Self {
        Self { redis }
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}:cache:{key}", self.redis.key_prefix())
    }
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key(key));
        let value: Option<Vec<u8>> = self
            .redis
            .query("get a cached answer", &command)
            .await
            .inspect_err(logged)?;
        // A value this gateway cannot read (another version's, or garbage)
        // is a miss, which the next put overwrites.
        Ok(value.and_then(|value| decode(&Bytes::from(value))))
    }

    async fn put(&self, key: &CacheKey, answer: &CachedAnswer, ttl: Duration) -> Result<(), StoreError> {
        let value = encode(answer).ok_or_else(|| {
            StoreError(format!(
                "redis put a cached answer: {} bytes is too large",
                answer.body.len()
            ))
        })?;
        let ttl_ms = u64::try_from(ttl.min(MAX_TTL).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut command = redis::cmd("SET");
        command.arg(self.key(key)).arg(value).arg("PX").arg(ttl_ms);
        self.redis
            .query::<()>("put a cached answer", &command)
            .await
            .inspect_err(logged)
    }
}

/// A store failure, logged (the cache leaves the store alone for a while
/// after one, so this is not a line per request). Its text names no
/// secret: the store scrubs the URL's.
fn logged(error: &StoreError) {
    tracing::warn!(%error, "the response cache's Redis failed; requests are served as misses");
}
