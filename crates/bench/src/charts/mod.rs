//! SVG charts of a run, drawn from its `latest.json` (not from the live
//! results), so `--charts-from` redraws them from any committed run: the
//! open-loop ladder (`open-loop.svg`) and the concurrent-streams ladder
//! (`streams.svg`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::style::RGBColor;
use serde_json::Value;

use crate::table::fmt_count;

mod svg;

pub const OPEN_LOOP_FILE: &str = "open-loop.svg";
pub const STREAMS_FILE: &str = "streams.svg";

// Blues for direct, oranges for gateway; the milder figure of a side light
// (p50; the p99 gap), the harsher dark (p99; the largest gap). Every line
// has its own colour, so a test can count its markers.
const DIRECT_LIGHT: RGBColor = RGBColor(0x4A, 0x9B, 0xD4);
const DIRECT_DARK: RGBColor = RGBColor(0x08, 0x45, 0x94);
const GATEWAY_LIGHT: RGBColor = RGBColor(0xF8, 0x8E, 0x3A);
const GATEWAY_DARK: RGBColor = RGBColor(0xA6, 0x36, 0x03);
/// A limit the ladder stops at.
const LIMIT_COLOR: RGBColor = RGBColor(0x50, 0x50, 0x50);
/// A reference the data is read against.
const REFERENCE_COLOR: RGBColor = RGBColor(0xA8, 0xA8, 0xA8);

/// One plotted line: its legend, its points (x, y in ms) and its look.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
}

/// A horizontal line across the chart: a limit the driver applies, or a
/// value to read the data against.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    y: f64,
    color: RGBColor,
}

/// Everything one chart shows. Both axes are logarithmic: the ladders'
/// steps roughly double, and latencies span three decades once a side
/// saturates.
#[derive(Debug, Clone)]
struct Chart {
    title: String,
    x_desc: String,
    y_desc: String,
    /// The steps of the ladder, each a labelled tick.
    x_ticks: Vec<f64>,
    x_label: fn(f64) -> String,
    lines: Vec<Line>,
    rules: Vec<Rule>,
    /// Points drawn with a cross on top of their line, and what the cross
    /// means.
    flagged: Vec<(f64, f64)>,
    flagged_name: String,
    footer: String,
}

/// Draws both charts of `report` (a `latest.json`) into `dir`; returns the
/// files written.
pub fn write(report: &Value, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (file, chart) in [
        (OPEN_LOOP_FILE, open_loop(report)?),
        (STREAMS_FILE, streams(report)?),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, svg::draw(&chart)?).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Reads `json_path` (a `latest.json`) and draws its charts beside it.
pub fn redraw(json_path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(json_path).with_context(|| format!("reading {}", json_path.display()))?;
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    let dir = json_path.parent().unwrap_or(Path::new("."));
    write(&report, dir)
}

fn number(value: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(value, |value, key| value.get(key))?.as_f64()
}

fn array<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `(x, y in ms)` of each entry of `entries` that has both; a histogram with
/// no samples has no percentiles and gives no point.
fn points(entries: &[Value], x: &[&str], y_us: &[&str]) -> Vec<(f64, f64)> {
    entries
        .iter()
        .filter_map(|entry| Some((number(entry, x)?, number(entry, y_us)? / 1_000.0)))
        .filter(|&(x, y)| x > 0.0 && y > 0.0)
        .collect()
}

fn footer(report: &Value) -> String {
    let machine = &report["machine"];
    let text = |key: &str| machine[key].as_str().unwrap_or("?").to_owned();
    let uncommitted = machine["git_uncommitted_changes"]
        .as_array()
        .is_some_and(|changes| !changes.is_empty());
    format!(
        "commit {}{} · {} · {} × {}, shared by driver, gateway and upstream",
        text("git_commit").chars().take(12).collect::<String>(),
        if uncommitted {
            " (with uncommitted changes)"
        } else {
            ""
        },
        text("date_utc"),
        machine["nproc"],
        text("cpu_model"),
    )
}

fn title(report: &Value, title: &str) -> String {
    if report["quick"].as_bool() == Some(true) {
        format!("{title} (quick run: not meaningful)")
    } else {
        title.to_owned()
    }
}

/// The distinct x of every line, in order.
fn ticks(lines: &[Line]) -> Vec<f64> {
    let mut ticks: Vec<f64> = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.0))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    ticks
}

