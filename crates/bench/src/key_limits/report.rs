//! The key limits' rows of the targets table (issue #14's targets) and
//! their part of `latest.json`.

use serde_json::{Value, json};

use super::{KeyLimits, Limits, Side};
use crate::stats::{median, round, summary, us_at};
use crate::table::{Row, fmt_count, fmt_signed_us, fmt_us, row};

/// Added CPU a request that limits in process may cost (issue #14).
const IN_PROCESS_CPU_LIMIT_US: f64 = 5.0;
/// Added p50 at concurrency 1 that limits in Redis on loopback may cost.
const REDIS_P50_LIMIT_US: f64 = 150.0;

/// Where the columns of these rows differ from the table's heading.
const BASELINE: &str = "direct = no limits";

/// The gateway's CPU a request in each closed-loop window, µs.
fn cpu_per_window(side: &Side, per_second: u64) -> Vec<f64> {
    side.closed
        .iter()
        .map(|window| window.cpu_us_per_request(0, per_second))
        .collect()
}

/// `redis-server`'s CPU a request in each window, µs (it is watched
/// fourth), when it ran.
fn redis_cpu_per_window(side: &Side, per_second: u64) -> Vec<f64> {
    side.closed
        .iter()
        .map(|window| window.cpu_us_per_request(3, per_second))
        .collect()
}

fn rates(side: &Side) -> Vec<f64> {
    side.closed.iter().map(crate::load::Closed::rate).collect()
}

/// Each of `side`'s values less the baseline's of the same window or
/// round.
fn paired(side: &[f64], baseline: &[f64]) -> Vec<f64> {
    side.iter()
        .zip(baseline)
        .map(|(side, base)| side - base)
        .collect()
}

fn p50s(side: &Side) -> Vec<f64> {
    side.c1_rounds.iter().map(|(p50, _)| *p50).collect()
}

fn p99s(side: &Side) -> Vec<f64> {
    side.c1_rounds.iter().map(|(_, p99)| *p99).collect()
}

fn errors(side: &Side) -> u64 {
    side.closed.iter().map(|window| window.errors).sum()
}

/// With the closed loops' errors, when there were any.
fn with_errors(text: String, side: &Side) -> String {
    match errors(side) {
        0 => text,
        count => format!("{text}, {count} errors"),
    }
}

/// The rows: in process, its added CPU (a target) and latency; in Redis,
/// its added p50 (a target), p99, CPU and throughput, or one row saying why
/// Redis was not measured.
pub fn rows(limits: &KeyLimits, per_second: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(base) = limits.side(Limits::None) else {
        return rows;
    };
    let base_cpu = cpu_per_window(base, per_second);
    if let Some(side) = limits.side(Limits::InProcess) {
        let added = median(&paired(&cpu_per_window(side, per_second), &base_cpu));
        rows.push(row(
            &format!("Key limits in process: gateway CPU per request, closed loop ({BASELINE})"),
            with_errors(fmt_us(median(&base_cpu)), base),
            with_errors(fmt_us(median(&cpu_per_window(side, per_second))), side),
            fmt_signed_us(added),
            &format!("added ≤ {}", fmt_us(IN_PROCESS_CPU_LIMIT_US)),
            Some(added <= IN_PROCESS_CPU_LIMIT_US && errors(side) == 0),
        ));
        rows.push(latency_row(
            "Key limits in process: latency at concurrency 1, p50",
            base,
            side,
            0.5,
            None,
        ));
    }
    match (limits.side(Limits::Redis), &limits.redis_not_measured) {
        (Some(side), _) => {
            rows.push(latency_row(
                "Key limits in Redis on loopback: latency at concurrency 1, p50",
                base,
                side,
                0.5,
                Some(REDIS_P50_LIMIT_US),
            ));
            rows.push(latency_row(
                "Key limits in Redis on loopback: latency at concurrency 1, p99",
                base,
                side,
                0.99,
                None,
            ));
            let cpu = cpu_per_window(side, per_second);
            rows.push(row(
                &format!(
                    "Key limits in Redis on loopback: gateway CPU per request, closed loop ({BASELINE})"
                ),
                with_errors(fmt_us(median(&base_cpu)), base),
                with_errors(fmt_us(median(&cpu)), side),
                format!(
                    "{}; redis-server: {} a request",
                    fmt_signed_us(median(&paired(&cpu, &base_cpu))),
                    fmt_us(median(&redis_cpu_per_window(side, per_second)))
                ),
                "—",
                None,
            ));
            let ratios: Vec<f64> = rates(side)
                .iter()
                .zip(rates(base))
                .map(|(side, base)| side / base.max(1.0))
                .collect();
            rows.push(row(
                &format!("Key limits in Redis on loopback: closed-loop throughput ({BASELINE})"),
                format!("{} req/s", fmt_count(median(&rates(base)))),
                format!("{} req/s", fmt_count(median(&rates(side)))),
                format!("{:.0} % of no limits", median(&ratios) * 100.0),
                "—",
                None,
            ));
        }
        (None, why) => rows.push(row(
            "Key limits in Redis on loopback: latency at concurrency 1, p50",
            "—".into(),
            format!("not measured: {}", why.as_deref().unwrap_or("no Redis side")),
            "—".into(),
            &format!("added ≤ {}", fmt_us(REDIS_P50_LIMIT_US)),
            None,
        )),
    }
    rows
}

