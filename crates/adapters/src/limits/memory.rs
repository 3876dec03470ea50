//! [`InProcessLimits`]: the counters in this process's memory, for a single
//! replica (or as the fallback of [`DegradingLimits`](super::DegradingLimits)).
//!
//! Its clock is the one the caller passes (`now_us` of each admission and
//! settlement). Its leases never expire: they live in the process that holds
//! them, so they cannot outlive it, and each is given back when its request
//! is settled, however long the request lasts (the Redis store gets the same
//! effect by renewing them).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use gatewayz_domain::limits::{
    Admission, Decision, Gcra, KeyPolicy, LimitKind, LimitsStore, Settlement, Standing, StoreError, WINDOW_US,
};

use super::counters::{Counters, PARALLEL_RETRY, budget_retry, period_of, unix_seconds};

/// Per-key counters in the process. Memory stays bounded: a key's state is
/// dropped once its windows are whole again, it holds no lease and its
/// budget period is over, and only the current period's spend is kept.
#[derive(Debug, Default)]
pub struct InProcessLimits {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeyState>,
    /// When idle keys are next swept (Unix µs).
    next_sweep_us: u64,
}

#[derive(Debug, Default)]
struct KeyState {
    requests_tat: u64,
    tokens_tat: u64,
    leases: HashSet<String>,
    spend: Option<PeriodSpend>,
}

/// What a key spent in one budget period (µ$, reservations included).
#[derive(Debug, Clone, Copy)]
struct PeriodSpend {
    start: i64,
    end: Option<i64>,
    usd_micros: u64,
}

impl InProcessLimits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `lease` of key `key_id` is held here (admitted, not settled).
    pub(crate) fn holds(&self, key_id: &str, lease: &str) -> bool {
        self.lock()
            .keys
            .get(key_id)
            .is_some_and(|key| key.leases.contains(lease))
    }

    /// How many keys have state: for tests of the memory bound.
    pub fn keys_held(&self) -> usize {
        self.lock().keys.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere
        // leaves nothing half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decide(&self, admission: &Admission) -> Decision {
        let policy = &admission.policy;
        let now = admission.now_us;
        let mut state = self.lock();
        state.sweep(now);
        let key = state.keys.entry(policy.id.clone()).or_default();
        key.enter_period(policy, now);

        let refuse = |key: &KeyState, limit: LimitKind, retry_after: Duration| Decision::Refused {
            limit,
            retry_after,
            standing: key.standing(policy, now),
        };
        let mut requests_tat = key.requests_tat;
        if let Some(rpm) = policy.rpm {
            match Gcra::per_minute(rpm).admit(key.requests_tat, now, 1) {
                Ok(tat) => requests_tat = tat,
                Err(denied) => {
                    return refuse(
                        key,
                        LimitKind::Requests,
                        Duration::from_micros(denied.retry_after_us),
                    );
                }
            }
        }
        let mut tokens_tat = key.tokens_tat;
        if let Some(tpm) = policy.tpm {
            match Gcra::per_minute(tpm).admit(key.tokens_tat, now, admission.reserve.tokens) {
                Ok(tat) => tokens_tat = tat,
                Err(denied) => {
                    return refuse(
                        key,
                        LimitKind::Tokens,
                        Duration::from_micros(denied.retry_after_us),
                    );
                }
            }
        }
        if let Some(max) = policy.max_parallel
            && key.leases.len() as u64 >= max
        {
            return refuse(key, LimitKind::Parallel, PARALLEL_RETRY);
        }
        if let Some(budget) = policy.budget
            && key.spent(policy, now) >= budget.micros()
        {
            return refuse(key, LimitKind::Budget, budget_retry(budget.period, now));
        }

        key.requests_tat = requests_tat;
        key.tokens_tat = tokens_tat;
        key.leases.insert(admission.lease.clone());
        if let Some(spend) = key.spend.as_mut() {
            spend.usd_micros = spend.usd_micros.saturating_add(admission.reserve.usd_micros);
        }
        Decision::Admitted(key.standing(policy, now))
    }

    fn settle_now(&self, settlement: &Settlement) {
        let policy = &settlement.policy;
        let mut state = self.lock();
        let Some(key) = state.keys.get_mut(&policy.id) else {
            return;
        };
        if !key.leases.remove(&settlement.lease) {
            // Settled already (or never admitted here): nothing to give back.
            return;
        }
        let (reserved, used, now) = (settlement.reserved, settlement.used, settlement.now_us);
        if let Some(tpm) = policy.tpm {
            let gcra = Gcra::per_minute(tpm);
            key.tokens_tat = if used.tokens < reserved.tokens {
                gcra.refund(key.tokens_tat, now, reserved.tokens - used.tokens)
            } else {
                gcra.charge(key.tokens_tat, now, used.tokens - reserved.tokens)
            };
        }
        if let Some(budget) = policy.budget
            && let Some(spend) = key.spend.as_mut()
            && spend.start == period_of(budget.period, settlement.admitted_us).0
        {
            // A settlement of a period already over changes nothing: only the
            // current period is kept, and the old one can refuse no one.
            spend.usd_micros = spend
                .usd_micros
                .saturating_add(used.usd_micros)
                .saturating_sub(reserved.usd_micros);
        }
    }
}

