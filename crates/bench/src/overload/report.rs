//! The overload soak's markdown, written between its own markers of
//! `docs/reliability.md` (the reliability soak keeps its markers there).

use std::fmt::Write as _;
use std::time::Duration;

use super::Overload;
use super::baseline::{STEP_P99_LIMIT, Step, shortfall};
use super::verdict::{
    ADMITTED_P99_LIMIT, MIN_GOODPUT_SHARE, MIN_REFUSED_SHARE, REFUSED_P99_SHARE, RSS_LIMIT,
};
use crate::machine::TCP_COUNTERS;
use crate::reliability::run_line;
use crate::stats::{Hist, us, us_at};
use crate::table::{fmt_count, fmt_mib, fmt_us};

/// Getting a connection slower than this is counted: a SYN the kernel
/// dropped is sent again after 1 s.
const SLOW_CONNECT_NS: u64 = 500_000_000;

/// The lines between which a report file holds the latest run.
pub const BEGIN: &str = "<!-- overload-soak:latest:begin -->";
pub const END: &str = "<!-- overload-soak:latest:end -->";

fn dur(duration: Duration) -> String {
    fmt_us(duration.as_secs_f64() * 1e6)
}

fn at(hist: &Hist, quantile: f64) -> String {
    if hist.is_empty() {
        "—".to_owned()
    } else {
        fmt_us(us_at(hist, quantile))
    }
}

fn times(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "?×".to_owned()
    }
}

/// The latest run, as markdown. `command` is the line that ran it.
pub fn render(soak: &Overload, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", run_line(&soak.facts));
    let _ = writeln!(out, "Command: `{command}`\n");
    let gauges = &soak.gauges_before;
    let _ = writeln!(
        out,
        "Set-up: `gatewayz-upstream --delay-ms {}`; `gatewayz` with `GATEWAYZ_MAX_IN_FLIGHT={}`, \
         `GATEWAYZ_OVERLOAD_GRACE_MS={}` and its default memory budget (half the cgroup's memory limit, \
         else 512 MiB); its `/metrics` said: \
         in-flight limit {}, memory budget {} bytes.\n",
        soak.upstream_delay.as_millis(),
        soak.max_in_flight,
        soak.grace.as_millis(),
        gauges
            .in_flight_limit
            .map_or_else(|| "?".to_owned(), |limit| format!("{limit:.0}")),
        gauges.budget.map_or_else(|| "?".to_owned(), fmt_count),
    );
    verdict(&mut out, soak);
    baseline(&mut out, soak);
    outcomes(&mut out, soak);
    windows(&mut out, soak);
    rss(&mut out, soak);
    admin(&mut out, soak);
    load(&mut out, soak);
    out
}

fn verdict(out: &mut String, soak: &Overload) {
    let unloaded = &soak.baseline.unloaded;
    let word = if soak.verdict.passed() {
        "**PASS**"
    } else {
        "**FAIL**"
    };
    let (first, second) = soak.rss_halves;
    let rss = match (first, second) {
        (Some(first), Some(second)) => times(second as f64, first as f64),
        _ => "?×".to_owned(),
    };
    let _ = writeln!(
        out,
        "Verdict: {word}: admitted p99 {} = {} the unloaded p99 (limit {ADMITTED_P99_LIMIT}×); \
         refused p99 {} (limit {}, {REFUSED_P99_SHARE}× the unloaded p50); {} of {} requests \
         admitted or refused, {} otherwise; RSS peak of the second half {rss} that of the first \
         (limit {RSS_LIMIT}×).\n",
        at(&soak.admitted, 0.99),
        times(us_at(&soak.admitted, 0.99), us(unloaded.p99.as_nanos() as u64)),
        at(&soak.refused, 0.99),
        dur(unloaded.p50.mul_f64(REFUSED_P99_SHARE)),
        fmt_count((soak.admitted.len() + soak.refused.len()) as f64),
        fmt_count(soak.driven.planned as f64),
        fmt_count(soak.driven.tally.failed() as f64),
    );
    for failure in &soak.verdict.failures {
        let _ = writeln!(out, "- failed: {failure}");
    }
    if !soak.verdict.failures.is_empty() {
        out.push('\n');
    }
}

