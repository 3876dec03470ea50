//! The limits stores: one conformance suite run against the in-process store
//! and the Redis one (a real `redis-server` per test), then what only Redis
//! has (replicas, a Redis killed or wedged mid-run) and the degrading store;
//! and the Redis memory of where Responses API responses were made.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod cache;
mod conformance;
mod degrading;
mod helpers;
mod redis;
mod redis_server;
mod responses;

/// Runs each named test of [`conformance`] against both stores.
macro_rules! against_both_stores {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::conformance::$test(crate::helpers::in_process()).await;
                }
            )*
        }
        mod in_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(server) = crate::redis_server::RedisServer::start(stringify!($test)) else {
                        return;
                    };
                    crate::conformance::$test(crate::helpers::in_redis(&server).await).await;
                }
            )*
        }
    };
}

against_both_stores!(
    requests_a_minute_admit_exactly_the_limit_among_concurrent_requests,
    tokens_are_reserved_at_admission_and_the_difference_settled_with_the_real_use,
    a_reservation_larger_than_the_whole_token_limit_is_refused,
    parallel_slots_are_held_until_settled,
    a_lease_is_held_past_its_ttl_while_its_store_lives,
    a_spent_budget_refuses_and_lets_at_most_one_reservation_past_it,
    a_new_budget_period_starts_from_zero,
    a_second_settlement_changes_nothing,
    a_refusal_holds_nothing,
    the_standing_reports_each_limit_of_the_policy,
);
