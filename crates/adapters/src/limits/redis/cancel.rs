//! Cancelling the admissions this replica gave up on.
//!
//! An admission whose answer was never taken (no answer within the deadline,
//! the connection lost mid-call, the request gone while it waited) may still
//! run: a stalled Redis runs the scripts it was sent when it catches up, and
//! nothing would ever settle that admission. Its lease would hold a parallel
//! slot until its TTL, its request and tokens count against the windows, and
//! its reservation stay charged to the budget. So each one is cancelled by
//! [`cancel.lua`](../cancel.lua): it gives back what the admission took if it
//! ran, and makes it take nothing if it has yet to run; both scripts being
//! atomic, the outcome is right whichever runs first. The cancellation is
//! sent from a task of its own, retried until Redis answers: it must survive
//! the outage that caused it, without holding the request.

use std::future::Future;
use std::time::Duration;

use gatewayz_domain::limits::{Admission, StoreError};
use redis::{Script, ScriptInvocation};

use super::lua::{limit_arg, micros};

/// How long a void marker lives: far longer than an admission sent before
/// its cancellation can take to reach Redis after it (on one connection it
/// runs first; on a connection since replaced, it is a stalled socket's
/// backlog), and short enough that markers never pile up.
const VOID_TTL: Duration = Duration::from_secs(5 * 60);

/// How long a cancellation is retried while Redis fails. An admission still
/// queued in a Redis stalled longer than this runs uncancelled: its lease
/// expires by itself, its reservation stands.
const RETRY_FOR: Duration = Duration::from_secs(2 * 60);

/// The first pause between two tries of a cancellation, doubled after each
/// failure up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two tries: a cancellation reaches a Redis that
/// answers again within this, soon enough after the admission it undoes
/// that the admission's lease is still there to find.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Cancellations under way at once, at most: past this (a Redis failing
/// under heavy traffic) an admission given up on is left as before: its
/// lease expires by itself and its reservation stands.
pub(super) const MOST_UNDER_WAY: usize = 10_000;

/// What [`cancel.lua`](../cancel.lua) is given, owned so that it outlives
/// the request.
#[derive(Debug)]
pub(super) struct Cancellation {
    /// Requests TAT, tokens TAT, leases, spend of the admission's period,
    /// the lease's void marker.
    keys: [String; 5],
    lease: String,
    rpm: i64,
    tpm: i64,
    reserved_tokens: u64,
    budget: bool,
    reserved_usd_micros: u64,
}

impl Cancellation {
    /// The cancellation of `admission`, whose Redis keys are `keys`: its
    /// key's requests TAT, tokens TAT, leases, spend of the admission's
    /// period, and the lease's void marker.
    pub(super) fn new(admission: &Admission, keys: [String; 5]) -> Self {
        let policy = &admission.policy;
        Self {
            keys,
            lease: admission.lease.clone(),
            rpm: limit_arg(policy.rpm),
            tpm: limit_arg(policy.tpm),
            reserved_tokens: admission.reserve.tokens,
            budget: policy.budget.is_some(),
            reserved_usd_micros: admission.reserve.usd_micros,
        }
    }

    /// `script` (cancel.lua) invoked on this cancellation. It replies 1
    /// when it undid an admission, 0 when it made the lease void.
    pub(super) fn invocation<'a>(&'a self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
            .arg(&self.lease)
            .arg(self.rpm)
            .arg(self.tpm)
            .arg(self.reserved_tokens)
            .arg(u8::from(self.budget))
            .arg(self.reserved_usd_micros)
            .arg(micros(VOID_TTL) / 1_000);
        invocation
    }
}

/// Runs `attempt` until it succeeds, pausing longer after each failure, for
/// [`RETRY_FOR`] at most; or until `attempt` gives `None` (the store was
/// dropped).
pub(super) async fn retry<F, Fut>(cancellation: &Cancellation, mut attempt: F)
where
    F: FnMut() -> Option<Fut>,
    Fut: Future<Output = Result<i64, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = FIRST_PAUSE;
    while let Some(outcome) = attempt() {
        match outcome.await {
            Ok(undone) => {
                tracing::debug!(
                    lease = %cancellation.lease,
                    undone = undone == 1,
                    "limits: admission given up on cancelled in Redis"
                );
                return;
            }
            Err(error) if tokio::time::Instant::now() + pause >= give_up => {
                tracing::warn!(
                    lease = %cancellation.lease,
                    %error,
                    "limits: an admission given up on could not be cancelled; if Redis runs it, its lease expires by itself and its reservation stands"
                );
                return;
            }
            Err(error) => tracing::debug!(%error, "limits: cancellation failed; retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
