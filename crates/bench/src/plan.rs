//! How long and how hard each phase runs.

use std::time::Duration;

use serde_json::{Value, json};

/// The phases' sizes. [`Plan::full`] is the benchmark; [`Plan::quick`] is a
/// smoke test of the driver itself, whose numbers mean little.
#[derive(Debug, Clone)]
pub struct Plan {
    pub closed_connections: usize,
    pub closed_warmup: Duration,
    pub closed_window: Duration,
    pub c1_warmup: usize,
    pub c1_rounds: usize,
    pub c1_per_round: usize,
    pub open_rates: Vec<f64>,
    pub open_warmup: Duration,
    pub open_step: Duration,
    /// A side's ladder stops after the first step whose p99 is above this
    /// or that had an error.
    pub open_p99_limit: Duration,
    pub stream_chunks: usize,
    pub stream_gap: Duration,
    pub stream_slots: usize,
    pub stream_rounds: usize,
    pub stream_spread: Duration,
    pub ladder: Vec<usize>,
    pub ladder_spread: Duration,
    pub stall: Duration,
    pub settle: Duration,
    /// Key limits: rounds at concurrency 1, each side in turn, and calls
    /// per side a round.
    pub limits_c1_rounds: usize,
    pub limits_c1_per_round: usize,
    /// Key limits: closed-loop windows per side, the sides in turn.
    pub limits_closed_repeats: usize,
    pub limits_closed_warmup: Duration,
    pub limits_closed_window: Duration,
    /// Cache hits: calls of each side before measuring; rounds at
    /// concurrency 1, the sides in turn; calls a round to the upstream and
    /// of hits, and of misses; and the time after which no round starts.
    pub cache_warmup: usize,
    pub cache_rounds: usize,
    pub cache_per_round: usize,
    pub cache_misses_per_round: usize,
    pub cache_time_limit: Duration,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            closed_connections: 64,
            closed_warmup: Duration::from_secs(2),
            closed_window: Duration::from_secs(8),
            c1_warmup: 2_000,
            c1_rounds: 20,
            c1_per_round: 1_500,
            open_rates: vec![
                1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 7_500.0, 10_000.0, 15_000.0, 20_000.0, 30_000.0,
                40_000.0,
            ],
            open_warmup: Duration::from_secs(1),
            open_step: Duration::from_secs(4),
            open_p99_limit: Duration::from_millis(5),
            stream_chunks: 64,
            stream_gap: Duration::from_millis(20),
            stream_slots: 32,
            stream_rounds: 10,
            // One start every 20 ms: TTFT is measured under light load, not
            // under a burst of starts the driver itself made.
            stream_spread: Duration::from_millis(640),
            ladder: vec![250, 500, 1_000, 1_500, 2_000],
            ladder_spread: Duration::from_millis(500),
            stall: Duration::from_millis(200),
            settle: Duration::from_secs(3),
            limits_c1_rounds: 12,
            limits_c1_per_round: 1_000,
            // Six: each of the three sides goes first twice.
            limits_closed_repeats: 6,
            limits_closed_warmup: Duration::from_secs(1),
            limits_closed_window: Duration::from_millis(2_500),
            cache_warmup: 1_000,
            cache_rounds: 30,
            cache_per_round: 2_000,
            cache_misses_per_round: 500,
            cache_time_limit: Duration::from_secs(40),
        }
    }

    pub fn quick() -> Self {
        Self {
            closed_warmup: Duration::from_millis(300),
            closed_window: Duration::from_secs(1),
            c1_warmup: 200,
            c1_rounds: 4,
            c1_per_round: 200,
            open_rates: vec![1_000.0, 5_000.0],
            open_warmup: Duration::from_millis(300),
            open_step: Duration::from_secs(1),
            stream_slots: 8,
            stream_rounds: 2,
            ladder: vec![100, 250],
            settle: Duration::from_secs(1),
            limits_c1_rounds: 3,
            limits_c1_per_round: 200,
            limits_closed_repeats: 2,
            limits_closed_warmup: Duration::from_millis(300),
            limits_closed_window: Duration::from_secs(1),
            cache_warmup: 200,
            cache_rounds: 3,
            cache_per_round: 200,
            cache_misses_per_round: 50,
            cache_time_limit: Duration::from_secs(10),
            ..Self::full()
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "closed_loop": {
                "connections": self.closed_connections,
                "warmup_s": self.closed_warmup.as_secs_f64(),
                "window_s": self.closed_window.as_secs_f64(),
            },
            "latency_c1": {
                "warmup_requests": self.c1_warmup,
                "rounds": self.c1_rounds,
                "requests_per_round_per_side": self.c1_per_round,
            },
            "open_loop": {
                "rates": self.open_rates,
                "warmup_s": self.open_warmup.as_secs_f64(),
                "step_s": self.open_step.as_secs_f64(),
                "stop_when_p99_over_ms": self.open_p99_limit.as_secs_f64() * 1e3,
            },
            "streaming": {
                "chunks": self.stream_chunks,
                "gap_ms": self.stream_gap.as_secs_f64() * 1e3,
                "slots": self.stream_slots,
                "rounds": self.stream_rounds,
                "start_spread_ms": self.stream_spread.as_secs_f64() * 1e3,
                "ladder": self.ladder,
                "ladder_start_spread_ms": self.ladder_spread.as_secs_f64() * 1e3,
                "stall_ms": self.stall.as_secs_f64() * 1e3,
            },
            "settle_s": self.settle.as_secs_f64(),
            "key_limits": {
                "latency_c1_rounds": self.limits_c1_rounds,
                "latency_c1_requests_per_round_per_side": self.limits_c1_per_round,
                "closed_loop_windows_per_side": self.limits_closed_repeats,
                "closed_loop_warmup_s": self.limits_closed_warmup.as_secs_f64(),
                "closed_loop_window_s": self.limits_closed_window.as_secs_f64(),
            },
            "cache": {
                "warmup_requests_per_side": self.cache_warmup,
                "latency_c1_rounds": self.cache_rounds,
                "latency_c1_requests_per_round": {
                    "direct": self.cache_per_round,
                    "hit": self.cache_per_round,
                    "miss": self.cache_misses_per_round,
                },
                "no_round_starts_after_s": self.cache_time_limit.as_secs_f64(),
            },
        })
    }
}
