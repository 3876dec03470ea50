//! [`RedisLimits`]: counters in Redis (≥ 7, or Valkey), shared by every
//! replica.
//!
//! Each gateway key has these Redis keys, under one hash tag so that a
//! cluster would keep them in one slot (`<prefix>` is `gatewayz` unless set):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{<prefix>:<id>}:rq` | string | the requests window's TAT, Unix µs | at the TAT (+1 s) |
//! | `{<prefix>:<id>}:tk` | string | the tokens window's TAT, Unix µs | at the TAT (+1 s) |
//! | `{<prefix>:<id>}:leases` | sorted set | lease id → expiry, Unix µs | lease TTL (+1 s) after the last admission or renewal |
//! | `{<prefix>:<id>}:spend:<start>` | string | spend of the budget period starting at `<start>` (Unix s), µ$ | a day after the period ends; `total` never |
//! | `{<prefix>:<id>}:void:<lease>` | string | an admission given up on before it ran: it takes nothing | 5 minutes |
//!
//! Admission is one script ([`admit.lua`](./admit.lua)), one round trip;
//! settlement another ([`settle.lua`](./settle.lua)). The windows and leases
//! run on Redis's clock (`TIME` in the scripts), so replicas whose clocks
//! disagree still count against one; budget periods are named by the
//! gateway's clock (`now_us` of the admission), which matters only within
//! a clock skew of a period's boundary.
//!
//! Each replica renews the leases it holds every third of their TTL, in one
//! round trip: a request may last longer than the TTL, and the slots of a
//! replica that dies come back within it.
//!
//! An admission whose answer is not taken (past its deadline, its
//! connection lost, its request gone) may still run when a stalled Redis
//! catches up: it is cancelled ([`cancel.lua`](./cancel.lua)), from a task
//! that retries until Redis answers; see [`cancel`].
//!
//! Every call has a deadline ([`RedisSettings::deadline`]): a Redis that is
//! down or wedged costs a request that long at most, then a [`StoreError`].
//! The connection is made lazily and remade by itself, one attempt a call
//! (a refused connection fails the call at once); the gateway starts
//! whether Redis is up or not. A Redis restarted without persistence has
//! lost its counts: windows and spend begin again.

mod cancel;
mod lua;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use gatewayz_domain::limits::{
    Admission, Decision, KeyPolicy, LEASE_TTL, LimitsStore, Settlement, Standing, StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};
use secrecy::{ExposeSecret, SecretString};
use thread_local::ThreadLocal;

use self::cancel::{Cancellation, MOST_UNDER_WAY};
use self::lua::{counters_of, decision_of, limit_arg, micros};
use super::counters::period_of;
use super::redacted::{redacted_url, scrub, url_secrets};

/// Spend keys outlive their period by this much (seconds): a request
/// admitted just before the end is still settled in it.
const SPEND_GRACE_S: i64 = 24 * 60 * 60;

/// How the Redis store behaves, beside its URL.
#[derive(Clone)]
pub struct RedisSettings {
    /// Every call's deadline, connecting included. Default 250 ms.
    pub deadline: Duration,
    /// How long a lease lives unless renewed. Default [`LEASE_TTL`].
    pub lease_ttl: Duration,
    /// The first part of every key's hash tag, so that deployments can share
    /// one Redis. Default `gatewayz`.
    pub key_prefix: String,
    /// The CA certificate (PEM) a `rediss://` server's certificate must chain
    /// to, in place of the system's roots: for a Redis with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(250),
            lease_ttl: LEASE_TTL,
            key_prefix: "gatewayz".to_owned(),
            ca_pem: None,
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("deadline", &self.deadline)
            .field("lease_ttl", &self.lease_ttl)
            .field("key_prefix", &self.key_prefix)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())),
            )
            .finish()
    }
}

/// A Redis URL the store cannot use. Its text shows the URL with its
/// password replaced.
#[derive(Debug, thiserror::Error)]
#[error("the Redis URL {url} cannot be used: {reason}")]
pub struct RedisUrlError {
    url: String,
    reason: String,
}

/// Limits counted in Redis, shared by every replica. Cheap to share behind an
/// `Arc`; the lease renewal stops when the store is dropped.
pub struct RedisLimits {
    inner: Arc<Inner>,
}

