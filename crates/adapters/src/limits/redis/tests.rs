//! The Redis store's own tests: URLs and their secrets, and cancellation in
//! either order against a real `redis-server` (skipped where it is not
//! installed, as the integration tests are).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatewayz_domain::limits::{BudgetPeriod, Spend, SpendLimit};

use super::*;

#[path = "../../../tests/limits/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

#[tokio::test]
async fn a_url_that_is_not_redis_is_refused_without_its_password() {
    for url in [
        "http://:hunter2@localhost:6379",
        "redis://:hunter2@[::1",
        "redis://:hunter2@localhost:notaport",
    ] {
        let error = RedisLimits::connect(&SecretString::from(url), RedisSettings::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[tokio::test]
async fn a_store_error_of_an_unreachable_redis_names_no_password() {
    // Port 1 on loopback: nothing listens there.
    let url = SecretString::from("redis://:hunter2@127.0.0.1:1/0");
    let settings = RedisSettings {
        deadline: Duration::from_millis(100),
        ..RedisSettings::default()
    };
    let store = RedisLimits::connect(&url, settings).await.unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1),
        ..KeyPolicy::unlimited("k")
    });
    let error = store.standing(&policy, 0).await.unwrap_err().to_string();
    assert!(error.contains("redis standing"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

/// A key with every limit: 3 requests and 300 tokens a minute, 2 in
/// flight, a dollar in all.
fn limited(name: &str) -> Arc<KeyPolicy> {
    Arc::new(KeyPolicy {
        rpm: Some(3),
        tpm: Some(300),
        max_parallel: Some(2),
        budget: Some(SpendLimit {
            usd: 1.0,
            period: BudgetPeriod::Total,
        }),
        ..KeyPolicy::unlimited(name)
    })
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// An admission of `policy` reserving 100 tokens and 1000 µ$.
fn admission(policy: &Arc<KeyPolicy>, lease: &str) -> Admission {
    Admission {
        policy: policy.clone(),
        lease: lease.to_owned(),
        reserve: Spend {
            tokens: 100,
            usd_micros: 1_000,
        },
        now_us: now_us(),
    }
}

async fn store_on(server: &RedisServer) -> RedisLimits {
    let settings = RedisSettings {
        deadline: Duration::from_secs(2),
        ..RedisSettings::default()
    };
    RedisLimits::connect(&SecretString::from(server.url()), settings)
        .await
        .unwrap()
}

/// Waits until every cancellation under way has run in Redis.
async fn cancellations_done(store: &RedisLimits) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.cancellations_pending() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancellations still pending"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Cancels `admission` as a request given up on does, and waits for Redis
/// to run it.
async fn cancel_now(store: &RedisLimits, admission: &Admission) {
    store.inner.start_cancelling(admission);
    cancellations_done(store).await;
}

/// `(requests left, tokens left, in flight, µ$ spent)` of `policy`'s key.
async fn counts(store: &RedisLimits, policy: &KeyPolicy) -> (u64, u64, u64, u64) {
    let standing = store.standing(policy, now_us()).await.unwrap();
    (
        standing.requests.unwrap().remaining,
        standing.tokens.unwrap().remaining,
        standing.in_flight.unwrap(),
        standing.spent_usd_micros.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_run_after_its_admission_gives_back_all_it_took() {
    let Some(server) = RedisServer::start("a_cancellation_run_after_its_admission_gives_back_all_it_took")
    else {
        return;
    };
    let store = store_on(&server).await;
    let policy = limited("cancel-after");
    let kept = admission(&policy, "kept");
    assert!(matches!(store.admit(&kept).await.unwrap(), Decision::Admitted(_)));
    let before = counts(&store, &policy).await;
    assert_eq!(before, (2, 200, 1, 1_000));

    let given_up = admission(&policy, "given-up");
    assert!(matches!(
        store.admit(&given_up).await.unwrap(),
        Decision::Admitted(_)
    ));
    assert_eq!(counts(&store, &policy).await, (1, 100, 2, 2_000));
    cancel_now(&store, &given_up).await;

    assert_eq!(counts(&store, &policy).await, before);
    // A second cancellation finds no lease: nothing more is given back.
    cancel_now(&store, &given_up).await;
    assert_eq!(counts(&store, &policy).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_run_before_its_admission_makes_it_take_nothing() {
    let Some(server) = RedisServer::start("a_cancellation_run_before_its_admission_makes_it_take_nothing")
    else {
        return;
    };
    let store = store_on(&server).await;
    let policy = limited("cancel-before");
    let fresh = counts(&store, &policy).await;
    assert_eq!(fresh, (3, 300, 0, 0));
    let late = admission(&policy, "late");

    cancel_now(&store, &late).await;
    let error = store.admit(&late).await.unwrap_err();

    assert!(error.0.contains("cancelled before it ran"), "{error}");
    cancellations_done(&store).await;
    assert_eq!(counts(&store, &policy).await, fresh);
    assert_eq!(store.leases_held(), 0);
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let marker_ttl: i64 = redis::cmd("PTTL")
        .arg("{gatewayz:cancel-before}:void:late")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((299_000..=300_000).contains(&marker_ttl), "{marker_ttl}");
    // Other leases of the key are admitted as before.
    assert!(matches!(
        store.admit(&admission(&policy, "next")).await.unwrap(),
        Decision::Admitted(_)
    ));
}
