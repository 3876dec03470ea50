//! Key limits (issue #14): what a key's policy costs the gateway, measured
//! in the same run against the same gateway without one.
//!
//! Three gateways run side by side in front of the same upstream, each
//! serving the bench key: without a policy; with a policy counted in the
//! process (`GATEWAYZ_API_KEYS_FILE`); and with the same policy counted in
//! a real `redis-server` on loopback (`GATEWAYZ_REDIS_URL`). Every limit of
//! the policy is far above what the run sends, so nothing is refused and
//! each request pays for its admission and settlement only. The sides take
//! turns, their order rotating, in rounds at concurrency 1 and in
//! closed-loop windows, and each is compared with the gateway without
//! limits of the same round or window: the medians of those differences
//! are the figures, so that the machine's drift falls on both sides.

mod redis;
mod report;

pub use self::redis::Redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::Value;
use tokio::time::sleep;

use crate::Args;
use crate::client::{Target, connect};
use crate::load::{Closed, closed_loop, sequential};
use crate::machine::Account;
use crate::plan::Plan;
use crate::procs::{GatewaySetup, Proc, free_port, start_gateway_with_env, wait_ready};
use crate::run::{BODY, KEY, PATH};
use crate::stats::{Hist, hist, us_at};

pub use self::report::{json, note, rows};

/// The bench key's policy. Every limit the format has, each far above what
/// the run sends, so that nothing is refused: `rpm` and `tpm` count at most
/// one unit a microsecond (60 million a minute) whatever larger figure is
/// written, against ~30,000 requests and ~0.7 million tokens a second at
/// most here (a reservation of ~4,100 tokens a request in flight, settled
/// to the upstream's 23). `gpt-4o-mini` is priced in the built-in catalog,
/// so the budget is reserved and charged for real. `key_sha256` is
/// `printf %s gwz-bench-key | sha256sum`: were it wrong, the key would be
/// served without a policy, which [`check`] refuses before measuring.
const POLICY: &str = r#"[[keys]]
id = "bench"
key_sha256 = "c9fa9bbb1c70a61c01d3b30d09a670881a6b81229207199ef37e83f60050967c"
rpm = 100000000
tpm = 100000000000
max_parallel = 100000
budget_usd = 1000000
budget_period = "total"
"#;

/// Where a side's gateway counts the bench key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// No policy: the baseline every other side is compared with.
    None,
    InProcess,
    Redis,
}

impl Limits {
    /// As `--soak-limits` names it: `none`, `process` or `redis`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "process" => Ok(Self::InProcess),
            "redis" => Ok(Self::Redis),
            other => anyhow::bail!("--soak-limits takes none, process or redis, not `{other}`"),
        }
    }

    fn gateway_name(self) -> &'static str {
        match self {
            Self::None => "gatewayz (no key limits)",
            Self::InProcess => "gatewayz (key limits in process)",
            Self::Redis => "gatewayz (key limits in Redis)",
        }
    }

    /// Its key in `latest.json`.
    pub fn key(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::InProcess => "in_process",
            Self::Redis => "redis",
        }
    }
}

/// What one side measured.
#[derive(Debug)]
pub struct Side {
    pub limits: Limits,
    /// Every round at concurrency 1, merged.
    pub c1: Hist,
    /// Each round's p50 and p99, µs, in round order.
    pub c1_rounds: Vec<(f64, f64)>,
    /// Each closed-loop window, in order; CPU ticks of the side's gateway,
    /// the upstream, the driver and, when it runs, `redis-server`.
    pub closed: Vec<Closed>,
}

/// What the phase measured.
#[derive(Debug)]
pub struct KeyLimits {
    /// The gateway without limits first, then in process, then Redis when
    /// it ran.
    pub sides: Vec<Side>,
    /// Why there is no Redis side (`redis-server not installed`).
    pub redis_not_measured: Option<String>,
    pub redis_version: Option<String>,
    /// Who used the CPUs during the phase (`machine::Account`).
    pub account: Value,
}

impl KeyLimits {
    pub fn side(&self, limits: Limits) -> Option<&Side> {
        self.sides.iter().find(|side| side.limits == limits)
    }
}