struct Inner {
    /// One connection a thread that calls (each actix worker's), with the
    /// generation it was made in: its driver task runs on the caller's own
    /// runtime, so a call costs no hop to another thread and back (about
    /// 100 µs of an admission's latency on loopback, when one connection
    /// on the main thread served every worker).
    connections: ThreadLocal<RefCell<(u64, ConnectionManager)>>,
    /// Moves on at each failed call: every thread then makes a fresh
    /// connection on its next call, rather than fail once more on one that
    /// broke while Redis was away.
    generation: AtomicU64,
    client: redis::Client,
    manager: ConnectionManagerConfig,
    settings: RedisSettings,
    scripts: Scripts,
    /// The URL as logs may show it.
    shown_url: String,
    /// The URL's password, raw and decoded, scrubbed from every error.
    secrets: Vec<String>,
    /// The leases this replica holds: leases key → lease ids.
    held: Mutex<HashMap<String, HashSet<String>>>,
    /// Cancellations of admissions given up on, not yet run by Redis.
    cancelling: AtomicUsize,
}

struct Scripts {
    admit: Script,
    settle: Script,
    renew: Script,
    standing: Script,
    cancel: Script,
}

/// The key names of one gateway key.
struct KeyNames {
    /// `{<prefix>:<id>}`, which every name begins with.
    tag: String,
    requests: String,
    tokens: String,
    leases: String,
}

impl KeyNames {
    /// The marker of `lease` made void: its admission was given up on.
    fn void(&self, lease: &str) -> String {
        format!("{}:void:{lease}", self.tag)
    }
}

impl RedisLimits {
    /// A store on `url`: `redis://`, or `rediss://` for TLS verified against
    /// the system's roots or [`RedisSettings::ca_pem`]. Tries to connect and
    /// load the scripts once within the deadline, so that the first requests
    /// find them; if Redis is down it says so in the log and connects later
    /// by itself. Starts the lease renewal: call it within a Tokio runtime.
    ///
    /// # Errors
    /// [`RedisUrlError`] when `url` is not a `redis://` or `rediss://` URL,
    /// or `ca_pem` holds no PEM certificate.
    pub async fn connect(url: &SecretString, settings: RedisSettings) -> Result<Self, RedisUrlError> {
        let url = url.expose_secret();
        let secrets = url_secrets(url);
        let shown_url = redacted_url(url);
        let refuse = |reason: String| RedisUrlError {
            url: shown_url.clone(),
            reason: scrub(reason, &secrets),
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(refuse("the scheme must be redis:// or rediss://".to_owned()));
        }
        let client = match &settings.ca_pem {
            Some(ca_pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca_pem.clone()),
                },
            ),
            None => redis::Client::open(url),
        }
        .map_err(|error| refuse(error.to_string()))?;
        // One connection attempt a call: retried with backoff, a Redis that
        // refuses connections would cost every call its whole deadline. The
        // next call is the retry.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.deadline))
            .set_response_timeout(Some(settings.deadline))
            .set_number_of_retries(0);
        // Proves the settings; each thread's connection is made alike.
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|error| refuse(error.to_string()))?;
        let connections = ThreadLocal::new();
        connections.get_or(|| RefCell::new((0, connection)));
        let inner = Arc::new(Inner {
            connections,
            generation: AtomicU64::new(0),
            client,
            manager: config,
            settings,
            scripts: Scripts {
                admit: Script::new(include_str!("admit.lua")),
                settle: Script::new(include_str!("settle.lua")),
                renew: Script::new(include_str!("renew.lua")),
                standing: Script::new(include_str!("standing.lua")),
                cancel: Script::new(include_str!("cancel.lua")),
            },
            shown_url,
            secrets,
            held: Mutex::new(HashMap::new()),
            cancelling: AtomicUsize::new(0),
        });
        match inner.load_scripts().await {
            Ok(()) => tracing::info!(url = %inner.shown_url, "limits: counting in Redis"),
            Err(error) => tracing::warn!(
                url = %inner.shown_url,
                %error,
                "limits: Redis is not reachable yet; connecting in the background"
            ),
        }
        tokio::spawn(renew_leases(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The URL with its password replaced, for logs.
    pub fn shown_url(&self) -> &str {
        &self.inner.shown_url
    }

    /// Runs one plain command on this store's connections, within its
    /// deadline, with its URL's secrets scrubbed from any error: for other
    /// state kept beside the limits (where responses were made).
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        what: &str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        let mut connection = inner.connection()?;
        let answer =
            tokio::time::timeout(inner.settings.deadline, command.query_async(&mut connection)).await;
        if !matches!(answer, Ok(Ok(_))) {
            inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError(scrub(
                format!("redis {what}: {error}"),
                &inner.secrets,
            ))),
            Err(_) => Err(StoreError(format!(
                "redis {what}: no answer within {} ms",
                inner.settings.deadline.as_millis()
            ))),
        }
    }

    /// The first part of every key this store writes.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.inner.settings.key_prefix
    }

    /// How many leases this replica holds and renews.
    pub fn leases_held(&self) -> usize {
        self.inner.held().values().map(HashSet::len).sum()
    }

    /// How many admissions given up on are still being cancelled (Redis has
    /// not answered their cancellation yet).
    pub fn cancellations_pending(&self) -> usize {
        self.inner.cancelling.load(Ordering::Acquire)
    }
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("url", &self.inner.shown_url)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn names(&self, id: &str) -> KeyNames {
        let tag = format!("{{{}:{id}}}", self.settings.key_prefix);
        KeyNames {
            requests: format!("{tag}:rq"),
            tokens: format!("{tag}:tk"),
            leases: format!("{tag}:leases"),
            tag,
        }
    }

    /// The spend key of `policy`'s budget period holding `at_us`, and when
    /// it expires (Unix s; 0: never). Without a budget the scripts touch no
    /// spend key, but Redis wants every key named: the name is a placeholder.
    fn spend_key(&self, policy: &KeyPolicy, at_us: u64) -> (String, i64) {
        let tag = format!("{{{}:{}}}", self.settings.key_prefix, policy.id);
        match policy.budget {
            Some(budget) => {
                let (start, end) = period_of(budget.period, at_us);
                let expires = end.map_or(0, |end| end.saturating_add(SPEND_GRACE_S));
                (format!("{tag}:spend:{start}"), expires)
            }
            None => (format!("{tag}:spend"), 0),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `invocation` within the deadline.
    async fn call<T: FromRedisValue>(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection()?;
        let answer =
            tokio::time::timeout(self.settings.deadline, invocation.invoke_async(&mut connection)).await;
        if !matches!(answer, Ok(Ok(_))) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError(scrub(format!("redis {what}: {error}"), &self.secrets))),
            Err(_) => Err(StoreError(format!(
                "redis {what}: no answer within {} ms",
                self.settings.deadline.as_millis()
            ))),
        }
    }

    /// This thread's connection: made on its first call, and again after
    /// any call failed.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = || {
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone())
                .map_err(|error| StoreError(scrub(format!("redis: {error}"), &self.secrets)))
        };
        let slot = self
            .connections
            .get_or_try(|| fresh().map(|connection| RefCell::new((generation, connection))))?;
        let mut slot = slot.borrow_mut();
        if slot.0 != generation {
            *slot = (generation, fresh()?);
        }
        Ok(slot.1.clone())
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let scripts = &self.scripts;
        let load = async {
            for script in [
                &scripts.admit,
                &scripts.settle,
                &scripts.renew,
                &scripts.standing,
                &scripts.cancel,
            ] {
                script.prepare_invoke().load_async(&mut connection).await?;
            }
            Ok::<(), redis::RedisError>(())
        };
        match tokio::time::timeout(self.settings.deadline, load).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError(scrub(format!("redis: {error}"), &self.secrets))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                self.settings.deadline.as_millis()
            ))),
        }
    }

    /// Renews every lease held here, in one round trip.
    async fn renew(&self) -> Result<(), StoreError> {
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation.arg(micros(self.settings.lease_ttl));
        {
            let held = self.held();
            if held.is_empty() {
                return Ok(());
            }
            for (key, leases) in held.iter() {
                invocation.key(key).arg(leases.len());
                for lease in leases {
                    invocation.arg(lease);
                }
            }
        }
        self.call::<i64>("lease renewal", &invocation).await.map(drop)
    }
}

