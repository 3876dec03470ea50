//! The use case's side of the response cache: what a cacheable request
//! looks up, how a stored or shared answer is replayed (as the whole answer
//! or the stream the client asked for), and how an upstream answer fills
//! the cache and the request's flight as it arrives.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::budget::Lease;
use crate::cache::{CacheKey, CachedAnswer, CachedBody, Follower, Leader, Received, ResponseCache};
use crate::error::{ChatError, ErrorSource, UpstreamError};
use crate::model::replay::{chunks_from_whole, whole_from_chunks};
use crate::model::{ChatChunk, ChatResponse, Endpoint};
use crate::ports::{ChatStream, RequestContext};
use crate::record::CallRecord;

/// A cacheable request: its key, how long its answer is kept, and what the
/// client's `Cache-Control` allows.
pub(crate) struct CachePlan {
    pub cache: ResponseCache,
    pub key: CacheKey,
    pub ttl: Duration,
    /// `no-cache`: do not use a stored answer (store a fresh one).
    pub no_cache: bool,
    /// `max-age`: use none older.
    pub max_age: Option<Duration>,
}

impl CachePlan {
    /// Whether a stored answer is young enough for this request: within the
    /// time to live (a store may keep it a little longer) and the client's
    /// `max-age`. Its age, in seconds, when it is.
    pub fn fresh(&self, answer: &CachedAnswer) -> Option<u64> {
        self.fresh_at(answer.stored_at)
    }

    /// As [`Self::fresh`], for an answer stored at `stored_at`.
    pub fn fresh_at(&self, stored_at: u64) -> Option<u64> {
        let now = u64::try_from(crate::limits::now_unix()).unwrap_or(0);
        let age = now.saturating_sub(stored_at);
        let limit = self.max_age.map_or(self.ttl, |max_age| max_age.min(self.ttl));
        (age <= limit.as_secs()).then_some(age)
    }
}

/// A stored or shared answer, made ready for a request: as a whole answer
/// or as a stream's chunks, each read as its API's.
pub(crate) enum Replay {
    Whole(ChatResponse),
    Chunks(Vec<ChatChunk>),
    /// A leader's chunks as they come.
    Stream(ChatStream),
}

impl Replay {
    /// `body` as what a request to `endpoint` asked for (a stream or not);
    /// `None` when it cannot be read so (then it is a miss).
    pub fn of(endpoint: Endpoint, stream: bool, body: CachedBody) -> Option<Self> {
        if stream {
            let chunks = match body {
                CachedBody::Chunks(chunks) => chunks,
                CachedBody::Whole(json) => chunks_from_whole(endpoint, &json).ok()?,
            };
            let chunks = chunks
                .into_iter()
                .map(|json| ChatChunk::parse(endpoint, json))
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some(Self::Chunks(chunks))
        } else {
            let json = match body {
                CachedBody::Whole(json) => json,
                CachedBody::Chunks(chunks) => whole_from_chunks(endpoint, &chunks).ok()?,
            };
            ChatResponse::parse(endpoint, json).ok().map(Self::Whole)
        }
    }
}

/// A stream shared with the identical request that leads its flight: the
/// leader's chunks as they come, from the first. `None` when the leader
/// failed before any (the follower then makes its own call).
pub(crate) async fn followed(endpoint: Endpoint, mut follower: Follower) -> Option<(Replay, Option<u64>)> {
    let first = match follower.next().await {
        Received::Failed => return None,
        Received::End => return Some((Replay::Chunks(Vec::new()), follower.stored_at())),
        Received::Whole(json) => {
            let stored_at = follower.stored_at();
            return Replay::of(endpoint, true, CachedBody::Whole(json)).map(|replay| (replay, stored_at));
        }
        Received::Chunk(json) => json,
    };
    let stored_at = follower.stored_at();
    let first = ChatChunk::parse(endpoint, first).ok()?;
    let rest = futures::stream::unfold(Some(follower), move |follower| async move {
        let mut follower = follower?;
        match follower.next().await {
            Received::Chunk(json) => match ChatChunk::parse(endpoint, json) {
                Ok(chunk) => Some((Ok(chunk), Some(follower))),
                Err(_) => Some((Err(shared_stream_failed()), None)),
            },
            Received::End | Received::Whole(_) => None,
            Received::Failed => Some((Err(shared_stream_failed()), None)),
        }
    });
    Some((
        Replay::Stream(
            futures::stream::once(async move { Ok(first) })
                .chain(rest)
                .boxed(),
        ),
        stored_at,
    ))
}

/// The error a follower's stream ends with when its leader's did not end
/// cleanly.
fn shared_stream_failed() -> ChatError {
    ChatError::UpstreamFailed(UpstreamError::new(
        ErrorSource::Provider,
        None,
        "the upstream's stream, shared with an identical request in flight, ended early",
    ))
}

impl Replay {
    /// The chunks as a stream.
    pub fn into_stream(self) -> Option<ChatStream> {
        match self {
            Self::Whole(_) => None,
            Self::Chunks(chunks) => Some(futures::stream::iter(chunks.into_iter().map(Ok)).boxed()),
            Self::Stream(stream) => Some(stream),
        }
    }
}

