//! The cache in a real Redis (`redis-server`, started per test; skipped
//! when it is not installed unless `GATEWAYZ_REQUIRE_REDIS` is set): two
//! gateways sharing it share their answers, a Redis that dies turns hits
//! into misses (never failures), and an answer over the entry limit is
//! never written to it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::MockServer;

use super::{Answer, CHAT, answer_text, app_before, ask, portkey, post, upstream_calls, with};
use crate::helpers::{KEY, PolicyFile, TestApp, eventually, sample};
use crate::redis_server::RedisServer;

/// A gateway (named `test`) keeping its cache in `redis`, before `portkey`.
async fn gateway(test: &str, portkey: &MockServer, redis: &RedisServer, extra: &[(&str, &str)]) -> Started {
    let url = redis.url();
    let mut all = vec![("GATEWAYZ_REDIS_URL", url.as_str())];
    all.extend_from_slice(extra);
    let (app, files) = app_before(test, &format!("{}/v1", portkey.uri()), None, &all).await;
    Started { app, _files: files }
}

/// A gateway and the files it read.
struct Started {
    app: TestApp,
    _files: Vec<PolicyFile>,
}

/// How many cached answers `redis` holds (`<prefix>:cache:<key>`).
fn stored_answers(redis: &RedisServer) -> usize {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.write_all(b"KEYS *:cache:*\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
        .strip_prefix('*')
        .and_then(|count| count.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an array reply: {reply:?}"))
}

async fn chat(gateway: &Started, body: &serde_json::Value) -> Answer {
    post(&gateway.app, KEY, CHAT, body, None).await
}

#[tokio::test]
async fn a_fill_on_one_gateway_is_a_hit_on_another_sharing_its_redis() {
    let Some(redis) = RedisServer::start("a_fill_on_one_gateway_is_a_hit_on_another_sharing_its_redis")
    else {
        return;
    };
    let portkey = portkey().await;
    let first = gateway("redis-shared-1", &portkey, &redis, &[]).await;
    let second = gateway("redis-shared-2", &portkey, &redis, &[]).await;
    let body = ask("cached", "Hello there");

    let filled = chat(&first, &body).await;
    let hit = chat(&second, &body).await;
    let streamed = chat(&second, &with(body.clone(), json!({"stream": true}))).await;

    assert_eq!(
        (filled.status, filled.cache()),
        (200, Some("miss")),
        "{}",
        filled.text
    );
    assert_eq!((hit.status, hit.cache()), (200, Some("hit")), "{}", hit.text);
    assert!(hit.age.is_some());
    assert_eq!(hit.without_gateway_usage().0, filled.without_gateway_usage().0);
    assert_eq!(streamed.cache(), Some("hit"));
    assert_eq!(streamed.streamed_text(), answer_text(1));
    assert_eq!(upstream_calls(&portkey, CHAT).await, 1, "one call across both");
    assert_eq!(stored_answers(&redis), 1);
}

#[tokio::test]
async fn a_redis_that_dies_turns_hits_into_misses_and_counts_store_errors() {
    let Some(mut redis) =
        RedisServer::start("a_redis_that_dies_turns_hits_into_misses_and_counts_store_errors")
    else {
        return;
    };
    let portkey = portkey().await;
    let app = gateway("redis-dies", &portkey, &redis, &[]).await;
    let body = ask("cached", "Hello there");
    assert_eq!(chat(&app, &body).await.cache(), Some("miss"));
    assert_eq!(chat(&app, &body).await.cache(), Some("hit"));

    redis.kill();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(chat(&app, &body).await);
    }

    for (index, answer) in answers.iter().enumerate() {
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{index}: {}",
            answer.text
        );
        assert_eq!(answer.content(), answer_text(index + 2));
    }
    assert_eq!(upstream_calls(&portkey, CHAT).await, 4);
    let errors = "gatewayz_cache_store_errors_total{model=\"cached\"}";
    eventually(5, "the store errors are counted", || async {
        sample(&app.app.metrics().await, errors).is_some_and(|count| count > 0.0)
    })
    .await;

    // Back (empty): answers are stored and served again, without a restart.
    redis.restart();
    eventually(10, "a hit from the restarted Redis", || async {
        let answer = chat(&app, &body).await;
        assert_eq!(answer.status, 200);
        answer.cache() == Some("hit")
    })
    .await;
    assert_eq!(stored_answers(&redis), 1);
}

