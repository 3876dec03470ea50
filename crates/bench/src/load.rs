//! Load shapes for whole (non-streamed) answers: back-to-back calls at
//! concurrency 1, a closed loop of many connections, and an open loop at a
//! fixed arrival rate, whose pacer and connection pool the reliability soak
//! shares.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::client::{Conn, Target, connect};
use crate::machine::steal_ticks;
use crate::stats::{Hist, hist, record, round, summary};

/// Per-request deadline: a request still unanswered then is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections an open-loop step may hold: far more than any rate
/// the gateway sustains needs (15,000 req/s × 5 ms is 75), and few enough
/// that an overloaded target is not also flooded with new connections.
/// A request that finds them all busy waits for one, counted.
const MAX_CONNECTIONS: usize = 256;

/// The latencies of `count` calls made one after the other on `conn`.
pub async fn sequential(
    conn: &mut Conn,
    target: &Target,
    count: usize,
    into: &mut Hist,
) -> anyhow::Result<()> {
    for _ in 0..count {
        let started = Instant::now();
        conn.call(target)
            .await
            .with_context(|| format!("a call to {} failed", target.name))?;
        record(into, started.elapsed());
    }
    Ok(())
}

/// CPU ticks of some processes at one moment.
fn ticks(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|pid| crate::procs::cpu_ticks(*pid).unwrap_or(0))
        .collect()
}

/// What a closed loop measured.
#[derive(Debug)]
pub struct Closed {
    /// Calls that completed inside the measured window.
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    pub latency: Hist,
    /// CPU ticks each watched process used during the window.
    pub cpu_ticks: Vec<u64>,
}

impl Closed {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    /// CPU time per completed request, µs, of the process at `index` of
    /// [`Self::cpu_ticks`].
    pub fn cpu_us_per_request(&self, index: usize, per_second: u64) -> f64 {
        cpu_per_request_us(&self.cpu_ticks, index, self.completed, per_second)
    }

    /// Every number of the window; `names` name the watched processes in
    /// their order.
    pub fn to_json(&self, names: &[&str], per_second: u64) -> Value {
        let cpu: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let ticks = self.cpu_ticks.get(index).copied().unwrap_or(0);
                (
                    (*name).to_owned(),
                    json!({
                        "cpu_ticks": ticks,
                        "cpu_s": round(ticks as f64 / per_second as f64),
                        "cpu_us_per_request": round(self.cpu_us_per_request(index, per_second)),
                    }),
                )
            })
            .collect();
        json!({
            "requests_per_second": round(self.rate()),
            "completed": self.completed,
            "errors": self.errors,
            "first_error": self.first_error,
            "window_s": self.window.as_secs_f64(),
            "latency": summary(&self.latency),
            "cpu": cpu,
        })
    }
}

/// CPU time per completed request, µs, of the process at `index` of
/// `ticks`.
pub fn cpu_per_request_us(ticks: &[u64], index: usize, requests: u64, per_second: u64) -> f64 {
    let ticks = ticks.get(index).copied().unwrap_or(0) as f64;
    ticks / per_second as f64 * 1e6 / requests.max(1) as f64
}

/// `connections` connections each calling back-to-back: unmeasured for
/// `warmup`, then measured for `window`. `pids` are the processes whose CPU
/// time is read at the window's edges.
pub async fn closed_loop(
    target: &Arc<Target>,
    connections: usize,
    warmup: Duration,
    window: Duration,
    pids: &[u32],
) -> anyhow::Result<Closed> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(target.address).await?);
    }
    let begin = Instant::now() + warmup;
    let end = begin + window;
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let target = Arc::clone(target);
        tasks.spawn(async move {
            let mut latency = hist()?;
            let (mut completed, mut errors, mut first_error) = (0_u64, 0_u64, None);
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = conn.call(&target).await;
                let finished = Instant::now();
                let inside = finished >= begin && finished <= end;
                match result {
                    Ok(()) if inside => {
                        completed += 1;
                        if started >= begin {
                            record(&mut latency, finished - started);
                        }
                    }
                    Ok(()) => {}
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{error:#}"));
                        conn = connect(target.address).await?;
                    }
                }
            }
            anyhow::Ok((completed, errors, first_error, latency))
        });
    }
    sleep_until(begin).await;
    let before = ticks(pids);
    sleep_until(end).await;
    let after = ticks(pids);
    let mut closed = Closed {
        completed: 0,
        errors: 0,
        first_error: None,
        window,
        latency: hist()?,
        cpu_ticks: after
            .iter()
            .zip(&before)
            .map(|(after, before)| after.saturating_sub(*before))
            .collect(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (completed, errors, first_error, latency) = joined??;
        closed.completed += completed;
        closed.errors += errors;
        closed.first_error = closed.first_error.or(first_error);
        closed.latency.add(&latency)?;
    }
    Ok(closed)
}

