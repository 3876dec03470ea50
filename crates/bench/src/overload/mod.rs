//! The overload soak (`--overload-soak SECONDS`, issue #19): the real
//! gateway with a small in-flight limit in front of an upstream that takes
//! a fixed time to answer, so that the limit, not the CPU, sets its
//! capacity; measured in the same run, unloaded and up a ladder to its
//! sustainable rate, then loaded at twice that rate. It passes or fails by
//! [`verdict::verdict`]; `docs/reliability.md` ("Overload soak") explains
//! it.

mod baseline;
mod drive;
mod outcome;
mod report;
mod verdict;
mod watch;

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;
use tokio::time::{Instant, sleep};

use self::baseline::Baseline;
use self::drive::{Driven, drive};
use self::verdict::{Evidence, READY_AGAIN_LIMIT, Verdict, verdict};
use self::watch::{Admin, Gauges, Look, gauges, ready_again, rss_halves, watch};
use crate::Args;
use crate::client::{Target, connect};
use crate::machine::{Account, TCP_COUNTERS, tcp_counters};
use crate::procs::{
    GatewaySetup, cpu_seconds_since, cpu_ticks_of, free_port, raise_fd_limit, rss_kib,
    start_gateway_with_env, start_upstream, wait_ready,
};
use crate::reliability::warmup_of;
use crate::run::{BODY, KEY, PATH};
use crate::stats::{Hist, us_at};

pub use self::report::{BEGIN, END, render};

/// `GATEWAYZ_MAX_IN_FLIGHT`: small enough that 2 CPUs serve that many
/// requests at once with time to spare.
const MAX_IN_FLIGHT: usize = 32;
/// The upstream's answer time: long beside the gateway's own cost (a few
/// hundred µs a request), so that the limit sets the capacity, about
/// 32 ÷ 50 ms = 640 requests a second.
const UPSTREAM_DELAY: Duration = Duration::from_millis(50);
/// `GATEWAYZ_OVERLOAD_GRACE_MS`: `/readyz` goes 503 when shedding lasts
/// longer than this.
const OVERLOAD_GRACE: Duration = Duration::from_secs(5);
/// The soak's rate, as a multiple of the sustainable rate (issue #19).
pub const OVERLOAD_FACTOR: f64 = 2.0;
/// A progress line this often.
const PRINT_EVERY: Duration = Duration::from_secs(10);
/// How long after the load the last, informational RSS reading is taken.
const SETTLE: Duration = Duration::from_secs(3);

/// What one soak saw, for the report.
#[derive(Debug)]
pub struct Overload {
    pub facts: Value,
    pub max_in_flight: usize,
    pub upstream_delay: Duration,
    pub grace: Duration,
    pub baseline: Baseline,
    pub sustainable: f64,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub driven: Driven,
    /// Every admitted, and every refused request's latency.
    pub admitted: Hist,
    pub refused: Hist,
    pub looks: Vec<Look>,
    pub admin: Admin,
    pub rss_idle_kib: Option<u64>,
    pub rss_halves: (Option<u64>, Option<u64>),
    pub rss_settled_kib: Option<u64>,
    /// `/metrics` just before and just after the load.
    pub gauges_before: Gauges,
    pub gauges_after: Gauges,
    pub ready_again_after: Option<Duration>,
    /// CPU seconds of the gateway, the upstream and the driver during the load.
    pub cpu_seconds: [f64; 3],
    /// Who else used the CPUs meanwhile (`machine::Account`).
    pub account: Value,
    /// How much each of `machine::TCP_COUNTERS` grew during the load,
    /// machine-wide.
    pub tcp_counters: [Option<u64>; TCP_COUNTERS.len()],
    pub verdict: Verdict,
}

