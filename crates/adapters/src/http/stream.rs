//! An upstream's SSE answer (Portkey's, or a direct upstream's) as a
//! [`ChatStream`]: each `data:` event parsed into a
//! chunk the moment it arrives, `[DONE]` ending the stream, and deadlines for
//! the first chunk and for every gap after it.
//!
//! Only a chunk counts against the deadlines: keep-alives (Portkey's
//! `heartbeat` events, comments) are skipped without moving them, so an
//! upstream that sends nothing else cannot hold a client past the first-byte
//! timeout.

use std::pin::Pin;

use bytes::Bytes;
use std::time::Duration;

use futures::{Stream, StreamExt};
use gatewayz_domain::{ChatChunk, ChatError, ChatStream, Endpoint, ErrorSource, Lease, UpstreamError};
use tokio::time::{Instant, timeout_at};

use super::errors::{self, Peer, describe_error_body};
use super::sse::Decoder;

/// The largest SSE event accepted (its lines, its data and its type
/// together): the decoder buffers an event until it ends, so an upstream that
/// never ends one must not grow it without bound.
pub(crate) const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// A stream's lease keeps up to this much between events, so small events
/// take nothing from the budget after the first.
const KEEP_LEASED: usize = 64 * 1024;

struct State<S> {
    bytes: Pin<Box<S>>,
    decoder: Decoder,
    /// Pays for what the decoder holds.
    lease: Lease,
    /// When the next chunk must have arrived.
    deadline: Instant,
    /// Since when the gateway has been waiting for it.
    waiting_since: Instant,
    idle: Duration,
    /// Whether a chunk carried a `finish_reason`: a stream that then closes
    /// without `[DONE]` is complete, one that closes before is cut off.
    finished: bool,
    done: bool,
    /// The API whose events these are.
    endpoint: Endpoint,
    /// Who sends them.
    peer: Peer,
}

/// Reads a byte stream as chat chunks. The first chunk must arrive before
/// `first_deadline`, each later one within `idle` of the previous. The event
/// being assembled is held within `lease`'s budget: past it, the stream ends
/// with [`ChatError::Overloaded`].
pub(crate) fn chunks<S, B, E>(
    bytes: S,
    first_deadline: Instant,
    idle: Duration,
    lease: Lease,
    endpoint: Endpoint,
    peer: Peer,
) -> ChatStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let state = State {
        bytes: Box::pin(bytes),
        decoder: Decoder::new(MAX_EVENT_BYTES),
        lease,
        deadline: first_deadline,
        waiting_since: Instant::now(),
        idle,
        finished: false,
        done: false,
        endpoint,
        peer,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = state.next_chunk().await?;
        state.done = item.is_err();
        Some((item, state))
    })
    .boxed()
}

impl<S, B, E> State<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    async fn next_chunk(&mut self) -> Option<Result<ChatChunk, ChatError>> {
        loop {
            while let Some(event) = self.decoder.next_event() {
                // Keep-alives (Portkey's `heartbeat`) and empty events carry
                // nothing. Typed events (Messages, Responses) are named by
                // their type; any name but a keep-alive's is read.
                let data = event.data.trim_ascii();
                let typed = self.endpoint.has_typed_events();
                let skipped = if typed {
                    event.kind == "heartbeat"
                } else {
                    !matches!(event.kind.as_str(), "message" | "error")
                };
                if data.is_empty() || skipped {
                    continue;
                }
                if data == b"[DONE]" {
                    self.done = true;
                    return None;
                }
                let chunk = self.parse(event.data.slice_ref(data));
                // Anthropic's `ping` is a keep-alive too: passed on, but it
                // moves no deadline.
                if chunk.as_ref().is_ok_and(|chunk| chunk.kind() != Some("ping")) {
                    self.waiting_since = Instant::now();
                    self.deadline = self.waiting_since + self.idle;
                }
                return Some(chunk);
            }
            let bytes = match timeout_at(self.deadline, self.bytes.next()).await {
                Err(_) => return Some(Err(stalled(self.deadline - self.waiting_since, &self.peer))),
                Ok(None) if self.finished => return None,
                Ok(None) if self.endpoint.has_typed_events() => {
                    return Some(Err(cut_off(
                        &format!("{} closed the stream before its last event", self.peer.upstream()),
                        &self.peer,
                    )));
                }
                Ok(None) => {
                    return Some(Err(cut_off(
                        &format!("{} closed the stream before [DONE]", self.peer.upstream()),
                        &self.peer,
                    )));
                }
                Ok(Some(Err(error))) => {
                    return Some(Err(cut_off(
                        &format!("the stream from {} broke: {error}", self.peer.upstream()),
                        &self.peer,
                    )));
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            if let Err(error) = self.feed(bytes.as_ref()) {
                return Some(Err(error));
            }
        }
    }

    /// Feeds the decoder, first covering what it may hold afterwards: what it
    /// holds now and `bytes`, twice over for buffers that double as they grow.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), ChatError> {
        let bound = |held: usize| held.saturating_mul(2);
        self.lease
            .cover(bound(self.decoder.held() + bytes.len()))
            .map_err(ChatError::Overloaded)?;
        self.decoder.feed(bytes).map_err(|error| {
            errors::invalid_response(
                format!("the upstream's event stream is invalid: {error}"),
                &self.peer,
            )
        })?;
        // Given back once a large event is out, as the decoder frees it.
        let needed = bound(self.decoder.held());
        if self.lease.bytes() > KEEP_LEASED && self.lease.bytes() > needed.saturating_mul(2) {
            self.lease.shrink_to(needed);
        }
        Ok(())
    }