/// p50 and p99 from intended send against offered rate, both sides.
fn open_loop(report: &Value) -> anyhow::Result<Chart> {
    let latency = "latency_from_intended_send";
    let mut lines = Vec::new();
    let mut flagged = Vec::new();
    for (side, light, dark) in [
        ("direct", DIRECT_LIGHT, DIRECT_DARK),
        ("gateway", GATEWAY_LIGHT, GATEWAY_DARK),
    ] {
        let steps = array(report, &["open_loop", side]);
        for (quantile, key, color, dashed) in [("p50", "p50_us", light, false), ("p99", "p99_us", dark, true)]
        {
            lines.push(Line {
                name: format!("{side} {quantile}"),
                points: points(steps, &["rate"], &[latency, key]),
                color,
                dashed,
            });
        }
        flagged.extend(
            steps
                .iter()
                .filter(|step| number(step, &["errors"]).is_some_and(|errors| errors > 0.0))
                .filter_map(|step| {
                    Some((
                        number(step, &["rate"])?,
                        number(step, &[latency, "p99_us"])? / 1_000.0,
                    ))
                }),
        );
    }
    let rules = number(report, &["plan", "open_loop", "stop_when_p99_over_ms"])
        .map(|limit| Rule {
            name: format!("p99 {limit} ms: past 5,000 req/s a side stops at its first step over it"),
            y: limit,
            color: LIMIT_COLOR,
        })
        .into_iter()
        .collect();
    Ok(Chart {
        title: title(report, "Open-loop ladder: latency against offered rate"),
        x_desc: "offered rate (requests/s, log scale)".into(),
        y_desc: "latency from intended send (ms, log scale)".into(),
        x_ticks: ticks(&lines),
        x_label: |rate| {
            if rate >= 1_000.0 {
                format!("{}k", rate / 1_000.0)
            } else {
                fmt_count(rate)
            }
        },
        lines,
        rules,
        flagged,
        flagged_name: "a step with errors".into(),
        footer: footer(report),
    })
}

