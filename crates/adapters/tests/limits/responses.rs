//! Where Responses API responses were made, remembered in a real Redis: what
//! one replica writes another reads, entries expire, and a Redis that is
//! gone is a clear error without the URL's password.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewayz_adapters::responses::RedisResponses;
use gatewayz_domain::{ResponseMemory, ResponseTarget};
use secrecy::SecretString;

use crate::helpers::redis_store;
use crate::redis_server::RedisServer;

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

async fn memory(server: &RedisServer, ttl: Duration) -> RedisResponses {
    RedisResponses::new(Arc::new(redis_store(server, Duration::from_secs(2)).await), ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_remembers_another_recalls_until_it_is_forgotten() {
    let Some(server) = RedisServer::start("responses_shared") else {
        return;
    };
    let first = memory(&server, Duration::from_secs(60)).await;
    let second = memory(&server, Duration::from_secs(60)).await;

    first.remember("resp_shared", &target("key-a")).await.unwrap();

    assert_eq!(second.recall("resp_shared").await.unwrap(), Some(target("key-a")));
    assert_eq!(second.recall("resp_other").await.unwrap(), None);
    second.forget("resp_shared").await.unwrap();
    assert_eq!(first.recall("resp_shared").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_response_expires_with_its_ttl() {
    let Some(server) = RedisServer::start("responses_ttl") else {
        return;
    };
    let memory = memory(&server, Duration::from_secs(1)).await;
    memory.remember("resp_brief", &target("key-a")).await.unwrap();
    assert!(memory.recall("resp_brief").await.unwrap().is_some());

    let started = Instant::now();
    while memory.recall("resp_brief").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still remembered after 5 s with a TTL of 1 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_gone_is_an_error_that_never_shows_the_password() {
    let Some(mut server) = RedisServer::start("responses_gone") else {
        return;
    };
    let url = format!("redis://:hunter2-secret@127.0.0.1:{}", server.port());
    let store = gatewayz_adapters::limits::RedisLimits::connect(
        &SecretString::from(url),
        gatewayz_adapters::limits::RedisSettings {
            deadline: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let memory = RedisResponses::new(Arc::new(store), Duration::from_secs(60));
    server.kill();

    for result in [
        memory.remember("resp_x", &target("key-a")).await.err(),
        memory.recall("resp_x").await.err(),
        memory.forget("resp_x").await.err(),
    ] {
        let error = result.expect("a dead Redis is an error");
        assert!(error.0.contains("redis"), "{}", error.0);
        assert!(!error.0.contains("hunter2"), "{}", error.0);
    }
}
