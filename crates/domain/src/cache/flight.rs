//! Identical requests in flight, answered by one upstream call: the first
//! leads (calls the upstream, publishing what it gets as it gets it); the
//! others follow (receive the same answer, a stream's chunks as they come).
//! When the leader fails or leaves, a follower that has received nothing
//! makes its own call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

use super::key::CacheKey;
use super::store::CachedBody;

/// The requests in flight of one process, by cache key.
#[derive(Debug, Clone, Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<CacheKey, Arc<Flight>>>>,
}

#[derive(Debug)]
struct Flight {
    state: watch::Sender<State>,
}

/// What a leader has published.
#[derive(Debug, Default)]
struct State {
    chunks: Vec<Bytes>,
    whole: Option<Bytes>,
    bytes: usize,
    end: Option<End>,
    /// When the answer was stored, when the leader found it in the store.
    stored_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The answer is whole.
    Done,
    /// The leader failed, left, or its answer outgrew what is kept.
    Failed,
}

/// A request's place in its flight.
#[derive(Debug)]
pub enum Joined {
    /// First: it calls the upstream.
    Lead(Leader),
    /// An identical request is in flight: it waits for that one's answer.
    Follow(Follower),
}

impl Flights {
    /// Joins the flight of `key`, leading it when none is in the air. A
    /// leader keeps at most `max_bytes` of its answer for its followers.
    pub fn join(&self, key: CacheKey, max_bytes: usize) -> Joined {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(&key) {
            return Joined::Follow(Follower {
                state: flight.state.subscribe(),
                next: 0,
            });
        }
        let flight = Arc::new(Flight {
            state: watch::Sender::new(State::default()),
        });
        map.insert(key, flight.clone());
        Joined::Lead(Leader {
            key,
            flight,
            flights: self.clone(),
            max_bytes,
        })
    }

    /// How many flights are in the air.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn land(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|current| Arc::ptr_eq(current, flight)) {
            map.remove(key);
        }
    }
}

/// The request that calls the upstream for its flight. Dropped before its
/// answer is whole, its followers are told it failed; dropped after, the
/// flight lands (new identical requests then look in the store).
#[derive(Debug)]
pub struct Leader {
    key: CacheKey,
    flight: Arc<Flight>,
    flights: Flights,
    max_bytes: usize,
}

impl Leader {
    /// Publishes a stream's chunk. Past the leader's `max_bytes`, the flight
    /// fails for its followers (the answer will not be stored either).
    pub fn chunk(&self, chunk: &Bytes) {
        let mut overflow = false;
        self.flight.state.send_if_modified(|state| {
            if state.end.is_some() {
                return false;
            }
            state.bytes += chunk.len();
            if state.bytes > self.max_bytes {
                overflow = true;
                return false;
            }
            state.chunks.push(chunk.clone());
            true
        });
        if overflow {
            self.fail();
        }
    }

    /// Publishes a whole answer.
    pub fn whole(&self, json: &Bytes) {
        if json.len() > self.max_bytes {
            self.fail();
            return;
        }
        self.flight.state.send_if_modified(|state| {
            if state.end.is_some() {
                return false;
            }
            state.bytes = json.len();
            state.whole = Some(json.clone());
            state.end = Some(End::Done);
            true
        });
    }

    /// Publishes an answer found in the store, with when it was stored, so
    /// that each follower judges its age for itself.
    pub fn stored(&self, answer: &super::store::CachedAnswer) {
        self.flight.state.send_if_modified(|state| {
            if state.end.is_some() {
                return false;
            }
            state.stored_at = Some(answer.stored_at);
            match &answer.body {
                CachedBody::Whole(json) => state.whole = Some(json.clone()),
                CachedBody::Chunks(chunks) => state.chunks.clone_from(chunks),
            }
            state.bytes = answer.body.len();
            state.end = Some(End::Done);
            true
        });
    }

    /// Ends a stream that ended cleanly: its body, to store, unless it
    /// outgrew `max_bytes`.
    pub fn done(&self) -> Option<CachedBody> {
        let mut body = None;
        self.flight.state.send_if_modified(|state| {
            if state.end.is_some() {
                return false;
            }
            state.end = Some(End::Done);
            body = Some(CachedBody::Chunks(state.chunks.clone()));
            true
        });
        body
    }

    /// Tells the followers that this flight failed, and lands it.
    pub fn fail(&self) {
        self.flight.state.send_if_modified(|state| {
            if state.end.is_some() {
                return false;
            }
            state.end = Some(End::Failed);
            state.chunks = Vec::new();
            true
        });
        self.flights.land(&self.key, &self.flight);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.fail();
    }
}

/// A request waiting on its flight's leader.
#[derive(Debug)]
pub struct Follower {
    state: watch::Receiver<State>,
    /// The next chunk it has not received.
    next: usize,
}

/// What a follower receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A stream's next chunk.
    Chunk(Bytes),
    /// The leader's whole answer (it asked for no stream).
    Whole(Bytes),
    /// The stream ended cleanly.
    End,
    /// The leader failed or left.
    Failed,
}