impl State {
    /// Drops the keys that hold nothing worth keeping, at most once a
    /// window: their absence reads the same as their state.
    fn sweep(&mut self, now: u64) {
        if now < self.next_sweep_us {
            return;
        }
        self.next_sweep_us = now.saturating_add(WINDOW_US);
        let now_s = unix_seconds(now);
        self.keys.retain(|_, key| {
            key.requests_tat > now
                || key.tokens_tat > now
                || !key.leases.is_empty()
                || key
                    .spend
                    .is_some_and(|spend| spend.end.is_none_or(|end| end > now_s))
        });
    }
}

impl KeyState {
    /// Moves the spend to `policy`'s period at `now`, starting a new one at
    /// zero when the last is over (or the key has no budget any more).
    fn enter_period(&mut self, policy: &KeyPolicy, now: u64) {
        let Some(budget) = policy.budget else {
            self.spend = None;
            return;
        };
        let (start, end) = period_of(budget.period, now);
        if self.spend.is_none_or(|spend| spend.start != start) {
            self.spend = Some(PeriodSpend {
                start,
                end,
                usd_micros: 0,
            });
        }
    }

    /// Spent in `policy`'s period at `now` (zero in a period not entered yet).
    fn spent(&self, policy: &KeyPolicy, now: u64) -> u64 {
        match (policy.budget, self.spend) {
            (Some(budget), Some(spend)) if spend.start == period_of(budget.period, now).0 => spend.usd_micros,
            _ => 0,
        }
    }

    fn standing(&self, policy: &KeyPolicy, now: u64) -> Standing {
        Counters {
            now_us: now,
            requests_tat: self.requests_tat,
            tokens_tat: self.tokens_tat,
            in_flight: self.leases.len() as u64,
            spent_usd_micros: self.spent(policy, now),
        }
        .standing(policy)
    }
}

#[async_trait]
impl LimitsStore for InProcessLimits {
    /// Never fails.
    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError> {
        Ok(self.decide(admission))
    }

