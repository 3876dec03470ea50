//! Server-sent events, in the shape of the API that was called, one write
//! per event so nothing is held back:
//!
//! - chat completions: `data: <chunk>\n\n` events ending with
//!   `data: [DONE]\n\n`; a failure after the stream began is one
//!   `data: {"error": ...}` event, then `[DONE]`;
//! - Anthropic Messages and OpenAI Responses: typed events,
//!   `event: <type>\ndata: <event>\n\n`, ending when the upstream's last
//!   event is passed on; a failure is one `event: error` in the API's own
//!   error shape, and the stream ends.

use std::convert::Infallible;
use std::future::ready;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use gatewayz_domain::{ChatStream, Endpoint};

use crate::error::ApiError;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// The SSE body of a streamed answer of `endpoint`.
pub fn event_stream(chunks: ChatStream, endpoint: Endpoint) -> impl Stream<Item = Result<Bytes, Infallible>> {
    // The body is written after the handler returned, outside the request's
    // span: keep it, so a late failure is logged with the request id.
    let span = tracing::Span::current();
    let typed = endpoint.has_typed_events();
    let events = chunks.scan(false, move |failed, item| {
        if *failed {
            return ready(None);
        }
        let event = match item {
            Ok(chunk) => match chunk.kind() {
                Some(kind) if typed => typed_event(kind, chunk.json()),
                _ => data_event(chunk.json()),
            },
            Err(error) => {
                *failed = true;
                let error = ApiError::from(error);
                span.in_scope(|| tracing::error!(error = %error, "stream failed after it began"));
                match endpoint {
                    Endpoint::Messages => typed_event("error", &error.to_anthropic_body()),
                    Endpoint::Responses => typed_event("error", &error.to_responses_event()),
                    _ => data_event(&error.to_body()),
                }
            }
        };
        ready(Some(event))
    });
    let done = (!typed).then(|| Bytes::from_static(DONE));
    events.chain(stream::iter(done)).map(Ok)
}

/// One `data:` event: the chunk's JSON as it came, in one write.
fn data_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// One typed event: its type, then its JSON as it came, in one write.
fn typed_event(kind: &str, json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(kind.len() + json.len() + 16);
    event.extend_from_slice(b"event: ");
    // A type is one line: anything else would end the event early.
    event.extend(kind.bytes().filter(|byte| !matches!(byte, b'\n' | b'\r')));
    event.extend_from_slice(b"\ndata: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}