/// The largest and the p99 gap between chunks against concurrent streams,
/// both sides: a level is stall-free when its largest gap stays under the
/// stall line and every stream completed.
fn streams(report: &Value) -> anyhow::Result<Chart> {
    let mut lines = Vec::new();
    let mut flagged = Vec::new();
    for (side, light, dark) in [
        ("direct", DIRECT_LIGHT, DIRECT_DARK),
        ("gateway", GATEWAY_LIGHT, GATEWAY_DARK),
    ] {
        let levels = array(report, &["stream_ladder", side]);
        // `max_gap_ms` is in ms already; `points` divides by 1,000.
        let largest = levels
            .iter()
            .filter_map(|level| Some((number(level, &["streams"])?, number(level, &["max_gap_ms"])?)))
            .filter(|&(x, y)| x > 0.0 && y > 0.0)
            .collect();
        lines.push(Line {
            name: format!("{side}: largest gap"),
            points: largest,
            color: dark,
            dashed: false,
        });
        lines.push(Line {
            name: format!("{side}: p99 gap"),
            points: points(levels, &["streams"], &["gap", "p99_us"]),
            color: light,
            dashed: true,
        });
        flagged.extend(
            levels
                .iter()
                .filter(|level| number(level, &["failed"]).is_some_and(|failed| failed > 0.0))
                .filter_map(|level| Some((number(level, &["streams"])?, number(level, &["max_gap_ms"])?))),
        );
    }
    let plan = &report["plan"]["streaming"];
    let mut rules = Vec::new();
    if let Some(stall) = number(plan, &["stall_ms"]) {
        rules.push(Rule {
            name: format!("stall: a gap over {stall} ms (stall-free below it)"),
            y: stall,
            color: LIMIT_COLOR,
        });
    }
    if let Some(gap) = number(plan, &["gap_ms"]) {
        rules.push(Rule {
            name: format!("the upstream's own gap: {gap} ms"),
            y: gap,
            color: REFERENCE_COLOR,
        });
    }
    let chunks = number(plan, &["chunks"]).map_or("?".to_owned(), fmt_count);
    Ok(Chart {
        title: title(report, "Concurrent streams ladder: gaps between chunks"),
        x_desc: format!("concurrent streams of {chunks} chunks each (log scale)"),
        y_desc: "gap between two chunks of a stream (ms, log scale)".into(),
        x_ticks: ticks(&lines),
        x_label: fmt_count,
        lines,
        rules,
        flagged,
        flagged_name: "a level with a failed or incomplete stream".into(),
        footer: footer(report),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn histogram(p50_us: f64, p99_us: f64) -> Value {
        json!({"count": 100, "p50_us": p50_us, "p99_us": p99_us})
    }

    fn open_step(rate: f64, p50_us: f64, p99_us: f64, errors: u64) -> Value {
        json!({"rate": rate, "errors": errors, "latency_from_intended_send": histogram(p50_us, p99_us)})
    }

    fn level(streams: u64, max_gap_ms: f64, p99_us: f64, failed: u64) -> Value {
        json!({"streams": streams, "failed": failed, "max_gap_ms": max_gap_ms, "gap": histogram(20_000.0, p99_us)})
    }

    /// Three direct steps and two gateway steps, the last with errors;
    /// four direct levels and three gateway ones, the last failed.
    fn report() -> Value {
        json!({
            "quick": false,
            "machine": {"git_commit": "0123456789abcdef", "date_utc": "2026-01-01T00:00:00Z", "nproc": 2, "cpu_model": "Test CPU"},
            "plan": {
                "open_loop": {"stop_when_p99_over_ms": 5.0},
                "streaming": {"chunks": 64, "gap_ms": 20.0, "stall_ms": 200.0},
            },
            "open_loop": {
                "direct": [open_step(1_000.0, 150.0, 800.0, 0), open_step(5_000.0, 110.0, 190.0, 0), open_step(7_500.0, 95.0, 250.0, 0)],
                "gateway": [open_step(1_000.0, 440.0, 1_500.0, 0), open_step(5_000.0, 410.0, 90_000.0, 3)],
            },
            "stream_ladder": {
                "direct": [level(250, 24.0, 21_300.0, 0), level(500, 32.0, 22_800.0, 0), level(1_000, 23.0, 21_300.0, 0), level(2_000, 77.0, 71_000.0, 0)],
                "gateway": [level(250, 36.0, 21_700.0, 0), level(500, 33.0, 29_000.0, 0), level(1_000, 400.0, 150_000.0, 2)],
            },
        })
    }

    /// How many markers of `color` the SVG holds: one filled circle a point.
    fn markers(svg: &str, color: RGBColor) -> usize {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2);
        svg.lines()
            .filter(|line| line.contains("<circle") && line.contains(&fill))
            .count()
    }

    fn assert_chart_draws_every_line(chart: &Chart, names: &[&str], counts: &[usize]) {
        let svg = svg::draw(chart).expect("the chart draws");
        assert!(svg.starts_with("<svg"), "an SVG document");
        assert!(svg.contains(&chart.title), "the title is a text element");
        assert!(
            svg.contains(&chart.x_desc) && svg.contains(&chart.y_desc),
            "both axes are labelled"
        );
        for ((line, name), count) in chart.lines.iter().zip(names).zip(counts) {
            assert_eq!(line.name, *name);
            assert_eq!(line.points.len(), *count, "{name}: one point a step");
            assert!(svg.lines().any(|text| text == *name), "{name} is in the legend");
            assert_eq!(markers(&svg, line.color), *count, "{name}: one marker a point");
        }
        assert_eq!(chart.lines.len(), names.len());
    }

    #[test]
    fn open_loop_chart_has_p50_and_p99_of_each_side_with_one_marker_per_step() {
        let chart = open_loop(&report()).expect("the chart reads");

        assert_chart_draws_every_line(
            &chart,
            &["direct p50", "direct p99", "gateway p50", "gateway p99"],
            &[3, 3, 2, 2],
        );
        assert_eq!(chart.lines[3].points[1], (5_000.0, 90.0), "µs become ms");
        assert_eq!(
            chart.flagged,
            vec![(5_000.0, 90.0)],
            "the step with errors is flagged"
        );
        assert_eq!(chart.x_ticks, vec![1_000.0, 5_000.0, 7_500.0]);
        assert_eq!(chart.rules.len(), 1, "the stop limit");
    }

    #[test]
    fn streams_chart_has_largest_and_p99_gap_of_each_side_and_flags_failed_levels() {
        let chart = streams(&report()).expect("the chart reads");

        assert_chart_draws_every_line(
            &chart,
            &[
                "direct: largest gap",
                "direct: p99 gap",
                "gateway: largest gap",
                "gateway: p99 gap",
            ],
            &[4, 4, 3, 3],
        );
        assert_eq!(chart.lines[2].points[2], (1_000.0, 400.0));
        assert_eq!(chart.lines[3].points[2], (1_000.0, 150.0), "µs become ms");
        assert_eq!(chart.flagged, vec![(1_000.0, 400.0)]);
        let svg = svg::draw(&chart).expect("the chart draws");
        assert!(
            svg.contains("stall: a gap over 200 ms"),
            "the stall line is in the legend"
        );
    }

    #[test]
    fn a_step_without_samples_gives_no_point() {
        let mut report = report();
        report["open_loop"]["direct"][1]["latency_from_intended_send"] = json!({"count": 0});

        let chart = open_loop(&report).expect("the chart reads");

        assert_eq!(chart.lines[0].points, vec![(1_000.0, 0.15), (7_500.0, 0.095)]);
    }

    #[test]
    fn a_report_without_ladders_is_refused_rather_than_drawn_empty() {
        let chart = streams(&json!({"machine": {}})).expect("the chart reads");

        assert!(svg::draw(&chart).is_err());
    }

    #[test]
    fn a_quick_run_says_so_in_the_title() {
        let mut report = report();
        report["quick"] = json!(true);

        assert!(
            open_loop(&report)
                .expect("the chart reads")
                .title
                .contains("quick run")
        );
    }

    #[test]
    fn redraw_writes_both_charts_beside_the_json() {
        let dir = std::env::temp_dir().join(format!("gatewayz-bench-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let json_path = dir.join("latest.json");
        std::fs::write(&json_path, report().to_string()).expect("the JSON is written");

        let written = redraw(&json_path).expect("the charts are drawn");

        assert_eq!(written, vec![dir.join(OPEN_LOOP_FILE), dir.join(STREAMS_FILE)]);
        for path in &written {
            let svg = std::fs::read_to_string(path).expect("the chart is written");
            assert!(svg.contains("</svg>"));
        }
        std::fs::remove_dir_all(&dir).expect("the temp dir is removed");
    }
}
