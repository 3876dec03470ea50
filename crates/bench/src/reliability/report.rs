//! The soak's markdown: verdict, requests by kind and status, RSS samples;
//! and writing it between the markers of `docs/reliability.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::Soak;
use super::mix::Kind;
use super::verdict::RSS_LIMIT;
use crate::table::{fmt_count, fmt_mib};

/// The lines between which a report file holds the latest run.
pub const BEGIN: &str = "<!-- reliability-soak:latest:begin -->";
pub const END: &str = "<!-- reliability-soak:latest:end -->";

/// The first line of a soak's report: when, on which commit and machine,
/// from [`crate::machine::facts`].
pub fn run_line(facts: &Value) -> String {
    let text = |key: &str| facts[key].as_str().unwrap_or("?").to_owned();
    let commit: String = text("git_commit").chars().take(12).collect();
    let dirty = facts["git_uncommitted_changes"].as_array().map_or(0, Vec::len);
    let dirty = if dirty == 0 {
        String::new()
    } else {
        format!(" plus uncommitted changes to {dirty} tracked files")
    };
    format!(
        "Run {} on commit `{commit}`{dirty}; {} CPUs ({}), {}.",
        text("date_utc"),
        facts["nproc"],
        text("cpu_model"),
        text("rustc"),
    )
}

/// The latest run, as markdown. `command` is the line that ran it.
pub fn render(soak: &Soak, command: &str) -> String {
    let mut out = String::new();
    let judged = soak.tally.judged();
    let unexpected = soak.tally.unexpected();
    let verdict = if soak.verdict.passed() {
        "**PASS**"
    } else {
        "**FAIL**"
    };
    let _ = writeln!(out, "{}\n", run_line(&soak.facts));
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(
        out,
        "Verdict: {verdict}: {} of {} planned requests answered, {} not as expected; \
         RSS at the end {} the RSS after warm-up (limit {RSS_LIMIT:.2}×).\n",
        fmt_count(judged as f64),
        fmt_count(soak.planned as f64),
        fmt_count(unexpected as f64),
        ratio(soak).map_or_else(|| "?×".to_owned(), |ratio| format!("{ratio:.2}×")),
    );
    for failure in &soak.verdict.failures {
        let _ = writeln!(out, "- failed: {failure}");
    }
    if !soak.verdict.failures.is_empty() {
        out.push('\n');
    }
    requests(&mut out, soak);
    rss(&mut out, soak);
    load(&mut out, soak);
    out
}

fn ratio(soak: &Soak) -> Option<f64> {
    let at = |when| {
        soak.samples
            .iter()
            .find(|sample| sample.at == when)
            .map(|sample| sample.kib)
    };
    Some(at(soak.duration)? as f64 / at(soak.warmup)?.max(1) as f64)
}

fn requests(out: &mut String, soak: &Soak) {
    out.push_str("| request | share | must get | answered | statuses seen | as expected |\n");
    out.push_str("|---|---:|---|---:|---|---:|\n");
    for kind in Kind::ALL {
        let Some(count) = soak.tally.kinds.get(&kind) else {
            let _ = writeln!(
                out,
                "| {} | {} % | {} | 0 | — | 0 |",
                kind.name(),
                kind.percent(),
                kind.expected()
            );
            continue;
        };
        let statuses: Vec<String> = count
            .statuses
            .iter()
            .map(|(status, times)| format!("{status} ×{}", fmt_count(*times as f64)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} % | {} | {} | {} | {} |",
            kind.name(),
            kind.percent(),
            kind.expected(),
            fmt_count(count.judged as f64),
            statuses.join(", "),
            fmt_count(count.as_expected as f64),
        );
    }
    let judged = soak.tally.judged();
    let _ = writeln!(
        out,
        "| **all** | 100 % | | {} | | {} |\n",
        fmt_count(judged as f64),
        fmt_count((judged - soak.tally.unexpected()) as f64),
    );
}

