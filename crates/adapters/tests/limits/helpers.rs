//! Stores, policies and clocks for the tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatewayz_adapters::limits::{InProcessLimits, RedisLimits, RedisSettings};
use gatewayz_domain::limits::{
    Admission, BudgetPeriod, Decision, KeyPolicy, LimitsStore, Settlement, Spend, SpendLimit,
};
use secrecy::SecretString;

use crate::redis_server::RedisServer;

/// The lease TTL of the Redis stores under test: short, so that renewal and
/// expiry happen within a test.
pub const TEST_LEASE_TTL: Duration = Duration::from_millis(300);

pub fn in_process() -> Arc<dyn LimitsStore> {
    Arc::new(InProcessLimits::new())
}

pub async fn in_redis(server: &RedisServer) -> Arc<dyn LimitsStore> {
    Arc::new(redis_store(server, Duration::from_secs(2)).await)
}

pub async fn redis_store(server: &RedisServer, deadline: Duration) -> RedisLimits {
    let settings = RedisSettings {
        deadline,
        lease_ttl: TEST_LEASE_TTL,
        ..RedisSettings::default()
    };
    RedisLimits::connect(&SecretString::from(server.url()), settings)
        .await
        .unwrap()
}

/// Now, Unix µs.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A time in the future (Unix seconds → µs), for budget periods: Redis
/// expires a spend key a day after its period, so periods must not be past.
pub fn at(unix_seconds: u64) -> u64 {
    unix_seconds * 1_000_000
}

/// 2030-06-01T12:00:00Z.
pub const JUNE_1_2030_NOON: u64 = 1_906_545_600;

/// A policy with its own id, with no limits yet.
pub fn key_policy(name: &str) -> KeyPolicy {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    KeyPolicy::unlimited(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

pub fn daily_budget(usd: f64) -> Option<SpendLimit> {
    Some(SpendLimit {
        usd,
        period: BudgetPeriod::Day,
    })
}

/// A lease id no other admission has.
pub fn lease() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("lease-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn admission(policy: &Arc<KeyPolicy>, reserve: Spend, now_us: u64) -> Admission {
    Admission {
        policy: policy.clone(),
        lease: lease(),
        reserve,
        now_us,
    }
}

pub fn settlement(admission: &Admission, used: Spend, now_us: u64) -> Settlement {
    Settlement {
        policy: admission.policy.clone(),
        lease: admission.lease.clone(),
        reserved: admission.reserve,
        used,
        estimated: false,
        admitted_us: admission.now_us,
        now_us,
    }
}

pub fn tokens(tokens: u64) -> Spend {
    Spend {
        tokens,
        usd_micros: 0,
    }
}

pub fn usd_micros(usd_micros: u64) -> Spend {
    Spend {
        tokens: 0,
        usd_micros,
    }
}

pub fn is_admitted(decision: &Decision) -> bool {
    matches!(decision, Decision::Admitted(_))
}
