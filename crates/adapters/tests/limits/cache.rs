//! The response cache in a real Redis: both kinds of answer come back
//! equal, what one replica puts another gets, entries expire, a value the
//! gateway cannot read is a miss, and a Redis that is gone is a prompt error
//! until it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatewayz_adapters::cache::RedisCache;
use gatewayz_domain::cache::{CacheKey, CacheStore, CachedAnswer, CachedBody};

use crate::helpers::redis_store;
use crate::redis_server::RedisServer;

const MINUTE: Duration = Duration::from_secs(60);

const DEADLINE: Duration = Duration::from_millis(250);

async fn cache(server: &RedisServer) -> RedisCache {
    RedisCache::new(Arc::new(redis_store(server, DEADLINE).await))
}

fn key(byte: u8) -> CacheKey {
    CacheKey::from_bytes([byte; 32])
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

/// Sets `key`'s Redis key to `value` by hand, as another program might.
async fn set_by_hand(server: &RedisServer, key: &CacheKey, value: &[u8]) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(format!("gatewayz:cache:{key}"))
        .arg(value)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kinds_of_answer_come_back_equal_and_another_key_is_a_miss() {
    let Some(server) = RedisServer::start("cache_round_trip") else {
        return;
    };
    let cache = cache(&server).await;
    let stream = chunks(&[
        r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
        "",
        r#"{"usage":{}}"#,
    ]);

    cache
        .put(&key(1), &whole(r#"{"id":"chatcmpl-1"}"#), MINUTE)
        .await
        .unwrap();
    cache.put(&key(2), &stream, MINUTE).await.unwrap();

    assert_eq!(
        cache.get(&key(1)).await.unwrap(),
        Some(whole(r#"{"id":"chatcmpl-1"}"#))
    );
    assert_eq!(cache.get(&key(2)).await.unwrap(), Some(stream));
    assert_eq!(cache.get(&key(3)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_puts_another_gets() {
    let Some(server) = RedisServer::start("cache_shared") else {
        return;
    };
    let first = cache(&server).await;
    let second = cache(&server).await;

    first
        .put(&key(1), &whole("from the first"), MINUTE)
        .await
        .unwrap();
    second
        .put(&key(2), &chunks(&["from", "the second"]), MINUTE)
        .await
        .unwrap();

    assert_eq!(second.get(&key(1)).await.unwrap(), Some(whole("from the first")));
    assert_eq!(
        first.get(&key(2)).await.unwrap(),
        Some(chunks(&["from", "the second"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_expires_with_its_ttl_in_milliseconds() {
    let Some(server) = RedisServer::start("cache_ttl") else {
        return;
    };
    let cache = cache(&server).await;
    cache
        .put(&key(1), &whole("brief"), Duration::from_millis(200))
        .await
        .unwrap();
    cache.put(&key(2), &whole("lasting"), MINUTE).await.unwrap();
    assert_eq!(cache.get(&key(1)).await.unwrap(), Some(whole("brief")));

    // Redis expires a key on reading it past its time: waiting is the test.
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_eq!(cache.get(&key(1)).await.unwrap(), None);
    assert_eq!(cache.get(&key(2)).await.unwrap(), Some(whole("lasting")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_gateway_cannot_read_is_a_miss_until_a_put_replaces_it() {
    let Some(server) = RedisServer::start("cache_garbage") else {
        return;
    };
    let cache = cache(&server).await;
    let mut cut_short = b"gzc1".to_vec();
    cut_short.extend_from_slice(&0_u64.to_le_bytes());
    cut_short.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
    for value in [&b"not an answer"[..], b"", b"gzc1", &cut_short, &[0xff; 1000]] {
        set_by_hand(&server, &key(1), value).await;

        assert_eq!(cache.get(&key(1)).await.unwrap(), None, "{value:?}");
    }

    cache.put(&key(1), &whole("fresh"), MINUTE).await.unwrap();
    assert_eq!(cache.get(&key(1)).await.unwrap(), Some(whole("fresh")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_a_prompt_error_and_a_restarted_one_is_used_again() {
    let Some(mut server) = RedisServer::start("cache_killed") else {
        return;
    };
    let cache = cache(&server).await;
    cache.put(&key(1), &whole("before"), MINUTE).await.unwrap();

    server.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let got = cache.get(&key(1)).await.unwrap_err();
        let put = cache.put(&key(1), &whole("during"), MINUTE).await.unwrap_err();
        // Each call within its deadline (counted loosely: the machine may be busy).
        let took = started.elapsed();
        assert!(took <= 2 * DEADLINE + Duration::from_millis(200), "{took:?}");
        assert!(got.0.starts_with("redis get a cached answer"), "{got}");
        assert!(put.0.starts_with("redis put a cached answer"), "{put}");
    }

    server.restart();
    let started = Instant::now();
    while cache.put(&key(2), &whole("after"), MINUTE).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cache did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.get(&key(2)).await.unwrap(), Some(whole("after")));
    // The restarted server is empty.
    assert_eq!(cache.get(&key(1)).await.unwrap(), None);
}