fn rss(out: &mut String, soak: &Soak) {
    let baseline = soak
        .samples
        .iter()
        .find(|sample| sample.at == soak.warmup)
        .map(|sample| sample.kib);
    let times = |kib: u64| {
        baseline.map_or_else(
            || "—".to_owned(),
            |base| format!("{:.2}", kib as f64 / base.max(1) as f64),
        )
    };
    out.push_str("| gateway RSS | KiB | MiB | × after warm-up |\n|---|---:|---:|---:|\n");
    if let Some(kib) = soak.rss_idle_kib {
        let _ = writeln!(out, "| idle, before the load | {kib} | {} | — |", fmt_mib(kib));
    }
    for sample in &soak.samples {
        let secs = sample.at.as_secs();
        let (when, ratio) = if sample.at == soak.warmup {
            (format!("{secs} s: warm-up over"), "1.00 (baseline)".to_owned())
        } else if sample.at == soak.duration {
            (
                format!("{secs} s: end of the load"),
                format!("**{}** (limit {RSS_LIMIT:.2})", times(sample.kib)),
            )
        } else if sample.at < soak.warmup {
            (format!("{secs} s"), "—".to_owned())
        } else {
            (format!("{secs} s"), times(sample.kib))
        };
        let _ = writeln!(
            out,
            "| {when} | {} | {} | {ratio} |",
            sample.kib,
            fmt_mib(sample.kib)
        );
    }
    if let Some(kib) = soak.rss_settled_kib {
        let _ = writeln!(
            out,
            "| 3 s after the load | {kib} | {} | {} |",
            fmt_mib(kib),
            times(kib)
        );
    }
    out.push('\n');
}

fn load(out: &mut String, soak: &Soak) {
    let seconds = soak.duration.as_secs_f64();
    let judged = soak.tally.judged().max(1) as f64;
    let [gateway, upstream, driver] = soak.cpu_seconds;
    let _ = writeln!(
        out,
        "Load: {} requests at {} req/s over {seconds:.0} s; warm-up {} s. The pacer was at most {:.1} ms late; \
         at most {} requests were in flight at once; {} connections were opened beyond the 32 warm ones, and \
         {} requests waited for one.",
        fmt_count(soak.planned as f64),
        soak.rate,
        soak.warmup.as_secs(),
        soak.pacer_late_max.as_secs_f64() * 1e3,
        soak.most_in_flight,
        fmt_count(soak.opened as f64),
        fmt_count(soak.waited as f64),
    );
    let _ = writeln!(
        out,
        "CPU during the load: gateway {gateway:.1} s ({:.1} % of one CPU, {:.0} µs a request), \
         upstream {upstream:.1} s, driver {driver:.1} s.",
        gateway / seconds * 100.0,
        gateway * 1e6 / judged,
    );
}

/// `doc` with what lies between its `begin` and `end` lines replaced by
/// `section`; `None` when it lacks either. Other soaks keep their sections
/// in the same page between markers of their own.
pub fn splice_between(doc: &str, begin: &str, end: &str, section: &str) -> Option<String> {
    let after_begin = doc.find(begin)? + begin.len();
    let end = after_begin + doc[after_begin..].find(end)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &doc[..after_begin],
        section.trim_end(),
        &doc[end..]
    ))
}

/// Writes `section` between the markers of `path`, or as the whole file
/// when there is none yet.
///
/// # Errors
/// When the file exists without the markers (it is not overwritten), or
/// cannot be read or written.
pub fn write_into(path: &Path, section: &str) -> anyhow::Result<()> {
    write_between(path, BEGIN, END, section)
}

/// Writes `section` between the `begin` and `end` lines of `path`, or as
/// the whole file when there is none yet.
///
/// # Errors
/// As [`write_into`].
pub fn write_between(path: &Path, begin: &str, end: &str, section: &str) -> anyhow::Result<()> {
    let updated = match std::fs::read_to_string(path) {
        Ok(doc) => splice_between(&doc, begin, end, section).with_context(|| {
            format!(
                "{} has no `{begin}` … `{end}` lines to write between",
                path.display()
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!("{section}\n"),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(doc: &str, section: &str) -> Option<String> {
        splice_between(doc, BEGIN, END, section)
    }

    #[test]
    fn splices_between_the_markers_and_keeps_the_rest() {
        let doc = format!("# Title\n\nIntro.\n\n{BEGIN}\nold run\n{END}\n\nAfter.\n");

        let spliced = splice(&doc, "new run\n").unwrap();

        assert_eq!(
            spliced,
            format!("# Title\n\nIntro.\n\n{BEGIN}\n\nnew run\n{END}\n\nAfter.\n")
        );
        assert_eq!(splice(&spliced, "new run").unwrap(), spliced);
    }

    #[test]
    fn refuses_a_document_without_both_markers() {
        assert_eq!(splice("# Title\n", "run"), None);
        assert_eq!(splice(&format!("{BEGIN}\nrun\n"), "run"), None);
        assert_eq!(splice(&format!("{END}\n{BEGIN}\n"), "run"), None);
    }
}
