//! The answer headers of a key's standing, as OpenAI writes them.

use std::time::Duration;

use super::store::Standing;

/// The headers of a key's standing, as OpenAI names them.
pub fn standing_headers(standing: &Standing) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    for (window, [limit, remaining, reset]) in [
        (
            standing.requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            standing.tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        if let Some(window) = window {
            headers.push((limit, window.limit.to_string()));
            headers.push((remaining, window.remaining.to_string()));
            headers.push((reset, openai_duration(Duration::from_micros(window.reset_us))));
        }
    }
    if let Some(remaining) = standing.budget_remaining_usd {
        headers.push((
            "x-gatewayz-budget-remaining-usd",
            format!("{:.6}", remaining.max(0.0)),
        ));
    }
    headers
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `6m0s`, `1s`,
/// `20ms`.
pub fn openai_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64();
    let minutes = (seconds / 60.0).floor();
    let rest = seconds - minutes * 60.0;
    let rest = if rest.fract() == 0.0 {
        format!("{rest:.0}s")
    } else {
        let text = format!("{rest:.3}");
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    };
    if minutes >= 1.0 {
        format!("{minutes:.0}m{rest}")
    } else {
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_openai_writes_them() {
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(openai_duration(Duration::from_millis(61_250)), "1m1.25s");
    }
}
