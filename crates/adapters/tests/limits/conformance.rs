//! What every limits store does, whatever it keeps its counters in. Each
//! test takes a fresh store; window times come from the real clock (Redis
//! counts on its own), budget periods from the admission's `now_us`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use gatewayz_domain::limits::{Decision, KeyPolicy, LimitKind, LimitsStore, Spend};

use crate::helpers::*;

pub async fn requests_a_minute_admit_exactly_the_limit_among_concurrent_requests(
    store: Arc<dyn LimitsStore>,
) {
    let policy = Arc::new(KeyPolicy {
        rpm: Some(30),
        ..key_policy("rpm")
    });
    let now = now_us();

    let decisions = join_all((0..100).map(|_| {
        let store = store.clone();
        let admission = admission(&policy, Spend::default(), now);
        async move { store.admit(&admission).await.unwrap() }
    }))
    .await;

    assert_eq!(
        decisions.iter().filter(|decision| is_admitted(decision)).count(),
        30
    );
    for decision in decisions.iter().filter(|decision| !is_admitted(decision)) {
        let Decision::Refused {
            limit,
            retry_after,
            standing,
        } = decision
        else {
            unreachable!()
        };
        assert_eq!(*limit, LimitKind::Requests);
        // One request every 2 s: the next fits within 2 s.
        assert!(
            *retry_after > Duration::ZERO && *retry_after <= Duration::from_secs(2),
            "{retry_after:?}"
        );
        assert_eq!(standing.requests.map(|state| state.remaining), Some(0));
    }
}

pub async fn tokens_are_reserved_at_admission_and_the_difference_settled_with_the_real_use(
    store: Arc<dyn LimitsStore>,
) {
    // 100 tokens a minute: one every 600 ms, so the counts below stay exact
    // for the first 600 ms of the test.
    let policy = Arc::new(KeyPolicy {
        tpm: Some(100),
        ..key_policy("tpm")
    });
    let remaining = |decision: &Decision| match decision {
        Decision::Admitted(standing) | Decision::Refused { standing, .. } => {
            standing.tokens.map(|state| state.remaining)
        }
    };

    let first = admission(&policy, tokens(60), now_us());
    let admitted = store.admit(&first).await.unwrap();
    assert_eq!(remaining(&admitted), Some(40));

    let refused = store
        .admit(&admission(&policy, tokens(50), now_us()))
        .await
        .unwrap();
    let Decision::Refused {
        limit, retry_after, ..
    } = &refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(*limit, LimitKind::Tokens);
    // 10 tokens too many: 6 s.
    assert!(
        *retry_after > Duration::from_secs(5) && *retry_after <= Duration::from_secs(6),
        "{retry_after:?}"
    );
    assert_eq!(remaining(&refused), Some(40));

    // Used 20 of the 60 reserved: 40 come back.
    store
        .settle(&settlement(&first, tokens(20), now_us()))
        .await
        .unwrap();
    let standing = store.standing(&policy, now_us()).await.unwrap();
    assert_eq!(standing.tokens.map(|state| state.remaining), Some(80));

    // Used 50 of 10 reserved: 40 more are charged.
    let second = admission(&policy, tokens(10), now_us());
    assert_eq!(remaining(&store.admit(&second).await.unwrap()), Some(70));
    store
        .settle(&settlement(&second, tokens(50), now_us()))
        .await
        .unwrap();
    let standing = store.standing(&policy, now_us()).await.unwrap();
    assert_eq!(standing.tokens.map(|state| state.remaining), Some(30));
}

pub async fn a_reservation_larger_than_the_whole_token_limit_is_refused(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        tpm: Some(100),
        ..key_policy("huge")
    });

    let decision = store
        .admit(&admission(&policy, tokens(101), now_us()))
        .await
        .unwrap();

    let Decision::Refused { limit, standing, .. } = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(limit, LimitKind::Tokens);
    assert_eq!(standing.tokens.map(|state| state.remaining), Some(100));
}

pub async fn parallel_slots_are_held_until_settled(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(2),
        ..key_policy("parallel")
    });
    let first = admission(&policy, Spend::default(), now_us());
    let second = admission(&policy, Spend::default(), now_us());
    assert!(is_admitted(&store.admit(&first).await.unwrap()));
    let Decision::Admitted(standing) = store.admit(&second).await.unwrap() else {
        panic!("the second slot")
    };
    assert_eq!(standing.in_flight, Some(2));

    let third = admission(&policy, Spend::default(), now_us());
    let refused = store.admit(&third).await.unwrap();
    assert!(
        matches!(refused, Decision::Refused { limit: LimitKind::Parallel, retry_after, standing }
            if retry_after == Duration::from_secs(1) && standing.in_flight == Some(2)),
        "{refused:?}"
    );

    store
        .settle(&settlement(&first, Spend::default(), now_us()))
        .await
        .unwrap();
    assert_eq!(
        store.standing(&policy, now_us()).await.unwrap().in_flight,
        Some(1)
    );
    assert!(is_admitted(&store.admit(&third).await.unwrap()));
}