/// The policy file, removed when dropped.
#[derive(Debug)]
struct PolicyFile {
    path: PathBuf,
}

impl PolicyFile {
    fn write() -> anyhow::Result<Self> {
        // `.toml`: the gateway reads a keys file by that name as policies.
        let path = std::env::temp_dir().join(format!("gatewayz-bench-{}-keys.toml", std::process::id()));
        std::fs::write(&path, POLICY).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A side's running gateway and where to send its requests.
#[derive(Debug)]
struct Running {
    limits: Limits,
    gateway: Proc,
    target: Arc<Target>,
}

/// Runs the phase against the upstream at `upstream` (process `upstream_pid`).
///
/// # Errors
/// When a gateway does not start, does not show the limits its side is
/// meant to have, or fails a call at concurrency 1. A missing or broken
/// `redis-server` is no error: the Redis side is then left out, and
/// [`KeyLimits::redis_not_measured`] says why.
pub async fn measure(
    args: &Args,
    plan: &Plan,
    upstream: std::net::SocketAddr,
    upstream_pid: u32,
) -> anyhow::Result<KeyLimits> {
    let policy = PolicyFile::write()?;
    let redis = redis::start().await;
    if let Err(why) = &redis {
        eprintln!("gatewayz-bench:   key limits in Redis not measured: {why}");
    }
    let mut kinds = vec![Limits::None, Limits::InProcess];
    if redis.is_ok() {
        kinds.push(Limits::Redis);
    }
    let mut running = Vec::with_capacity(kinds.len());
    for limits in kinds {
        let env = gateway_env(limits, &policy, redis.as_ref().ok());
        let (bind, admin) = (free_port()?, free_port()?);
        let mut gateway = start_gateway_with_env(
            &GatewaySetup {
                bin: &args.gateway_bin,
                name: limits.gateway_name(),
                bind,
                admin,
                key: KEY,
                upstream,
            },
            &env,
        )?;
        wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
        let body = Bytes::from_static(BODY.as_bytes());
        let target = Target::new(limits.gateway_name(), bind, PATH, KEY, body)?;
        running.push(Running {
            limits,
            gateway,
            target,
        });
    }
    sleep(Duration::from_millis(500)).await;
    for side in &running {
        check(&side.target, side.limits).await?;
    }

    let me = std::process::id();
    let redis_pid = redis.as_ref().ok().map(|redis| redis.proc.pid());
    let mut pids: Vec<u32> = running.iter().map(|side| side.gateway.pid()).collect();
    pids.extend([upstream_pid, me]);
    pids.extend(redis_pid);
    let account = Account::start(pids);

    eprintln!("gatewayz-bench:   latency at concurrency 1, the sides in turn");
    let c1 = concurrency_one(plan, &running).await?;
    eprintln!("gatewayz-bench:   closed loops, the sides in turn");
    let mut closed: Vec<Vec<Closed>> = running.iter().map(|_| Vec::new()).collect();
    for repeat in 0..plan.limits_closed_repeats {
        for turn in 0..running.len() {
            let index = (repeat + turn) % running.len();
            let side = &running[index];
            let mut watched = vec![side.gateway.pid(), upstream_pid, me];
            watched.extend(redis_pid);
            let window = closed_loop(
                &side.target,
                plan.closed_connections,
                plan.limits_closed_warmup,
                plan.limits_closed_window,
                &watched,
            )
            .await?;
            eprintln!(
                "gatewayz-bench:     {:>32}: {:>6.0} req/s, {} errors, gateway CPU {:.1} µs a request",
                side.target.name,
                window.rate(),
                window.errors,
                window.cpu_us_per_request(0, crate::procs::ticks_per_second())
            );
            closed[index].push(window);
            // Let the window's connections close before the next.
            sleep(Duration::from_millis(200)).await;
        }
    }
    let account = account.finish();

    let sides = running
        .into_iter()
        .zip(c1)
        .zip(closed)
        .map(|((side, (c1, c1_rounds)), closed)| {
            side.gateway.stop();
            Side {
                limits: side.limits,
                c1,
                c1_rounds,
                closed,
            }
        })
        .collect();
    let (redis_not_measured, redis_version) = match redis {
        Ok(redis) => {
            redis.proc.stop();
            (None, Some(redis.version))
        }
        Err(why) => (Some(why), None),
    };
    Ok(KeyLimits {
        sides,
        redis_not_measured,
        redis_version,
        account,
    })
}

/// The environment that gives a gateway `limits`: the policy file, and
/// Redis to count in.
fn gateway_env(limits: Limits, policy: &PolicyFile, redis: Option<&Redis>) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if limits != Limits::None {
        env.push(("GATEWAYZ_API_KEYS_FILE", policy.path.display().to_string()));
    }
    if let (Limits::Redis, Some(redis)) = (limits, redis) {
        env.push(("GATEWAYZ_REDIS_URL", redis.url.clone()));
        // A Redis that fails is then a failed request, never a run counted
        // in the process instead.
        env.push(("GATEWAYZ_LIMITS_ON_STORE_ERROR", "closed".to_owned()));
    }
    env
}

/// What a gateway with key limits needs beside it while it runs, for
/// `--soak-limits`: the policy file, and the `redis-server` it counts in.
#[derive(Debug)]
pub struct Beside {
    _policy: PolicyFile,
    pub redis: Option<Redis>,
}

/// Writes the policy file and, for [`Limits::Redis`], starts `redis-server`;
/// returns them with the gateway's environment.
///
/// # Errors
/// When the file cannot be written or Redis cannot be started.
pub async fn beside(limits: Limits) -> anyhow::Result<(Beside, Vec<(&'static str, String)>)> {
    let policy = PolicyFile::write()?;
    let redis = match limits {
        Limits::Redis => Some(redis::start().await.map_err(|why| anyhow::anyhow!("{why}"))?),
        Limits::None | Limits::InProcess => None,
    };
    let env = gateway_env(limits, &policy, redis.as_ref());
    Ok((
        Beside {
            _policy: policy,
            redis,
        },
        env,
    ))
}

/// One call through `target` before anything is measured: a 200 that shows
/// the side's limits (OpenAI's rate-limit headers with a policy, none
/// without), and never `x-gatewayz-limits: degraded`, which would mean
/// counts kept somewhere else than the side says.
async fn check(target: &Target, limits: Limits) -> anyhow::Result<()> {
    let mut conn = connect(target.address).await?;
    let response = conn.send(target).await?;
    let status = response.status();
    let limited = response.headers().contains_key("x-ratelimit-limit-requests");
    let degraded = response.headers().get("x-gatewayz-limits").cloned();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == StatusCode::OK,
        "{} answered {status}: {}",
        target.name,
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    ensure!(
        limited == (limits != Limits::None),
        "{} answered {} x-ratelimit-* headers: the bench key's policy {}",
        target.name,
        if limited { "with" } else { "without" },
        if limited {
            "applies where it should not"
        } else {
            "does not apply"
        }
    );
    ensure!(
        degraded.is_none(),
        "{} counts its limits degraded ({degraded:?}): not where this side measures them",
        target.name
    );
    Ok(())
}

/// Rounds of back-to-back calls on one keep-alive connection per side, the
/// sides in turn, the one that goes first rotating: each side's calls
/// merged, and each round's p50 and p99.
async fn concurrency_one(plan: &Plan, running: &[Running]) -> anyhow::Result<Vec<(Hist, Vec<(f64, f64)>)>> {
    let mut conns = Vec::with_capacity(running.len());
    let mut scratch = hist()?;
    for side in running {
        let mut conn = connect(side.target.address).await?;
        sequential(&mut conn, &side.target, plan.c1_warmup, &mut scratch).await?;
        conns.push(conn);
    }
    let mut measured = Vec::with_capacity(running.len());
    for _ in running {
        measured.push((hist()?, Vec::with_capacity(plan.limits_c1_rounds)));
    }
    for round in 0..plan.limits_c1_rounds {
        for turn in 0..running.len() {
            let index = (round + turn) % running.len();
            let mut this = hist()?;
            sequential(
                &mut conns[index],
                &running[index].target,
                plan.limits_c1_per_round,
                &mut this,
            )
            .await?;
            let (merged, rounds) = &mut measured[index];
            rounds.push((us_at(&this, 0.5), us_at(&this, 0.99)));
            merged.add(&this)?;
        }
    }
    Ok(measured)
}