    /// Never fails.
    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        self.settle_now(settlement);
        Ok(())
    }

    /// Never fails.
    async fn standing(&self, policy: &KeyPolicy, now_us: u64) -> Result<Standing, StoreError> {
        let state = self.lock();
        Ok(match state.keys.get(&policy.id) {
            Some(key) => key.standing(policy, now_us),
            None => KeyState::default().standing(policy, now_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatewayz_domain::limits::{BudgetPeriod, Spend, SpendLimit};

    use super::*;

    const S: u64 = 1_000_000;
    /// 2030-06-01T12:00:00Z.
    const NOON: u64 = 1_906_545_600 * S;

    fn admit(store: &InProcessLimits, policy: &Arc<KeyPolicy>, lease: &str, now_us: u64) -> Decision {
        store.decide(&Admission {
            policy: policy.clone(),
            lease: lease.to_owned(),
            reserve: Spend {
                tokens: 10,
                usd_micros: 10,
            },
            now_us,
        })
    }

    #[test]
    fn idle_keys_are_forgotten_and_keys_holding_something_kept() {
        let store = InProcessLimits::new();
        let limited = |id: String| {
            Arc::new(KeyPolicy {
                rpm: Some(60),
                tpm: Some(1_000),
                ..KeyPolicy::unlimited(id)
            })
        };
        for i in 0..100 {
            admit(&store, &limited(format!("idle-{i}")), "done", NOON);
            store.settle_now(&Settlement {
                policy: limited(format!("idle-{i}")),
                lease: "done".to_owned(),
                reserved: Spend::default(),
                used: Spend::default(),
                estimated: false,
                admitted_us: NOON,
                now_us: NOON,
            });
        }
        let streaming = limited("streaming".to_owned());
        admit(&store, &streaming, "long", NOON);
        let budgeted = Arc::new(KeyPolicy {
            budget: Some(SpendLimit {
                usd: 1.0,
                period: BudgetPeriod::Day,
            }),
            ..KeyPolicy::unlimited("budgeted")
        });
        admit(&store, &budgeted, "b", NOON);
        store.settle_now(&Settlement {
            policy: budgeted.clone(),
            lease: "b".to_owned(),
            reserved: Spend::default(),
            used: Spend::default(),
            estimated: false,
            admitted_us: NOON,
            now_us: NOON,
        });
        assert_eq!(store.keys_held(), 102);

        // Two minutes on every window is whole again: only the key with a
        // lease and the one with spend in its day are kept.
        admit(&store, &limited("newcomer".to_owned()), "n", NOON + 120 * S);
        assert_eq!(store.keys_held(), 3);
        // The next day the spend is over too.
        admit(
            &store,
            &limited("next-day".to_owned()),
            "d",
            NOON + 13 * 3_600 * S,
        );
        assert_eq!(
            store.keys_held(),
            3,
            "streaming, newcomer (holds its lease), next-day"
        );
        assert!(store.holds("streaming", "long"));
        assert!(!store.holds("budgeted", "b"));
    }

    #[test]
    fn an_admission_and_its_settlement_cost_microseconds() {
        let store = InProcessLimits::new();
        let policy = Arc::new(KeyPolicy {
            rpm: Some(u64::MAX / 2),
            tpm: Some(u64::MAX / 2),
            max_parallel: Some(1_000),
            budget: Some(SpendLimit {
                usd: 1e9,
                period: BudgetPeriod::Day,
            }),
            ..KeyPolicy::unlimited("speed")
        });
        let rounds = 100_000;
        let started = std::time::Instant::now();
        for round in 0..rounds {
            let now_us = NOON + round;
            let lease = round.to_string();
            assert!(matches!(
                admit(&store, &policy, &lease, now_us),
                Decision::Admitted(_)
            ));
            store.settle_now(&Settlement {
                policy: policy.clone(),
                lease,
                reserved: Spend {
                    tokens: 10,
                    usd_micros: 10,
                },
                used: Spend {
                    tokens: 5,
                    usd_micros: 5,
                },
                estimated: false,
                admitted_us: now_us,
                now_us,
            });
        }
        let each = started.elapsed() / u32::try_from(rounds).unwrap();
        eprintln!("in process: admission and settlement {each:?} each");
        // Loose: a debug build on a busy machine.
        assert!(each < std::time::Duration::from_micros(100), "{each:?}");
    }
}