/// What one open-loop step measured.
#[derive(Debug)]
pub struct OpenStep {
    pub rate: f64,
    pub duration: Duration,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency from each request's intended send time to its last byte.
    pub latency: Hist,
    /// Connections opened while measuring because none was free.
    pub opened: u64,
    /// Requests that waited for a connection because all
    /// `MAX_CONNECTIONS` were busy (their wait counts in their latency).
    pub waited: u64,
    pub most_in_flight: usize,
    /// How late the pacer handed over requests, at worst.
    pub pacer_late_max: Duration,
    /// From each intended send time to the moment the driver's task for it
    /// ran: the driver's own share of every latency above.
    pub dispatch: Hist,
    pub cpu_ticks: Vec<u64>,
    /// Machine-wide steal ticks while measuring.
    pub steal_ticks: u64,
}

/// Keep-alive connections shared by the requests of an open loop: a
/// request takes a free one, or opens one (counted), and gives it back once
/// its answer is read. At most `max` are in use; a request that finds them
/// all busy waits for one (counted).
#[derive(Debug)]
pub struct Pool {
    address: SocketAddr,
    free: Mutex<Vec<Conn>>,
    slots: Semaphore,
    opened: AtomicU64,
    waited: AtomicU64,
}

impl Pool {
    /// A pool of `warm` connections to `address`, at most `max` in use.
    pub fn new(address: SocketAddr, warm: Vec<Conn>, max: usize) -> Self {
        Self {
            address,
            free: Mutex::new(warm),
            slots: Semaphore::new(max),
            opened: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        }
    }

    /// A connection and the slot it holds until dropped; `counted` says
    /// whether opening or waiting counts.
    pub async fn take(&self, counted: bool) -> anyhow::Result<(SemaphorePermit<'_>, Conn)> {
        let slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                self.waited.fetch_add(u64::from(counted), Ordering::Relaxed);
                self.slots.acquire().await?
            }
        };
        let free = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                match free.pop() {
                    Some(conn) if conn.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let conn = match free {
            Some(conn) => conn,
            None => {
                self.opened.fetch_add(u64::from(counted), Ordering::Relaxed);
                connect(self.address).await?
            }
        };
        Ok((slot, conn))
    }

    /// Returns a connection whose answer was read to the end.
    pub fn give_back(&self, conn: Conn) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// Connections opened because none was free, and requests that waited
    /// for a slot, among the counted ones.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.waited.load(Ordering::Relaxed),
        )
    }
}

/// Hands out `count` intended send times, `period` apart from `start`, each
/// at its time, from a thread of its own: sub-millisecond sleeps, which
/// tokio's 1 ms timer cannot do. The thread returns how late it was at
/// worst; it stops early when the receiver is dropped.
pub fn pace(
    start: Instant,
    period: Duration,
    count: u64,
) -> (UnboundedReceiver<Instant>, JoinHandle<Duration>) {
    let (sender, intended) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::spawn(move || {
        // The default 50 µs of timer slack would be added to every sleep.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        let mut late = Duration::ZERO;
        for index in 0..count {
            let due = start + period.mul_f64(index as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                late = late.max(now - due);
            }
            if sender.send(due).is_err() {
                break;
            }
        }
        late
    });
    (intended, pacer)
}