#[tokio::test]
async fn a_redis_that_hangs_costs_a_request_no_more_than_its_deadline() {
    let Some(redis) = RedisServer::start("a_redis_that_hangs_costs_a_request_no_more_than_its_deadline")
    else {
        return;
    };
    let portkey = portkey().await;
    let app = gateway("redis-hangs", &portkey, &redis, &[]).await;
    let body = ask("cached", "Hello there");
    assert_eq!(chat(&app, &body).await.cache(), Some("miss"));

    redis.pause();
    let started = Instant::now();
    let answers = [
        chat(&app, &body).await,
        chat(&app, &body).await,
        chat(&app, &body).await,
    ];
    let took = started.elapsed();
    redis.resume();

    for answer in &answers {
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{}",
            answer.text
        );
    }
    assert!(took < Duration::from_secs(2), "three requests took {took:?}");
    assert_eq!(upstream_calls(&portkey, CHAT).await, 4);
    let errors = "gatewayz_cache_store_errors_total{model=\"cached\"}";
    eventually(5, "the store error is counted", || async {
        sample(&app.app.metrics().await, errors).is_some_and(|count| count > 0.0)
    })
    .await;
}

#[tokio::test]
async fn an_answer_over_the_entry_limit_is_never_written_to_redis() {
    let Some(redis) = RedisServer::start("an_answer_over_the_entry_limit_is_never_written_to_redis") else {
        return;
    };
    let portkey = portkey().await;
    let app = gateway(
        "redis-entry-limit",
        &portkey,
        &redis,
        &[("GATEWAYZ_CACHE_MAX_ENTRY_BYTES", "200")],
    )
    .await;
    let whole = ask("cached", "Hello there");
    let streamed = with(ask("cached", "Something else"), json!({"stream": true}));

    let answers = [
        chat(&app, &whole).await,
        chat(&app, &whole).await,
        chat(&app, &streamed).await,
        chat(&app, &streamed).await,
    ];

    for answer in &answers {
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{}",
            answer.text
        );
    }
    assert_eq!(answers[1].content(), answer_text(2));
    assert_eq!(answers[3].streamed_text(), answer_text(4));
    assert_eq!(upstream_calls(&portkey, CHAT).await, 4);
    assert_eq!(stored_answers(&redis), 0);
}

#[tokio::test]
async fn while_redis_is_down_no_answer_is_counted_as_stored() {
    let Some(mut redis) = RedisServer::start("while_redis_is_down_no_answer_is_counted_as_stored") else {
        return;
    };
    let portkey = portkey().await;
    let app = gateway("redis-down-stored-bytes", &portkey, &redis, &[]).await;
    redis.kill();

    for index in 0..3 {
        let answer = chat(&app, &ask("cached", &format!("Question {index}"))).await;
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{}",
            answer.text
        );
    }

    let misses = "gatewayz_cache_requests_total{model=\"cached\",result=\"miss\"}";
    eventually(5, "the misses are counted", || async {
        sample(&app.app.metrics().await, misses) == Some(3.0)
    })
    .await;
    let metrics = app.app.metrics().await;
    assert!(
        sample(&metrics, "gatewayz_cache_store_errors_total{model=\"cached\"}")
            .is_some_and(|count| count > 0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "gatewayz_cache_stored_bytes_total{model=\"cached\"}"),
        None,
        "nothing was written to Redis"
    );
}
