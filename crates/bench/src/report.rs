//! `latest.md` (the targets table, then the ladders) and `latest.json`
//! (every number behind it).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cache;
use crate::key_limits;
use crate::load::{OpenStep, cpu_per_request_us};
use crate::run::Results;
use crate::stats::{round, summary, us_at};
use crate::streams::{Level, Timing};
use crate::table::{Row, fmt_count, fmt_mib, fmt_signed_us, fmt_us, markdown_table, row};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn open_json(step: &OpenStep, per_second: u64) -> Value {
    json!({
        "rate": step.rate,
        "duration_s": step.duration.as_secs_f64(),
        "sent": step.sent,
        "ok": step.ok,
        "errors": step.errors,
        "first_error": step.first_error,
        "latency_from_intended_send": summary(&step.latency),
        "connections_opened_while_measuring": step.opened,
        "requests_that_waited_for_a_connection": step.waited,
        "most_in_flight": step.most_in_flight,
        "pacer_late_max_us": round(step.pacer_late_max.as_secs_f64() * 1e6),
        "driver_dispatch_delay": summary(&step.dispatch),
        "steal_ms": round(step.steal_ticks as f64 * 1e3 / per_second as f64),
        "cpu_us_per_request": {
            "gateway": round(cpu_per_request_us(&step.cpu_ticks, 0, step.ok, per_second)),
            "upstream": round(cpu_per_request_us(&step.cpu_ticks, 1, step.ok, per_second)),
            "driver": round(cpu_per_request_us(&step.cpu_ticks, 2, step.ok, per_second)),
        },
    })
}

fn timing_json(timing: &Timing, nominal: Duration) -> Value {
    let nominal_us = nominal.as_secs_f64() * 1e6;
    json!({
        "streams": timing.streams,
        "incomplete": timing.incomplete,
        "first_problem": timing.first_problem,
        "ttft": summary(&timing.ttft),
        "gap": summary(&timing.gap),
        "gap_over_nominal_us": {
            "p50": round(us_at(&timing.gap, 0.5) - nominal_us),
            "p99": round(us_at(&timing.gap, 0.99) - nominal_us),
            "max": round(crate::stats::us(timing.gap.max()) - nominal_us),
        },
    })
}

fn level_json(level: &Level) -> Value {
    json!({
        "streams": level.streams,
        "complete": level.complete,
        "failed": level.failed,
        "first_problem": level.first_problem,
        "max_gap_ms": round(level.max_gap.as_secs_f64() * 1e3),
        "gap": summary(&level.gap),
        "ttft": summary(&level.ttft),
        "stall_free": level.stall_free,
    })
}

/// The largest level that every stream of went through without a stall,
/// when every smaller level did too.
fn stall_free(levels: &[Level]) -> usize {
    levels
        .iter()
        .take_while(|level| level.stall_free)
        .map(|level| level.streams)
        .last()
        .unwrap_or(0)
}

/// The highest rate whose step had no error and a p99 within `limit`, when
/// every lower step did too.
fn sustained(steps: &[OpenStep], limit: Duration) -> f64 {
    steps
        .iter()
        .take_while(|step| step.errors == 0 && us_at(&step.latency, 0.99) <= limit.as_secs_f64() * 1e6)
        .map(|step| step.rate)
        .last()
        .unwrap_or(0.0)
}