fn baseline(out: &mut String, soak: &Overload) {
    let unloaded = &soak.baseline.unloaded;
    let _ = writeln!(
        out,
        "Baselines, same run, same processes: unloaded at {} req/s, then a ladder from the capacity \
         {} in flight ÷ unloaded p50 = {:.0} req/s; a step is sustained with every answer a 200 and \
         p99 at most {STEP_P99_LIMIT}× the unloaded p99; one that is not runs once again. \
         **Sustainable rate {} req/s**.\n",
        unloaded.rate, soak.max_in_flight, soak.baseline.capacity, soak.sustainable,
    );
    out.push_str("| step | req/s | measured | 200 | refused or failed | p50 | p99 | sustained |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    let row = |out: &mut String, name: &str, step: &Step, held: &str| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {held} |",
            step.rate,
            fmt_count(step.sent as f64),
            fmt_count(step.ok as f64),
            fmt_count(step.errors as f64),
            dur(step.p50),
            dur(step.p99),
        );
    };
    row(out, "unloaded", unloaded, "—");
    let mut previous = None;
    for step in &soak.baseline.steps {
        let held = shortfall(step, unloaded.p99).map_or_else(|| "yes".to_owned(), |why| format!("no: {why}"));
        let again = if previous == Some(step.rate) {
            ", again"
        } else {
            ""
        };
        let share = step.rate / soak.baseline.capacity.max(1e-9) * 100.0;
        row(
            out,
            &format!("ladder, {share:.0} % of capacity{again}"),
            step,
            &held,
        );
        previous = Some(step.rate);
    }
    out.push('\n');
}

fn outcomes(out: &mut String, soak: &Overload) {
    let planned = soak.driven.planned.max(1) as f64;
    let unloaded_p99 = us(soak.baseline.unloaded.p99.as_nanos() as u64);
    let seconds = soak.duration.as_secs_f64();
    let _ = writeln!(
        out,
        "The soak: **{} req/s** ({}× the sustainable rate) for {seconds:.0} s, {} requests; \
         latency from each request's intended send time to the last byte of its answer.\n",
        soak.rate,
        super::OVERLOAD_FACTOR,
        fmt_count(soak.driven.planned as f64),
    );
    out.push_str("| outcome | requests | share | per second | p50 | p99 | max | p99 ÷ unloaded p99 |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, hist) in [
        ("admitted: 200", &soak.admitted),
        ("refused: 503 `overloaded`, `Retry-After`", &soak.refused),
    ] {
        let count = hist.len() as f64;
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} % | {:.0} | {} | {} | {} | {} |",
            fmt_count(count),
            count / planned * 100.0,
            count / seconds,
            at(hist, 0.5),
            at(hist, 0.99),
            if hist.is_empty() {
                "—".to_owned()
            } else {
                fmt_us(us(hist.max()))
            },
            if hist.is_empty() {
                "—".to_owned()
            } else {
                times(us_at(hist, 0.99), unloaded_p99)
            },
        );
    }
    for (kind, (count, first)) in &soak.driven.tally.failures {
        let _ = writeln!(
            out,
            "| {kind} (the first: {}) | {} | {:.2} % | | | | | |",
            first.chars().take(100).collect::<String>(),
            fmt_count(*count as f64),
            *count as f64 / planned * 100.0,
        );
    }
    if soak.driven.tally.failures.is_empty() {
        out.push_str("| anything else | 0 | 0 % | | | | | |\n");
    }
    let _ = writeln!(
        out,
        "\nRules besides: at least {:.0} % refused (the gateway was overloaded), and at least \
         {MIN_GOODPUT_SHARE}× the sustainable rate admitted a second (it kept serving).\n",
        MIN_REFUSED_SHARE * 100.0
    );
}

fn windows(out: &mut String, soak: &Overload) {
    let tally = &soak.driven.tally;
    let secs = tally.window.as_secs();
    out.push_str(
        "| seconds | admitted | admitted p99 | refused | refused p99 | other | gateway RSS | /readyz 503 |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (index, window) in tally.windows.iter().enumerate() {
        let (from, to) = (index as u64 * secs, (index as u64 + 1) * secs);
        let inside = soak
            .looks
            .iter()
            .filter(|look| look.at.as_secs() > from && look.at.as_secs() <= to);
        let (mut rss, mut not_ready) = (None, 0);
        for look in inside {
            rss = look.rss_kib.or(rss);
            not_ready += u64::from(!look.readyz.is(200));
        }
        let _ = writeln!(
            out,
            "| {from}–{to} | {} | {} | {} | {} | {} | {} | {not_ready} s |",
            fmt_count(window.admitted.len() as f64),
            at(&window.admitted, 0.99),
            fmt_count(window.refused.len() as f64),
            at(&window.refused, 0.99),
            window.failed,
            rss.map_or_else(|| "?".to_owned(), fmt_mib),
        );
    }
    out.push('\n');
}

