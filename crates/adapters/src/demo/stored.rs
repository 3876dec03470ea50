//! The responses the demo made, remembered in the process for their calls
//! by id (retrieve, delete, cancel, input items) and their follow-ups
//! (`previous_response_id`): the last [`CAPACITY`], within [`MAX_BYTES`],
//! the oldest forgotten first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use gatewayz_domain::{ChatError, ErrorSource, ResponseAction, ResponseCall, UpstreamError};
use serde::Serialize;
use serde_json::value::RawValue;

use super::wire::to_bytes;

/// How many responses the demo remembers.
pub(super) const CAPACITY: usize = 1024;

/// How many bytes of responses and input items it keeps: inputs are as
/// large as request bodies.
pub(super) const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The items a page of input items has when the query names no `limit`,
/// and the most it may have.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// The responses every [`super::DemoProvider`] of the process shares.
pub(super) fn process_memory() -> &'static Mutex<ResponseStore> {
    static MEMORY: Mutex<ResponseStore> = Mutex::new(ResponseStore::new(CAPACITY, MAX_BYTES));
    &MEMORY
}

/// The store, even if a thread panicked holding it: every change to it is
/// whole before anything can panic.
pub(super) fn lock(memory: &Mutex<ResponseStore>) -> MutexGuard<'_, ResponseStore> {
    memory.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A response, as the demo answered it, with its input.
pub(super) struct StoredResponse {
    /// The `response` object.
    pub response: Bytes,
    /// Its input items, in order.
    pub items: Vec<InputItem>,
    /// Its input and output tokens: what a follow-up's prompt carries.
    pub tokens: u64,
}

/// An input item, normalized as the API lists it, and its id.
pub(super) struct InputItem {
    pub id: String,
    pub json: Box<RawValue>,
}

impl StoredResponse {
    fn size(&self) -> usize {
        self.response.len()
            + self
                .items
                .iter()
                .map(|item| item.id.len() + item.json.get().len())
                .sum::<usize>()
    }
}

/// Responses by id, bounded in count and bytes.
pub(super) struct ResponseStore {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    /// Ids, oldest first.
    order: VecDeque<String>,
    by_id: BTreeMap<String, StoredResponse>,
}

