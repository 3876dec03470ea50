//! The reliability soak (`--reliability-soak SECONDS`, issue #12): mixed
//! traffic at a fixed rate through the real gateway in front of an upstream
//! that fails on request, every answer judged, the gateway's RSS read every
//! 30 s; it passes or fails by [`verdict::verdict`]. `docs/reliability.md`
//! explains it.

mod mix;
mod report;
mod verdict;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use self::mix::{Body, CHUNK_GAP, CONTENT_CHUNKS, Kind, LEAVE_AFTER, Observed};
use self::verdict::{Evidence, RssSample, Tally, verdict};
use crate::Args;
use crate::client::{Target, connect};
use crate::load::{Pool, pace};
use crate::procs::{
    GatewaySetup, cpu_seconds_since, cpu_ticks_of, free_port, raise_fd_limit, rss_kib, start_gateway,
    start_upstream, wait_ready,
};
use crate::sse::{Event, Parser};
use crate::table::{fmt_count, fmt_mib};

pub use self::report::{render, run_line, write_between, write_into};
pub use self::verdict::Verdict;

/// The gateway key the driver configures and sends.
const KEY: &str = "gwz-bench-key";
const PATH: &str = "/v1/chat/completions";
/// The rate `just soak` runs at: about 2 % of the whole answers a second
/// the gateway sustained in the benchmark (2 CPUs shared with the driver
/// and the upstream, as here), so that the soak tests endurance, not
/// capacity.
pub const DEFAULT_RATE: f64 = 200.0;
/// Warm-up lasts a quarter of the run, at most this.
const MAX_WARMUP: Duration = Duration::from_secs(60);
/// RSS is read this often (more often when warm-up is shorter).
const RSS_EVERY: Duration = Duration::from_secs(30);
/// A request unanswered after this has no answer (a stream lasts ~0.3 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a whole body read, and of a stream's events kept.
const MAX_BODY: usize = 64 * 1024;
const MAX_EVENTS: usize = 256;
/// Connections opened before the load, and the most in use at once.
const WARM_CONNECTIONS: usize = 32;
const MAX_CONNECTIONS: usize = 256;
/// How long after the load the last, informational RSS reading is taken.
const SETTLE: Duration = Duration::from_secs(3);

/// What one soak saw, for the report.
#[derive(Debug)]
pub struct Soak {
    pub facts: Value,
    pub duration: Duration,
    pub rate: f64,
    pub warmup: Duration,
    pub planned: u64,
    pub tally: Tally,
    /// During the load, from the first interval to the end.
    pub samples: Vec<RssSample>,
    pub rss_idle_kib: Option<u64>,
    pub rss_settled_kib: Option<u64>,
    pub pacer_late_max: Duration,
    /// Connections opened because none was free, requests that waited for
    /// one, the most requests in flight at once.
    pub opened: u64,
    pub waited: u64,
    pub most_in_flight: usize,
    /// CPU seconds of the gateway, the upstream and the driver during the load.
    pub cpu_seconds: [f64; 3],
    pub verdict: Verdict,
}

/// When warm-up ends, for a run of `duration`.
pub fn warmup_of(duration: Duration) -> Duration {
    (duration / 4).min(MAX_WARMUP)
}

/// When RSS is read, from the start of the load: every [`RSS_EVERY`] (or
/// every warm-up, if shorter), at the end of warm-up and at the end.
fn sample_times(duration: Duration) -> Vec<Duration> {
    let warmup = warmup_of(duration);
    let every = RSS_EVERY.min(warmup).max(Duration::from_secs(1));
    let mut times: Vec<Duration> = (1..)
        .map(|k| every * k)
        .take_while(|at| *at < duration)
        .chain([warmup, duration])
        .collect();
    times.sort();
    times.dedup();
    times
}