/// Runs the soak and returns what it saw; the verdict is inside.
///
/// # Errors
/// When the processes cannot be started, the gateway does not answer, is
/// refused or fails a request at a tenth of its capacity, or sustains no
/// rate of the ladder: the soak did not run.
pub async fn run(args: &Args, duration: Duration) -> anyhow::Result<Overload> {
    anyhow::ensure!(duration >= Duration::from_secs(10), "a soak lasts at least 10 s");
    raise_fd_limit()?;
    let facts = crate::machine::facts();
    let delay = UPSTREAM_DELAY.as_millis().to_string();
    let (upstream, upstream_address) =
        start_upstream(&args.upstream_bin, "upstream", &["--delay-ms", &delay])?;
    let (bind, admin) = (free_port()?, free_port()?);
    let mut gateway = start_gateway_with_env(
        &GatewaySetup {
            bin: &args.gateway_bin,
            name: "gatewayz",
            bind,
            admin,
            key: KEY,
            upstream: upstream_address,
        },
        &[
            ("GATEWAYZ_MAX_IN_FLIGHT", MAX_IN_FLIGHT.to_string()),
            (
                "GATEWAYZ_OVERLOAD_GRACE_MS",
                OVERLOAD_GRACE.as_millis().to_string(),
            ),
        ],
    )?;
    wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
    let target = Target::new("gateway", bind, PATH, KEY, Bytes::from_static(BODY.as_bytes()))?;
    connect(bind)
        .await?
        .call(&target)
        .await
        .context("the gateway does not answer")?;
    sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = rss_kib(gateway.pid()).ok();
    let me = std::process::id();
    let pids = [gateway.pid(), upstream.pid(), me];

    let nominal = MAX_IN_FLIGHT as f64 / UPSTREAM_DELAY.as_secs_f64();
    let baseline = baseline::measure(&target, nominal, MAX_IN_FLIGHT, &pids).await?;
    let sustainable = baseline.sustainable.with_context(|| {
        let first = baseline.steps.first();
        format!(
            "the gateway sustained no rate of the ladder, not even {} req/s: {}",
            first.map_or(0.0, |step| step.rate),
            first
                .and_then(|step| baseline::shortfall(step, baseline.unloaded.p99))
                .unwrap_or_default()
        )
    })?;
    let rate = OVERLOAD_FACTOR * sustainable;
    // The ladder's last step may have been shed: start from a ready gateway.
    ready_again(admin, READY_AGAIN_LIMIT)
        .await
        .context("the gateway is not ready after the ladder")?;
    let warmup = warmup_of(duration);
    eprintln!(
        "gatewayz-bench: overload soak: {rate} req/s ({OVERLOAD_FACTOR}× the sustainable {sustainable}) for \
         {duration:?} (warm-up {warmup:?}); gateway pid {}, upstream pid {}",
        gateway.pid(),
        upstream.pid()
    );
    let gauges_before = gauges(admin).await;
    let ticks_before = cpu_ticks_of(&pids);
    let account = Account::start(pids.to_vec());
    let tcp_before = tcp_counters();
    let start = Instant::now() + Duration::from_millis(20);
    let watcher = tokio::spawn(watch(gateway.pid(), admin, start, duration, PRINT_EVERY));
    let driven = drive(&target, start, rate, duration).await?;
    let looks = watcher.await?;
    let account = account.finish();
    let tcp_after = tcp_counters();
    let tcp_counters =
        std::array::from_fn(|index| Some(tcp_after[index]?.saturating_sub(tcp_before[index]?)));
    let cpu_seconds = cpu_seconds_since(&pids, &ticks_before);
    let ready_again_after = ready_again(admin, READY_AGAIN_LIMIT).await;
    let gauges_after = gauges(admin).await;
    sleep(SETTLE).await;
    let rss_settled_kib = rss_kib(gateway.pid()).ok();
    let gateway_exited = gateway.check_alive().err().map(|error| format!("{error:#}"));
    gateway.stop();
    upstream.stop();

    let (admitted, refused) = driven.tally.totals()?;
    let admin = Admin::of(&looks);
    let rss_halves = rss_halves(&looks, warmup, duration);
    let at = |hist: &Hist, quantile| Duration::from_secs_f64(us_at(hist, quantile) / 1e6);
    let verdict = verdict(&Evidence {
        planned: driven.planned,
        counted: driven.tally.counted(),
        duration,
        unloaded_p50: baseline.unloaded.p50,
        unloaded_p99: baseline.unloaded.p99,
        sustainable_rate: sustainable,
        admitted: admitted.len(),
        admitted_p99: at(&admitted, 0.99),
        refused: refused.len(),
        refused_p99: at(&refused, 0.99),
        failures: driven.tally.failures.clone(),
        rss_first_half: rss_halves.0,
        rss_second_half: rss_halves.1,
        admin_failed: admin.failed,
        first_admin_failure: admin.first_failure.clone(),
        healthz_not_ok: admin.healthz_not_ok,
        not_ready: admin.not_ready,
        ready_again_after,
        gateway_exited,
    });
    Ok(Overload {
        facts,
        max_in_flight: MAX_IN_FLIGHT,
        upstream_delay: UPSTREAM_DELAY,
        grace: OVERLOAD_GRACE,
        baseline,
        sustainable,
        rate,
        duration,
        warmup,
        driven,
        admitted,
        refused,
        looks,
        admin,
        rss_idle_kib,
        rss_halves,
        rss_settled_kib,
        gauges_before,
        gauges_after,
        ready_again_after,
        cpu_seconds,
        account,
        tcp_counters,
        verdict,
    })
}
