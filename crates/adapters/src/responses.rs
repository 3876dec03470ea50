//! Where Responses API responses were made ([`ResponseMemory`]): in this
//! process (a bounded cache whose entries expire), or in Redis beside the
//! key limits, so that any replica can serve a response's follow-ups.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gatewayz_domain::limits::StoreError;
use gatewayz_domain::{ResponseMemory, ResponseTarget};
use moka::sync::Cache;

use crate::limits::RedisLimits;

/// How many responses a process remembers at most: a target is about 200
/// bytes, so this bounds the memory to a few MiB.
pub const IN_PROCESS_CAPACITY: u64 = 16_384;

/// The longest time to live: Redis takes seconds in a 32-bit range.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Responses remembered in this process, the least recently used dropped
/// past [`IN_PROCESS_CAPACITY`], each forgotten after the time to live.
#[derive(Clone)]
pub struct InProcessResponses {
    cache: Cache<String, Arc<ResponseTarget>>,
}

impl std::fmt::Debug for InProcessResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessResponses")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl InProcessResponses {
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, IN_PROCESS_CAPACITY)
    }

    pub fn with_capacity(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.min(MAX_TTL))
                .build(),
        }
    }
}

#[async_trait]
impl ResponseMemory for InProcessResponses {
    async fn remember(&self, id: &str, target: &ResponseTarget) -> Result<(), StoreError> {
        self.cache.insert(id.to_owned(), Arc::new(target.clone()));
        Ok(())
    }

    async fn recall(&self, id: &str) -> Result<Option<ResponseTarget>, StoreError> {
        Ok(self.cache.get(id).map(|target| (*target).clone()))
    }

    async fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.cache.invalidate(id);
        Ok(())
    }
}

/// Responses remembered in Redis (the limits store's), as JSON under
/// `<prefix>:response:<id>`, each expiring after the time to live.
pub struct RedisResponses {
    redis: Arc<RedisLimits>,
    ttl_seconds: u64,
}

impl std::fmt::Debug for RedisResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResponses")
            .field("url", &self.redis.shown_url())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

impl RedisResponses {
    pub fn new(redis: Arc<RedisLimits>, ttl: Duration) -> Self {
        Self {
            redis,
            ttl_seconds: ttl.min(MAX_TTL).as_secs().max(1),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:response:{id}", self.redis.key_prefix())
    }
}

#[async_trait]
impl ResponseMemory for RedisResponses {
    async fn remember(&self, id: &str, target: &ResponseTarget) -> Result<(), StoreError> {
        let value = serde_json::to_string(target).map_err(|error| StoreError(error.to_string()))?;
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(id))
            .arg(value)
            .arg("EX")
            .arg(self.ttl_seconds);
        self.redis.query::<()>("remember a response", &command).await
    }

    async fn recall(&self, id: &str) -> Result<Option<ResponseTarget>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key(id));
        let value: Option<String> = self.redis.query("recall a response", &command).await?;
        // A value this gateway cannot read is as good as none.
        Ok(value.and_then(|value| serde_json::from_str(&value).ok()))
    }

    async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let mut command = redis::cmd("DEL");
        command.arg(self.key(id));
        self.redis.query::<()>("forget a response", &command).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(owner: &str) -> ResponseTarget {
        ResponseTarget {
            model: "gpt-4o-mini".into(),
            provider: None,
            portkey_provider: None,
            target: Some("openai/gpt-4o-mini".into()),
            owner: owner.into(),
            client_credentials: false,
        }
    }

    #[tokio::test]
    async fn a_process_remembers_forgets_and_expires_responses() {
        let memory = InProcessResponses::new(Duration::from_millis(200));
        memory.remember("resp_1", &target("a")).await.unwrap();
        assert_eq!(memory.recall("resp_1").await.unwrap(), Some(target("a")));
        assert_eq!(memory.recall("resp_2").await.unwrap(), None);
        memory.forget("resp_1").await.unwrap();
        assert_eq!(memory.recall("resp_1").await.unwrap(), None);
        memory.remember("resp_3", &target("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(memory.recall("resp_3").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_process_remembers_at_most_its_capacity() {
        let memory = InProcessResponses::with_capacity(Duration::from_secs(60), 100);
        for index in 0..1000 {
            memory
                .remember(&format!("resp_{index}"), &target("a"))
                .await
                .unwrap();
        }
        memory.cache.run_pending_tasks();
        assert!(
            memory.cache.entry_count() <= 100,
            "{}",
            memory.cache.entry_count()
        );
    }
}