pub async fn a_lease_is_held_past_its_ttl_while_its_store_lives(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        max_parallel: Some(1),
        ..key_policy("long")
    });
    let long_stream = admission(&policy, Spend::default(), now_us());
    assert!(is_admitted(&store.admit(&long_stream).await.unwrap()));

    // More than three lease TTLs: the Redis store must have renewed it.
    tokio::time::sleep(TEST_LEASE_TTL * 4).await;

    let refused = store
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
    store
        .settle(&settlement(&long_stream, Spend::default(), now_us()))
        .await
        .unwrap();
    assert!(is_admitted(
        &store
            .admit(&admission(&policy, Spend::default(), now_us()))
            .await
            .unwrap()
    ));
}

pub async fn a_spent_budget_refuses_and_lets_at_most_one_reservation_past_it(store: Arc<dyn LimitsStore>) {
    // $0.01 a day; each request reserves $0.003.
    let policy = Arc::new(KeyPolicy {
        budget: daily_budget(0.01),
        ..key_policy("budget")
    });
    let now = at(JUNE_1_2030_NOON);
    let mut admitted = Vec::new();
    for _ in 0..4 {
        let request = admission(&policy, usd_micros(3_000), now);
        assert!(is_admitted(&store.admit(&request).await.unwrap()));
        admitted.push(request);
    }
    // 12,000 µ$ reserved: over the budget by less than one reservation.
    let refused = store
        .admit(&admission(&policy, usd_micros(3_000), now))
        .await
        .unwrap();
    let Decision::Refused {
        limit,
        retry_after,
        standing,
    } = refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(limit, LimitKind::Budget);
    assert_eq!(
        retry_after,
        Duration::from_secs(12 * 60 * 60),
        "until midnight UTC"
    );
    assert_eq!(standing.spent_usd_micros, Some(12_000));
    assert_eq!(standing.budget_remaining_usd, Some(0.0));

    // Each used $0.0025: 10,000 µ$ spent, still no room.
    for request in &admitted {
        store
            .settle(&settlement(request, usd_micros(2_500), now))
            .await
            .unwrap();
    }
    assert_eq!(
        store.standing(&policy, now).await.unwrap().spent_usd_micros,
        Some(10_000)
    );
    assert!(!is_admitted(
        &store
            .admit(&admission(&policy, usd_micros(1), now))
            .await
            .unwrap()
    ));

    // The property, with reservations of every size: concurrent admissions
    // never take the total past the budget plus the largest reservation.
    let policy = Arc::new(KeyPolicy {
        budget: daily_budget(0.01),
        ..key_policy("budget-race")
    });
    let reservations: Vec<u64> = (0..60).map(|i| 100 + (i * 37 % 900)).collect();
    let decisions = join_all(reservations.iter().map(|&reserve| {
        let store = store.clone();
        let request = admission(&policy, usd_micros(reserve), now);
        async move { (reserve, store.admit(&request).await.unwrap()) }
    }))
    .await;
    let total: u64 = decisions
        .iter()
        .filter(|(_, decision)| is_admitted(decision))
        .map(|(reserve, _)| reserve)
        .sum();
    let largest = reservations.iter().max().unwrap();
    assert!(total >= 10_000, "the budget was not used up: {total}");
    assert!(
        total < 10_000 + largest,
        "{total} µ$ admitted against a 10,000 µ$ budget"
    );
    assert_eq!(
        store.standing(&policy, now).await.unwrap().spent_usd_micros,
        Some(total)
    );
}

pub async fn a_new_budget_period_starts_from_zero(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        budget: daily_budget(0.01),
        ..key_policy("period")
    });
    let before_midnight = at(JUNE_1_2030_NOON + 12 * 60 * 60 - 1);
    let after_midnight = at(JUNE_1_2030_NOON + 12 * 60 * 60 + 1);
    let yesterday = admission(&policy, usd_micros(10_000), before_midnight);
    assert!(is_admitted(&store.admit(&yesterday).await.unwrap()));
    let refused = store
        .admit(&admission(&policy, usd_micros(1), before_midnight))
        .await
        .unwrap();
    assert!(
        matches!(refused, Decision::Refused { limit: LimitKind::Budget, retry_after, .. } if retry_after == Duration::from_secs(1)),
        "{refused:?}"
    );

    let today = admission(&policy, usd_micros(2_000), after_midnight);
    let Decision::Admitted(standing) = store.admit(&today).await.unwrap() else {
        panic!("a new day")
    };
    assert_eq!(standing.spent_usd_micros, Some(2_000));

    // Yesterday's request ends today, using more than it reserved: charged
    // to yesterday, which can refuse no one now.
    store
        .settle(&settlement(&yesterday, usd_micros(15_000), after_midnight))
        .await
        .unwrap();
    let standing = store.standing(&policy, after_midnight).await.unwrap();
    assert_eq!(standing.spent_usd_micros, Some(2_000));
    assert_eq!(standing.budget_remaining_usd, Some(0.008));
}

