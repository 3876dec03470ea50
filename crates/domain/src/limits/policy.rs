//! A gateway key's policy: which models it may call, how many requests and
//! tokens a minute, how many at once, and how much it may spend a period.

use std::collections::BTreeMap;
use std::fmt;

use time::{Duration as TimeDuration, OffsetDateTime, Time};

/// What one gateway key may do. A key without a policy file entry (a line of
/// the plain keys file, `GATEWAYZ_API_KEYS`) has a policy with no limit.
#[derive(Clone, PartialEq)]
pub struct KeyPolicy {
    /// The key's name in logs, metrics and the admin API; unique. Never the
    /// key, never its digest.
    pub id: String,
    /// The models it may call (`*` and `?` globs, matched against the model
    /// as the client sent it); `None` is every model.
    pub models: Option<Vec<ModelPattern>>,
    /// Requests a minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) a minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_parallel: Option<u64>,
    /// Spend allowed per period.
    pub budget: Option<SpendLimit>,
    /// Unix time (seconds) from which the key is refused.
    pub expires_at: Option<i64>,
    /// Copied to the access log.
    pub labels: BTreeMap<String, String>,
    /// How long its answers are cached (`cache_ttl_s`): over the catalog
    /// model's time to live when set, and zero turns the cache off for it.
    pub cache_ttl: Option<std::time::Duration>,
}

impl fmt::Debug for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPolicy")
            .field("id", &self.id)
            .field("models", &self.models)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("max_parallel", &self.max_parallel)
            .field("budget", &self.budget)
            .field("expires_at", &self.expires_at)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl KeyPolicy {
    /// A policy that allows everything: for keys listed without one.
    pub fn unlimited(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            models: None,
            rpm: None,
            tpm: None,
            max_parallel: None,
            budget: None,
            expires_at: None,
            labels: BTreeMap::new(),
            cache_ttl: None,
        }
    }

    /// Whether any limit needs the limits store (requests, tokens, parallel,
    /// budget).
    pub fn has_limits(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_parallel.is_some() || self.budget.is_some()
    }

    /// Whether `model` (as the client sent it) is on the allow list.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(model)))
    }

    /// Whether the key has expired at `now` (Unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|expires| now >= expires)
    }
}

/// A model name or a glob (`demo-*`, `@openai/*`).
#[derive(Clone)]
pub struct ModelPattern {
    text: String,
    glob: wildmatch::WildMatch,
}

impl ModelPattern {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            glob: wildmatch::WildMatch::new(&text),
            text,
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        self.glob.matches(model)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for ModelPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// A spend limit: `usd` per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendLimit {
    pub usd: f64,
    pub period: BudgetPeriod,
}

impl SpendLimit {
    /// The limit in millionths of a dollar, as the stores count it.
    pub fn micros(&self) -> u64 {
        usd_to_micros(self.usd)
    }
}

/// Dollars as whole millionths, rounded up (a charge is never rounded away).
pub fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).ceil() as u64
    } else {
        0
    }
}

/// The UTC calendar period a budget is spent over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Hour,
    Day,
    /// Monday 00:00 to Monday 00:00.
    Week,
    Month,
    /// Never resets.
    Total,
}

/// One period: from `start` (Unix seconds) to `end` (`None` for `total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodWindow {
    pub start: i64,
    pub end: Option<i64>,
}

impl BudgetPeriod {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// The period `hour`, `day`, `week`, `month` or `total`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "total" => Self::Total,
            _ => return None,
        })
    }

    /// The period that holds `now` (Unix seconds).
    pub fn window(self, now: i64) -> PeriodWindow {
        let Ok(at) = OffsetDateTime::from_unix_timestamp(now) else {
            return PeriodWindow { start: 0, end: None };
        };
        let midnight = at.replace_time(Time::MIDNIGHT);
        let (start, end) = match self {
            Self::Total => return PeriodWindow { start: 0, end: None },
            Self::Hour => {
                let start = at.replace_time(Time::from_hms(at.hour(), 0, 0).unwrap_or(Time::MIDNIGHT));
                (start, start + TimeDuration::HOUR)
            }
            Self::Day => (midnight, midnight + TimeDuration::DAY),
            Self::Week => {
                let start = midnight - TimeDuration::days(i64::from(at.weekday().number_days_from_monday()));
                (start, start + TimeDuration::WEEK)
            }
            Self::Month => {
                let start = midnight.replace_day(1).unwrap_or(midnight);
                let end = match start.month() {
                    time::Month::December => start
                        .replace_year(start.year() + 1)
                        .and_then(|next| next.replace_month(time::Month::January)),
                    month => start.replace_month(month.next()),
                }
                .unwrap_or(start + TimeDuration::days(31));
                (start, end)
            }
        };
        PeriodWindow {
            start: start.unix_timestamp(),
            end: Some(end.unix_timestamp()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> i64 {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn periods_are_utc_calendar_periods() {
        let now = unix("2026-12-31T17:45:10Z"); // a Thursday
        let window = |period: BudgetPeriod| period.window(now);
        assert_eq!(
            window(BudgetPeriod::Hour),
            PeriodWindow {
                start: unix("2026-12-31T17:00:00Z"),
                end: Some(unix("2026-12-31T18:00:00Z"))
            }
        );
        assert_eq!(
            window(BudgetPeriod::Day),
            PeriodWindow {
                start: unix("2026-12-31T00:00:00Z"),
                end: Some(unix("2027-01-01T00:00:00Z"))
            }
        );
        assert_eq!(
            window(BudgetPeriod::Week),
            PeriodWindow {
                start: unix("2026-12-28T00:00:00Z"),
                end: Some(unix("2027-01-04T00:00:00Z"))
            }
        );
        assert_eq!(
            window(BudgetPeriod::Month),
            PeriodWindow {
                start: unix("2026-12-01T00:00:00Z"),
                end: Some(unix("2027-01-01T00:00:00Z"))
            }
        );
        assert_eq!(
            BudgetPeriod::Month.window(unix("2027-02-14T00:00:00Z")).end,
            Some(unix("2027-03-01T00:00:00Z"))
        );
        assert_eq!(window(BudgetPeriod::Total), PeriodWindow { start: 0, end: None });
    }

    #[test]
    fn the_allow_list_matches_globs_on_the_model_as_sent() {
        let mut policy = KeyPolicy::unlimited("team-a");
        assert!(policy.allows_model("anything"));
        policy.models = Some(
            ["gpt-4o-mini", "demo-*", "@openai/*"]
                .into_iter()
                .map(ModelPattern::new)
                .collect(),
        );
        for allowed in ["gpt-4o-mini", "demo-1", "demo-", "@openai/gpt-4o"] {
            assert!(policy.allows_model(allowed), "{allowed}");
        }
        for refused in ["gpt-4o", "gpt-4o-mini-2024", "@anthropic/claude", "xdemo-1"] {
            assert!(!policy.allows_model(refused), "{refused}");
        }
    }

    #[test]
    fn dollars_are_counted_in_millionths_rounded_up() {
        assert_eq!(usd_to_micros(0.01), 10_000);
        assert_eq!(usd_to_micros(0.000_000_1), 1);
        assert_eq!(usd_to_micros(-1.0), 0);
        assert_eq!(usd_to_micros(f64::NAN), 0);
    }

    #[test]
    fn a_key_expires_at_its_instant() {
        let mut policy = KeyPolicy::unlimited("k");
        assert!(!policy.expired(i64::MAX));
        policy.expires_at = Some(100);
        assert!(!policy.expired(99));
        assert!(policy.expired(100));
    }
}
