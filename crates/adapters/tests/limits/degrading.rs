//! The degrading store in front of a real Redis that dies and comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use gatewayz_adapters::limits::{DegradingLimits, OnStoreError};
use gatewayz_domain::limits::{Admission, Decision, KeyPolicy, LimitKind, LimitsStore, Spend, StoreError};

use crate::helpers::*;
use crate::redis_server::RedisServer;

const DEADLINE: Duration = Duration::from_millis(250);

async fn degrading(server: &RedisServer, mode: OnStoreError) -> DegradingLimits {
    DegradingLimits::new(Arc::new(redis_store(server, DEADLINE).await), mode)
}

/// The decision, and whether it was made locally.
async fn admit(store: &DegradingLimits, admission: &Admission) -> Result<(Decision, bool), StoreError> {
    let decision = store.admit(admission).await?;
    let degraded = match &decision {
        Decision::Admitted(standing) | Decision::Refused { standing, .. } => standing.degraded,
    };
    Ok((decision, degraded))
}

/// Polls until an admission is made by Redis again, for at most 5 s.
async fn shared_again(store: &DegradingLimits, policy: &Arc<KeyPolicy>) {
    let started = Instant::now();
    loop {
        if let Ok((_, false)) = admit(store, &admission(policy, Spend::default(), now_us())).await {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still degraded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_admits_and_counts_locally_while_redis_is_down_and_says_so() {
    let Some(mut server) =
        RedisServer::start("open_admits_and_counts_locally_while_redis_is_down_and_says_so")
    else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(3),
        max_parallel: Some(1),
        ..key_policy("open")
    });
    let shared = admission(&policy, Spend::default(), now_us());
    let (decision, degraded) = admit(&store, &shared).await.unwrap();
    assert!(is_admitted(&decision) && !degraded);
    store
        .settle(&settlement(&shared, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(!store.is_degraded());

    server.kill();
    let local = admission(&policy, Spend::default(), now_us());
    let (decision, degraded) = admit(&store, &local).await.unwrap();
    assert!(is_admitted(&decision) && degraded, "{decision:?}");
    assert!(store.is_degraded());
    // Counted locally: the one parallel slot is taken...
    let (decision, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(
        matches!(
            decision,
            Decision::Refused {
                limit: LimitKind::Parallel,
                ..
            }
        ) && degraded,
        "{decision:?}"
    );
    // ...and given back locally.
    store
        .settle(&settlement(&local, Spend::default(), now_us()))
        .await
        .unwrap();
    let next = admission(&policy, Spend::default(), now_us());
    let (decision, _) = admit(&store, &next).await.unwrap();
    assert!(is_admitted(&decision), "{decision:?}");
    store
        .settle(&settlement(&next, Spend::default(), now_us()))
        .await
        .unwrap();
    // The third of three requests a minute taken locally, then no more.
    let third = admission(&policy, Spend::default(), now_us());
    let (decision, _) = admit(&store, &third).await.unwrap();
    assert!(is_admitted(&decision), "{decision:?}");
    store
        .settle(&settlement(&third, Spend::default(), now_us()))
        .await
        .unwrap();
    let (decision, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(
        matches!(
            decision,
            Decision::Refused {
                limit: LimitKind::Requests,
                ..
            }
        ) && degraded,
        "{decision:?}"
    );

    server.restart();
    let fresh = Arc::new(KeyPolicy {
        rpm: Some(3),
        ..key_policy("open-after")
    });
    shared_again(&store, &fresh).await;
    assert!(!store.is_degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_refuses_while_redis_is_down_then_admits_again() {
    let Some(mut server) = RedisServer::start("closed_refuses_while_redis_is_down_then_admits_again") else {
        return;
    };
    let store = degrading(&server, OnStoreError::Closed).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(100),
        ..key_policy("closed")
    });
    assert!(
        !admit(&store, &admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
            .1
    );

    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        assert!(
            store
                .admit(&admission(&policy, Spend::default(), now_us()))
                .await
                .is_err()
        );
        assert!(started.elapsed() <= DEADLINE + Duration::from_millis(100));
        assert!(store.is_degraded());
    }

    server.restart();
    shared_again(&store, &policy).await;
    assert!(!store.is_degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_admitted_by_redis_is_settled_in_redis_not_locally() {
    let Some(mut server) = RedisServer::start("a_request_admitted_by_redis_is_settled_in_redis_not_locally")
    else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(1),
        ..key_policy("settled-where")
    });
    let request = admission(&policy, Spend::default(), now_us());
    assert!(!admit(&store, &request).await.unwrap().1);

    server.kill();
    // Its lease is Redis's: the settlement fails there (the lease expires by
    // itself) and frees no local slot it never took.
    assert!(
        store
            .settle(&settlement(&request, Spend::default(), now_us()))
            .await
            .is_err()
    );
    assert!(store.is_degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_redis_costs_one_request_at_a_time_its_deadline() {
    let Some(server) = RedisServer::start("a_wedged_redis_costs_one_request_at_a_time_its_deadline") else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1_000),
        ..key_policy("wedged")
    });
    assert!(
        !admit(&store, &admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
            .1
    );

    server.pause();
    let started = Instant::now();
    assert!(
        admit(&store, &admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
            .1
    );
    assert!(started.elapsed() >= DEADLINE);

    let waits = join_all((0..10).map(|_| {
        let store = &store;
        let request = admission(&policy, Spend::default(), now_us());
        async move {
            let started = Instant::now();
            let (decision, degraded) = admit(store, &request).await.unwrap();
            assert!(is_admitted(&decision) && degraded);
            started.elapsed()
        }
    }))
    .await;
    let slow = waits.iter().filter(|wait| **wait >= DEADLINE / 2).count();
    assert!(
        slow <= 1,
        "{slow} requests waited for the wedged store: {waits:?}"
    );

    server.resume();
    shared_again(&store, &policy).await;
}
