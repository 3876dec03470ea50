//! What every answer of the demo is written with.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatewayz_domain::{ChatError, ErrorSource, ShapeError, UpstreamError, ValidationError};
use serde::Serialize;

/// The refusal of a body the demo cannot read as its API's request (the
/// domain checked what the gateway reads of it; the rest is the demo's).
pub(super) fn unreadable() -> ChatError {
    ChatError::Invalid(ValidationError::body("the demo provider cannot read the request"))
}

pub(super) fn to_bytes(value: &impl Serialize) -> Bytes {
    // The demo's own structs always serialize into memory.
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// The demo's own JSON is its API's answer by construction; were it ever
/// refused, that defect shows as an error, not a panic.
pub(super) fn refused(error: ShapeError) -> ChatError {
    ChatError::InvalidUpstreamResponse(UpstreamError::new(
        ErrorSource::Gateway,
        None,
        format!("the demo provider wrote a malformed answer: {error}"),
    ))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
