//! Identifiers of created objects (`resp_…`, `msg_…`): unique within a run
//! and, through the start-up seed, most unlikely to repeat across runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out identifiers: a prefix and 32 hex digits.
#[derive(Debug)]
pub struct Ids {
    seed: u64,
    next: AtomicU64,
}

impl Ids {
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        // Only the low bits vary between runs; mixing spreads them.
        #[allow(clippy::cast_possible_truncation)]
        let seed = mix(nanos as u64 ^ u64::from(std::process::id()));
        Self {
            seed,
            next: AtomicU64::new(0),
        }
    }

    /// A new identifier that starts with `prefix`.
    pub fn next(&self, prefix: &str) -> String {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{:016x}", self.seed, mix(self.seed ^ count))
    }
}

/// SplitMix64's finaliser: a bijection that scatters nearby inputs.
pub fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::Ids;

    #[test]
    fn identifiers_carry_their_prefix_and_do_not_repeat() {
        let ids = Ids::new();
        let first = ids.next("resp_");
        let second = ids.next("resp_");
        assert!(first.starts_with("resp_") && first.len() == 5 + 32, "{first}");
        assert_ne!(first, second);
    }
}