impl Follower {
    /// The next thing published, waiting for it.
    pub async fn next(&mut self) -> Received {
        loop {
            {
                let state = self.state.borrow_and_update();
                if let Some(chunk) = state.chunks.get(self.next) {
                    self.next += 1;
                    return Received::Chunk(chunk.clone());
                }
                match state.end {
                    Some(End::Failed) => return Received::Failed,
                    Some(End::Done) => {
                        return match &state.whole {
                            Some(json) if self.next == 0 => {
                                self.next = 1;
                                Received::Whole(json.clone())
                            }
                            _ => Received::End,
                        };
                    }
                    None => {}
                }
            }
            // The sender gone without an end: the leader was dropped.
            if self.state.changed().await.is_err() && self.state.borrow().end.is_none() {
                return Received::Failed;
            }
        }
    }

    /// When the answer was stored, if the leader found it in the store
    /// (known once anything of it is received).
    pub fn stored_at(&self) -> Option<u64> {
        self.state.borrow().stored_at
    }

    /// The whole answer, once the leader has it; `None` when it failed.
    pub async fn answer(&mut self) -> Option<CachedBody> {
        let mut chunks = Vec::new();
        loop {
            match self.next().await {
                Received::Chunk(chunk) => chunks.push(chunk),
                Received::Whole(json) => return Some(CachedBody::Whole(json)),
                Received::End => return Some(CachedBody::Chunks(chunks)),
                Received::Failed => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CacheKey {
        CacheKey::from_bytes([byte; 32])
    }

    fn lead(flights: &Flights, byte: u8) -> Leader {
        match flights.join(key(byte), 100) {
            Joined::Lead(leader) => leader,
            Joined::Follow(_) => panic!("expected to lead"),
        }
    }

    fn follow(flights: &Flights, byte: u8) -> Follower {
        match flights.join(key(byte), 100) {
            Joined::Follow(follower) => follower,
            Joined::Lead(_) => panic!("expected to follow"),
        }
    }

    #[tokio::test]
    async fn the_first_leads_and_the_others_receive_its_chunks_from_the_start() {
        let flights = Flights::default();
        let leader = lead(&flights, 1);
        leader.chunk(&Bytes::from_static(b"a"));
        let mut early = follow(&flights, 1);
        leader.chunk(&Bytes::from_static(b"b"));
        let mut late = follow(&flights, 1);
        assert!(matches!(flights.join(key(2), 100), Joined::Lead(_)));

        assert_eq!(early.next().await, Received::Chunk(Bytes::from_static(b"a")));
        assert_eq!(early.next().await, Received::Chunk(Bytes::from_static(b"b")));
        let stored = leader.done();
        assert_eq!(early.next().await, Received::End);
        assert_eq!(
            late.answer().await,
            Some(CachedBody::Chunks(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b")
            ]))
        );
        assert_eq!(
            stored,
            Some(CachedBody::Chunks(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b")
            ]))
        );
        // Until the leader is dropped (its answer stored), newcomers follow.
        assert!(matches!(flights.join(key(1), 100), Joined::Follow(_)));
        drop(leader);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_whole_answer_reaches_every_follower() {
        let flights = Flights::default();
        let leader = lead(&flights, 1);
        let followers = [follow(&flights, 1), follow(&flights, 1)];
        let waiting = tokio::spawn(futures::future::join_all(
            followers.map(|mut follower| async move { follower.answer().await }),
        ));
        tokio::task::yield_now().await;
        leader.whole(&Bytes::from_static(b"{}"));
        let answers = waiting.await.unwrap();
        assert_eq!(
            answers,
            vec![Some(CachedBody::Whole(Bytes::from_static(b"{}"))); 2]
        );
    }

    #[tokio::test]
    async fn an_answer_from_the_store_reaches_followers_with_when_it_was_stored() {
        let flights = Flights::default();
        let leader = lead(&flights, 1);
        let mut follower = follow(&flights, 1);
        leader.stored(&super::super::store::CachedAnswer {
            stored_at: 42,
            body: CachedBody::Chunks(vec![Bytes::from_static(b"a")]),
        });
        assert_eq!(
            follower.answer().await,
            Some(CachedBody::Chunks(vec![Bytes::from_static(b"a")]))
        );
        assert_eq!(follower.stored_at(), Some(42));
    }

    #[tokio::test]
    async fn a_leader_dropped_early_fails_its_followers_and_lands() {
        let flights = Flights::default();
        let leader = lead(&flights, 1);
        leader.chunk(&Bytes::from_static(b"a"));
        let mut started = follow(&flights, 1);
        let mut waiting = follow(&flights, 1);
        assert_eq!(started.next().await, Received::Chunk(Bytes::from_static(b"a")));
        drop(leader);
        // What was published is let go: neither gets more of it.
        assert_eq!(started.next().await, Received::Failed);
        assert_eq!(waiting.next().await, Received::Failed);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn an_answer_past_the_limit_fails_the_followers_and_is_not_stored() {
        let flights = Flights::default();
        let leader = lead(&flights, 1);
        let mut follower = follow(&flights, 1);
        leader.chunk(&Bytes::from(vec![b'x'; 60]));
        leader.chunk(&Bytes::from(vec![b'x'; 60]));
        assert_eq!(follower.answer().await, None);
        assert_eq!(leader.done(), None);
        assert!(flights.is_empty());

        let leader = lead(&flights, 2);
        let mut follower = follow(&flights, 2);
        leader.whole(&Bytes::from(vec![b'x'; 101]));
        assert_eq!(follower.answer().await, None);
    }
}
