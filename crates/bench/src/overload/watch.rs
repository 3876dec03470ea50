//! What the soak watches once a second besides its own requests: the
//! gateway's RSS, its admin listener's `/healthz` and `/readyz`, and the
//! overload figures of its `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::procs::{get, rss_kib};

/// How long an admin call may take before it counts as failed: the
/// listener is polled once a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What one admin call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Status(u16),
    /// The HTTP call itself failed (connection, timeout): why.
    Failed(String),
}

impl Probe {
    pub fn is(&self, status: u16) -> bool {
        *self == Self::Status(status)
    }
}

/// The overload series of `/metrics`, when they were there.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub refused_in_flight: Option<f64>,
    pub refused_memory: Option<f64>,
    pub in_flight: Option<f64>,
    pub budget_in_use: Option<f64>,
    /// The memory budget and the in-flight limit the gateway runs with.
    pub budget: Option<f64>,
    pub in_flight_limit: Option<f64>,
}

impl Gauges {
    /// Reads the series from a Prometheus text page. A reason with no
    /// refusal yet has no line of its own: 0 when the counter is on the
    /// page at all.
    pub fn parse(page: &str) -> Self {
        let refusals = |reason: &str| {
            let series = format!(r#"gatewayz_overload_refusals_total{{reason="{reason}"}}"#);
            metric(page, &series).or_else(|| page.contains("gatewayz_overload_refusals_total").then_some(0.0))
        };
        Self {
            refused_in_flight: refusals("in_flight"),
            refused_memory: refusals("memory"),
            in_flight: metric(page, "gatewayz_in_flight_requests"),
            budget_in_use: metric(page, "gatewayz_memory_budget_in_use_bytes"),
            budget: metric(page, "gatewayz_memory_budget_bytes"),
            in_flight_limit: metric(page, "gatewayz_in_flight_limit"),
        }
    }
}

/// The value of the one series named exactly `series` (labels included, as
/// the page writes them) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.trim().rsplit_once(' ')?;
            (name.trim_end() == series).then(|| value.parse().ok()).flatten()
        })
}

/// One second's look at the gateway.
#[derive(Debug, Clone)]
pub struct Look {
    /// From the start of the soak's load.
    pub at: Duration,
    pub rss_kib: Option<u64>,
    pub healthz: Probe,
    pub readyz: Probe,
    pub gauges: Gauges,
}

async fn probe(admin: SocketAddr, path: &str) -> (Probe, String) {
    match timeout(PROBE_TIMEOUT, get(admin, path)).await {
        Ok(Ok((status, body))) => (
            Probe::Status(status.as_u16()),
            String::from_utf8_lossy(&body).into_owned(),
        ),
        Ok(Err(error)) => (Probe::Failed(format!("{error:#}")), String::new()),
        Err(_) => (
            Probe::Failed(format!("no answer within {PROBE_TIMEOUT:?}")),
            String::new(),
        ),
    }
}

/// The gateway's overload series now; all `None` when `/metrics` does not
/// answer.
pub async fn gauges(admin: SocketAddr) -> Gauges {
    match probe(admin, "/metrics").await {
        (Probe::Status(200), page) => Gauges::parse(&page),
        _ => Gauges::default(),
    }
}

/// Looks at the gateway `at` after `start`, once a second up to
/// `duration`, printing a line every `print_every`.
pub async fn watch(
    pid: u32,
    admin: SocketAddr,
    start: Instant,
    duration: Duration,
    print_every: Duration,
) -> Vec<Look> {
    let mut looks = Vec::with_capacity(duration.as_secs() as usize);
    let seconds = (1..).map(Duration::from_secs).take_while(|at| *at <= duration);
    for at in seconds {
        sleep_until(start + at).await;
        let rss_kib = rss_kib(pid).ok();
        // One after the other: each is a loopback call of well under a
        // millisecond, unless the listener stalls, which is what is timed.
        let (healthz, _) = probe(admin, "/healthz").await;
        let (readyz, _) = probe(admin, "/readyz").await;
        let metrics = probe(admin, "/metrics").await;
        let gauges = match metrics {
            (Probe::Status(200), page) => Gauges::parse(&page),
            _ => Gauges::default(),
        };
        let look = Look {
            at,
            rss_kib,
            healthz,
            readyz,
            gauges,
        };
        if at.as_secs() % print_every.as_secs().max(1) == 0 {
            print(&look, duration);
        }
        looks.push(look);
    }
    looks
}

fn print(look: &Look, duration: Duration) {
    let show = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |value| format!("{value:.0}"));
    let probe = |probe: &Probe| match probe {
        Probe::Status(status) => status.to_string(),
        Probe::Failed(why) => format!("failed ({why})"),
    };
    eprintln!(
        "gatewayz-bench: overload {:>4}/{} s: RSS {}, in flight {}, refused so far {} (memory {}); \
         /readyz {}, /healthz {}",
        look.at.as_secs(),
        duration.as_secs(),
        look.rss_kib.map_or_else(|| "?".to_owned(), crate::table::fmt_mib),
        show(look.gauges.in_flight),
        show(look.gauges.refused_in_flight),
        show(look.gauges.refused_memory),
        probe(&look.readyz),
        probe(&look.healthz),
    );
}

