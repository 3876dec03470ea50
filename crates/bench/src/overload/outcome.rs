//! What one request of the overload soak got, and the tally of them per
//! window of the soak.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::stats::{Hist, hist, record};

/// The only two answers a request may get under overload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 and a `chat.completion`.
    Admitted,
    /// 503, `Retry-After` a whole number of seconds, and an OpenAI error body
    /// whose `error.code` is `overloaded`.
    Refused,
    /// Any other answer: what it was.
    Other(String),
    /// No connection could be opened (refused, no port left, …).
    NotConnected(String),
    /// The request went out on a connection that closed or reset before its
    /// whole answer came.
    Broken(String),
    /// No whole answer within the request's deadline.
    NoAnswer,
}

/// Which [`Outcome`] an answer is: its status, its `Retry-After` header if
/// any, its whole body.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let start = || String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    match status {
        200 if value["object"] == "chat.completion" => Outcome::Admitted,
        200 => Outcome::Other(format!("200 with `{}`", start())),
        503 if value["error"]["code"] != "overloaded" => Outcome::Other(format!("503 with `{}`", start())),
        503 => match retry_after.map(|seconds| seconds.trim().parse::<u64>()) {
            Some(Ok(seconds)) if seconds >= 1 => Outcome::Refused,
            Some(_) => Outcome::Other(format!(
                "503 overloaded with `Retry-After: {}`, not a whole number of seconds",
                retry_after.unwrap_or_default()
            )),
            None => Outcome::Other("503 overloaded without `Retry-After`".to_owned()),
        },
        other => Outcome::Other(format!("{other} with `{}`", start())),
    }
}

/// The requests of one window of the soak (by intended send time).
#[derive(Debug, Clone)]
pub struct Window {
    /// From each intended send time to the last byte of its answer.
    pub admitted: Hist,
    pub refused: Hist,
    /// Requests with any other outcome.
    pub failed: u64,
}

/// Every outcome of the soak.
#[derive(Debug, Clone)]
pub struct Tally {
    pub window: Duration,
    pub windows: Vec<Window>,
    /// Requests by outcome other than admitted and refused: the kind
    /// ("other answer", "not connected", "broken", "no answer") and
    /// how many, with the first of each.
    pub failures: BTreeMap<&'static str, (u64, String)>,
    /// How long each request took to get a connection: a free one of the
    /// pool, or a new one (as after each refusal, whose connection the
    /// gateway closes).
    pub connecting: Hist,
}

impl Tally {
    /// An empty tally of `count` windows of `window` each.
    ///
    /// # Errors
    /// When a histogram cannot be made (never, with the fixed bounds).
    pub fn new(window: Duration, count: usize) -> anyhow::Result<Self> {
        let windows = (0..count.max(1))
            .map(|_| {
                Ok(Window {
                    admitted: hist()?,
                    refused: hist()?,
                    failed: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            window,
            windows,
            failures: BTreeMap::new(),
            connecting: hist()?,
        })
    }

    /// Counts one request, sent `offset` after the soak began, that took
    /// `latency` (counted for admitted and refused requests).
    pub fn add(&mut self, offset: Duration, latency: Duration, outcome: Outcome) {
        let index = (offset.as_nanos() / self.window.as_nanos().max(1)) as usize;
        let last = self.windows.len() - 1;
        let Some(window) = self.windows.get_mut(index.min(last)) else {
            return;
        };
        let (kind, why) = match outcome {
            Outcome::Admitted => return record(&mut window.admitted, latency),
            Outcome::Refused => return record(&mut window.refused, latency),
            Outcome::Other(why) => ("other answer", why),
            Outcome::NotConnected(why) => ("not connected", why),
            Outcome::Broken(why) => ("connection broken", why),
            Outcome::NoAnswer => ("no answer in time", String::new()),
        };
        window.failed += 1;
        let entry = self.failures.entry(kind).or_insert((0, why));
        entry.0 += 1;
    }

    /// Every admitted, and every refused request's latency, over the whole
    /// soak.
    ///
    /// # Errors
    /// Never in practice: the histograms share their bounds.
    pub fn totals(&self) -> anyhow::Result<(Hist, Hist)> {
        let (mut admitted, mut refused) = (hist()?, hist()?);
        for window in &self.windows {
            admitted.add(&window.admitted)?;
            refused.add(&window.refused)?;
        }
        Ok((admitted, refused))
    }

    /// Requests whose outcome is counted, whatever it was.
    pub fn counted(&self) -> u64 {
        self.windows
            .iter()
            .map(|window| window.admitted.len() + window.refused.len() + window.failed)
            .sum()
    }

    /// Requests neither admitted nor refused.
    pub fn failed(&self) -> u64 {
        self.windows.iter().map(|window| window.failed).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLOADED: &[u8] =
        br#"{"error":{"message":"The gateway is overloaded","type":"server_error","param":null,"code":"overloaded"}}"#;

    #[test]
    fn a_completion_is_admitted_and_an_overloaded_503_with_retry_after_is_refused() {
        let completion = br#"{"id":"x","object":"chat.completion","choices":[]}"#;

        assert_eq!(classify(200, None, completion), Outcome::Admitted);
        assert_eq!(classify(503, Some("1"), OVERLOADED), Outcome::Refused);
    }

    #[test]
    fn a_refusal_without_a_whole_retry_after_or_the_overloaded_code_is_another_answer() {
        let upstream_down = br#"{"error":{"message":"down","code":"upstream_unavailable"}}"#;
        let cases = [
            classify(503, None, OVERLOADED),
            classify(503, Some("soon"), OVERLOADED),
            classify(503, Some("0"), OVERLOADED),
            classify(503, Some("1"), upstream_down),
            classify(502, Some("1"), OVERLOADED),
            classify(200, None, b"not json"),
        ];

        for outcome in cases {
            assert!(matches!(outcome, Outcome::Other(_)), "{outcome:?}");
        }
    }

    #[test]
    fn the_tally_puts_each_request_in_the_window_of_its_send_time_and_keeps_the_first_failure() {
        let mut tally = Tally::new(Duration::from_secs(10), 2).unwrap();
        let ms = Duration::from_millis;

        tally.add(Duration::from_secs(1), ms(50), Outcome::Admitted);
        tally.add(Duration::from_secs(12), ms(1), Outcome::Refused);
        tally.add(Duration::from_secs(25), ms(1), Outcome::Refused);
        tally.add(Duration::from_secs(3), ms(0), Outcome::Broken("reset".into()));
        tally.add(Duration::from_secs(4), ms(0), Outcome::Broken("closed".into()));

        assert_eq!(tally.windows[0].admitted.len(), 1);
        assert_eq!(tally.windows[1].refused.len(), 2, "past the end: the last window");
        assert_eq!(tally.counted(), 5);
        assert_eq!(tally.failed(), 2);
        assert_eq!(tally.failures["connection broken"], (2, "reset".to_owned()));
        let (admitted, refused) = tally.totals().unwrap();
        assert_eq!((admitted.len(), refused.len()), (1, 2));
    }
}