/// Renews the leases of the store behind `inner` every third of their TTL,
/// until the store is dropped.
async fn renew_leases(inner: Weak<Inner>) {
    loop {
        let Some(period) = inner.upgrade().map(|inner| inner.settings.lease_ttl / 3) else {
            return;
        };
        tokio::time::sleep(period.max(Duration::from_millis(1))).await;
        let Some(store) = inner.upgrade() else {
            return;
        };
        if let Err(error) = store.renew().await {
            // The admissions of the same moment say it louder; a lease not
            // renewed for a whole TTL gives its slot back, as if we had died.
            tracing::debug!(%error, "limits: lease renewal failed");
        }
    }
}

/// An admission sent to Redis whose answer has not been taken: cancelled
/// when dropped (an error, a timeout, the request gone), unless
/// [`PendingAdmission::answered`] was called first. See [`cancel`].
struct PendingAdmission<'a> {
    inner: &'a Arc<Inner>,
    /// `None` once answered.
    admission: Option<&'a Admission>,
}

impl<'a> PendingAdmission<'a> {
    fn new(inner: &'a Arc<Inner>, admission: &'a Admission) -> Self {
        Self {
            inner,
            admission: Some(admission),
        }
    }

    /// Redis's decision was taken: an admitted request is settled by its
    /// ticket from now on, a refused one took nothing.
    fn answered(mut self) {
        self.admission = None;
    }
}

