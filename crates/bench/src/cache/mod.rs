//! Cache hits: what an answer served from the gateway's response cache, in
//! its own process, costs end to end against the upstream's own latency.
//!
//! A gateway of its own runs before the same upstream as the other phases
//! (by the same Portkey route), with a catalog whose `gpt-4o-mini` caches
//! its answers for 600 s (`cache_ttl_s`), in the process. Three sides take
//! turns at concurrency 1, the first of them rotating, each on one
//! keep-alive connection: the request straight to the upstream (direct);
//! the same request through the gateway, its answer stored once before
//! anything is measured and every measured answer checked to say
//! `x-gatewayz-cache: hit` (hit); and, for context, requests through the
//! gateway that each carry a `seed` of their own, so that each is a miss
//! that calls the upstream and stores its answer (miss).

mod report;

use std::iter::repeat_n;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde_json::Value;
use tokio::time::{Instant, timeout};

use crate::Args;
use crate::client::{Conn, Target, connect};
use crate::machine::Account;
use crate::plan::Plan;
use crate::procs::{GatewaySetup, free_port, start_gateway_with_env, wait_ready};
use crate::run::{KEY, PATH};
use crate::stats::{Hist, hist, record, us_at};

pub use self::report::{json, note, rows};

/// The phase gateway's catalog: the run's model, routed as the run's
/// explicit fields route it (Portkey's `openai`, whose base URL is the
/// local upstream) and priced as the built-in catalog prices it, its
/// answers cached for every call of the phase.
const CATALOG: &str = r#"[[models]]
id = "gpt-4o-mini"
provider = "portkey"
portkey_provider = "openai"
input_usd_per_million = 0.15
output_usd_per_million = 0.60
cache_ttl_s = 600
"#;

/// The run's request without its routing fields, which would route it past
/// the catalog, and so past its `cache_ttl_s`.
pub const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

/// What the gateway did with a request's cache.
const CACHE_HEADER: &str = "x-gatewayz-cache";

/// The longest a call may take: past it the phase fails.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// How long the gateway has to serve its first hit after it stored the
/// answer.
const WARM_DEADLINE: Duration = Duration::from_secs(5);

/// How a side's answers are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// By the upstream, called directly.
    Direct,
    /// By the gateway, from its cache.
    Hit,
    /// By the gateway, for a request it has not seen: the upstream called
    /// and the answer stored.
    Miss,
}

impl Served {
    const ALL: [Self; 3] = [Self::Direct, Self::Hit, Self::Miss];

    /// What `x-gatewayz-cache` must say; nothing is asked of the upstream.
    fn expected(self) -> Option<&'static str> {
        match self {
            Self::Direct => None,
            Self::Hit => Some("hit"),
            Self::Miss => Some("miss"),
        }
    }

    /// Its key in `latest.json`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// What one side measured.
#[derive(Debug)]
pub struct Side {
    pub served: Served,
    /// Every round's calls, merged.
    pub latency: Hist,
    /// Each round's p50 and p99, µs, in round order.
    pub rounds: Vec<(f64, f64)>,
    /// Measured answers whose `x-gatewayz-cache` was not the side's.
    pub unexpected: u64,
    /// What the first of them said.
    pub first_unexpected: Option<String>,
}

/// What the phase measured.
#[derive(Debug)]
pub struct CacheHits {
    /// Direct, hit, miss.
    pub sides: Vec<Side>,
    /// The rounds the plan asked for; fewer ran when the phase reached its
    /// time limit.
    pub rounds_planned: usize,
    /// Calls a round of the direct and hit sides, and of the miss side.
    pub per_round: usize,
    pub misses_per_round: usize,
    /// Who used the CPUs during the phase (`machine::Account`).
    pub account: Value,
}

impl CacheHits {
    pub fn side(&self, served: Served) -> Option<&Side> {
        self.sides.iter().find(|side| side.served == served)
    }

