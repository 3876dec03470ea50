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
                Ok(chunk) => data_event(&chunk),
                Err(error) => {
                    *failed = true;
                    let error = ApiError::from(error);
                    span.in_scope(|| tracing::error!(error = %error, "stream failed after it began"));
                    Bytes::from([b"data: ".as_slice(), &error.to_body(), b"\n\n"].concat())
                }
            };
            ready(Some(event))
        })
        .chain(stream::once(ready(Bytes::from_static(DONE))))
        .map(Ok)
}

fn data_event<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut event = Vec::with_capacity(512);
    event.extend_from_slice(b"data: ");
    // Serializing the gateway's own types into memory cannot fail: every map
    // key is a string.
    let _ = serde_json::to_writer(&mut event, value);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}
