//! The pass rules of the overload soak, over the numbers it measured; each
//! failed rule is one sentence of the verdict.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::reliability::Verdict;

/// Admitted p99 at most this many times the unloaded p99 (issue #19).
pub const ADMITTED_P99_LIMIT: f64 = 2.0;
/// Refused p99 at most this share of the unloaded p50: a refusal must not
/// wait for anything the upstream does (a fifth of its answer time).
pub const REFUSED_P99_SHARE: f64 = 0.2;
/// At least this share of the requests refused: the soak overloaded the
/// gateway (at twice the sustainable rate, about half are).
pub const MIN_REFUSED_SHARE: f64 = 0.25;
/// Admitted requests a second at least this share of the sustainable rate:
/// shedding keeps the gateway serving at capacity, it does not collapse.
pub const MIN_GOODPUT_SHARE: f64 = 0.8;
/// RSS peak of the second half after warm-up at most this many times the
/// peak of the first half.
pub const RSS_LIMIT: f64 = 1.2;
/// `/readyz` must answer 200 again this soon after the load ends.
pub const READY_AGAIN_LIMIT: Duration = Duration::from_secs(10);

/// What the verdict looks at.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub planned: u64,
    /// Requests whose outcome was counted, whatever it was.
    pub counted: u64,
    pub duration: Duration,
    pub unloaded_p50: Duration,
    pub unloaded_p99: Duration,
    pub sustainable_rate: f64,
    pub admitted: u64,
    pub admitted_p99: Duration,
    pub refused: u64,
    pub refused_p99: Duration,
    /// Requests neither admitted nor refused, by kind: how many, the first.
    pub failures: BTreeMap<&'static str, (u64, String)>,
    /// The RSS peaks of the two halves of the load after warm-up, KiB.
    pub rss_first_half: Option<u64>,
    pub rss_second_half: Option<u64>,
    /// Admin calls (`/healthz`, `/readyz`) whose HTTP call failed, and the
    /// first failure.
    pub admin_failed: u64,
    pub first_admin_failure: Option<String>,
    /// `/healthz` answers other than 200.
    pub healthz_not_ok: u64,
    /// Once-a-second `/readyz` answers other than 200 during the load.
    pub not_ready: u64,
    /// How long after the load `/readyz` answered 200 again.
    pub ready_again_after: Option<Duration>,
    /// How the gateway exited, if it did before the end.
    pub gateway_exited: Option<String>,
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// The pass rules (`docs/reliability.md`, "Overload soak"): every request
/// admitted or refused, nothing else; admitted p99 within
/// [`ADMITTED_P99_LIMIT`] × unloaded p99; refused p99 within
/// [`REFUSED_P99_SHARE`] × unloaded p50; the load did overload
/// ([`MIN_REFUSED_SHARE`]) and the gateway kept serving
/// ([`MIN_GOODPUT_SHARE`]); RSS flat ([`RSS_LIMIT`]); the admin listener
/// answered every call, `/readyz` went 503 while shedding and 200 again
/// after it; the gateway still running.
pub fn verdict(evidence: &Evidence) -> Verdict {
    let mut failures = Vec::new();
    let planned = evidence.planned;
    if evidence.counted != planned {
        failures.push(format!(
            "{} of {planned} planned requests were sent and counted",
            evidence.counted
        ));
    }
    for (kind, (count, first)) in &evidence.failures {
        failures.push(format!(
            "{count} requests neither admitted nor refused ({kind}); the first: {first}"
        ));
    }
    let admitted_limit = evidence.unloaded_p99.mul_f64(ADMITTED_P99_LIMIT);
    if evidence.admitted_p99 > admitted_limit {
        failures.push(format!(
            "admitted p99 {} is over {ADMITTED_P99_LIMIT}× the unloaded p99 ({})",
            ms(evidence.admitted_p99),
            ms(admitted_limit)
        ));
    }
    let refused_limit = evidence.unloaded_p50.mul_f64(REFUSED_P99_SHARE);
    if evidence.refused_p99 > refused_limit {
        failures.push(format!(
            "refused p99 {} is over {REFUSED_P99_SHARE}× the unloaded p50 ({})",
            ms(evidence.refused_p99),
            ms(refused_limit)
        ));
    }
    if (evidence.refused as f64) < MIN_REFUSED_SHARE * planned as f64 {
        failures.push(format!(
            "only {} of {planned} requests were refused (under {:.0} %): the gateway was not overloaded",
            evidence.refused,
            MIN_REFUSED_SHARE * 100.0
        ));
    }
    let goodput = evidence.admitted as f64 / evidence.duration.as_secs_f64().max(1e-9);
    if goodput < MIN_GOODPUT_SHARE * evidence.sustainable_rate {
        failures.push(format!(
            "{goodput:.0} requests a second admitted, under {MIN_GOODPUT_SHARE}× the sustainable {} req/s",
            evidence.sustainable_rate
        ));
    }
    match (evidence.rss_first_half, evidence.rss_second_half) {
        (Some(first), Some(second)) if second as f64 > RSS_LIMIT * first as f64 => failures.push(format!(
            "RSS grew: peak {second} KiB in the second half after warm-up, over {RSS_LIMIT}× the \
             {first} KiB of the first half"
        )),
        (Some(_), Some(_)) => {}
        _ => failures.push("the gateway's RSS was not read in both halves after warm-up".to_owned()),
    }
    if evidence.admin_failed > 0 {
        failures.push(format!(
            "{} calls to /healthz or /readyz got no HTTP answer; the first: {}",
            evidence.admin_failed,
            evidence.first_admin_failure.as_deref().unwrap_or("?")
        ));
    }
    if evidence.healthz_not_ok > 0 {
        failures.push(format!(
            "/healthz answered other than 200 {} times",
            evidence.healthz_not_ok
        ));
    }
    if evidence.not_ready == 0 {
        failures.push("/readyz never went 503 although the gateway shed load the whole soak".to_owned());
    }
    if evidence.ready_again_after.is_none() {
        failures.push(format!(
            "/readyz did not answer 200 within {READY_AGAIN_LIMIT:?} after the load"
        ));
    }
    if let Some(exit) = &evidence.gateway_exited {
        failures.push(format!("the gateway exited: {exit}"));
    }
    Verdict { failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 60 s soak at 1,200 req/s against 600 sustainable, 50 ms unloaded:
    /// passes.
    fn passing() -> Evidence {
        Evidence {
            planned: 72_000,
            counted: 72_000,
            duration: Duration::from_secs(60),
            unloaded_p50: Duration::from_millis(50),
            unloaded_p99: Duration::from_millis(52),
            sustainable_rate: 600.0,
            admitted: 37_000,
            admitted_p99: Duration::from_millis(60),
            refused: 35_000,
            refused_p99: Duration::from_micros(800),
            failures: BTreeMap::new(),
            rss_first_half: Some(12_000),
            rss_second_half: Some(12_100),
            admin_failed: 0,
            first_admin_failure: None,
            healthz_not_ok: 0,
            not_ready: 50,
            ready_again_after: Some(Duration::from_millis(300)),
            gateway_exited: None,
        }
    }

    #[test]
    fn passes_when_every_request_is_admitted_in_time_or_refused_fast_and_rss_is_flat() {
        assert_eq!(verdict(&passing()).failures, Vec::<String>::new());
    }

    #[test]
    fn fails_when_admitted_p99_is_over_twice_the_unloaded_p99() {
        let evidence = Evidence {
            admitted_p99: Duration::from_millis(105),
            ..passing()
        };

        let verdict = verdict(&evidence);

        assert_eq!(verdict.failures.len(), 1, "{verdict:?}");
        assert!(verdict.failures[0].starts_with("admitted p99 105.00 ms"));
    }

    #[test]
    fn fails_when_refusals_wait_a_fifth_of_the_unloaded_p50_or_more() {
        let evidence = Evidence {
            refused_p99: Duration::from_millis(11),
            ..passing()
        };

        let failures = verdict(&evidence).failures;

        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("10.00 ms"), "{failures:?}");
    }

    #[test]
    fn fails_on_any_answer_other_than_admitted_or_refused_naming_its_kind() {
        let mut evidence = passing();
        evidence.refused -= 3;
        evidence
            .failures
            .insert("connection broken", (3, "connection reset by peer".into()));

        let failures = verdict(&evidence).failures;

        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("3 requests") && failures[0].contains("reset"));
    }

    #[test]
    fn fails_when_rss_grows_by_more_than_a_fifth_or_was_not_read() {
        let grew = Evidence {
            rss_second_half: Some(14_401),
            ..passing()
        };
        let unread = Evidence {
            rss_first_half: None,
            ..passing()
        };

        assert!(verdict(&grew).failures[0].starts_with("RSS grew"));
        assert!(verdict(&unread).failures[0].contains("not read"));
    }

    #[test]
    fn fails_when_the_load_did_not_overload_or_the_gateway_collapsed_under_it() {
        let not_overloaded = Evidence {
            admitted: 72_000,
            refused: 0,
            not_ready: 0,
            ..passing()
        };
        let collapsed = Evidence {
            admitted: 6_000,
            refused: 66_000,
            ..passing()
        };

        let failures = verdict(&not_overloaded).failures;
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("not overloaded") && failures[1].contains("never went 503"));
        let failures = verdict(&collapsed).failures;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("100 requests a second admitted"));
    }

    #[test]
    fn fails_when_the_admin_listener_stops_answering_or_stays_not_ready() {
        let evidence = Evidence {
            admin_failed: 2,
            first_admin_failure: Some("no answer within 1s".into()),
            ready_again_after: None,
            gateway_exited: Some("signal: 9 (SIGKILL)".into()),
            counted: 71_990,
            ..passing()
        };

        let failures = verdict(&evidence).failures;

        assert_eq!(failures.len(), 4, "{failures:?}");
        assert!(failures[0].starts_with("71990 of 72000"));
        assert!(failures[1].contains("no answer within 1s"));
        assert!(failures[2].contains("did not answer 200"));
        assert!(failures[3].contains("SIGKILL"));
    }
}
