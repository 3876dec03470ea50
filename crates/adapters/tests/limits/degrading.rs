//! The degrading store in front of a real Redis that dies and comes back,
//! and in front of a stand-in whose failures the test decides, on a paused
//! clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use gatewayz_adapters::limits::{DegradingLimits, OnStoreError, PROBE_EVERY};
use gatewayz_domain::limits::{
    Admission, Decision, KeyPolicy, LimitKind, LimitsStore, Settlement, Spend, Standing, StoreError,
};

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

/// Serial requests of `policy`, one after the other at a client's pace, for
/// `lasting`: how long each waited, each admitted locally.
async fn serial_waits(store: &DegradingLimits, policy: &Arc<KeyPolicy>, lasting: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut waits = Vec::new();
    while started.elapsed() < lasting {
        let request = admission(policy, Spend::default(), now_us());
        let asked = Instant::now();
        let (decision, degraded) = admit(store, &request).await.unwrap();
        waits.push(asked.elapsed());
        assert!(is_admitted(&decision) && degraded, "{decision:?}");
        store
            .settle(&settlement(&request, Spend::default(), now_us()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    waits
}

/// Asserts the promise of a failing store to a serial client: the request
/// that found it failing may wait its deadline, then at most one in each
/// probe interval (counted loosely: the machine may be busy).
fn assert_waited_at_most_once_a_probe_interval(what: &str, waits: &[Duration], lasting: Duration) {
    let slow = waits.iter().filter(|wait| **wait >= DEADLINE / 2).count();
    let allowed = 1 + (lasting.as_millis() / PROBE_EVERY.as_millis()) as usize;
    eprintln!(
        "{what}: {slow} of {} serial requests in {lasting:?} waited {:?} or more (at most {allowed} allowed)",
        waits.len(),
        DEADLINE / 2
    );
    assert!(
        slow <= allowed,
        "{what}: {slow} of {} requests waited for the failing store",
        waits.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_client_waits_on_a_wedged_redis_at_most_once_a_probe_interval() {
    let Some(server) =
        RedisServer::start("a_serial_client_waits_on_a_wedged_redis_at_most_once_a_probe_interval")
    else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(1),
        ..key_policy("serial-wedged")
    });
    shared_again(&store, &policy).await;

    server.pause();
    let lasting = Duration::from_secs(3);
    let waits = serial_waits(&store, &policy, lasting).await;

    assert_waited_at_most_once_a_probe_interval("wedged Redis", &waits, lasting);
    server.resume();
    shared_again(&store, &policy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_client_waits_on_a_killed_redis_at_most_once_a_probe_interval() {
    let Some(mut server) =
        RedisServer::start("a_serial_client_waits_on_a_killed_redis_at_most_once_a_probe_interval")
    else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(1),
        ..key_policy("serial-killed")
    });
    shared_again(&store, &policy).await;

    server.kill();
    let lasting = Duration::from_secs(3);
    let waits = serial_waits(&store, &policy, lasting).await;

    assert_waited_at_most_once_a_probe_interval("killed Redis", &waits, lasting);
    server.restart();
    shared_again(&store, &policy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_degraded_flag_clears_by_itself_once_redis_is_back_with_no_request() {
    let Some(mut server) =
        RedisServer::start("the_degraded_flag_clears_by_itself_once_redis_is_back_with_no_request")
    else {
        return;
    };
    let store = degrading(&server, OnStoreError::Open).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(100),
        ..key_policy("gauge")
    });
    shared_again(&store, &policy).await;
    server.kill();
    let (_, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(degraded && store.is_degraded());

    // Probed, and still failing: still degraded.
    let down = Instant::now();
    while down.elapsed() < PROBE_EVERY * 3 {
        assert!(store.is_degraded(), "degraded cleared while Redis is down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart();
    let back = Instant::now();
    while store.is_degraded() {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still degraded 5 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    eprintln!(
        "degraded cleared {:?} after Redis came back, with no request",
        back.elapsed()
    );
    let (decision, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(is_admitted(&decision) && !degraded, "{decision:?}");
}

/// A shared store that fails until told otherwise, counting the calls it
/// gets.
#[derive(Debug, Default)]
struct StandIn {
    up: AtomicBool,
    admissions: AtomicUsize,
    probes: AtomicUsize,
}

impl StandIn {
    fn answer<T>(&self, value: T) -> Result<T, StoreError> {
        if self.up.load(Ordering::SeqCst) {
            Ok(value)
        } else {
            Err(StoreError("down".to_owned()))
        }
    }
}

#[async_trait]
impl LimitsStore for StandIn {
    async fn admit(&self, _: &Admission) -> Result<Decision, StoreError> {
        self.admissions.fetch_add(1, Ordering::SeqCst);
        self.answer(Decision::Admitted(Standing::default()))
    }

    async fn settle(&self, _: &Settlement) -> Result<(), StoreError> {
        self.answer(())
    }

    async fn standing(&self, _: &KeyPolicy, _: u64) -> Result<Standing, StoreError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.answer(Standing::default())
    }
}

#[tokio::test(start_paused = true)]
async fn while_degraded_requests_skip_the_shared_store_and_a_probe_each_interval_finds_it_back() {
    let primary = Arc::new(StandIn::default());
    let store = DegradingLimits::new(primary.clone(), OnStoreError::Open);
    let policy = Arc::new(key_policy("stand-in"));

    let started = tokio::time::Instant::now();
    for _ in 0..1_000 {
        let (decision, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap();
        assert!(is_admitted(&decision) && degraded);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let intervals = started.elapsed().as_millis() / PROBE_EVERY.as_millis();

    assert_eq!(
        primary.admissions.load(Ordering::SeqCst),
        1,
        "only the request that found it failing asks the shared store"
    );
    let probes = primary.probes.load(Ordering::SeqCst) as u128;
    assert!(
        (intervals - 1..=intervals).contains(&probes),
        "{probes} probes in {intervals} intervals"
    );
    primary.up.store(true, Ordering::SeqCst);
    let back = tokio::time::Instant::now();
    while store.is_degraded() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(back.elapsed() <= PROBE_EVERY, "{:?}", back.elapsed());
    let (_, degraded) = admit(&store, &admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(!degraded);
    assert_eq!(primary.admissions.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_probe_stops_when_the_store_is_dropped() {
    let primary = Arc::new(StandIn::default());
    let store = DegradingLimits::new(primary.clone(), OnStoreError::Closed);
    let policy = Arc::new(key_policy("dropped"));
    assert!(
        store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .is_err()
    );
    tokio::time::sleep(PROBE_EVERY * 3).await;
    let probes = primary.probes.load(Ordering::SeqCst);
    assert!(probes >= 2, "{probes}");

    drop(store);

    assert_eq!(
        Arc::strong_count(&primary),
        1,
        "the probe holds nothing of the store"
    );
    tokio::time::sleep(PROBE_EVERY * 5).await;
    assert_eq!(primary.probes.load(Ordering::SeqCst), probes);
}