    fn is_error_event(&self, shape: &gatewayz_domain::ShapeError, data: &[u8]) -> bool {
        if self.endpoint.has_typed_events() {
            shape.at.as_deref() == Some("error")
        } else {
            data.windows(7).any(|window| window == b"\"error\"")
        }
    }

    fn parse(&mut self, data: Bytes) -> Result<ChatChunk, ChatError> {
        match ChatChunk::parse(self.endpoint, data.clone()) {
            Ok(chunk) => {
                self.finished |= chunk.is_finished();
                Ok(chunk)
            }
            // A provider that fails mid-stream sends `data: {"error": {...}}`;
            // Portkey passes it on without naming the provider. A typed
            // event says so by its type (its other events may hold an
            // `"error": null`).
            Err(shape) if self.is_error_event(&shape, &data) => {
                let error = UpstreamError {
                    status: None,
                    source: ErrorSource::Provider,
                    ..describe_error_body(200, &data, &self.peer)
                };
                // A provider that is overloaded or limiting says so by its
                // code (Anthropic's error types, OpenAI's codes): a client
                // may retry those, and tell them apart.
                Err(match error.code.as_deref() {
                    Some("overloaded_error" | "server_is_overloaded" | "slow_down") => {
                        ChatError::Unavailable(error)
                    }
                    Some("rate_limit_error" | "rate_limit_exceeded") => ChatError::RateLimited {
                        error,
                        retry_after: None,
                    },
                    _ => ChatError::UpstreamFailed(error),
                })
            }
            Err(shape) => Err(errors::invalid_response(
                format!(
                    "a stream event is not {}: {shape}",
                    match self.endpoint {
                        Endpoint::Chat => "a chat.completion.chunk",
                        Endpoint::Messages => "an Anthropic stream event",
                        _ => "a Responses API stream event",
                    }
                ),
                &self.peer,
            )),
        }
    }
}

fn stalled(waited: Duration, peer: &Peer) -> ChatError {
    ChatError::Timeout(UpstreamError::new(
        peer.source(),
        None,
        format!("no stream chunk from {peer} within {} ms", waited.as_millis()),
    ))
}