/// Latency at concurrency 1 at `quantile`, of every round merged, and
/// added: the median of the rounds' differences with the baseline.
fn latency_row(figure: &str, base: &Side, side: &Side, quantile: f64, limit: Option<f64>) -> Row {
    let per_round = if quantile == 0.5 { p50s } else { p99s };
    let added = median(&paired(&per_round(side), &per_round(base)));
    row(
        &format!("{figure} ({BASELINE})"),
        fmt_us(us_at(&base.c1, quantile)),
        fmt_us(us_at(&side.c1, quantile)),
        fmt_signed_us(added),
        &limit.map_or("—".to_owned(), |limit| format!("added ≤ {}", fmt_us(limit))),
        limit.map(|limit| added <= limit),
    )
}

/// What the rows' columns mean, for the paragraph above the table.
pub fn note(limits: &KeyLimits) -> String {
    let Some(base) = limits.side(Limits::None) else {
        return String::new();
    };
    format!(
        "Key limits rows: {} gateways side by side before the same upstream, the bench key without a policy \
         (*direct* = no limits), with one counted in the process, and with the same counted in a `redis-server` \
         on loopback ({}); each figure is the median of {} closed-loop windows or {} rounds at concurrency 1 \
         a side, the sides in turn, and each delta the median of the differences with no limits in the same \
         window or round.",
        limits.sides.len(),
        limits
            .redis_version
            .as_deref()
            .map_or_else(|| "not measured".to_owned(), |version| format!("Redis {version}")),
        base.closed.len(),
        base.c1_rounds.len(),
    )
}

fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().copied().map(round).collect()
}

