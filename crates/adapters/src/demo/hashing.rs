//! Stable hashes and the values seeded from them, the same on every run;
//! and ids unique in the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// FNV-1a's starting value.
pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: a stable hash (std's is randomized per process).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_more(FNV_OFFSET, bytes)
}

/// FNV-1a of what `hash` hashed, then `bytes`.
pub(super) fn fnv1a_more(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer: a bijection that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64: a small, fast, seedable generator, for values that must be
/// the same on every run.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
}

/// An id no other call of this process makes (a count, mixed), nor likely
/// another process (the time, mixed): `prefix` and 32 hex digits.
pub(super) fn unique_id(prefix: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    // splitmix64's steps, not `mix` alone: it leaves 0 as 0.
    format!(
        "{prefix}{:016x}{:016x}",
        SplitMix64::new(nanos).next_u64(),
        SplitMix64::new(count).next_u64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_generators_are_stable_across_runs() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut generator = SplitMix64(0);
        assert_eq!(generator.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_ne!(unique_id("x_"), unique_id("x_"));
    }
}