impl Drop for PendingAdmission<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.inner.start_cancelling(admission);
        }
    }
}

impl Inner {
    /// Cancels `admission` in the background, retrying until Redis runs it.
    fn start_cancelling(self: &Arc<Self>, admission: &Admission) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (the process is ending): the lease expires by
            // itself and the reservation stands.
            return;
        };
        if self.cancelling.fetch_add(1, Ordering::AcqRel) >= MOST_UNDER_WAY {
            self.cancelling.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                lease = %admission.lease,
                "limits: too many cancellations under way; an admission Redis may still run is left to expire"
            );
            return;
        }
        let names = self.names(&admission.policy.id);
        let (spend, _) = self.spend_key(&admission.policy, admission.now_us);
        let void = names.void(&admission.lease);
        let cancellation = Arc::new(Cancellation::new(
            admission,
            [names.requests, names.tokens, names.leases, spend, void],
        ));
        let store = Arc::downgrade(self);
        runtime.spawn(async move {
            let attempt = || {
                let inner = store.upgrade()?;
                let cancellation = Arc::clone(&cancellation);
                Some(async move {
                    let invocation = cancellation.invocation(&inner.scripts.cancel);
                    inner.call::<i64>("cancellation", &invocation).await
                })
            };
            cancel::retry(&cancellation, attempt).await;
            if let Some(inner) = store.upgrade() {
                inner.cancelling.fetch_sub(1, Ordering::AcqRel);
            }
        });
    }
}

#[async_trait]
impl LimitsStore for RedisLimits {
    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError> {
        let inner = &self.inner;
        let policy = &admission.policy;
        let names = inner.names(&policy.id);
        let (spend, spend_expires) = inner.spend_key(policy, admission.now_us);
        let void = names.void(&admission.lease);
        let mut invocation = inner.scripts.admit.prepare_invoke();
        invocation
            .key(&names.requests)
            .key(&names.tokens)
            .key(&names.leases)
            .key(&spend)
            .key(&void)
            .arg(limit_arg(policy.rpm))
            .arg(limit_arg(policy.tpm))
            .arg(admission.reserve.tokens)
            .arg(limit_arg(policy.max_parallel))
            .arg(&admission.lease)
            .arg(micros(inner.settings.lease_ttl))
            .arg(limit_arg(policy.budget.map(|budget| budget.micros())))
            .arg(admission.reserve.usd_micros)
            .arg(spend_expires);
        // Until its decision is taken, whatever stops this call (an error,
        // the deadline, the request dropped) cancels the admission: Redis
        // may run it all the same.
        let pending = PendingAdmission::new(inner, admission);
        let reply: Vec<i64> = inner.call("admission", &invocation).await?;
        let decision = decision_of(&reply, admission)?;
        if matches!(decision, Decision::Admitted(_)) {
            inner
                .held()
                .entry(names.leases)
                .or_default()
                .insert(admission.lease.clone());
        }
        pending.answered();
        Ok(decision)
    }

    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        let inner = &self.inner;
        let policy = &settlement.policy;
        let names = inner.names(&policy.id);
        {
            // Renewed no more, whatever happens next: if the settlement fails
            // the lease expires by itself.
            let mut held = inner.held();
            if let Some(leases) = held.get_mut(&names.leases) {
                leases.remove(&settlement.lease);
                if leases.is_empty() {
                    held.remove(&names.leases);
                }
            }
        }
        let (spend, _) = inner.spend_key(policy, settlement.admitted_us);
        let mut invocation = inner.scripts.settle.prepare_invoke();
        invocation
            .key(&names.tokens)
            .key(&names.leases)
            .key(&spend)
            .arg(&settlement.lease)
            .arg(limit_arg(policy.tpm))
            .arg(settlement.reserved.tokens)
            .arg(settlement.used.tokens)
            .arg(u8::from(policy.budget.is_some()))
            .arg(settlement.reserved.usd_micros)
            .arg(settlement.used.usd_micros);
        inner.call::<i64>("settlement", &invocation).await.map(drop)
    }

    async fn standing(&self, policy: &KeyPolicy, now_us: u64) -> Result<Standing, StoreError> {
        let inner = &self.inner;
        let names = inner.names(&policy.id);
        let (spend, _) = inner.spend_key(policy, now_us);
        let mut invocation = inner.scripts.standing.prepare_invoke();
        invocation
            .key(&names.requests)
            .key(&names.tokens)
            .key(&names.leases)
            .key(&spend);
        let reply: Vec<i64> = inner.call("standing", &invocation).await?;
        let mut counters = counters_of(&reply)?;
        if policy.budget.is_none() {
            counters.spent_usd_micros = 0;
        }
        Ok(counters.standing(policy))
    }
}

#[cfg(test)]
mod tests;
