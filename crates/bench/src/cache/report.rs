//! The cache hits' rows of the targets table and their part of
//! `latest.json`.

use serde_json::{Value, json};

use super::{BODY, CATALOG, CacheHits, Served, Side};
use crate::stats::{median, round, summary, us_at};
use crate::table::{Row, fmt_count, fmt_signed_us, fmt_us, row};

/// The p50 a hit served in process may add to the upstream's own latency.
const HIT_P50_LIMIT_US: f64 = 100.0;

/// Where the gateway column of these rows differs from the table's heading.
const BASELINE: &str = "direct = the upstream's own";

/// With the answers the gateway did not serve as the side expects, when
/// there were any.
fn with_unexpected(text: String, side: &Side) -> String {
    match (side.unexpected, &side.first_unexpected) {
        (0, _) => text,
        (count, first) => format!(
            "{text}, {count} not a {} (first: {})",
            side.served.expected().unwrap_or("—"),
            first.as_deref().unwrap_or("?")
        ),
    }
}

/// What `side` adds to direct at `quantile`, every round merged, µs.
fn added(side: &Side, direct: &Side, quantile: f64) -> f64 {
    us_at(&side.latency, quantile) - us_at(&direct.latency, quantile)
}

/// Each round's p50 of `side` less direct's of the same round, µs.
fn added_p50_per_round(side: &Side, direct: &Side) -> Vec<f64> {
    side.rounds
        .iter()
        .zip(&direct.rounds)
        .map(|((side, _), (direct, _))| round(side - direct))
        .collect()
}

/// The rows: a hit's p50 (the target) and p99 against direct, and a miss's
/// p50 for context.
pub fn rows(cache: &CacheHits) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(direct) = cache.side(Served::Direct) else {
        return rows;
    };
    if let Some(hit) = cache.side(Served::Hit) {
        for (label, quantile, limit) in [("p50", 0.5, Some(HIT_P50_LIMIT_US)), ("p99", 0.99, None)] {
            let added = added(hit, direct, quantile);
            rows.push(row(
                &format!("Cache hit in process: latency at concurrency 1, {label} ({BASELINE})"),
                fmt_us(us_at(&direct.latency, quantile)),
                with_unexpected(fmt_us(us_at(&hit.latency, quantile)), hit),
                fmt_signed_us(added),
                &limit.map_or("—".to_owned(), |limit| format!("added ≤ {}", fmt_us(limit))),
                limit.map(|limit| added <= limit && hit.unexpected == 0),
            ));
        }
    }
    if let Some(miss) = cache.side(Served::Miss) {
        rows.push(row(
            &format!("Cache miss (a new `seed` each request): latency at concurrency 1, p50 ({BASELINE})"),
            fmt_us(us_at(&direct.latency, 0.5)),
            with_unexpected(fmt_us(us_at(&miss.latency, 0.5)), miss),
            fmt_signed_us(added(miss, direct, 0.5)),
            "—",
            None,
        ));
    }
    rows
}

/// What the rows' columns mean, for the paragraph above the table.
pub fn note(cache: &CacheHits) -> String {
    format!(
        "Cache rows: a gateway of its own whose catalog caches `gpt-4o-mini` for 600 s in its process, before \
         the same upstream; {} rounds at concurrency 1 of {} calls straight to the upstream (*direct*), {} of \
         the same request answered from the cache, each checked to say `x-gatewayz-cache: hit`, and {} misses \
         (a `seed` of their own each), the sides in turn; each side's rounds merged.",
        cache.rounds_done(),
        fmt_count(cache.per_round as f64),
        fmt_count(cache.per_round as f64),
        fmt_count(cache.misses_per_round as f64),
    )
}

