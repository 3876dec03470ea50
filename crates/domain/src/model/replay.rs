//! A stored answer replayed in the other form of its API: a stream's events
//! as the whole answer a JSON request gets, or a whole answer as the stream
//! a streaming request gets, so that one cached answer serves both. Chat
//! completions (`chat`) and Anthropic Messages (`messages`) only:
//! embeddings have no stream, and a Responses stream is not replayed.
//!
//! Both forms are the JSON texts the upstream sent: one object for a whole
//! answer, each event's `data:` object for a stream (no `data: ` prefix, no
//! `[DONE]`). What the gateway does not assemble (ids, usage, log
//! probabilities, a block of a type it does not know, a member a provider
//! added) is copied as it came or merged by a stated rule (`merge`),
//! never dropped; what cannot be kept so is refused. Whatever the bytes,
//! the answer is a [`ReplayError`], never a panic: a stream that does not
//! hold together is not replayed.

mod chat;
mod error;
mod merge;
mod messages;
mod views;

use bytes::Bytes;

pub use self::error::ReplayError;
use super::endpoint::Endpoint;

/// Replays a stored stream as the whole answer of the same API: chat
/// completion chunks as one `chat.completion`, Messages events as one
/// message.
///
/// # Errors
/// [`ReplayError::Unsupported`] for an endpoint other than chat completions
/// and Messages; [`ReplayError::Malformed`] when an event is not a JSON
/// object of its API's shape, or the events do not make one answer (no
/// chunk, no `message_start`, a delta for a block never started, tool input
/// that is not JSON, a delta of a type the gateway does not assemble, ...).
pub fn whole_from_chunks(endpoint: Endpoint, chunks: &[Bytes]) -> Result<Bytes, ReplayError> {
    match endpoint {
        Endpoint::Chat => chat::whole(chunks),
        Endpoint::Messages => messages::whole(chunks),
        other => Err(ReplayError::Unsupported {
            endpoint: other,
            stored: "streams",
            wanted: "a whole answer",
        }),
    }
}

/// Replays a stored whole answer as the stream of the same API: a
/// `chat.completion` as `chat.completion.chunk`s, a message as Messages
/// events. What it returns is valid input for [`whole_from_chunks`], which
/// gives back an answer equal to `whole` when `whole` is in the shape it
/// writes.
///
/// # Errors
/// [`ReplayError::Unsupported`] for an endpoint other than chat completions
/// and Messages; [`ReplayError::Malformed`] when `whole` is not a JSON
/// object of its API's answer shape (text that is not a string, content
/// that is not an array, ...).
pub fn chunks_from_whole(endpoint: Endpoint, whole: &Bytes) -> Result<Vec<Bytes>, ReplayError> {
    match endpoint {
        Endpoint::Chat => chat::chunks(whole),
        Endpoint::Messages => messages::events(whole),
        other => Err(ReplayError::Unsupported {
            endpoint: other,
            stored: "answers",
            wanted: "a stream",
        }),
    }
}

#[cfg(test)]
mod tests;