/// How long after now `/readyz` answers 200 again, polled every 100 ms for
/// at most `limit`; `None` if it did not.
pub async fn ready_again(admin: SocketAddr, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() <= limit {
        if probe(admin, "/readyz").await.0.is(200) {
            return Some(began.elapsed());
        }
        sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The admin listener over the load, from its looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admin {
    /// Looks taken (each calls `/healthz` and `/readyz` once).
    pub looks: u64,
    /// Calls whose HTTP call itself failed, and the first failure.
    pub failed: u64,
    pub first_failure: Option<String>,
    /// `/healthz` answers other than 200.
    pub healthz_not_ok: u64,
    /// `/readyz` answers other than 200, and the first and last second one
    /// was seen.
    pub not_ready: u64,
    pub first_not_ready: Option<Duration>,
    pub last_not_ready: Option<Duration>,
}

impl Admin {
    pub fn of(looks: &[Look]) -> Self {
        let mut admin = Self {
            looks: looks.len() as u64,
            ..Self::default()
        };
        for look in looks {
            for (path, probe) in [("/healthz", &look.healthz), ("/readyz", &look.readyz)] {
                if let Probe::Failed(why) = probe {
                    admin.failed += 1;
                    admin
                        .first_failure
                        .get_or_insert_with(|| format!("{path} at {} s: {why}", look.at.as_secs()));
                }
            }
            if let Probe::Status(status) = look.healthz {
                admin.healthz_not_ok += u64::from(status != 200);
            }
            if let Probe::Status(status) = look.readyz
                && status != 200
            {
                admin.not_ready += 1;
                admin.first_not_ready.get_or_insert(look.at);
                admin.last_not_ready = Some(look.at);
            }
        }
        admin
    }
}

/// The RSS peaks of the two halves of the load after `warmup`, KiB: from
/// `warmup` to the middle of what is left, and from there to the end.
pub fn rss_halves(looks: &[Look], warmup: Duration, duration: Duration) -> (Option<u64>, Option<u64>) {
    let middle = warmup + duration.saturating_sub(warmup) / 2;
    let peak = |from: Duration, to: Duration| {
        looks
            .iter()
            .filter(|look| look.at >= from && look.at < to)
            .filter_map(|look| look.rss_kib)
            .max()
    };
    (
        peak(warmup, middle),
        peak(middle, duration + Duration::from_nanos(1)),
    )
}

/// The highest value a gauge took over the looks.
pub fn gauge_peak(looks: &[Look], gauge: impl Fn(&Gauges) -> Option<f64>) -> Option<f64> {
    looks
        .iter()
        .filter_map(|look| gauge(&look.gauges))
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(at: u64, rss_kib: u64, readyz: Probe) -> Look {
        Look {
            at: Duration::from_secs(at),
            rss_kib: Some(rss_kib),
            healthz: Probe::Status(200),
            readyz,
            gauges: Gauges::default(),
        }
    }

    #[test]
    fn the_admin_summary_counts_failed_calls_apart_from_not_ready_answers() {
        let looks = [
            look(1, 0, Probe::Status(200)),
            look(2, 0, Probe::Status(503)),
            look(3, 0, Probe::Failed("no answer within 1s".into())),
            look(4, 0, Probe::Status(503)),
            look(5, 0, Probe::Status(200)),
        ];

        let admin = Admin::of(&looks);

        assert_eq!(admin.looks, 5);
        assert_eq!(admin.failed, 1);
        assert_eq!(
            admin.first_failure.as_deref(),
            Some("/readyz at 3 s: no answer within 1s")
        );
        assert_eq!(admin.not_ready, 2);
        assert_eq!(admin.first_not_ready, Some(Duration::from_secs(2)));
        assert_eq!(admin.last_not_ready, Some(Duration::from_secs(4)));
        assert_eq!(admin.healthz_not_ok, 0);
    }

    #[test]
    fn rss_halves_split_what_follows_warm_up_and_take_each_peak() {
        let looks: Vec<Look> = (1..=12)
            .map(|at| look(at, 100 + at, Probe::Status(200)))
            .collect();

        let halves = rss_halves(&looks, Duration::from_secs(4), Duration::from_secs(12));

        assert_eq!(halves, (Some(107), Some(112)));
    }

    const PAGE: &str = "\
# HELP gatewayz_overload_refusals_total Requests refused to stay within the gateway's limits
# TYPE gatewayz_overload_refusals_total counter
gatewayz_overload_refusals_total{reason=\"in_flight\"} 1234
gatewayz_overload_refusals_total{reason=\"memory\"} 0
# TYPE gatewayz_in_flight_requests gauge
gatewayz_in_flight_requests 32
gatewayz_in_flight_requests_other 7
gatewayz_memory_budget_in_use_bytes 65536
gatewayz_memory_budget_bytes 536870912
gatewayz_in_flight_limit 32
";

    #[test]
    fn reads_each_overload_series_by_its_exact_name_and_labels() {
        assert_eq!(
            Gauges::parse(PAGE),
            Gauges {
                refused_in_flight: Some(1234.0),
                refused_memory: Some(0.0),
                in_flight: Some(32.0),
                budget_in_use: Some(65536.0),
                budget: Some(536_870_912.0),
                in_flight_limit: Some(32.0),
            }
        );
    }

    #[test]
    fn a_reason_without_a_line_reads_as_no_refusal_when_the_counter_is_there() {
        let page = "# TYPE gatewayz_overload_refusals_total counter\n\
                    gatewayz_overload_refusals_total{reason=\"in_flight\"} 5\n";

        let gauges = Gauges::parse(page);

        assert_eq!(gauges.refused_in_flight, Some(5.0));
        assert_eq!(gauges.refused_memory, Some(0.0));
    }

    #[test]
    fn a_series_missing_from_the_page_reads_as_none() {
        assert_eq!(metric(PAGE, "gatewayz_requests_total"), None);
        assert_eq!(Gauges::parse(""), Gauges::default());
    }
}