fn rss(out: &mut String, soak: &Overload) {
    let kib = |value: Option<u64>| {
        value.map_or_else(|| "?".to_owned(), |kib| format!("{kib} KiB ({})", fmt_mib(kib)))
    };
    let peak = soak.looks.iter().filter_map(|look| look.rss_kib).max();
    let end = soak.looks.last().and_then(|look| look.rss_kib);
    let warmup = soak.warmup.as_secs();
    let middle = warmup + (soak.duration.as_secs() - warmup) / 2;
    let _ = writeln!(
        out,
        "Gateway RSS (read every second): idle before the load {}; peak {}; peak {warmup}–{middle} s {}, \
         {middle}–{} s {}; at the end of the load {}; {} s after it {}. Warm-up: the first {warmup} s.\n",
        kib(soak.rss_idle_kib),
        kib(peak),
        kib(soak.rss_halves.0),
        soak.duration.as_secs(),
        kib(soak.rss_halves.1),
        kib(end),
        super::SETTLE.as_secs(),
        kib(soak.rss_settled_kib),
    );
}

fn admin(out: &mut String, soak: &Overload) {
    let admin = &soak.admin;
    let span = match (admin.first_not_ready, admin.last_not_ready) {
        (Some(first), Some(last)) => format!(", from {} s to {} s", first.as_secs(), last.as_secs()),
        _ => String::new(),
    };
    let again = soak.ready_again_after.map_or_else(
        || "not within 10 s".to_owned(),
        |after| format!("{} after the load", dur(after)),
    );
    let _ = writeln!(
        out,
        "Admin listener, once a second: {} calls each to `/healthz` and `/readyz`, {} of them without an \
         HTTP answer{}; `/healthz` other than 200: {}; `/readyz` 503: {} s{span}; 200 again {again}.",
        admin.looks,
        admin.failed,
        admin
            .first_failure
            .as_deref()
            .map(|first| format!(" (the first: {first})"))
            .unwrap_or_default(),
        admin.healthz_not_ok,
        admin.not_ready,
    );
    let delta = |after: Option<f64>, before: Option<f64>| match (after, before) {
        (Some(after), before) => fmt_count(after - before.unwrap_or(0.0)),
        (None, _) => "?".to_owned(),
    };
    let peak = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), fmt_count);
    let (before, after) = (&soak.gauges_before, &soak.gauges_after);
    let _ = writeln!(
        out,
        "`/metrics` over the load: `gatewayz_overload_refusals_total` +{} `in_flight`, +{} `memory` \
         (the driver saw {} refusals); `gatewayz_in_flight_requests` at most {}; \
         `gatewayz_memory_budget_in_use_bytes` at most {}.\n",
        delta(after.refused_in_flight, before.refused_in_flight),
        delta(after.refused_memory, before.refused_memory),
        fmt_count(soak.refused.len() as f64),
        peak(super::watch::gauge_peak(&soak.looks, |gauges| gauges.in_flight)),
        peak(super::watch::gauge_peak(&soak.looks, |gauges| gauges.budget_in_use)),
    );
}

fn load(out: &mut String, soak: &Overload) {
    let driven = &soak.driven;
    let connecting = &driven.tally.connecting;
    let slow = connecting.count_between(SLOW_CONNECT_NS, u64::MAX);
    let counters: Vec<String> = TCP_COUNTERS
        .iter()
        .zip(&soak.tcp_counters)
        .map(|((_, name), grew)| {
            format!(
                "{name} +{}",
                grew.map_or_else(|| "?".to_owned(), |grew| fmt_count(grew as f64))
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Getting a connection (a free one of the pool, or a new one, as after each refusal): p50 {}, p99 {}, \
         max {}; {} times over 0.5 s. Machine-wide TCP counters over the load: {}.",
        at(connecting, 0.5),
        at(connecting, 0.99),
        if connecting.is_empty() {
            "—".to_owned()
        } else {
            fmt_us(us(connecting.max()))
        },
        fmt_count(slow as f64),
        counters.join(", "),
    );
    let seconds = soak.duration.as_secs_f64();
    let [gateway, upstream, driver] = soak.cpu_seconds;
    let account = &soak.account;
    let _ = writeln!(
        out,
        "Load: the pacer was at most {:.1} ms late; at most {} requests were in flight at once in the driver; \
         {} connections were opened beyond the 32 warm ones (a refusal closes its own), and {} requests \
         waited for one of the 256.",
        driven.pacer_late_max.as_secs_f64() * 1e3,
        driven.most_in_flight,
        fmt_count(driven.opened as f64),
        fmt_count(driven.waited as f64),
    );
    let _ = writeln!(
        out,
        "CPU during the load: gateway {gateway:.1} s ({:.1} % of one CPU), upstream {upstream:.1} s, \
         driver {driver:.1} s; other processes {} s, stolen by the hypervisor {} s.",
        gateway / seconds * 100.0,
        account["other_processes_cpu_s"],
        account["stolen_by_the_hypervisor_s"],
    );
}
