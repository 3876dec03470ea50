//! Streamed answers: time to first token and the gap between chunks over
//! interleaved rounds, and a ladder of concurrent streams.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::client::{Conn, StreamRecord, Target, connect};
use crate::stats::{Hist, hist, record};

/// A stream of 64 chunks 20 ms apart lasts 1.3 s; one still running after
/// this is broken.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// TTFT and chunk gaps of one side.
#[derive(Debug)]
pub struct Timing {
    pub streams: u64,
    pub incomplete: u64,
    pub first_problem: Option<String>,
    pub ttft: Hist,
    pub gap: Hist,
}

impl Timing {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            streams: 0,
            incomplete: 0,
            first_problem: None,
            ttft: hist()?,
            gap: hist()?,
        })
    }

    fn add(&mut self, record: &StreamRecord, chunks: usize) {
        self.streams += 1;
        if !record.complete(chunks) {
            self.incomplete += 1;
            self.first_problem.get_or_insert_with(|| describe(record, chunks));
        }
        if let Some(ttft) = record.ttft() {
            crate::stats::record(&mut self.ttft, ttft);
        }
        for gap in record.gaps() {
            crate::stats::record(&mut self.gap, gap);
        }
    }
}

fn describe(record: &StreamRecord, chunks: usize) -> String {
    format!(
        "{} of {chunks} content chunks, usage {}, [DONE] {}, {} error events",
        record.content.len(),
        record.usage,
        record.done,
        record.errors
    )
}

/// `rounds` rounds; in each, every `slots` keep-alive connection of each
/// side runs one stream, the starts spread over `spread`. The sides
/// alternate which goes first, so a drift of the machine hits both alike.
pub async fn interleaved(
    direct: &Arc<Target>,
    gateway: &Arc<Target>,
    slots: usize,
    rounds: usize,
    spread: Duration,
    chunks: usize,
) -> anyhow::Result<(Timing, Timing)> {
    let mut sides = Vec::new();
    for target in [direct, gateway] {
        let mut conns = Vec::with_capacity(slots);
        for _ in 0..slots {
            conns.push(connect(target.address).await?);
        }
        // One unmeasured round warms both the connections and the gateway's
        // upstream pool.
        let conns = round(target, conns, spread, &mut Timing::new()?, chunks).await?;
        sides.push((Arc::clone(target), conns, Timing::new()?));
    }
    for index in 0..rounds {
        let order: [usize; 2] = if index % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (target, conns, timing) = &mut sides[side];
            *conns = round(target, std::mem::take(conns), spread, timing, chunks).await?;
        }
    }
    let gateway = sides.pop().context("two sides")?.2;
    let direct = sides.pop().context("two sides")?.2;
    Ok((direct, gateway))
}

async fn round(
    target: &Arc<Target>,
    conns: Vec<Conn>,
    spread: Duration,
    timing: &mut Timing,
    chunks: usize,
) -> anyhow::Result<Vec<Conn>> {
    let start = Instant::now();
    let count = conns.len().max(1) as u32;
    let mut tasks = JoinSet::new();
    for (index, mut conn) in conns.into_iter().enumerate() {
        let target = Arc::clone(target);
        let at = start + spread * u32::try_from(index).unwrap_or(0) / count;
        tasks.spawn(async move {
            sleep_until(at).await;
            let record = timeout(STREAM_TIMEOUT, conn.stream(&target))
                .await
                .context("a stream did not end")??;
            anyhow::Ok((conn, record))
        });
    }
    let mut back = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (conn, record) = joined??;
        timing.add(&record, chunks);
        back.push(conn);
    }
    Ok(back)
}

/// One level of the concurrent-streams ladder.
#[derive(Debug)]
pub struct Level {
    pub streams: usize,
    pub complete: usize,
    pub failed: usize,
    pub first_problem: Option<String>,
    pub max_gap: Duration,
    pub gap: Hist,
    pub ttft: Hist,
    /// Every stream complete and no gap over the stall threshold.
    pub stall_free: bool,
}

/// Opens `streams` new connections, their starts spread over `spread`, each
/// running one stream; all of them overlap for most of a stream's life.
pub async fn level(
    target: &Arc<Target>,
    streams: usize,
    spread: Duration,
    chunks: usize,
    stall: Duration,
) -> anyhow::Result<Level> {
    let start = Instant::now() + Duration::from_millis(10);
    let mut tasks = JoinSet::new();
    for index in 0..streams {
        let target = Arc::clone(target);
        let at = start + spread.mul_f64(index as f64 / streams as f64);
        tasks.spawn(async move {
            sleep_until(at).await;
            let mut conn = connect(target.address).await?;
            timeout(STREAM_TIMEOUT, conn.stream(&target))
                .await
                .context("the stream did not end in time")?
        });
    }
    let mut level = Level {
        streams,
        complete: 0,
        failed: 0,
        first_problem: None,
        max_gap: Duration::ZERO,
        gap: hist()?,
        ttft: hist()?,
        stall_free: false,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(stream) => {
                if stream.complete(chunks) {
                    level.complete += 1;
                } else {
                    level.failed += 1;
                    level
                        .first_problem
                        .get_or_insert_with(|| describe(&stream, chunks));
                }
                if let Some(ttft) = stream.ttft() {
                    record(&mut level.ttft, ttft);
                }
                for gap in stream.gaps() {
                    level.max_gap = level.max_gap.max(gap);
                    record(&mut level.gap, gap);
                }
            }
            Err(error) => {
                level.failed += 1;
                level.first_problem.get_or_insert(format!("{error:#}"));
            }
        }
    }
    level.stall_free = level.failed == 0 && level.max_gap <= stall;
    Ok(level)
}