/// What an upstream answer fills: the request's flight (its followers get
/// the answer as it comes), then the store, once the answer is whole and
/// no larger than the cache keeps.
pub(crate) struct Fill {
    cache: ResponseCache,
    key: CacheKey,
    ttl: Duration,
    record: CallRecord,
    leader: Option<Leader>,
    /// A stream's chunks so far, when it has no flight to keep them.
    chunks: Vec<Bytes>,
    bytes: usize,
    /// The stream failed, or outgrew what a flight keeps: not shared
    /// further, not stored.
    spoiled: bool,
    /// Outgrew what the cache stores (it is still shared with the flight).
    too_large: bool,
    /// The memory budget's share for the chunks kept until the stream ends.
    lease: Lease,
}

impl Fill {
    pub fn new(plan: &CachePlan, leader: Option<Leader>, context: &RequestContext) -> Self {
        Self {
            cache: plan.cache.clone(),
            key: plan.key,
            ttl: plan.ttl,
            record: context.record.clone(),
            leader,
            chunks: Vec::new(),
            bytes: 0,
            spoiled: false,
            too_large: false,
            lease: context.budget.lease(),
        }
    }

    /// A whole answer: published to the followers, then stored. The flight
    /// lands once it is stored, so that an identical request never misses
    /// both.
    pub async fn whole(self, json: Bytes) {
        if let Some(leader) = &self.leader {
            leader.whole(&json);
        }
        if json.len() <= self.cache.max_entry_bytes() {
            self.store(CachedBody::Whole(json)).await;
        }
    }

    fn chunk(&mut self, chunk: &ChatChunk) {
        if chunk.is_failure() {
            // A response the upstream says failed is not an answer to keep.
            self.spoil();
            return;
        }
        if self.spoiled {
            return;
        }
        // Kept as a copy of its own size: an event's buffer may be twice
        // its length, and the budget and the store count lengths.
        let json = Bytes::copy_from_slice(chunk.json());
        self.bytes += json.len();
        // Past what a flight keeps, or the budget's room, it is not kept.
        if self.bytes > crate::cache::FLIGHT_MAX_BYTES.max(self.cache.max_entry_bytes())
            || self.lease.cover(self.bytes).is_err()
        {
            self.spoil();
            return;
        }
        if self.bytes > self.cache.max_entry_bytes() {
            self.too_large = true;
            self.chunks = Vec::new();
        }
        match &self.leader {
            Some(leader) => leader.chunk(&json),
            None if !self.too_large => self.chunks.push(json),
            None => {}
        }
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.chunks = Vec::new();
        if let Some(leader) = self.leader.take() {
            leader.fail();
        }
    }

    /// The stream ended cleanly: stored, unless it was spoiled.
    async fn done(mut self) {
        let body = match self.leader.as_ref() {
            Some(leader) => leader.done(),
            None => (!self.spoiled).then(|| CachedBody::Chunks(std::mem::take(&mut self.chunks))),
        };
        if let Some(body) = body.filter(|_| !self.spoiled && !self.too_large) {
            self.store(body).await;
        }
    }

    async fn store(&self, body: CachedBody) {
        let bytes = body.len() as u64;
        // The store keeps its own copy: a whole answer's buffer holds the
        // memory budget for as long as anything holds it (a stream's chunks
        // are copies already).
        let body = match body {
            CachedBody::Whole(json) => CachedBody::Whole(Bytes::copy_from_slice(&json)),
            chunks @ CachedBody::Chunks(_) => chunks,
        };
        let answer = CachedAnswer {
            stored_at: u64::try_from(crate::limits::now_unix()).unwrap_or(0),
            body,
        };
        let stored = self.cache.put(&self.key, &answer, self.ttl).await;
        self.record.update(|facts| match stored {
            Ok(true) => facts.cache_stored_bytes = Some(bytes),
            // The store is paused after an error: nothing was written.
            Ok(false) => {}
            Err(_) => facts.cache_store_error = true,
        });
    }
}

/// `chunks`, filling `fill` as they pass: stored when the stream ends
/// cleanly, never when it fails or is dropped early (then the flight's
/// followers are told).
pub(crate) fn filling(chunks: ChatStream, fill: Fill) -> ChatStream {
    futures::stream::unfold((chunks, Some(fill)), |(mut chunks, mut fill)| async move {
        match chunks.next().await {
            Some(Ok(chunk)) => {
                if let Some(fill) = fill.as_mut() {
                    fill.chunk(&chunk);
                }
                Some((Ok(chunk), (chunks, fill)))
            }
            Some(Err(error)) => {
                // Dropped: the flight's followers are told it failed.
                drop(fill.take());
                Some((Err(error), (chunks, None)))
            }
            None => {
                if let Some(fill) = fill.take() {
                    fill.done().await;
                }
                None
            }
        }
    })
    .boxed()
}
