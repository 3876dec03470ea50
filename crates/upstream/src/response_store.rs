//! The responses the Responses API created, remembered so that they can be
//! retrieved, listed, chained (`previous_response_id`) and deleted: the most
//! recent [`CAPACITY`] that fit in [`BYTE_BUDGET`], oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::value::RawValue;

/// How many created responses are remembered at most.
pub const CAPACITY: usize = 4096;
/// How many bytes of remembered responses and input items are kept at most.
pub const BYTE_BUDGET: usize = 128 << 20;

/// A created response.
#[derive(Debug)]
pub struct StoredResponse {
    /// The response object's JSON, as answered.
    pub body: Bytes,
    /// Whether it was created with `background: true` (only such a response
    /// can be cancelled).
    pub background: bool,
    /// The request's input items, with their ids, in the order given.
    pub items: Vec<(String, Box<RawValue>)>,
}

impl StoredResponse {
    fn bytes(&self) -> usize {
        self.body.len()
            + self
                .items
                .iter()
                .map(|(id, item)| id.len() + item.get().len())
                .sum::<usize>()
    }
}

/// The remembered responses, by id.
#[derive(Debug)]
pub struct ResponseStore {
    capacity: usize,
    byte_budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Arc<StoredResponse>>,
    /// Ids in creation order, deleted ones included until they reach the
    /// front: the store keeps the last `capacity` responses created.
    order: VecDeque<String>,
    bytes: usize,
}

impl Default for ResponseStore {
    fn default() -> Self {
        Self::new(CAPACITY, BYTE_BUDGET)
    }
}

impl ResponseStore {
    pub fn new(capacity: usize, byte_budget: usize) -> Self {
        Self {
            capacity,
            byte_budget,
            inner: Mutex::default(),
        }
    }

    /// Remembers `response` under `id` (new: ids are never reused), then
    /// forgets the oldest until the store is within its bounds.
    pub fn insert(&self, id: String, response: StoredResponse) {
        let mut inner = self.lock();
        inner.bytes += response.bytes();
        inner.order.push_back(id.clone());
        inner.by_id.insert(id, Arc::new(response));
        while inner.order.len() > self.capacity || inner.bytes > self.byte_budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(forgotten) = inner.by_id.remove(&oldest) {
                inner.bytes -= forgotten.bytes();
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<StoredResponse>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Forgets `id`; whether it was remembered.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.by_id.remove(id) {
            Some(forgotten) => {
                inner.bytes -= forgotten.bytes();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the map
        // is still consistent enough for a test double.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::{ResponseStore, StoredResponse};
    use bytes::Bytes;

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            body: Bytes::from(body.to_owned()),
            background: false,
            items: Vec::new(),
        }
    }

    #[test]
    fn forgets_the_oldest_beyond_its_capacity() {
        let store = ResponseStore::new(2, 1 << 20);

        for id in ["a", "b", "c"] {
            store.insert(id.to_owned(), response(id));
        }

        assert!(store.get("a").is_none());
        assert_eq!(store.get("b").unwrap().body, "b");
        assert_eq!(store.get("c").unwrap().body, "c");
    }

    #[test]
    fn forgets_the_oldest_beyond_its_byte_budget() {
        let store = ResponseStore::new(10, 10);

        store.insert("a".to_owned(), response("123456"));
        store.insert("b".to_owned(), response("123456"));

        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some());
    }

    #[test]
    fn a_removed_response_is_gone_and_its_bytes_are_freed() {
        let store = ResponseStore::new(10, 10);
        store.insert("a".to_owned(), response("123456"));

        assert!(store.remove("a"));
        assert!(!store.remove("a"));
        store.insert("b".to_owned(), response("123456"));

        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some());
    }
}
