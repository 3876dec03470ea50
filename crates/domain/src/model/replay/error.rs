//! Why a stored answer cannot be replayed, and where in it the problem is.
//! A leaf: both APIs' replays and the functions that dispatch to them use
//! it.

use std::fmt;

use crate::model::endpoint::Endpoint;

/// Why a stored answer cannot be replayed in the other form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The API has no such replay: embeddings have no stream, and only chat
    /// completions and Messages are replayed.
    #[error("`{endpoint}` {stored} cannot be replayed as {wanted}")]
    Unsupported {
        endpoint: Endpoint,
        stored: &'static str,
        wanted: &'static str,
    },
    /// The stored bytes are not what the API sends: where (`chunk 3`,
    /// `block 1`, ...) and what is wrong, never the value found.
    #[error("the stored answer cannot be replayed: {0}")]
    Malformed(String),
}

pub(super) fn malformed(place: impl fmt::Display, problem: impl fmt::Display) -> ReplayError {
    ReplayError::Malformed(format!("{place}: {problem}"))
}

/// Where in a stored answer a problem is: `chunk 3`, `event 0`, `block 2`.
#[derive(Clone, Copy)]
pub(super) struct At(pub(super) &'static str, pub(super) u64);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}