fn cut_off(message: &str, peer: &Peer) -> ChatError {
    ChatError::Unavailable(UpstreamError::new(peer.source(), None, message))
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use serde_json::json;

    use gatewayz_domain::MemoryBudget;

    use super::*;

    fn chunk_json(content: &str, finish: Option<&str>) -> String {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        .to_string()
    }

    async fn collect(parts: Vec<String>) -> Vec<Result<ChatChunk, ChatError>> {
        let bytes = stream::iter(
            parts
                .into_iter()
                .map(|part| Ok::<_, std::io::Error>(part.into_bytes())),
        );
        chunks(
            bytes,
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
            MemoryBudget::default().lease(),
            Endpoint::Chat,
            Peer::Portkey,
        )
        .collect()
        .await
    }

    fn contents(items: &[Result<ChatChunk, ChatError>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Ok(chunk) => {
                    let chunk: serde_json::Value = serde_json::from_slice(chunk.json()).unwrap();
                    chunk["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }
                Err(error) => format!("error: {error}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn events_split_across_reads_and_packed_into_one_are_all_parsed() {
        let a = format!("data: {}\n\n", chunk_json("a", None));
        let b = format!("data: {}\r\n\r\n", chunk_json("b", None));
        let c = format!(
            ": keep-alive comment\n\nevent: heartbeat\ndata: pulse\n\ndata: {}\n\n",
            chunk_json("c", Some("stop"))
        );
        let (a1, a2) = a.split_at(17);
        let items = collect(vec![a1.into(), a2.to_owned() + &b + &c + "data: [DONE]\n\n"]).await;
        assert_eq!(contents(&items), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_multi_line_data_field_is_joined() {
        let body = chunk_json("x", Some("stop"));
        let (left, right) = body.split_at(body.len() / 2);
        let items = collect(vec![format!("data: {left}\ndata: {right}\n\ndata: [DONE]\n\n")]).await;
        assert_eq!(contents(&items), ["x"]);
    }

    #[tokio::test]
    async fn nothing_after_done_is_read() {
        let items = collect(vec![format!(
            "data: {}\n\ndata: [DONE]\n\ndata: {}\n\n",
            chunk_json("a", Some("stop")),
            chunk_json("late", None)
        )])
        .await;
        assert_eq!(contents(&items), ["a"]);
    }

    #[tokio::test]
    async fn a_stream_cut_off_before_it_finished_ends_with_an_error() {
        let items = collect(vec![format!("data: {}\n\n", chunk_json("a", None))]).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(ChatError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_finished_stream_without_done_ends_cleanly() {
        let items = collect(vec![format!("data: {}\n\n", chunk_json("a", Some("stop")))]).await;
        assert_eq!(contents(&items), ["a"]);
    }

    #[tokio::test]
    async fn an_error_event_ends_the_stream_with_the_providers_message() {
        let items = collect(vec![format!(
            "data: {}\n\ndata: {{\"error\": {{\"message\": \"overloaded\"}}}}\n\ndata: {}\n\n",
            chunk_json("a", None),
            chunk_json("b", None)
        )])
        .await;
        assert_eq!(
            contents(&items),
            ["a", "error: Upstream service error: overloaded"]
        );
    }

    #[tokio::test]
    async fn a_malformed_event_is_an_invalid_response() {
        let items = collect(vec!["data: {not json\n\n".into()]).await;
        assert!(matches!(items[..], [Err(ChatError::InvalidUpstreamResponse(_))]));
    }

    #[tokio::test]
    async fn an_event_that_never_ends_is_an_invalid_response() {
        // Many short `data:` lines and no blank line: each line is small,
        // the event is not.
        let lines = format!("data: {}\n", "x".repeat(1000)).repeat(1024);
        let bytes = stream::iter(
            std::iter::repeat_n(lines, MAX_EVENT_BYTES / (1000 * 1024) + 2)
                .map(|part| Ok::<_, std::io::Error>(part.into_bytes())),
        );
        let items: Vec<_> = chunks(
            bytes,
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
            MemoryBudget::default().lease(),
            Endpoint::Chat,
            Peer::Portkey,
        )
        .collect()
        .await;
        assert!(
            matches!(&items[..], [Err(ChatError::InvalidUpstreamResponse(error))] if error.message.contains("larger than")),
            "{items:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_do_not_hold_off_the_first_chunk_deadline() {
        let heartbeats = stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok::<_, std::io::Error>(b"event: heartbeat\ndata: {}\n\n: ping\n\n".to_vec()),
                (),
            ))
        });
        let started = Instant::now();
        let items: Vec<_> = chunks(
            heartbeats,
            started + Duration::from_millis(200),
            Duration::from_secs(5),
            MemoryBudget::default().lease(),
            Endpoint::Chat,
            Peer::Portkey,
        )
        .collect()
        .await;
        assert!(matches!(items[..], [Err(ChatError::Timeout(_))]), "{items:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_stalled_stream_times_out() {
        let bytes = stream::iter([Ok::<_, std::io::Error>(
            format!("data: {}\n\n", chunk_json("a", None)).into_bytes(),
        )])
        .chain(stream::pending());
        let items: Vec<_> = chunks(
            bytes,
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(50),
            MemoryBudget::default().lease(),
            Endpoint::Chat,
            Peer::Portkey,
        )
        .collect()
        .await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(ChatError::Timeout(_))));
    }

    #[tokio::test]
    async fn an_event_the_budget_cannot_hold_ends_the_stream_as_overloaded_and_frees_the_budget() {
        let budget = MemoryBudget::new(256 * 1024);
        let first = format!("data: {}\n\n", chunk_json("a", None));
        // An event of 200 KiB: twice over, more than the budget holds.
        let large = format!("data: {}", "x".repeat(200 * 1024));
        let bytes = stream::iter([first, large].map(|part| Ok::<_, std::io::Error>(part.into_bytes())))
            .chain(stream::pending());
        let items: Vec<_> = chunks(
            bytes,
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
            budget.lease(),
            Endpoint::Chat,
            Peer::Portkey,
        )
        .collect()
        .await;
        assert_eq!(contents(&items[..1]), ["a"]);
        assert!(matches!(items[1..], [Err(ChatError::Overloaded(_))]), "{items:?}");
        assert_eq!(budget.in_use(), 0, "the ended stream gave its lease back");
    }

    #[tokio::test]
    async fn small_events_keep_a_small_lease_and_a_large_one_is_given_back() {
        let budget = MemoryBudget::new(64 * 1024 * 1024);
        let small = format!("data: {}\n\n", chunk_json("a", None));
        let large = format!("data: {}\n\n", chunk_json(&"b".repeat(1024 * 1024), None));
        let parts = [small.clone(), large, small];
        let mut items = chunks(
            stream::iter(parts.map(|part| Ok::<_, std::io::Error>(part.into_bytes())))
                .chain(stream::pending()),
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
            budget.lease(),
            Endpoint::Chat,
            Peer::Portkey,
        );
        items.next().await.unwrap().unwrap();
        assert!(budget.in_use() <= 4 * 1024, "{}", budget.in_use());
        items.next().await.unwrap().unwrap();
        items.next().await.unwrap().unwrap();
        assert!(budget.in_use() <= 64 * 1024, "{}", budget.in_use());
    }
}