pub async fn a_second_settlement_changes_nothing(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        tpm: Some(100),
        max_parallel: Some(5),
        budget: daily_budget(1.0),
        ..key_policy("twice")
    });
    let now = at(JUNE_1_2030_NOON);
    let reserve = Spend {
        tokens: 60,
        usd_micros: 5_000,
    };
    let used = Spend {
        tokens: 10,
        usd_micros: 1_000,
    };
    let request = admission(&policy, reserve, now);
    assert!(is_admitted(&store.admit(&request).await.unwrap()));
    store.settle(&settlement(&request, used, now)).await.unwrap();
    let once = store.standing(&policy, now).await.unwrap();
    assert_eq!(once.spent_usd_micros, Some(1_000));
    assert_eq!(once.in_flight, Some(0));

    store.settle(&settlement(&request, used, now)).await.unwrap();
    // Nor does the settlement of a request never admitted.
    let stranger = admission(&policy, reserve, now);
    store
        .settle(&settlement(&stranger, Spend::default(), now))
        .await
        .unwrap();

    let twice = store.standing(&policy, now).await.unwrap();
    assert_eq!(twice.spent_usd_micros, Some(1_000));
    assert_eq!(twice.in_flight, Some(0));
    assert_eq!(
        twice.tokens.map(|state| state.remaining),
        once.tokens.map(|state| state.remaining)
    );
}

pub async fn a_refusal_holds_nothing(store: Arc<dyn LimitsStore>) {
    // Room for the request and its slot, not for its tokens.
    let policy = Arc::new(KeyPolicy {
        rpm: Some(10),
        tpm: Some(100),
        max_parallel: Some(1),
        budget: daily_budget(1.0),
        ..key_policy("all-or-nothing")
    });
    let now = at(JUNE_1_2030_NOON);
    let too_big = admission(
        &policy,
        Spend {
            tokens: 500,
            usd_micros: 5_000,
        },
        now,
    );
    let refused = store.admit(&too_big).await.unwrap();
    assert!(
        matches!(
            refused,
            Decision::Refused {
                limit: LimitKind::Tokens,
                ..
            }
        ),
        "{refused:?}"
    );

    let standing = store.standing(&policy, now).await.unwrap();
    assert_eq!(standing.requests.map(|state| state.remaining), Some(10));
    assert_eq!(standing.tokens.map(|state| state.remaining), Some(100));
    assert_eq!(standing.in_flight, Some(0));
    assert_eq!(standing.spent_usd_micros, Some(0));
}

pub async fn the_standing_reports_each_limit_of_the_policy(store: Arc<dyn LimitsStore>) {
    let policy = Arc::new(KeyPolicy {
        rpm: Some(10),
        tpm: Some(100),
        max_parallel: Some(3),
        budget: daily_budget(1.0),
        ..key_policy("standing")
    });
    let now = at(JUNE_1_2030_NOON);
    let fresh = store.standing(&policy, now).await.unwrap();
    assert_eq!(
        fresh
            .requests
            .map(|state| (state.limit, state.remaining, state.reset_us)),
        Some((10, 10, 0))
    );
    assert_eq!(
        fresh.tokens.map(|state| (state.limit, state.remaining)),
        Some((100, 100))
    );
    assert_eq!(fresh.in_flight, Some(0));
    assert_eq!(fresh.spent_usd_micros, Some(0));
    assert_eq!(fresh.budget_remaining_usd, Some(1.0));

    let request = admission(
        &policy,
        Spend {
            tokens: 10,
            usd_micros: 250_000,
        },
        now,
    );
    let Decision::Admitted(after) = store.admit(&request).await.unwrap() else {
        panic!("admitted")
    };
    let requests = after.requests.unwrap();
    assert_eq!((requests.limit, requests.remaining), (10, 9));
    // One request of ten a minute: the window is whole again in 6 s.
    assert!(
        requests.reset_us > 5_000_000 && requests.reset_us <= 6_000_000,
        "{requests:?}"
    );
    assert_eq!(after.tokens.map(|state| state.remaining), Some(90));
    assert_eq!(after.in_flight, Some(1));
    assert_eq!(after.spent_usd_micros, Some(250_000));
    assert_eq!(after.budget_remaining_usd, Some(0.75));

    let read = store.standing(&policy, now).await.unwrap();
    assert_eq!(read.requests.map(|state| state.remaining), Some(9));
    assert_eq!(read.tokens.map(|state| state.remaining), Some(90));
    assert_eq!((read.in_flight, read.spent_usd_micros), (Some(1), Some(250_000)));

    // A policy without limits stands nowhere.
    let unlimited = key_policy("unlimited");
    assert_eq!(store.standing(&unlimited, now).await.unwrap(), Default::default());
}