fn rows(results: &Results) -> Vec<Row> {
    let per_second = results.ticks_per_second;
    let mut rows = Vec::new();
    let alone = &results.upstream_alone;
    let closed = &results.closed_gateway;
    let upstream_cpu = cpu_per_request_us(&alone.cpu_ticks, 0, alone.completed, per_second);
    rows.push(row(
        "Upstream alone: closed-loop throughput (CPU per request)",
        format!("{} req/s ({})", fmt_count(alone.rate()), fmt_us(upstream_cpu)),
        "—".into(),
        "—".into(),
        "not the bottleneck: more req/s than through the gateway",
        Some(alone.rate() > closed.rate()),
    ));

    let (direct, gateway) = (&results.c1_direct, &results.c1_gateway);
    for (label, quantile, limit) in [
        ("p50", 0.5, Some(100.0)),
        ("p99", 0.99, Some(250.0)),
        ("p99.9", 0.999, None),
    ] {
        let added = us_at(gateway, quantile) - us_at(direct, quantile);
        rows.push(row(
            &format!("Latency at concurrency 1, {label}"),
            fmt_us(us_at(direct, quantile)),
            fmt_us(us_at(gateway, quantile)),
            fmt_signed_us(added),
            &limit.map_or("—".to_owned(), |limit| format!("added ≤ {}", fmt_us(limit))),
            limit.map(|limit| added <= limit),
        ));
    }

    let ratio = closed.rate() / alone.rate().max(1.0);
    rows.push(row(
        &format!(
            "Closed-loop throughput, {} connections",
            results.plan.closed_connections
        ),
        format!("{} req/s", fmt_count(alone.rate())),
        format!("{} req/s", fmt_count(closed.rate())),
        format!("{:.0} % of direct", ratio * 100.0),
        "≥ 30 % of direct",
        Some(ratio >= 0.30 && closed.errors == 0),
    ));
    let gateway_cpu = cpu_per_request_us(&closed.cpu_ticks, 0, closed.completed, per_second);
    rows.push(row(
        "CPU per request (closed loop; direct = the upstream's own)",
        fmt_us(upstream_cpu),
        fmt_us(gateway_cpu),
        format!(
            "upstream behind the gateway: {}",
            fmt_us(cpu_per_request_us(
                &closed.cpu_ticks,
                1,
                closed.completed,
                per_second
            ))
        ),
        "gateway ≤ 50 µs",
        Some(gateway_cpu <= 50.0),
    ));

    for step in &results.open_gateway {
        let direct = results.open_direct.iter().find(|direct| direct.rate == step.rate);
        let is_5k = step.rate == 5_000.0;
        let describe = |step: &OpenStep| {
            let errors = if step.errors == 0 {
                String::new()
            } else {
                format!(", {} errors", step.errors)
            };
            format!("{}{errors}", fmt_us(us_at(&step.latency, 0.99)))
        };
        rows.push(row(
            &format!(
                "Open loop at {} req/s, p99 from intended send",
                fmt_count(step.rate)
            ),
            direct.map_or("(stopped)".to_owned(), describe),
            describe(step),
            direct.map_or("—".to_owned(), |direct| {
                fmt_signed_us(us_at(&step.latency, 0.99) - us_at(&direct.latency, 0.99))
            }),
            if is_5k { "p99 ≤ 2 ms, no errors" } else { "—" },
            is_5k.then(|| step.errors == 0 && us_at(&step.latency, 0.99) <= 2_000.0),
        ));
    }
    if !results.open_gateway.iter().any(|step| step.rate == 5_000.0) {
        rows.push(row(
            "Open loop at 5,000 req/s, p99 from intended send",
            "—".into(),
            "not reached".into(),
            "—".into(),
            "p99 ≤ 2 ms, no errors",
            Some(false),
        ));
    }
    let limit = results.plan.open_p99_limit;
    rows.push(row(
        &format!(
            "Highest open-loop rate with p99 ≤ {} ms and no errors",
            limit.as_millis()
        ),
        format!("{} req/s", fmt_count(sustained(&results.open_direct, limit))),
        format!("{} req/s", fmt_count(sustained(&results.open_gateway, limit))),
        "—".into(),
        "—",
        None,
    ));

    let idle = results.rss_idle_kib;
    rows.push(row(
        "Gateway RSS, idle",
        "—".into(),
        fmt_mib(idle),
        "—".into(),
        "≤ 20 MiB",
        Some(mib(idle) <= 20.0),
    ));
    if let Some(peak) = results.rss_peak_1k_kib {
        rows.push(row(
            "Gateway RSS, peak during 1,000 req/s",
            "—".into(),
            fmt_mib(peak),
            "—".into(),
            "≤ 64 MiB",
            Some(mib(peak) <= 64.0),
        ));
    }
    let after = results.rss_after_kib;
    rows.push(row(
        &format!(
            "Gateway RSS after the run ({} s settle)",
            results.plan.settle.as_secs()
        ),
        "—".into(),
        fmt_mib(after),
        format!("{:+.1} MiB over idle", mib(after) - mib(idle)),
        "≤ 1.5 × idle",
        Some(after as f64 <= idle as f64 * 1.5),
    ));

    let (direct, gateway) = (&results.stream_direct, &results.stream_gateway);
    for (label, quantile, limit) in [("p50", 0.5, None), ("p99", 0.99, Some(500.0))] {
        let added = us_at(&gateway.ttft, quantile) - us_at(&direct.ttft, quantile);
        rows.push(row(
            &format!("Streaming: time to first token, {label}"),
            fmt_us(us_at(&direct.ttft, quantile)),
            fmt_us(us_at(&gateway.ttft, quantile)),
            fmt_signed_us(added),
            &limit.map_or("—".to_owned(), |limit| format!("added ≤ {}", fmt_us(limit))),
            limit.map(|limit| added <= limit && gateway.incomplete == 0),
        ));
    }
    let nominal = results.plan.stream_gap.as_secs_f64() * 1e6;
    for (label, quantile, limit) in [("p50", 0.5, None), ("p99", 0.99, Some(50.0))] {
        let (direct_gap, gateway_gap) = (us_at(&direct.gap, quantile), us_at(&gateway.gap, quantile));
        rows.push(row(
            &format!(
                "Streaming: gap between chunks over the nominal {} ms, {label}",
                results.plan.stream_gap.as_millis()
            ),
            fmt_signed_us(direct_gap - nominal),
            fmt_signed_us(gateway_gap - nominal),
            fmt_signed_us(gateway_gap - direct_gap),
            &limit.map_or("—".to_owned(), |limit| format!("added ≤ {}", fmt_us(limit))),
            limit.map(|limit| gateway_gap - direct_gap <= limit),
        ));
    }
    let (direct_streams, gateway_streams) = (
        stall_free(&results.ladder_direct),
        stall_free(&results.ladder_gateway),
    );
    let top = results.plan.ladder.last().copied().unwrap_or(0);
    let shown = |streams: usize| {
        if streams == top {
            format!("≥ {}", fmt_count(streams as f64))
        } else {
            fmt_count(streams as f64)
        }
    };
    rows.push(row(
        &format!(
            "Concurrent streams with every chunk and no gap over {} ms",
            results.plan.stall.as_millis()
        ),
        shown(direct_streams),
        shown(gateway_streams),
        "—".into(),
        "≥ 2,000",
        Some(gateway_streams >= 2_000),
    ));
    rows.push(row(
        "Streaming gateway RSS: idle / peak over the ladder / after",
        "—".into(),
        format!(
            "{} / {} / {}",
            fmt_mib(results.stream_rss_idle_kib),
            fmt_mib(results.stream_rss_peak_kib),
            fmt_mib(results.stream_rss_after_kib)
        ),
        "—".into(),
        "—",
        None,
    ));
    rows.extend(key_limits::rows(&results.key_limits, per_second));
    rows.extend(cache::rows(&results.cache));
    rows
}