    pub fn rounds_done(&self) -> usize {
        self.sides.first().map_or(0, |side| side.rounds.len())
    }
}

/// The catalog file, removed when dropped.
#[derive(Debug)]
struct CatalogFile {
    path: PathBuf,
}

impl CatalogFile {
    fn write() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("gatewayz-bench-{}-catalog.toml", std::process::id()));
        std::fs::write(&path, CATALOG).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for CatalogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the phase against the upstream at `upstream` (process `upstream_pid`).
///
/// # Errors
/// When the gateway does not start, does not serve a hit within
/// [`WARM_DEADLINE`] of storing the answer, or a call fails or takes longer
/// than [`CALL_DEADLINE`]. A measured answer that the gateway served
/// otherwise than its side expects is no error: it is counted, and fails
/// the hit row.
pub async fn measure(
    args: &Args,
    plan: &Plan,
    upstream: SocketAddr,
    upstream_pid: u32,
) -> anyhow::Result<CacheHits> {
    let catalog = CatalogFile::write()?;
    let (bind, admin) = (free_port()?, free_port()?);
    let mut gateway = start_gateway_with_env(
        &GatewaySetup {
            bin: &args.gateway_bin,
            name: "gatewayz (response cache)",
            bind,
            admin,
            key: KEY,
            upstream,
        },
        &[("GATEWAYZ_CATALOG", catalog.path.display().to_string())],
    )?;
    wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
    let body = Bytes::from_static(BODY.as_bytes());
    let direct = Target::new("direct", upstream, PATH, KEY, body.clone())?;
    let hit = Target::new("gateway (cache hit)", bind, PATH, KEY, body)?;
    warm(&mut connect(bind).await?, &hit).await?;
    let mut conns = Vec::with_capacity(Served::ALL.len());
    for served in Served::ALL {
        conns.push(connect(if served == Served::Direct { upstream } else { bind }).await?);
    }
    let mut seeds = 0..;
    let warm_misses = misses(bind, plan.cache_warmup / 4, &mut seeds)?;
    for (served, conn) in Served::ALL.into_iter().zip(&mut conns) {
        let mut scratch = Side::new(served)?;
        match served {
            Served::Direct => calls(conn, repeat_n(&*direct, plan.cache_warmup), &mut scratch).await?,
            Served::Hit => calls(conn, repeat_n(&*hit, plan.cache_warmup), &mut scratch).await?,
            Served::Miss => calls(conn, warm_misses.iter().map(Arc::as_ref), &mut scratch).await?,
        };
    }

    let me = std::process::id();
    let account = Account::start(vec![gateway.pid(), upstream_pid, me]);
    let mut sides = Vec::with_capacity(Served::ALL.len());
    for served in Served::ALL {
        sides.push(Side::new(served)?);
    }
    let stop_after = Instant::now() + plan.cache_time_limit;
    for round in 0..plan.cache_rounds {
        if round > 0 && Instant::now() > stop_after {
            eprintln!(
                "gatewayz-bench:   {round} of {} rounds in the {:?} the phase may take",
                plan.cache_rounds, plan.cache_time_limit
            );
            break;
        }
        // Built before the round, so that no side waits on another's bodies.
        let round_misses = misses(bind, plan.cache_misses_per_round, &mut seeds)?;
        for turn in 0..sides.len() {
            let index = (round + turn) % sides.len();
            let side = &mut sides[index];
            let conn = &mut conns[index];
            let this = match side.served {
                Served::Direct => calls(conn, repeat_n(&*direct, plan.cache_per_round), side).await?,
                Served::Hit => calls(conn, repeat_n(&*hit, plan.cache_per_round), side).await?,
                Served::Miss => calls(conn, round_misses.iter().map(Arc::as_ref), side).await?,
            };
            side.rounds.push((us_at(&this, 0.5), us_at(&this, 0.99)));
            side.latency.add(&this)?;
        }
    }
    let account = account.finish();
    gateway.stop();
    for side in &sides {
        eprintln!(
            "gatewayz-bench:     {:>6}: p50 {:>7.1} µs, p99 {:>7.1} µs, {} answers not a {}",
            side.served.key(),
            us_at(&side.latency, 0.5),
            us_at(&side.latency, 0.99),
            side.unexpected,
            side.served.expected().unwrap_or("—"),
        );
    }
    Ok(CacheHits {
        sides,
        rounds_planned: plan.cache_rounds,
        per_round: plan.cache_per_round,
        misses_per_round: plan.cache_misses_per_round,
        account,
    })
}

