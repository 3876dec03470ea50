//! The soak's load: an open loop at a fixed rate (the benchmark's pacer
//! thread and connection pool), each request sent at its intended time
//! whatever the earlier ones are doing and timed from that time, so a
//! stall counts against every request it held back; its outcome tallied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::header::RETRY_AFTER;
use tokio::time::{Instant, sleep, timeout};

use super::outcome::{Outcome, Tally, classify};
use crate::client::{Target, connect};
use crate::load::{Pool, pace};
use crate::stats::record;

/// The soak's latencies are also kept per window of this length.
pub const WINDOW: Duration = Duration::from_secs(10);
/// A request with no whole answer after this has none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read (a completion is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;
/// Connections opened before the load, and the most in use at once.
const WARM_CONNECTIONS: usize = 32;
const MAX_CONNECTIONS: usize = 256;

/// What the load did.
#[derive(Debug)]
pub struct Driven {
    pub planned: u64,
    pub tally: Tally,
    pub pacer_late_max: Duration,
    /// Connections opened because none was free (each refusal closes its
    /// own), and requests that waited for one of the [`MAX_CONNECTIONS`].
    pub opened: u64,
    pub waited: u64,
    pub most_in_flight: usize,
}

/// Sends `rate × duration` requests to `target` from `start`, and tallies
/// what each got.
///
/// # Errors
/// When the warm connections cannot be opened: nothing was sent.
pub async fn drive(
    target: &Arc<Target>,
    start: Instant,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Driven> {
    let planned = (rate * duration.as_secs_f64()).round() as u64;
    let windows = duration.as_nanos().div_ceil(WINDOW.as_nanos()) as usize;
    let tally = Arc::new(Mutex::new(Tally::new(WINDOW, windows)?));
    let mut warm = Vec::with_capacity(WARM_CONNECTIONS);
    for _ in 0..WARM_CONNECTIONS {
        warm.push(connect(target.address).await?);
    }
    let pool = Arc::new(Pool::new(target.address, warm, MAX_CONNECTIONS));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let (mut intended, pacer) = pace(start, Duration::from_secs_f64(1.0 / rate), planned);
    while let Some(due) = intended.recv().await {
        let (target, pool, tally, in_flight) = (
            Arc::clone(target),
            Arc::clone(&pool),
            Arc::clone(&tally),
            Arc::clone(&in_flight),
        );
        most_in_flight.fetch_max(in_flight.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        tokio::spawn(async move {
            let (outcome, connecting) = timeout(REQUEST_TIMEOUT, exchange(&target, &pool))
                .await
                .unwrap_or((Outcome::NoAnswer, None));
            let latency = Instant::now().saturating_duration_since(due);
            let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            tally.add(due.saturating_duration_since(start), latency, outcome);
            if let Some(connecting) = connecting {
                record(&mut tally.connecting, connecting);
            }
            drop(tally);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let pacer_late_max = pacer.join().unwrap_or_default();
    // Each request ends within its timeout: wait for the last ones.
    let drain_limit = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(2);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_limit {
        sleep(Duration::from_millis(10)).await;
    }
    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let (opened, waited) = pool.counts();
    Ok(Driven {
        planned,
        tally,
        pacer_late_max,
        opened,
        waited,
        most_in_flight: most_in_flight.load(Ordering::Relaxed),
    })
}

/// Sends one request on a pooled connection and reads its whole answer;
/// also returns how long getting the connection took, when it was got.
/// Only a connection that served a 200 goes back to the pool: the gateway
/// closes the one of a refused request that had a body.
async fn exchange(target: &Target, pool: &Pool) -> (Outcome, Option<Duration>) {
    let began = Instant::now();
    let (_slot, mut conn) = match pool.take(true).await {
        Ok(taken) => taken,
        Err(error) => return (Outcome::NotConnected(format!("{error:#}")), None),
    };
    let connecting = Some(began.elapsed());
    let response = match conn.send(target).await {
        Ok(response) => response,
        Err(error) => return (Outcome::Broken(format!("{error:#}")), connecting),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return (
                Outcome::Broken(format!("{status}, then the body broke off: {error}")),
                connecting,
            );
        }
    };
    let outcome = classify(status, retry_after.as_deref(), &body);
    if outcome == Outcome::Admitted {
        pool.give_back(conn);
    }
    (outcome, connecting)
}