fn ladder_markdown(results: &Results) -> String {
    let mut out = String::from(
        "| rate (req/s) | direct p50 | direct p99 | direct p99.9 | gateway p50 | gateway p99 | gateway p99.9 | errors (direct / gateway) | gateway CPU per request | driver dispatch p99 (direct / gateway) | connections opened / waits while measuring (direct ; gateway) | CPU time stolen by the hypervisor (direct / gateway) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rates: Vec<f64> = results
        .open_direct
        .iter()
        .chain(&results.open_gateway)
        .map(|step| step.rate)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let dash = || "—".to_owned();
    for rate in rates {
        let direct = results.open_direct.iter().find(|step| step.rate == rate);
        let gateway = results.open_gateway.iter().find(|step| step.rate == rate);
        let at = |step: Option<&OpenStep>, quantile: f64| {
            step.map_or_else(dash, |step| fmt_us(us_at(&step.latency, quantile)))
        };
        let errors = |step: Option<&OpenStep>| step.map_or_else(dash, |step| step.errors.to_string());
        let dispatch =
            |step: Option<&OpenStep>| step.map_or_else(dash, |step| fmt_us(us_at(&step.dispatch, 0.99)));
        let steal = |step: Option<&OpenStep>| {
            step.map_or_else(dash, |step| {
                format!(
                    "{:.0} ms",
                    step.steal_ticks as f64 * 1e3 / results.ticks_per_second as f64
                )
            })
        };
        let conns = |step: Option<&OpenStep>| {
            step.map_or_else(dash, |step| format!("{} / {}", step.opened, step.waited))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} ; {} | {} / {} |",
            fmt_count(rate),
            at(direct, 0.5),
            at(direct, 0.99),
            at(direct, 0.999),
            at(gateway, 0.5),
            at(gateway, 0.99),
            at(gateway, 0.999),
            errors(direct),
            errors(gateway),
            gateway.map_or_else(dash, |step| fmt_us(cpu_per_request_us(
                &step.cpu_ticks,
                0,
                step.ok,
                results.ticks_per_second
            ))),
            dispatch(direct),
            dispatch(gateway),
            conns(direct),
            conns(gateway),
            steal(direct),
            steal(gateway),
        );
    }
    out
}

