//! What only the Redis store does: replicas sharing it, a replica dying, a
//! Redis dying or wedged mid-run, keys that expire, and its speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use gatewayz_adapters::limits::RedisLimits;
use gatewayz_domain::limits::{Decision, KeyPolicy, LimitKind, LimitsStore, Spend};

use crate::helpers::*;
use crate::redis_server::RedisServer;

const DEADLINE: Duration = Duration::from_millis(250);

/// Polls `admit` until it succeeds, for at most `within`.
async fn first_success(store: &RedisLimits, policy: &Arc<KeyPolicy>, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if store
            .admit(&admission(policy, Spend::default(), now_us()))
            .await
            .is_ok()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the store did not recover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_one_redis_admit_exactly_the_limit() {
    let Some(server) = RedisServer::start("two_replicas_sharing_one_redis_admit_exactly_the_limit") else {
        return;
    };
    let replicas = [
        redis_store(&server, Duration::from_secs(2)).await,
        redis_store(&server, Duration::from_secs(2)).await,
    ];
    let policy = Arc::new(KeyPolicy {
        rpm: Some(30),
        ..key_policy("shared")
    });

    let decisions = join_all((0..100).map(|i| {
        let replica = &replicas[i % 2];
        let admission = admission(&policy, Spend::default(), now_us());
        async move { replica.admit(&admission).await.unwrap() }
    }))
    .await;

    assert_eq!(
        decisions.iter().filter(|decision| is_admitted(decision)).count(),
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_leases_come_back_within_their_ttl() {
    let Some(server) = RedisServer::start("a_dead_replicas_leases_come_back_within_their_ttl") else {
        return;
    };
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(1),
        ..key_policy("dead-replica")
    });
    let dying = redis_store(&server, Duration::from_secs(2)).await;
    let survivor = redis_store(&server, Duration::from_secs(2)).await;
    assert!(is_admitted(
        &dying
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
    ));
    assert_eq!(dying.leases_held(), 1);

    drop(dying);
    let died = Instant::now();
    let refused = survivor
        .admit(&admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Decision::Refused {
                limit: LimitKind::Parallel,
                ..
            }
        ),
        "{refused:?}"
    );

    loop {
        let decision = survivor
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap();
        if is_admitted(&decision) {
            break;
        }
        // The lease was renewed at most a third of a TTL before the death.
        assert!(
            died.elapsed() < TEST_LEASE_TTL * 2,
            "the slot is still held after {:?}",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        died.elapsed() <= TEST_LEASE_TTL + Duration::from_millis(100),
        "{:?}",
        died.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_outlive_a_gateway_restart() {
    let Some(server) = RedisServer::start("counts_outlive_a_gateway_restart") else {
        return;
    };
    let policy = Arc::new(KeyPolicy {
        rpm: Some(3),
        budget: daily_budget(0.01),
        ..key_policy("restart")
    });
    let now = at(JUNE_1_2030_NOON);
    let before = redis_store(&server, Duration::from_secs(2)).await;
    for _ in 0..3 {
        let request = admission(&policy, usd_micros(3_000), now);
        assert!(is_admitted(&before.admit(&request).await.unwrap()));
        before
            .settle(&settlement(&request, usd_micros(3_000), now))
            .await
            .unwrap();
    }
    drop(before);

    let after = redis_store(&server, Duration::from_secs(2)).await;
    let standing = after.standing(&policy, now).await.unwrap();
    assert_eq!(standing.requests.map(|state| state.remaining), Some(0));
    assert_eq!(standing.spent_usd_micros, Some(9_000));
    let refused = after
        .admit(&admission(&policy, usd_micros(3_000), now))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Decision::Refused {
                limit: LimitKind::Requests,
                ..
            }
        ),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_by_itself() {
    let Some(server) = RedisServer::start("every_key_expires_by_itself") else {
        return;
    };
    let store = redis_store(&server, Duration::from_secs(2)).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(60),
        tpm: Some(600),
        max_parallel: Some(2),
        budget: daily_budget(1.0),
        ..key_policy("expiry")
    });
    let total = Arc::new(KeyPolicy {
        budget: Some(gatewayz_domain::limits::SpendLimit {
            usd: 1.0,
            period: gatewayz_domain::limits::BudgetPeriod::Total,
        }),
        ..key_policy("total")
    });
    let now = at(JUNE_1_2030_NOON);
    let request = admission(
        &policy,
        Spend {
            tokens: 60,
            usd_micros: 1,
        },
        now,
    );
    assert!(is_admitted(&store.admit(&request).await.unwrap()));
    assert!(is_admitted(
        &store.admit(&admission(&total, usd_micros(1), now)).await.unwrap()
    ));

    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut pttl = async |key: String| -> i64 {
        redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap()
    };
    let tag = format!("{{gatewayz:{}}}", policy.id);
    // One request of 60 a minute: the window is whole in 1 s (+1 s margin).
    let requests = pttl(format!("{tag}:rq")).await;
    assert!((1_000..=2_001).contains(&requests), "{requests}");
    // 60 tokens of 600 a minute: 6 s.
    let tokens = pttl(format!("{tag}:tk")).await;
    assert!((6_000..=7_001).contains(&tokens), "{tokens}");
    let leases = pttl(format!("{tag}:leases")).await;
    let lease_ttl = TEST_LEASE_TTL.as_millis() as i64;
    assert!((lease_ttl..=lease_ttl + 1_001).contains(&leases), "{leases}");
    // Half a day to midnight, then a day more.
    let spend = pttl(format!("{tag}:spend:{}", JUNE_1_2030_NOON - 12 * 60 * 60)).await;
    let until_then = (JUNE_1_2030_NOON + 36 * 60 * 60) as i64 * 1_000 - (now_us() / 1_000) as i64;
    assert!(
        (until_then - 5_000..=until_then + 1_000).contains(&spend),
        "{spend} against {until_then}"
    );
    // A total budget never resets, its spend never expires.
    assert_eq!(pttl(format!("{{gatewayz:{}}}:spend:0", total.id)).await, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_fails_each_call_at_once_and_a_restarted_one_is_used_again() {
    let Some(mut server) =
        RedisServer::start("a_killed_redis_fails_each_call_at_once_and_a_restarted_one_is_used_again")
    else {
        return;
    };
    let store = redis_store(&server, DEADLINE).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1_000),
        ..key_policy("killed")
    });
    assert!(
        store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .is_ok()
    );

    server.kill();
    // A refused connection fails the call at once, not at its deadline
    // (counted loosely: the machine may be busy).
    let mut waits = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let error = store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took <= DEADLINE + Duration::from_millis(100), "{took:?}: {error}");
        assert!(error.0.starts_with("redis admission"), "{error}");
        waits.push(took);
    }
    let slow = waits.iter().filter(|wait| **wait >= DEADLINE / 2).count();
    eprintln!(
        "killed Redis: {slow} of {} calls waited {:?} or more: {waits:?}",
        waits.len(),
        DEADLINE / 2
    );
    assert!(slow <= 2, "{slow} of {} calls waited: {waits:?}", waits.len());

    server.restart();
    let recovered = first_success(&store, &policy, Duration::from_secs(5)).await;
    eprintln!("recovered {recovered:?} after the restart");
    let standing = store.standing(&policy, now_us()).await.unwrap();
    assert!(standing.requests.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_redis_costs_each_call_its_deadline_and_no_more() {
    let Some(server) = RedisServer::start("a_wedged_redis_costs_each_call_its_deadline_and_no_more") else {
        return;
    };
    let store = redis_store(&server, DEADLINE).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1_000),
        ..key_policy("wedged")
    });
    assert!(
        store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .is_ok()
    );

    server.pause();
    let started = Instant::now();
    let error = store
        .admit(&admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= DEADLINE && took <= DEADLINE + Duration::from_millis(150),
        "{took:?}"
    );
    assert!(error.0.starts_with("redis admission"), "{error}");

    server.resume();
    first_success(&store, &policy, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_given_up_on_a_wedged_redis_take_nothing_once_it_answers_again() {
    let Some(server) =
        RedisServer::start("admissions_given_up_on_a_wedged_redis_take_nothing_once_it_answers_again")
    else {
        return;
    };
    let store = redis_store(&server, DEADLINE).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(4),
        tpm: Some(400),
        max_parallel: Some(2),
        budget: daily_budget(1.0),
        ..key_policy("given-up")
    });
    let now = at(JUNE_1_2030_NOON);
    let reserve = Spend {
        tokens: 100,
        usd_micros: 1_000,
    };
    let fresh = store.standing(&policy, now).await.unwrap();

    server.pause();
    // Two past their deadline, two whose callers left first: Redis was sent
    // all four, and runs them when it answers again.
    for _ in 0..2 {
        let error = store.admit(&admission(&policy, reserve, now)).await.unwrap_err();
        assert!(error.0.starts_with("redis admission"), "{error}");
    }
    for _ in 0..2 {
        let left = tokio::time::timeout(DEADLINE / 5, store.admit(&admission(&policy, reserve, now))).await;
        assert!(left.is_err(), "{left:?}");
    }
    server.resume();

    let deadline = Instant::now() + Duration::from_secs(10);
    while store.cancellations_pending() > 0 {
        assert!(Instant::now() < deadline, "cancellations still pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let standing = store.standing(&policy, now).await.unwrap();
    assert_eq!(standing.in_flight, Some(0));
    assert_eq!(standing.spent_usd_micros, Some(0));
    assert_eq!(standing.requests.map(|state| state.remaining), Some(4));
    assert_eq!(standing.tokens.map(|state| state.remaining), Some(400));
    assert_eq!(standing, fresh);
    assert_eq!(store.leases_held(), 0);
    // Every slot and the whole minute are there for the next requests.
    for _ in 0..2 {
        assert!(is_admitted(
            &store.admit(&admission(&policy, reserve, now)).await.unwrap()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_is_one_round_trip() {
    let Some(server) = RedisServer::start("an_admission_is_one_round_trip") else {
        return;
    };
    let store = redis_store(&server, Duration::from_secs(2)).await;
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1_000_000),
        tpm: Some(100_000_000),
        max_parallel: Some(100),
        budget: daily_budget(1_000_000.0),
        ..key_policy("speed")
    });
    let mut admit_us = Vec::new();
    let mut settle_us = Vec::new();
    for _ in 0..2_000 {
        let request = admission(
            &policy,
            Spend {
                tokens: 100,
                usd_micros: 10,
            },
            now_us(),
        );
        let started = Instant::now();
        assert!(is_admitted(&store.admit(&request).await.unwrap()));
        admit_us.push(started.elapsed().as_micros() as u64);
        let started = Instant::now();
        store
            .settle(&settlement(
                &request,
                Spend {
                    tokens: 50,
                    usd_micros: 5,
                },
                now_us(),
            ))
            .await
            .unwrap();
        settle_us.push(started.elapsed().as_micros() as u64);
    }
    let percentile = |samples: &mut Vec<u64>, p: usize| {
        samples.sort_unstable();
        samples[samples.len() * p / 100]
    };
    let (admit_p50, admit_p99) = (percentile(&mut admit_us, 50), percentile(&mut admit_us, 99));
    let (settle_p50, settle_p99) = (percentile(&mut settle_us, 50), percentile(&mut settle_us, 99));
    eprintln!(
        "loopback Redis: admission p50 {admit_p50} µs, p99 {admit_p99} µs; settlement p50 {settle_p50} µs, p99 {settle_p99} µs"
    );
    // Loose: one round trip on loopback, even in a debug build on a busy machine.
    assert!(admit_p50 < 2_000, "admission p50 {admit_p50} µs");
}

/// A CA and a certificate it signed for 127.0.0.1, made with `openssl`.
fn certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=gatewayz test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_speaks_tls_and_trusts_only_the_ca_it_is_given() {
    let dir = std::env::temp_dir().join(format!("gatewayz-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let tls_port = crate::redis_server::free_port();
    let file = |name: &str| dir.join(name).display().to_string();
    let args = [
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        file("server.pem"),
        "--tls-key-file".to_owned(),
        file("server.key"),
        "--tls-ca-cert-file".to_owned(),
        file("ca.pem"),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ];
    let Some(_server) =
        RedisServer::start_with("rediss_speaks_tls_and_trusts_only_the_ca_it_is_given", &args)
    else {
        return;
    };
    let url = secrecy::SecretString::from(format!("rediss://127.0.0.1:{tls_port}"));
    let policy = Arc::new(KeyPolicy {
        rpm: Some(1),
        ..key_policy("tls")
    });

    let trusting = gatewayz_adapters::limits::RedisSettings {
        deadline: Duration::from_secs(2),
        ca_pem: Some(std::fs::read(dir.join("ca.pem")).unwrap()),
        ..Default::default()
    };
    let store = RedisLimits::connect(&url, trusting).await.unwrap();
    assert!(is_admitted(
        &store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
    ));
    assert!(!is_admitted(
        &store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
    ));

    // The system's roots do not know the test CA: no counts from an
    // unverified server.
    let doubting = gatewayz_adapters::limits::RedisSettings {
        deadline: Duration::from_secs(2),
        ..Default::default()
    };
    let store = RedisLimits::connect(&url, doubting).await.unwrap();
    let error = store
        .admit(&admission(&policy, Spend::default(), now_us()))
        .await
        .unwrap_err();
    assert!(error.0.to_lowercase().contains("certificate"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