impl Side {
    fn new(served: Served) -> anyhow::Result<Self> {
        Ok(Self {
            served,
            latency: hist()?,
            rounds: Vec::new(),
            unexpected: 0,
            first_unexpected: None,
        })
    }

    /// Counts an answer whose `x-gatewayz-cache` is not the side's.
    fn judge(&mut self, said: Option<&HeaderValue>) {
        let Some(expected) = self.served.expected() else {
            return;
        };
        if said.is_some_and(|said| said.as_bytes() == expected.as_bytes()) {
            return;
        }
        self.unexpected += 1;
        if self.first_unexpected.is_none() {
            self.first_unexpected = Some(said.map_or_else(
                || format!("no {CACHE_HEADER}"),
                |said| format!("{CACHE_HEADER}: {}", String::from_utf8_lossy(said.as_bytes())),
            ));
        }
    }
}

/// Requests through the gateway at `bind` that it has not seen: the run's
/// body with a `seed` of its own each, which is part of the cache key.
fn misses(
    bind: SocketAddr,
    count: usize,
    seeds: &mut impl Iterator<Item = u64>,
) -> anyhow::Result<Vec<Arc<Target>>> {
    seeds
        .take(count)
        .map(|seed| {
            let body = format!(r#"{{"seed":{seed},{}"#, BODY.trim_start_matches('{'));
            Target::new("gateway (cache miss)", bind, PATH, KEY, Bytes::from(body))
        })
        .collect()
}

/// Back-to-back calls of `targets` on `conn`, each judged by `side`: their
/// latencies.
async fn calls(
    conn: &mut Conn,
    targets: impl IntoIterator<Item = &Target>,
    side: &mut Side,
) -> anyhow::Result<Hist> {
    let mut latency = hist()?;
    for target in targets {
        let (took, said) = call(conn, target).await?;
        record(&mut latency, took);
        side.judge(said.as_ref());
    }
    Ok(latency)
}

/// Calls `target` until the gateway answers it from its cache: the first
/// call stores the answer (the upstream's), the next serve it.
async fn warm(conn: &mut Conn, target: &Target) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (_, said) = call(conn, target).await?;
        if said.as_ref().is_some_and(|said| said.as_bytes() == b"hit") {
            return Ok(());
        }
        ensure!(
            started.elapsed() < WARM_DEADLINE,
            "{} served no answer from its cache in {WARM_DEADLINE:?} (the last said {said:?})",
            target.name
        );
    }
}

/// One call, whose whole answer must be a 200: how long it took, and its
/// `x-gatewayz-cache`.
async fn call(conn: &mut Conn, target: &Target) -> anyhow::Result<(Duration, Option<HeaderValue>)> {
    let started = Instant::now();
    let answer = async {
        let response = conn.send(target).await?;
        let status = response.status();
        let said = response.headers().get(CACHE_HEADER).cloned();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, said, body))
    };
    let (status, said, body) = timeout(CALL_DEADLINE, answer)
        .await
        .map_err(|_| anyhow!("a call to {} took over {CALL_DEADLINE:?}", target.name))?
        .with_context(|| format!("a call to {} failed", target.name))?;
    let took = started.elapsed();
    ensure!(
        status == StatusCode::OK && !body.is_empty(),
        "a call to {} answered {status}: {}",
        target.name,
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    Ok((took, said))
}
