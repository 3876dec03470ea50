//! Server-sent events: a [`ChatStream`] written as `data: <chunk>\n\n` events
//! ending with `data: [DONE]\n\n`, one write per chunk so nothing is held back.

use std::convert::Infallible;
use std::future::ready;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use gatewayz_domain::ChatStream;

use crate::error::ApiError;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// The SSE body of a streamed completion. A failure after the stream began
/// becomes one `data: {"error": ...}` event, then `[DONE]`.
pub fn event_stream(chunks: ChatStream) -> impl Stream<Item = Result<Bytes, Infallible>> {
    // The body is written after the handler returned, outside the request's
    // span: keep it, so a late failure is logged with the request id.
    let span = tracing::Span::current();
    chunks
        .scan(false, move |failed, item| {
            if *failed {
                return ready(None);
            }
            let event = match item {
                Ok(chunk) => data_event(chunk.json()),
                Err(error) => {
                    *failed = true;
                    let error = ApiError::from(error);
                    span.in_scope(|| tracing::error!(error = %error, "stream failed after it began"));
                    data_event(&error.to_body())
                }
            };
            ready(Some(event))
        })
        .chain(stream::once(ready(Bytes::from_static(DONE))))
        .map(Ok)
}

/// One `data:` event: the chunk's JSON as it came, in one write.
fn data_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}
