//! The phases, in order, each reported on stderr as it goes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::Args;
use crate::cache::{self, CacheHits};
use crate::client::{Target, connect};
use crate::key_limits::{self, KeyLimits};
use crate::load::{Closed, OpenStep, closed_loop, open_loop, sequential};
use crate::machine::{Account, facts};
use crate::plan::Plan;
use crate::procs::{
    GatewaySetup, RssSampler, free_port, raise_fd_limit, rss_kib, start_gateway, start_gateway_with_env,
    start_upstream, wait_ready,
};
use crate::soak_route::{CatalogDir, SoakRoute};
use crate::stats::{Hist, hist, us_at};
use crate::streams::{Level, Timing, interleaved, level};

/// The gateway key the driver configures and sends.
pub(crate) const KEY: &str = "gwz-bench-key";
pub(crate) const PATH: &str = "/v1/chat/completions";
pub(crate) const BODY: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}]}"#;
pub(crate) const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;

/// Everything measured, for the report.
#[derive(Debug)]
pub struct Results {
    pub plan: Plan,
    pub quick: bool,
    pub facts: Value,
    pub setup: Value,
    /// CPU ticks per second, to turn ticks into time.
    pub ticks_per_second: u64,
    /// `cpu_ticks`: upstream, driver.
    pub upstream_alone: Closed,
    pub c1_direct: Hist,
    pub c1_gateway: Hist,
    /// Per round: gateway p50 − direct p50, µs.
    pub c1_round_deltas_us: Vec<f64>,
    /// `cpu_ticks`: gateway, upstream, driver.
    pub open_direct: Vec<OpenStep>,
    pub open_gateway: Vec<OpenStep>,
    /// `cpu_ticks`: gateway, upstream, driver.
    pub closed_gateway: Closed,
    pub rss_idle_kib: u64,
    pub rss_peak_1k_kib: Option<u64>,
    pub rss_after_kib: u64,
    pub stream_direct: Timing,
    pub stream_gateway: Timing,
    pub ladder_direct: Vec<Level>,
    pub ladder_gateway: Vec<Level>,
    pub stream_rss_idle_kib: u64,
    pub stream_rss_peak_kib: u64,
    pub stream_rss_after_kib: u64,
    pub key_limits: KeyLimits,
    pub cache: CacheHits,
    pub cpu_accounts: Value,
    pub phase_seconds: Vec<(&'static str, f64)>,
}

struct Clock {
    started: Instant,
    last: Instant,
    phases: Vec<(&'static str, f64)>,
}

impl Clock {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    fn phase(&mut self, name: &'static str) {
        let now = Instant::now();
        let took = (now - self.last).as_secs_f64();
        self.phases.push((name, took));
        self.last = now;
        eprintln!(
            "gatewayz-bench: {name} done in {took:.1} s ({:.1} s so far)",
            (now - self.started).as_secs_f64()
        );
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Results> {
    let plan = args.plan.clone();
    let facts = facts();
    let fd_limit = raise_fd_limit()?;
    let me = std::process::id();
    let mut clock = Clock::new();

    let (upstream, upstream_address) = start_upstream(&args.upstream_bin, "upstream", &[])?;
    let chunks = plan.stream_chunks.to_string();
    let gap = plan.stream_gap.as_millis().to_string();
    let (stream_upstream, stream_upstream_address) = start_upstream(
        &args.upstream_bin,
        "streaming upstream",
        &["--chunks", &chunks, "--gap-ms", &gap],
    )?;
    let (bind, admin) = (free_port()?, free_port()?);
    let mut gateway = start_gateway(&GatewaySetup {
        bin: &args.gateway_bin,
        name: "gatewayz",
        bind,
        admin,
        key: KEY,
        upstream: upstream_address,
    })?;
    let ready_after = wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
    sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = rss_kib(gateway.pid())?;
    clock.phase("start-up");

    let body = Bytes::from_static(BODY.as_bytes());
    let direct = Target::new("direct", upstream_address, PATH, KEY, body.clone())?;
    let through = Target::new("gateway", bind, PATH, KEY, body)?;
    // Both must answer before anything is measured.
    connect(direct.address)
        .await?
        .call(&direct)
        .await
        .context("the upstream does not answer")?;
    connect(through.address)
        .await?
        .call(&through)
        .await
        .context("the gateway does not answer")?;

    let account = Account::start(vec![me, gateway.pid(), upstream.pid()]);
    eprintln!("gatewayz-bench: upstream alone, closed loop");
    let upstream_alone = closed_loop(
        &direct,
        plan.closed_connections,
        plan.closed_warmup,
        plan.closed_window,
        &[upstream.pid(), me],
    )
    .await?;
    clock.phase("upstream alone");

    eprintln!("gatewayz-bench: added latency at concurrency 1");
    let (c1_direct, c1_gateway, c1_round_deltas_us) = concurrency_one(&plan, &direct, &through).await?;
    clock.phase("latency c=1");

    eprintln!("gatewayz-bench: open-loop ladder");
    let pids = [gateway.pid(), upstream.pid(), me];
    let mut open = [Vec::new(), Vec::new()];
    let mut going = [true, true];
    let mut rss_peak_1k_kib = None;
    for rate in plan.open_rates.iter().copied() {
        for (side, target) in [&direct, &through].into_iter().enumerate() {
            if !going[side] {
                continue;
            }
            let sampler = (side == 1 && rss_peak_1k_kib.is_none()).then(|| RssSampler::start(gateway.pid()));
            let warm = (rate / 1_000.0 * 4.0).ceil() as usize + 16;
            let step = open_loop(target, rate, plan.open_warmup, plan.open_step, warm, &pids).await?;
            if let Some(sampler) = sampler {
                rss_peak_1k_kib = Some(sampler.finish());
            }
            let p99 = us_at(&step.latency, 0.99);
            eprintln!(
                "gatewayz-bench:   {:>7} at {rate:>6} req/s: p50 {:>8.1} µs, p99 {p99:>8.1} µs, {} errors, {} new connections",
                target.name,
                us_at(&step.latency, 0.5),
                step.errors,
                step.opened
            );
            // Every side runs up to the 5,000 req/s of the target.
            going[side] =
                rate < 5_000.0 || (step.errors == 0 && p99 <= plan.open_p99_limit.as_secs_f64() * 1e6);
            open[side].push(step);
            sleep(Duration::from_millis(300)).await;
        }
        if !going.iter().any(|going| *going) {
            break;
        }
    }
    let [open_direct, open_gateway] = open;
    clock.phase("open-loop ladder");

    eprintln!("gatewayz-bench: gateway, closed loop");
    let closed_gateway = closed_loop(
        &through,
        plan.closed_connections,
        plan.closed_warmup,
        plan.closed_window,
        &pids,
    )
    .await?;
    let whole_answers = account.finish();
    sleep(plan.settle).await;
    let rss_after_kib = rss_kib(gateway.pid())?;
    gateway.stop();
    clock.phase("closed loop through the gateway");

    eprintln!("gatewayz-bench: key limits: no limits, in process, in Redis");
    let key_limits = key_limits::measure(args, &plan, upstream_address, upstream.pid()).await?;
    clock.phase("key limits");

    eprintln!("gatewayz-bench: cache hits in process against direct, at concurrency 1");
    let cache = cache::measure(args, &plan, upstream_address, upstream.pid()).await?;
    upstream.stop();
    clock.phase("cache hits");

    let (stream_bind, stream_admin) = (free_port()?, free_port()?);
    let mut stream_gateway = start_gateway(&GatewaySetup {
        bin: &args.gateway_bin,
        name: "gatewayz (streaming)",
        bind: stream_bind,
        admin: stream_admin,
        key: KEY,
        upstream: stream_upstream_address,
    })?;
    wait_ready(&mut stream_gateway, stream_admin, Duration::from_secs(30)).await?;
    sleep(Duration::from_millis(500)).await;
    let stream_rss_idle_kib = rss_kib(stream_gateway.pid())?;
    let stream_body = Bytes::from_static(STREAM_BODY.as_bytes());
    let direct = Target::new("direct", stream_upstream_address, PATH, KEY, stream_body.clone())?;
    let through = Target::new("gateway", stream_bind, PATH, KEY, stream_body)?;
    let account = Account::start(vec![me, stream_gateway.pid(), stream_upstream.pid()]);
    eprintln!("gatewayz-bench: streaming, interleaved rounds");
    let (stream_direct, stream_through) = interleaved(
        &direct,
        &through,
        plan.stream_slots,
        plan.stream_rounds,
        plan.stream_spread,
        plan.stream_chunks,
    )
    .await?;
    clock.phase("streaming TTFT and gaps");

    eprintln!("gatewayz-bench: concurrent streams ladder");
    let sampler = RssSampler::start(stream_gateway.pid());
    let mut ladder = [Vec::new(), Vec::new()];
    let mut going = [true, true];
    for streams in plan.ladder.iter().copied() {
        for (side, target) in [&direct, &through].into_iter().enumerate() {
            if !going[side] {
                continue;
            }
            let step = level(
                target,
                streams,
                plan.ladder_spread,
                plan.stream_chunks,
                plan.stall,
            )
            .await?;
            eprintln!(
                "gatewayz-bench:   {:>7} {streams:>5} streams: {} complete, largest gap {:.1} ms{}",
                target.name,
                step.complete,
                step.max_gap.as_secs_f64() * 1e3,
                step.first_problem
                    .as_deref()
                    .map(|problem| format!(" ({problem})"))
                    .unwrap_or_default()
            );
            going[side] = step.stall_free;
            ladder[side].push(step);
            // Let the closed connections go before the next level.
            sleep(Duration::from_millis(500)).await;
        }
        if !going.iter().any(|going| *going) {
            break;
        }
    }
    let stream_rss_peak_kib = sampler.finish();
    let streams_account = account.finish();
    sleep(plan.settle).await;
    let stream_rss_after_kib = rss_kib(stream_gateway.pid())?;
    stream_gateway.stop();
    stream_upstream.stop();
    let [ladder_direct, ladder_gateway] = ladder;
    clock.phase("concurrent streams ladder");

    Ok(Results {
        quick: args.quick,
        facts,
        setup: json!({
            "driver_threads": args.threads,
            "driver_runtime": if args.threads == 1 { "tokio current_thread" } else { "tokio multi_thread" },
            "upstream_threads": 1,
            "gateway_stdout": "/dev/null (GATEWAYZ_LOG_FORMAT=json, RUST_LOG unset: info, one access line a request)",
            "gateway_ready_after_ms": ready_after.as_secs_f64() * 1e3,
            "open_files_limit": {"before": fd_limit.0, "after": fd_limit.1},
            "request_body": BODY,
            "stream_request_body": STREAM_BODY,
        }),
        ticks_per_second: crate::procs::ticks_per_second(),
        upstream_alone,
        c1_direct,
        c1_gateway,
        c1_round_deltas_us,
        open_direct,
        open_gateway,
        closed_gateway,
        rss_idle_kib,
        rss_peak_1k_kib,
        rss_after_kib,
        stream_direct,
        stream_gateway: stream_through,
        ladder_direct,
        ladder_gateway,
        stream_rss_idle_kib,
        stream_rss_peak_kib,
        stream_rss_after_kib,
        cpu_accounts: json!({
            "whole_answers": whole_answers,
            "key_limits": key_limits.account.clone(),
            "cache": cache.account.clone(),
            "streams": streams_account,
        }),
        key_limits,
        cache,
        phase_seconds: clock.phases,
        plan,
    })
}

/// Alternating rounds of back-to-back calls on one keep-alive connection per
/// side; the side that goes first alternates too.
async fn concurrency_one(
    plan: &Plan,
    direct: &Arc<Target>,
    through: &Arc<Target>,
) -> anyhow::Result<(Hist, Hist, Vec<f64>)> {
    let mut direct_conn = connect(direct.address).await?;
    let mut gateway_conn = connect(through.address).await?;
    let (mut scratch, mut direct_hist, mut gateway_hist) = (hist()?, hist()?, hist()?);
    sequential(&mut direct_conn, direct, plan.c1_warmup, &mut scratch).await?;
    sequential(&mut gateway_conn, through, plan.c1_warmup, &mut scratch).await?;
    let mut deltas = Vec::with_capacity(plan.c1_rounds);
    for round in 0..plan.c1_rounds {
        let (mut direct_round, mut gateway_round) = (hist()?, hist()?);
        if round % 2 == 0 {
            sequential(&mut direct_conn, direct, plan.c1_per_round, &mut direct_round).await?;
            sequential(&mut gateway_conn, through, plan.c1_per_round, &mut gateway_round).await?;
        } else {
            sequential(&mut gateway_conn, through, plan.c1_per_round, &mut gateway_round).await?;
            sequential(&mut direct_conn, direct, plan.c1_per_round, &mut direct_round).await?;
        }
        deltas.push(crate::stats::round(
            us_at(&gateway_round, 0.5) - us_at(&direct_round, 0.5),
        ));
        direct_hist.add(&direct_round)?;
        gateway_hist.add(&gateway_round)?;
    }
    Ok((direct_hist, gateway_hist, deltas))
}

/// Loads a gateway for `duration` so that a profiler can watch it: see
/// `--soak` in the usage.
pub async fn soak(args: &Args, duration: Duration) -> anyhow::Result<()> {
    raise_fd_limit()?;
    let plan = &args.plan;
    let streams = args.soak_streams;
    let upstream_args: Vec<String> = if streams.is_some() {
        vec![
            "--chunks".into(),
            plan.stream_chunks.to_string(),
            "--gap-ms".into(),
            plan.stream_gap.as_millis().to_string(),
        ]
    } else {
        Vec::new()
    };
    let upstream_args: Vec<&str> = upstream_args.iter().map(String::as_str).collect();
    let (upstream, upstream_address) = start_upstream(&args.upstream_bin, "upstream", &upstream_args)?;
    let (beside, mut env) = key_limits::beside(args.soak_limits).await?;
    let route = args.soak_route;
    let catalog = match route {
        SoakRoute::Portkey => None,
        SoakRoute::Direct => Some(CatalogDir::write(upstream_address)?),
    };
    env.extend(catalog.as_ref().map(CatalogDir::env));
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
        &env,
    )?;
    wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
    let body = Bytes::from_static(
        match streams {
            None => route.body(),
            Some(_) => route.stream_body(),
        }
        .as_bytes(),
    );
    let through = Target::new("gateway", bind, PATH, KEY, body)?;
    // A route the gateway does not take must fail here, not be measured.
    check_route(&through, streams.is_some(), plan.stream_chunks)
        .await
        .with_context(|| format!("the gateway does not answer by the {} route", route.name()))?;
    eprintln!(
        "gatewayz-bench: {} route, gateway pid {}, upstream pid {}{}; loading in 3 s for {duration:?}",
        route.name(),
        gateway.pid(),
        upstream.pid(),
        beside
            .redis
            .as_ref()
            .map(|redis| format!(", redis-server pid {} ({})", redis.proc.pid(), redis.url))
            .unwrap_or_default()
    );
    sleep(Duration::from_secs(3)).await;
    let pids = [gateway.pid(), upstream.pid()];
    let before: Vec<u64> = pids
        .iter()
        .map(|pid| crate::procs::cpu_ticks(*pid).unwrap_or(0))
        .collect();
    let per_second = crate::procs::ticks_per_second() as f64;
    let cpu = |before: &[u64]| -> Vec<f64> {
        pids.iter()
            .zip(before)
            .map(|(pid, before)| {
                crate::procs::cpu_ticks(*pid).unwrap_or(0).saturating_sub(*before) as f64 / per_second
            })
            .collect()
    };
    match streams {
        None if args.soak_rate.is_some() => {
            let rate = args.soak_rate.unwrap_or(1_000.0);
            let warm = (rate / 1_000.0 * 4.0).ceil() as usize + 16;
            let step = open_loop(&through, rate, Duration::from_secs(1), duration, warm, &pids).await?;
            let spent = cpu(&before);
            eprintln!(
                "gatewayz-bench: {rate} req/s: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs, {} errors; \
                 driver dispatch p99 {:.1} µs; CPU per request: gateway {:.1} µs, upstream {:.1} µs",
                us_at(&step.latency, 0.5),
                us_at(&step.latency, 0.99),
                us_at(&step.latency, 0.999),
                crate::stats::us(step.latency.max()),
                step.errors,
                us_at(&step.dispatch, 0.99),
                spent[0] * 1e6 / step.ok.max(1) as f64,
                spent[1] * 1e6 / step.ok.max(1) as f64,
            );
        }
        None => {
            let closed =
                closed_loop(&through, plan.closed_connections, Duration::ZERO, duration, &pids).await?;
            let spent = cpu(&before);
            eprintln!(
                "gatewayz-bench: {:.0} req/s, {} errors; CPU per request: gateway {:.1} µs, upstream {:.1} µs",
                closed.rate(),
                closed.errors,
                spent[0] * 1e6 / closed.completed.max(1) as f64,
                spent[1] * 1e6 / closed.completed.max(1) as f64,
            );
        }
        Some(count) => {
            let end = Instant::now() + duration;
            let mut chunks = 0;
            while Instant::now() < end {
                let step = level(
                    &through,
                    count,
                    plan.ladder_spread,
                    plan.stream_chunks,
                    plan.stall,
                )
                .await?;
                chunks += step.complete * plan.stream_chunks;
                eprintln!(
                    "gatewayz-bench: {count} streams: {} complete, largest gap {:.1} ms",
                    step.complete,
                    step.max_gap.as_secs_f64() * 1e3
                );
            }
            let spent = cpu(&before);
            eprintln!(
                "gatewayz-bench: CPU per content chunk: gateway {:.1} µs, upstream {:.1} µs",
                spent[0] * 1e6 / chunks.max(1) as f64,
                spent[1] * 1e6 / chunks.max(1) as f64,
            );
        }
    }
    gateway.stop();
    upstream.stop();
    drop(beside);
    drop(catalog);
    Ok(())
}

/// One request through `through` before the soak: a 200 with a whole
/// answer, or, for a stream, every one of its `chunks`, its usage and
/// `[DONE]`.
async fn check_route(through: &Target, stream: bool, chunks: usize) -> anyhow::Result<()> {
    let mut conn = connect(through.address).await?;
    if !stream {
        return conn.call(through).await;
    }
    let record = conn.stream(through).await?;
    anyhow::ensure!(
        record.complete(chunks),
        "an incomplete stream: {} of {chunks} chunks, usage {}, [DONE] {}, {} errors",
        record.content.len(),
        record.usage,
        record.done,
        record.errors
    );
    Ok(())
}