impl ResponseStore {
    pub(super) const fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity,
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            by_id: BTreeMap::new(),
        }
    }

    /// Keeps `stored` as `id`, forgetting the oldest past the bounds (never
    /// the newest: a response larger than the bytes is kept alone).
    pub(super) fn remember(&mut self, id: String, stored: StoredResponse) {
        self.forget(&id);
        self.bytes += id.len() + stored.size();
        self.order.push_back(id.clone());
        self.by_id.insert(id, stored);
        while self.order.len() > 1 && (self.order.len() > self.capacity || self.bytes > self.max_bytes) {
            if let Some(oldest) = self.order.pop_front()
                && let Some(forgotten) = self.by_id.remove(&oldest)
            {
                self.bytes -= oldest.len() + forgotten.size();
            }
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&StoredResponse> {
        self.by_id.get(id)
    }

    pub(super) fn forget(&mut self, id: &str) -> Option<StoredResponse> {
        let forgotten = self.by_id.remove(id)?;
        self.order.retain(|kept| kept != id);
        self.bytes -= id.len() + forgotten.size();
        Some(forgotten)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Answers a call by id as OpenAI does for a stored, finished response.
pub(super) fn respond_by_id(memory: &Mutex<ResponseStore>, call: &ResponseCall) -> Result<Bytes, ChatError> {
    let mut store = lock(memory);
    let not_found = || {
        ChatError::UpstreamRejected(UpstreamError {
            code: Some("response_not_found".to_owned()),
            ..UpstreamError::new(
                ErrorSource::Provider,
                Some(404),
                format!("Response with id '{}' not found.", call.id),
            )
        })
    };
    match call.action {
        ResponseAction::Retrieve => Ok(store.get(&call.id).ok_or_else(not_found)?.response.clone()),
        ResponseAction::Delete => {
            store.forget(&call.id).ok_or_else(not_found)?;
            Ok(to_bytes(&Deleted {
                id: &call.id,
                object: "response",
                deleted: true,
            }))
        }
        ResponseAction::Cancel => {
            store.get(&call.id).ok_or_else(not_found)?;
            Err(ChatError::UpstreamRejected(UpstreamError::new(
                ErrorSource::Provider,
                Some(400),
                "Only responses created with background=true can be cancelled",
            )))
        }
        ResponseAction::InputItems => {
            let stored = store.get(&call.id).ok_or_else(not_found)?;
            Ok(input_items(stored, call.query.as_deref()))
        }
    }
}

#[derive(Serialize)]
struct Deleted<'a> {
    id: &'a str,
    object: &'static str,
    deleted: bool,
}

/// A page of a response's input items, as the query asks: `limit` (1 to
/// 100, 20 by default), `order` (`desc` by default, or `asc`), `after` (an
/// item id).
fn input_items(stored: &StoredResponse, query: Option<&str>) -> Bytes {
    let mut limit = DEFAULT_PAGE;
    let mut ascending = false;
    let mut after = None;
    for (name, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
    {
        match name {
            "limit" => {
                limit = value
                    .parse()
                    .map_or(DEFAULT_PAGE, |limit: usize| limit.clamp(1, MAX_PAGE))
            }
            "order" => ascending = value == "asc",
            "after" => after = Some(value),
            _ => {}
        }
    }
    let ordered: Vec<&InputItem> = if ascending {
        stored.items.iter().collect()
    } else {
        stored.items.iter().rev().collect()
    };
    let start = match after {
        // No item follows an id that is not among them.
        Some(after) => ordered
            .iter()
            .position(|item| item.id == after)
            .map_or(ordered.len(), |at| at + 1),
        None => 0,
    };
    let page: Vec<&InputItem> = ordered.iter().skip(start).take(limit).copied().collect();
    to_bytes(&ItemList {
        object: "list",
        data: page.iter().map(|item| &*item.json).collect(),
        first_id: page.first().map(|item| item.id.as_str()),
        last_id: page.last().map(|item| item.id.as_str()),
        has_more: start + page.len() < ordered.len(),
    })
}

#[derive(Serialize)]
struct ItemList<'a> {
    object: &'static str,
    data: Vec<&'a RawValue>,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::{Credentials, RequestContext, Route};
    use serde_json::{Value, json};

    use super::super::testing::value;
    use super::*;

    fn stored(items: usize, response_bytes: usize) -> StoredResponse {
        StoredResponse {
            response: Bytes::from(vec![b' '; response_bytes]),
            items: (0..items)
                .map(|index| InputItem {
                    id: format!("msg_{index}"),
                    json: serde_json::value::to_raw_value(&json!({"id": format!("msg_{index}")})).unwrap(),
                })
                .collect(),
            tokens: 0,
        }
    }

    fn by_id(action: ResponseAction, id: &str, query: Option<&str>) -> ResponseCall {
        ResponseCall {
            action,
            id: id.to_owned(),
            query: query.map(str::to_owned),
            route: Route::Demo,
            credentials: Credentials::None,
            context: RequestContext::new("req-1"),
        }
    }

    #[test]
    fn the_oldest_are_forgotten_past_the_count_or_the_bytes() {
        let mut store = ResponseStore::new(3, 1000);
        for id in ["a", "b", "c", "d"] {
            store.remember(id.to_owned(), stored(0, 10));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("a").is_none() && store.get("d").is_some());

        store.remember("big".to_owned(), stored(0, 980));
        assert!(store.get("b").is_none() && store.get("c").is_none());
        assert!(store.get("d").is_some());
        store.remember("huge".to_owned(), stored(0, 5000));
        assert_eq!(store.len(), 1, "the newest is kept, alone");

        store.forget("huge");
        assert_eq!((store.len(), store.bytes, store.order.len()), (0, 0, 0));
    }

    #[test]
    fn the_process_memory_holds_at_most_its_capacity() {
        let mut store = ResponseStore::new(CAPACITY, MAX_BYTES);
        for index in 0..=CAPACITY {
            store.remember(format!("resp_{index}"), stored(1, 100));
        }
        assert_eq!(store.len(), CAPACITY);
        assert!(store.get("resp_0").is_none());
        assert!(store.get(&format!("resp_{CAPACITY}")).is_some());
    }

    #[test]
    fn input_items_are_paged_newest_first_by_default() {
        let memory = Mutex::new(ResponseStore::new(4, MAX_BYTES));
        lock(&memory).remember("resp_1".to_owned(), stored(5, 2));
        let page = |query: Option<&str>| {
            value(&respond_by_id(&memory, &by_id(ResponseAction::InputItems, "resp_1", query)).unwrap())
        };

        let ids = |list: &Value| -> Vec<String> {
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let all = page(None);
        assert_eq!(ids(&all), ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"]);
        assert_eq!(
            (
                &all["object"],
                &all["first_id"],
                &all["last_id"],
                &all["has_more"]
            ),
            (&json!("list"), &json!("msg_4"), &json!("msg_0"), &json!(false))
        );
        let first = page(Some("limit=2&order=asc"));
        assert_eq!(ids(&first), ["msg_0", "msg_1"]);
        assert_eq!(first["has_more"], true);
        let next = page(Some("limit=2&order=asc&after=msg_1&include[]=x"));
        assert_eq!(ids(&next), ["msg_2", "msg_3"]);
        let last = page(Some("order=asc&after=msg_3"));
        assert_eq!(
            (ids(&last), &last["has_more"]),
            (vec!["msg_4".to_owned()], &json!(false))
        );
        let none = page(Some("after=msg_0"));
        assert_eq!((&none["data"], &none["first_id"]), (&json!([]), &Value::Null));
    }

    #[test]
    fn delete_forgets_and_cancel_is_refused_as_openai_refuses_a_finished_response() {
        let memory = Mutex::new(ResponseStore::new(4, MAX_BYTES));
        lock(&memory).remember("resp_1".to_owned(), stored(1, 2));

        let cancel = respond_by_id(&memory, &by_id(ResponseAction::Cancel, "resp_1", None)).unwrap_err();
        assert!(matches!(cancel, ChatError::UpstreamRejected(ref error) if error.status == Some(400)));
        let deleted = respond_by_id(&memory, &by_id(ResponseAction::Delete, "resp_1", None)).unwrap();
        assert_eq!(
            value(&deleted),
            json!({"id": "resp_1", "object": "response", "deleted": true})
        );
        for action in [
            ResponseAction::Retrieve,
            ResponseAction::Delete,
            ResponseAction::Cancel,
            ResponseAction::InputItems,
        ] {
            let error = respond_by_id(&memory, &by_id(action, "resp_1", None)).unwrap_err();
            let ChatError::UpstreamRejected(error) = error else {
                panic!("{error:?}")
            };
            assert_eq!(
                (error.status, error.code.as_deref()),
                (Some(404), Some("response_not_found"))
            );
        }
    }
}