/// Every number behind the rows: each side's latency, round by round, and
/// what a hit and a miss add to direct.
pub fn json(cache: &CacheHits) -> Value {
    let Some(direct) = cache.side(Served::Direct) else {
        return json!(null);
    };
    let mut sides = serde_json::Map::new();
    let mut added_us = serde_json::Map::new();
    for side in &cache.sides {
        sides.insert(
            side.served.key().to_owned(),
            json!({
                "latency_c1": summary(&side.latency),
                "per_round_p50_us": side.rounds.iter().map(|(p50, _)| round(*p50)).collect::<Vec<_>>(),
                "per_round_p99_us": side.rounds.iter().map(|(_, p99)| round(*p99)).collect::<Vec<_>>(),
                "expected_cache_header": side.served.expected(),
                "answers_not_as_expected": side.unexpected,
                "first_not_as_expected": side.first_unexpected,
            }),
        );
        if side.served == Served::Direct {
            continue;
        }
        let per_round = added_p50_per_round(side, direct);
        added_us.insert(
            side.served.key().to_owned(),
            json!({
                "p50": round(added(side, direct, 0.5)),
                "p99": round(added(side, direct, 0.99)),
                "p50_per_round": per_round,
                "p50_per_round_median": round(median(&per_round)),
            }),
        );
    }
    json!({
        "catalog": CATALOG,
        "request_body": BODY,
        "miss_request_body": "request_body with \"seed\": N first, N new for each request",
        "rounds": {"planned": cache.rounds_planned, "done": cache.rounds_done()},
        "calls_per_round": {"direct": cache.per_round, "hit": cache.per_round, "miss": cache.misses_per_round},
        "sides": sides,
        "added_over_direct_us": added_us,
        "targets": {"hit_added_latency_c1_p50_us": HIT_P50_LIMIT_US},
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{hist, record};

    /// A side whose rounds each took `p50_us` a call.
    fn side(served: Served, p50_us: &[f64], unexpected: u64) -> Side {
        let mut latency = hist().unwrap();
        for p50 in p50_us {
            record(&mut latency, Duration::from_secs_f64(p50 / 1e6));
        }
        Side {
            served,
            latency,
            rounds: p50_us.iter().map(|p50| (*p50, p50 * 2.0)).collect(),
            unexpected,
            first_unexpected: (unexpected > 0).then(|| "x-gatewayz-cache: miss".to_owned()),
        }
    }

    fn cache(hit_us: f64, hits_not_hits: u64) -> CacheHits {
        CacheHits {
            sides: vec![
                side(Served::Direct, &[10.0, 10.0, 10.0], 0),
                side(Served::Hit, &[hit_us, hit_us, hit_us], hits_not_hits),
                side(Served::Miss, &[300.0, 300.0, 300.0], 0),
            ],
            rounds_planned: 3,
            per_round: 1,
            misses_per_round: 1,
            account: Value::Null,
        }
    }

    fn find<'a>(rows: &'a [Row], start: &str) -> &'a Row {
        rows.iter()
            .find(|row| row.figure.starts_with(start))
            .unwrap_or_else(|| panic!("no row `{start}`"))
    }

    #[test]
    fn a_hit_meets_its_target_up_to_100_us_over_direct_at_p50() {
        let rows = rows(&cache(105.0, 0));

        let p50 = find(&rows, "Cache hit in process: latency at concurrency 1, p50");
        assert_eq!(p50.delta, "+95.0 µs");
        assert_eq!(p50.met, Some(true));
        assert_eq!(
            find(&rows, "Cache hit in process: latency at concurrency 1, p99").met,
            None
        );
        assert_eq!(find(&rows, "Cache miss").delta, "+290.0 µs");

        let rows = super::rows(&cache(115.0, 0));
        let p50 = find(&rows, "Cache hit in process: latency at concurrency 1, p50");
        assert_eq!(p50.met, Some(false));
    }

    #[test]
    fn a_hit_faster_than_direct_shows_a_negative_delta() {
        let rows = rows(&cache(5.0, 0));

        let p50 = find(&rows, "Cache hit in process: latency at concurrency 1, p50");
        assert_eq!(p50.delta, "−5.0 µs");
        assert_eq!(p50.met, Some(true));
    }

    #[test]
    fn answers_that_were_not_hits_fail_the_row_and_are_named() {
        let rows = rows(&cache(50.0, 2));

        let p50 = find(&rows, "Cache hit in process: latency at concurrency 1, p50");
        assert_eq!(p50.met, Some(false));
        assert_eq!(
            p50.gateway,
            "50.0 µs, 2 not a hit (first: x-gatewayz-cache: miss)"
        );
        let json = json(&cache(50.0, 2));
        assert_eq!(json["sides"]["hit"]["answers_not_as_expected"], 2);
        assert_eq!(json["added_over_direct_us"]["hit"]["p50_per_round_median"], 40.0);
    }
}