struct Shared {
    pool: Pool,
    results: Mutex<(Hist, u64, u64, Option<String>)>,
    dispatch: Mutex<Hist>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Sends requests at `rate` a second for `duration`, each at its intended
/// time whatever the earlier ones are doing, and times each from that
/// intended time, so a stall delays the measure of every request it held
/// back (no coordinated omission). A pacer thread (sub-millisecond sleeps,
/// which tokio's 1 ms timer cannot do) hands each intended time to the
/// runtime; the request takes a free connection, or opens one (counted).
/// The first `warmup` runs at the same rate unmeasured, so that the pools of
/// the driver and of the gateway have grown to what the rate needs.
pub async fn open_loop(
    target: &Arc<Target>,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    warm_connections: usize,
    pids: &[u32],
) -> anyhow::Result<OpenStep> {
    let mut pool = Vec::with_capacity(warm_connections);
    for _ in 0..warm_connections {
        let mut conn = connect(target.address).await?;
        conn.call(target).await?;
        pool.push(conn);
    }
    let shared = Arc::new(Shared {
        pool: Pool::new(target.address, pool, MAX_CONNECTIONS),
        results: Mutex::new((hist()?, 0, 0, None)),
        dispatch: Mutex::new(hist()?),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    });
    let count = (rate * (warmup + duration).as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let (mut intended, pacer) = pace(start, period, count);
    let watched = pids.to_vec();
    let before = tokio::spawn(async move {
        sleep_until(measure_from).await;
        (ticks(&watched), steal_ticks())
    });
    let mut sent = 0;
    while let Some(due) = intended.recv().await {
        let measured = due >= measure_from;
        sent += u64::from(measured);
        let (target, shared) = (Arc::clone(target), Arc::clone(&shared));
        let in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if measured {
            shared.most_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            if measured {
                record(
                    &mut shared.dispatch.lock().unwrap_or_else(PoisonError::into_inner),
                    Instant::now().saturating_duration_since(due),
                );
            }
            let result = timeout(REQUEST_TIMEOUT, one_request(&target, &shared.pool, measured)).await;
            let finished = Instant::now();
            let mut results = shared.results.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(Ok(())) if !measured => {}
                Ok(Ok(())) => {
                    record(&mut results.0, finished - due);
                    results.1 += 1;
                }
                Ok(Err(error)) => {
                    results.2 += 1;
                    results.3.get_or_insert(format!("{error:#}"));
                }
                Err(_) => {
                    results.2 += 1;
                    results
                        .3
                        .get_or_insert(format!("no answer within {REQUEST_TIMEOUT:?}"));
                }
            }
            drop(results);
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let pacer_late_max = pacer.join().unwrap_or_default();
    // Every request ends within its timeout; wait for the last ones.
    let drain_limit = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while shared.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (after, steal_after) = (ticks(pids), steal_ticks());
    let (before, steal_before) = before.await?;
    let mut results = shared.results.lock().unwrap_or_else(PoisonError::into_inner);
    let latency = std::mem::replace(&mut results.0, hist()?);
    let dispatch = std::mem::replace(
        &mut *shared.dispatch.lock().unwrap_or_else(PoisonError::into_inner),
        hist()?,
    );
    let (opened, waited) = shared.pool.counts();
    Ok(OpenStep {
        rate,
        duration,
        sent,
        ok: results.1,
        errors: results.2,
        first_error: results.3.take(),
        latency,
        opened,
        waited,
        most_in_flight: shared.most_in_flight.load(Ordering::Relaxed),
        pacer_late_max,
        dispatch,
        cpu_ticks: after
            .iter()
            .zip(&before)
            .map(|(after, before)| after.saturating_sub(*before))
            .collect(),
        steal_ticks: steal_after.saturating_sub(steal_before),
    })
}

async fn one_request(target: &Target, pool: &Pool, measured: bool) -> anyhow::Result<()> {
    let (_slot, mut conn) = pool.take(measured).await?;
    conn.call(target).await?;
    pool.give_back(conn);
    Ok(())
}
