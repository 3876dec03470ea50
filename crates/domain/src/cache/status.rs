//! What the cache did for a request: a leaf, so that the call record can
//! name it without reaching the rest of the cache.

/// What the cache did for a request: the `x-gatewayz-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache, or from an identical request in flight.
    Hit,
    /// Not found (or too old): answered by the upstream, and stored.
    Miss,
    /// `no-cache`: answered by the upstream, and stored.
    Refresh,
    /// `no-store`: the cache was not used.
    Bypass,
}

impl CacheStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Refresh => "refresh",
            Self::Bypass => "bypass",
        }
    }
}