fn streams_markdown(results: &Results) -> String {
    let mut out = String::from(
        "| streams | direct complete | direct largest gap | gateway complete | gateway largest gap | gateway gap p99 | gateway TTFT p99 |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let levels = results.ladder_direct.len().max(results.ladder_gateway.len());
    for index in 0..levels {
        let direct = results.ladder_direct.get(index);
        let gateway = results.ladder_gateway.get(index);
        let streams = direct.or(gateway).map_or(0, |level| level.streams);
        let complete = |level: Option<&Level>| {
            level.map_or("—".to_owned(), |level| {
                format!("{}/{}", level.complete, level.streams)
            })
        };
        let gap = |level: Option<&Level>| {
            level.map_or("—".to_owned(), |level| {
                format!("{:.1} ms", level.max_gap.as_secs_f64() * 1e3)
            })
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            fmt_count(streams as f64),
            complete(direct),
            gap(direct),
            complete(gateway),
            gap(gateway),
            gateway.map_or("—".to_owned(), |level| fmt_us(us_at(&level.gap, 0.99))),
            gateway.map_or("—".to_owned(), |level| fmt_us(us_at(&level.ttft, 0.99))),
        );
    }
    out
}

/// The Markdown report and the JSON one.
pub fn render(results: &Results) -> (String, Value) {
    let rows = rows(results);
    let facts = &results.facts;
    let text = |key: &str| facts[key].as_str().unwrap_or("?").to_owned();
    let mut markdown = String::new();
    let _ = writeln!(markdown, "# Gatewayz benchmark: latest run\n");
    if results.quick {
        let _ = writeln!(
            markdown,
            "**Quick smoke run (`--quick`): these numbers are not meaningful.**\n"
        );
    }
    let _ = writeln!(
        markdown,
        "{} · commit `{}`{} · {} × {} · Linux {} · all of driver, gateway and upstream share these {} CPUs.\n",
        text("date_utc"),
        text("git_commit").chars().take(12).collect::<String>(),
        if facts["git_uncommitted_changes"]
            .as_array()
            .is_some_and(|changes| !changes.is_empty())
        {
            " (with uncommitted changes)"
        } else {
            ""
        },
        facts["nproc"],
        text("cpu_model"),
        text("kernel"),
        facts["nproc"],
    );
    let _ = writeln!(
        markdown,
        "Produced by `target/release/gatewayz-bench`; `docs/benchmarks.md` explains the method. \
         Direct = the same request straight to the local upstream; gateway = through `gatewayz` to that upstream.\n"
    );
    let note = key_limits::note(&results.key_limits);
    if !note.is_empty() {
        let _ = writeln!(markdown, "{note}\n");
    }
    let _ = writeln!(markdown, "{}\n", cache::note(&results.cache));
    markdown.push_str(&markdown_table(&rows));
    let _ = writeln!(
        markdown,
        "\n## Open-loop ladder\n\nLatency from each request's intended send time. Both sides run every step up to 5,000 req/s; past it, a side stops after its first step with an error or a p99 over {} ms.\n",
        results.plan.open_p99_limit.as_millis()
    );
    markdown.push_str(&ladder_markdown(results));
    let _ = writeln!(
        markdown,
        "\n## Concurrent streams ladder\n\n{} chunks {} ms apart per stream, fresh connections, starts spread over {} ms. A side stops after its first level with a stream that missed an event or a gap over {} ms.\n",
        results.plan.stream_chunks,
        results.plan.stream_gap.as_millis(),
        results.plan.ladder_spread.as_millis(),
        results.plan.stall.as_millis()
    );
    markdown.push_str(&streams_markdown(results));
    let _ = writeln!(markdown, "\n## Who used the CPUs\n");
    for (name, key) in [
        (
            "Whole answers (all phases before the key limits)",
            "whole_answers",
        ),
        (
            "Key limits (three gateways, the upstream and redis-server)",
            "key_limits",
        ),
        ("Cache hits (its gateway and the upstream)", "cache"),
        ("Streaming", "streams"),
    ] {
        let account = &results.cpu_accounts[key];
        let _ = writeln!(
            markdown,
            "- {name}: {} s of wall time; the benchmark's processes used {} CPU-s, other processes {} CPU-s, the hypervisor stole {} s.",
            account["wall_s"],
            account["benchmark_processes_cpu_s"],
            account["other_processes_cpu_s"],
            account["stolen_by_the_hypervisor_s"]
        );
    }
    let _ = writeln!(markdown, "\n## Phases\n");
    for (name, seconds) in &results.phase_seconds {
        let _ = writeln!(markdown, "- {name}: {seconds:.1} s");
    }
    let total: f64 = results.phase_seconds.iter().map(|(_, seconds)| seconds).sum();
    let _ = writeln!(markdown, "- total measurement: {total:.1} s");

    let per_second = results.ticks_per_second;
    let nominal = results.plan.stream_gap;
    let json = json!({
        "quick": results.quick,
        "machine": results.facts,
        "setup": results.setup,
        "plan": results.plan.to_json(),
        "targets": rows.iter().map(|row| json!({
            "figure": row.figure,
            "direct": row.direct,
            "gateway": row.gateway,
            "delta": row.delta,
            "target": row.target,
            "met": row.met,
        })).collect::<Vec<_>>(),
        "upstream_alone": results.upstream_alone.to_json(&["upstream", "driver"], per_second),
        "latency_c1": {
            "direct": summary(&results.c1_direct),
            "gateway": summary(&results.c1_gateway),
            "added_us": {
                "p50": round(us_at(&results.c1_gateway, 0.5) - us_at(&results.c1_direct, 0.5)),
                "p99": round(us_at(&results.c1_gateway, 0.99) - us_at(&results.c1_direct, 0.99)),
                "p99_9": round(us_at(&results.c1_gateway, 0.999) - us_at(&results.c1_direct, 0.999)),
            },
            "per_round_added_p50_us": results.c1_round_deltas_us,
        },
        "open_loop": {
            "direct": results.open_direct.iter().map(|step| open_json(step, per_second)).collect::<Vec<_>>(),
            "gateway": results.open_gateway.iter().map(|step| open_json(step, per_second)).collect::<Vec<_>>(),
        },
        "closed_loop_gateway": results.closed_gateway.to_json(&["gateway", "upstream", "driver"], per_second),
        "rss_kib": {
            "idle": results.rss_idle_kib,
            "peak_at_1000_rps": results.rss_peak_1k_kib,
            "after_settle": results.rss_after_kib,
            "streaming_gateway_idle": results.stream_rss_idle_kib,
            "streaming_gateway_peak_over_ladder": results.stream_rss_peak_kib,
            "streaming_gateway_after_settle": results.stream_rss_after_kib,
        },
        "streaming": {
            "direct": timing_json(&results.stream_direct, nominal),
            "gateway": timing_json(&results.stream_gateway, nominal),
        },
        "stream_ladder": {
            "direct": results.ladder_direct.iter().map(level_json).collect::<Vec<_>>(),
            "gateway": results.ladder_gateway.iter().map(level_json).collect::<Vec<_>>(),
        },
        "key_limits": key_limits::json(&results.key_limits, per_second),
        "cache": cache::json(&results.cache),
        "cpu_accounts": results.cpu_accounts,
        "phase_seconds": results.phase_seconds.iter().map(|(name, seconds)| json!({"phase": name, "seconds": round(*seconds)})).collect::<Vec<_>>(),
    });
    (markdown, json)
}