/// Runs the soak and returns what it saw; the verdict is inside.
///
/// # Errors
/// When the processes cannot be started or the gateway does not answer a
/// first request: the soak did not run.
pub async fn run(args: &Args, duration: Duration, rate: f64) -> anyhow::Result<Soak> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
    anyhow::ensure!(duration >= Duration::from_secs(10), "a soak lasts at least 10 s");
    raise_fd_limit()?;
    let facts = crate::machine::facts();
    let chunks = CONTENT_CHUNKS.to_string();
    let gap = CHUNK_GAP.as_millis().to_string();
    let (upstream, upstream_address) = start_upstream(
        &args.upstream_bin,
        "upstream",
        &["--faults", "--chunks", &chunks, "--gap-ms", &gap],
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
    wait_ready(&mut gateway, admin, Duration::from_secs(30)).await?;
    let targets: Vec<Arc<Target>> = Kind::ALL
        .iter()
        .map(|kind| {
            Target::new(
                kind.name(),
                bind,
                PATH,
                KEY,
                Bytes::from_static(kind.body().as_bytes()),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let target = |kind: Kind| {
        let index = Kind::ALL.iter().position(|each| *each == kind).unwrap_or(0);
        Arc::clone(&targets[index])
    };
    let mut warm = Vec::with_capacity(WARM_CONNECTIONS);
    for _ in 0..WARM_CONNECTIONS {
        let mut conn = connect(bind).await?;
        conn.call(&target(Kind::Completion)).await?;
        warm.push(conn);
    }
    sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = rss_kib(gateway.pid()).ok();

    let warmup = warmup_of(duration);
    let planned = (rate * duration.as_secs_f64()).round() as u64;
    eprintln!(
        "gatewayz-bench: reliability soak: {} requests at {rate} req/s for {duration:?} (warm-up {warmup:?}); \
         gateway pid {}, upstream pid {}",
        fmt_count(planned as f64),
        gateway.pid(),
        upstream.pid()
    );
    let pids = [gateway.pid(), upstream.pid(), std::process::id()];
    let ticks_before = cpu_ticks_of(&pids);
    let pool = Arc::new(Pool::new(bind, warm, MAX_CONNECTIONS));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let sampler = tokio::spawn(sample_rss(gateway.pid(), start, duration, Arc::clone(&tally)));
    let (mut intended, pacer) = pace(start, Duration::from_secs_f64(1.0 / rate), planned);
    let mut index = 0_u64;
    while intended.recv().await.is_some() {
        let kind = Kind::of(index);
        index += 1;
        let (target, pool, tally, in_flight) = (
            target(kind),
            Arc::clone(&pool),
            Arc::clone(&tally),
            Arc::clone(&in_flight),
        );
        most_in_flight.fetch_max(in_flight.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        tokio::spawn(async move {
            let observed = match timeout(REQUEST_TIMEOUT, exchange(&target, &pool, kind)).await {
                Ok(observed) => observed,
                Err(_) => Observed {
                    status: None,
                    body: Body::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
                },
            };
            tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(kind, &observed);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let pacer_late_max = pacer.join().unwrap_or_default();
    // Each request ends within its timeout: wait for the last ones.
    let drain_limit = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(2);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_limit {
        sleep(Duration::from_millis(10)).await;
    }
    let samples = sampler.await?;
    let cpu_seconds = cpu_seconds_since(&pids, &ticks_before);
    sleep(SETTLE).await;
    let rss_settled_kib = rss_kib(gateway.pid()).ok();
    let gateway_exited = gateway.check_alive().err().map(|error| format!("{error:#}"));
    gateway.stop();
    upstream.stop();

    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let at = |when: Duration| {
        samples
            .iter()
            .find(|sample| sample.at == when)
            .map(|sample| sample.kib)
    };
    let verdict = verdict(&Evidence {
        planned,
        tally: &tally,
        rss_after_warmup: at(warmup),
        rss_end: at(duration),
        gateway_exited,
    });
    let (opened, waited) = pool.counts();
    Ok(Soak {
        facts,
        duration,
        rate,
        warmup,
        planned,
        tally,
        samples,
        rss_idle_kib,
        rss_settled_kib,
        pacer_late_max,
        opened,
        waited,
        most_in_flight: most_in_flight.load(Ordering::Relaxed),
        cpu_seconds,
        verdict,
    })
}

/// Reads the gateway's RSS at each of [`sample_times`], printing a line
/// each time.
async fn sample_rss(
    pid: u32,
    start: Instant,
    duration: Duration,
    tally: Arc<Mutex<Tally>>,
) -> Vec<RssSample> {
    let warmup = warmup_of(duration);
    let mut samples: Vec<RssSample> = Vec::new();
    for at in sample_times(duration) {
        sleep_until(start + at).await;
        let Ok(kib) = rss_kib(pid) else {
            eprintln!(
                "gatewayz-bench: soak {:>4} s: the gateway's RSS cannot be read",
                at.as_secs()
            );
            continue;
        };
        samples.push(RssSample { at, kib });
        let (judged, unexpected) = {
            let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            (tally.judged(), tally.unexpected())
        };
        let baseline = samples.iter().find(|sample| sample.at == warmup);
        let note = match baseline {
            Some(_) if at == warmup => " (warm-up over: the baseline)".to_owned(),
            Some(baseline) => format!(" (×{:.2} the baseline)", kib as f64 / baseline.kib as f64),
            None => " (warming up)".to_owned(),
        };
        eprintln!(
            "gatewayz-bench: soak {:>4}/{} s: gateway RSS {}{note}; {} answered, {} not as expected",
            at.as_secs(),
            duration.as_secs(),
            fmt_mib(kib),
            fmt_count(judged as f64),
            fmt_count(unexpected as f64),
        );
    }
    samples
}

/// Sends one request of `kind` on a pooled connection and reads its answer
/// as that kind is read: whole, as SSE events to the end, or, for a client
/// that leaves, until [`LEAVE_AFTER`] content events and then the socket is
/// closed.
async fn exchange(target: &Target, pool: &Pool, kind: Kind) -> Observed {
    let failed = |status: Option<u16>, why: String| Observed {
        status,
        body: Body::Failed(why),
    };
    let (_slot, mut conn) = match pool.take(true).await {
        Ok(taken) => taken,
        Err(error) => return failed(None, format!("{error:#}")),
    };
    let response = match conn.send(target).await {
        Ok(response) => response,
        Err(error) => return failed(None, format!("{error:#}")),
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if !(kind.is_stream() && status == 200) {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return failed(Some(status), format!("the body broke off: {error}")),
        };
        pool.give_back(conn);
        return Observed {
            status: Some(status),
            body: classify_whole_body(&bytes),
        };
    }
    let mut parser = Parser::default();
    let mut events = Vec::with_capacity(CONTENT_CHUNKS + 4);
    let mut content = 0;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(error) => return failed(Some(status), format!("the stream broke off: {error}")),
        };
        parser.feed(&data, |event| {
            content += usize::from(event == Event::Content);
            if events.len() < MAX_EVENTS {
                events.push(event);
            }
        });
        if kind == Kind::StreamLeft && content >= LEAVE_AFTER {
            drop(body);
            conn.abandon();
            return Observed {
                status: Some(status),
                body: Body::Left(events),
            };
        }
        if events.len() >= MAX_EVENTS {
            return failed(Some(status), format!("more than {MAX_EVENTS} events"));
        }
    }
    pool.give_back(conn);
    Observed {
        status: Some(status),
        body: Body::Events(events),
    }
}

/// What a whole body is.
fn classify_whole_body(bytes: &[u8]) -> Body {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if value["object"] == "chat.completion" && value["choices"].as_array().is_some_and(|all| !all.is_empty())
    {
        Body::Completion
    } else if value["error"]["message"].is_string() {
        Body::Error
    } else {
        Body::Unexpected(String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(all: &[u64]) -> Vec<Duration> {
        all.iter().map(|secs| Duration::from_secs(*secs)).collect()
    }

    #[test]
    fn ten_minutes_warm_up_for_a_minute_and_read_rss_every_half_minute() {
        let duration = Duration::from_secs(600);
        assert_eq!(warmup_of(duration), Duration::from_secs(60));
        let times = sample_times(duration);
        assert_eq!(times.len(), 20);
        assert_eq!(times[..3], seconds(&[30, 60, 90]));
        assert_eq!(times.last(), Some(&duration));
    }

    #[test]
    fn a_one_minute_smoke_run_warms_up_for_a_quarter_and_reads_rss_as_often() {
        let duration = Duration::from_secs(60);
        assert_eq!(warmup_of(duration), Duration::from_secs(15));
        assert_eq!(sample_times(duration), seconds(&[15, 30, 45, 60]));
    }

    #[test]
    fn the_end_of_warm_up_is_read_even_off_the_interval() {
        let times = sample_times(Duration::from_secs(200));
        assert!(times.contains(&Duration::from_secs(50)), "{times:?}");
        assert!(times.contains(&Duration::from_secs(30)), "{times:?}");
        assert_eq!(times.last(), Some(&Duration::from_secs(200)));
    }

    #[test]
    fn a_whole_body_is_a_completion_an_error_or_unexpected() {
        let completion = br#"{"object":"chat.completion","choices":[{"index":0}]}"#;
        let error = br#"{"error":{"message":"m","type":"server_error"}}"#;
        assert_eq!(classify_whole_body(completion), Body::Completion);
        assert_eq!(classify_whole_body(error), Body::Error);
        assert_eq!(classify_whole_body(b"<html>"), Body::Unexpected("<html>".into()));
        assert!(matches!(
            classify_whole_body(br#"{"object":"chat.completion","choices":[]}"#),
            Body::Unexpected(_)
        ));
    }
}
