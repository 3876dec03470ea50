//! The soak's counts, and its verdict: a pure function of the counts, the
//! gateway's RSS after warm-up and at the end, and whether it still runs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::mix::{Kind, Observed, judge};

/// The most the gateway's RSS at the end may be, as a multiple of its RSS
/// after warm-up.
pub const RSS_LIMIT: f64 = 1.5;

/// The answers to one kind of request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KindCount {
    /// Requests whose answer was judged (every one, when none is lost).
    pub judged: u64,
    pub as_expected: u64,
    /// Answers by status (see [`Observed::label`]).
    pub statuses: BTreeMap<String, u64>,
    pub first_mismatch: Option<String>,
}

/// Every answer of the soak, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub kinds: BTreeMap<Kind, KindCount>,
}

impl Tally {
    /// Judges and counts one answer.
    pub fn add(&mut self, kind: Kind, observed: &Observed) {
        let count = self.kinds.entry(kind).or_default();
        count.judged += 1;
        *count.statuses.entry(observed.label()).or_default() += 1;
        match judge(kind, observed) {
            Ok(()) => count.as_expected += 1,
            Err(why) => {
                count.first_mismatch.get_or_insert(why);
            }
        }
    }

    pub fn judged(&self) -> u64 {
        self.kinds.values().map(|count| count.judged).sum()
    }

    pub fn unexpected(&self) -> u64 {
        self.kinds
            .values()
            .map(|count| count.judged - count.as_expected)
            .sum()
    }
}

/// One reading of the gateway's RSS, `at` after the load began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSample {
    pub at: Duration,
    pub kib: u64,
}

/// What the verdict looks at.
#[derive(Debug)]
pub struct Evidence<'a> {
    /// Requests the soak meant to send.
    pub planned: u64,
    pub tally: &'a Tally,
    /// RSS when warm-up ended, and when the load ended, KiB.
    pub rss_after_warmup: Option<u64>,
    pub rss_end: Option<u64>,
    /// How the gateway exited, if it did before the end.
    pub gateway_exited: Option<String>,
}

/// Why the soak failed; it passed when there is no reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The pass rules: every planned request answered, each as its kind must be;
/// the gateway's RSS at the end at most [`RSS_LIMIT`] × its RSS after
/// warm-up; the gateway still running.
pub fn verdict(evidence: &Evidence<'_>) -> Verdict {
    let mut failures = Vec::new();
    let judged = evidence.tally.judged();
    if judged != evidence.planned {
        failures.push(format!(
            "{judged} of {} planned requests were answered and judged",
            evidence.planned
        ));
    }
    for (kind, count) in &evidence.tally.kinds {
        let unexpected = count.judged - count.as_expected;
        if unexpected > 0 {
            failures.push(format!(
                "{unexpected} `{}` requests not answered as expected; the first: {}",
                kind.name(),
                count.first_mismatch.as_deref().unwrap_or("?")
            ));
        }
    }
    match (evidence.rss_after_warmup, evidence.rss_end) {
        (Some(warm), Some(end)) if end as f64 > RSS_LIMIT * warm as f64 => failures.push(format!(
            "RSS grew from {warm} KiB after warm-up to {end} KiB at the end, over {RSS_LIMIT}×"
        )),
        (Some(_), Some(_)) => {}
        _ => failures.push("the gateway's RSS was not read after warm-up and at the end".to_owned()),
    }
    if let Some(exit) = &evidence.gateway_exited {
        failures.push(format!("the gateway exited: {exit}"));
    }
    Verdict { failures }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliability::mix::Body;

    fn tally(kinds: &[(Kind, Observed, u64)]) -> Tally {
        let mut tally = Tally::default();
        for (kind, observed, times) in kinds {
            for _ in 0..*times {
                tally.add(*kind, observed);
            }
        }
        tally
    }

    fn ok_completion() -> Observed {
        Observed {
            status: Some(200),
            body: Body::Completion,
        }
    }

    fn evidence(tally: &Tally, planned: u64, warm: u64, end: u64) -> Evidence<'_> {
        Evidence {
            planned,
            tally,
            rss_after_warmup: Some(warm),
            rss_end: Some(end),
            gateway_exited: None,
        }
    }

    #[test]
    fn passes_when_every_answer_is_expected_and_rss_stays_within_the_limit() {
        let limited = Observed {
            status: Some(429),
            body: Body::Error,
        };
        let tally = tally(&[
            (Kind::Completion, ok_completion(), 7),
            (Kind::Completion429, limited, 1),
        ]);

        let verdict = verdict(&evidence(&tally, 8, 20_000, 30_000));

        assert_eq!(verdict.failures, Vec::<String>::new());
        assert!(verdict.passed());
        assert_eq!(tally.kinds[&Kind::Completion].statuses["200"], 7);
    }

    #[test]
    fn fails_when_rss_at_the_end_is_over_one_and_a_half_times_rss_after_warm_up() {
        let tally = tally(&[(Kind::Completion, ok_completion(), 4)]);

        let verdict = verdict(&evidence(&tally, 4, 20_000, 30_001));

        assert!(!verdict.passed());
        assert!(verdict.failures[0].contains("RSS grew"), "{verdict:?}");
    }

    #[test]
    fn fails_without_both_rss_readings() {
        let tally = tally(&[(Kind::Completion, ok_completion(), 1)]);
        let mut evidence = evidence(&tally, 1, 20_000, 20_000);
        evidence.rss_end = None;

        assert!(!verdict(&evidence).passed());
    }

    #[test]
    fn fails_on_one_answer_outside_the_expected_set_naming_its_kind() {
        let upstream_status_passed_on = Observed {
            status: Some(500),
            body: Body::Error,
        };
        let tally = tally(&[
            (Kind::Completion, ok_completion(), 99),
            (Kind::Completion500, upstream_status_passed_on, 1),
        ]);

        let verdict = verdict(&evidence(&tally, 100, 20_000, 20_000));

        assert_eq!(verdict.failures.len(), 1, "{verdict:?}");
        assert!(verdict.failures[0].contains("completion, upstream 500"));
        assert!(verdict.failures[0].contains("500 instead of 502"));
        assert_eq!(tally.unexpected(), 1);
    }

    #[test]
    fn fails_when_a_planned_request_was_never_judged_or_the_gateway_died() {
        let tally = tally(&[(Kind::Completion, ok_completion(), 9)]);
        let mut evidence = evidence(&tally, 10, 20_000, 20_000);
        evidence.gateway_exited = Some("signal: 9 (SIGKILL)".into());

        let verdict = verdict(&evidence);

        assert_eq!(verdict.failures.len(), 2, "{verdict:?}");
        assert!(verdict.failures[0].starts_with("9 of 10"));
        assert!(verdict.failures[1].contains("SIGKILL"));
    }
}