/// Every number behind the rows: each side's rounds and windows, and what
/// each limited side adds, window by window and round by round.
pub fn json(limits: &KeyLimits, per_second: u64) -> Value {
    let Some(base) = limits.side(Limits::None) else {
        return json!(null);
    };
    let mut sides = serde_json::Map::new();
    let mut added = serde_json::Map::new();
    for side in &limits.sides {
        let mut watched = vec!["gateway", "upstream", "driver"];
        if limits.side(Limits::Redis).is_some() {
            watched.push("redis_server");
        }
        sides.insert(
            side.limits.key().to_owned(),
            json!({
                "gateway": side.limits.gateway_name(),
                "latency_c1": summary(&side.c1),
                "latency_c1_per_round_p50_us": rounded(&p50s(side)),
                "latency_c1_per_round_p99_us": rounded(&p99s(side)),
                "closed_loop_windows": side.closed.iter().map(|window| window.to_json(&watched, per_second)).collect::<Vec<_>>(),
                "gateway_cpu_us_per_request_median": round(median(&cpu_per_window(side, per_second))),
                "requests_per_second_median": round(median(&rates(side))),
            }),
        );
        if side.limits == Limits::None {
            continue;
        }
        let cpu = paired(
            &cpu_per_window(side, per_second),
            &cpu_per_window(base, per_second),
        );
        let p50 = paired(&p50s(side), &p50s(base));
        let p99 = paired(&p99s(side), &p99s(base));
        added.insert(
            side.limits.key().to_owned(),
            json!({
                "gateway_cpu_us_per_request": {"median": round(median(&cpu)), "per_window": rounded(&cpu)},
                "latency_c1_p50_us": {"median": round(median(&p50)), "per_round": rounded(&p50)},
                "latency_c1_p99_us": {"median": round(median(&p99)), "per_round": rounded(&p99)},
            }),
        );
    }
    json!({
        "policy": super::POLICY,
        "redis_server": limits.redis_version,
        "redis_not_measured": limits.redis_not_measured,
        "sides": sides,
        "added_over_no_limits": added,
        "targets": {
            "in_process_added_cpu_us_per_request": IN_PROCESS_CPU_LIMIT_US,
            "redis_added_latency_c1_p50_us": REDIS_P50_LIMIT_US,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::Closed;
    use crate::stats::{hist, record};

    const TICKS: u64 = 100;

    /// A 1 s window of 10,000 requests whose gateway used `gateway_us` a
    /// request, and `redis-server` 20 µs.
    fn window(gateway_us: f64) -> Closed {
        let ticks = |us: f64| (us * 10_000.0 / 1e6 * TICKS as f64).round() as u64;
        Closed {
            completed: 10_000,
            errors: 0,
            first_error: None,
            window: Duration::from_secs(1),
            latency: hist().unwrap(),
            cpu_ticks: vec![ticks(gateway_us), 0, 0, ticks(20.0)],
        }
    }

    /// A side whose gateway cost `cpu_us` a request in each window and whose
    /// rounds at concurrency 1 took `p50_us` each.
    fn side(limits: Limits, cpu_us: &[f64], p50_us: &[f64]) -> Side {
        let mut c1 = hist().unwrap();
        for p50 in p50_us {
            record(&mut c1, Duration::from_secs_f64(p50 / 1e6));
        }
        Side {
            limits,
            c1,
            c1_rounds: p50_us.iter().map(|p50| (*p50, p50 * 2.0)).collect(),
            closed: cpu_us.iter().copied().map(window).collect(),
        }
    }

    fn find<'a>(rows: &'a [Row], start: &str) -> &'a Row {
        rows.iter()
            .find(|row| row.figure.starts_with(start))
            .unwrap_or_else(|| panic!("no row `{start}`"))
    }

    #[test]
    fn added_figures_are_medians_of_the_differences_within_each_window_or_round() {
        // The machine slows down between windows: the sides' own medians
        // differ by 10 µs, but within each window the policy adds 4.
        let limits = KeyLimits {
            sides: vec![
                side(Limits::None, &[40.0, 50.0, 60.0], &[100.0, 110.0, 120.0]),
                side(Limits::InProcess, &[44.0, 54.0, 64.0], &[101.0, 111.0, 121.0]),
                side(Limits::Redis, &[80.0, 90.0, 100.0], &[300.0, 260.0, 270.0]),
            ],
            redis_not_measured: None,
            redis_version: Some("7.0.15".into()),
            account: Value::Null,
        };
        let rows = rows(&limits, TICKS);

        let cpu = find(&rows, "Key limits in process: gateway CPU");
        assert_eq!(cpu.delta, "+4.0 µs");
        assert_eq!(cpu.met, Some(true));
        let p50 = find(
            &rows,
            "Key limits in Redis on loopback: latency at concurrency 1, p50",
        );
        assert_eq!(p50.delta, "+150.0 µs");
        assert_eq!(p50.met, Some(true));
        let redis_cpu = find(&rows, "Key limits in Redis on loopback: gateway CPU");
        assert_eq!(redis_cpu.delta, "+40.0 µs; redis-server: 20.0 µs a request");
        assert_eq!(redis_cpu.met, None);
    }

    #[test]
    fn targets_are_missed_past_5_us_of_cpu_and_150_us_of_p50() {
        let limits = KeyLimits {
            sides: vec![
                side(Limits::None, &[40.0, 40.0], &[100.0, 100.0]),
                side(Limits::InProcess, &[45.5, 45.5], &[100.0, 100.0]),
                side(Limits::Redis, &[80.0, 80.0], &[251.0, 251.0]),
            ],
            redis_not_measured: None,
            redis_version: Some("7.0.15".into()),
            account: Value::Null,
        };
        let rows = rows(&limits, TICKS);

        assert_eq!(find(&rows, "Key limits in process: gateway CPU").met, Some(false));
        assert_eq!(
            find(
                &rows,
                "Key limits in Redis on loopback: latency at concurrency 1, p50"
            )
            .met,
            Some(false)
        );
    }

    #[test]
    fn without_redis_server_its_row_says_why_and_judges_nothing() {
        let limits = KeyLimits {
            sides: vec![
                side(Limits::None, &[40.0], &[100.0]),
                side(Limits::InProcess, &[42.0], &[101.0]),
            ],
            redis_not_measured: Some("redis-server not installed".into()),
            redis_version: None,
            account: Value::Null,
        };
        let rows = rows(&limits, TICKS);

        let redis: Vec<&Row> = rows
            .iter()
            .filter(|row| row.figure.starts_with("Key limits in Redis"))
            .collect();
        assert_eq!(redis.len(), 1);
        assert_eq!(redis[0].gateway, "not measured: redis-server not installed");
        assert_eq!(redis[0].met, None);
        assert_eq!(find(&rows, "Key limits in process: gateway CPU").met, Some(true));
        assert!(note(&limits).contains("not measured"));
    }
}
