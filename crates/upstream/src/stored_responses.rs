//! What the Responses API answers about a response it created:
//! `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
//! `POST /v1/responses/{id}/cancel` and `GET /v1/responses/{id}/input_items`.

use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::errors;
use crate::reply::{Reply, json_response};
use crate::response_store::{ResponseStore, StoredResponse};

/// The most items one page of `input_items` holds, and the default.
const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 20;

/// `GET /v1/responses/{id}`: the response as it was answered.
pub fn retrieve(store: &ResponseStore, id: &str) -> Response<Reply> {
    match store.get(id) {
        Some(stored) => json_response(StatusCode::OK, stored.body.clone()),
        None => not_found(id),
    }
}

/// `DELETE /v1/responses/{id}`: forgets it.
pub fn delete(store: &ResponseStore, id: &str) -> Response<Reply> {
    if store.remove(id) {
        json_response(
            StatusCode::OK,
            json!({"id": id, "object": "response", "deleted": true}).to_string(),
        )
    } else {
        not_found(id)
    }
}

/// `POST /v1/responses/{id}/cancel`: a response created in background mode
/// as it stands (every response here is complete when created); any other
/// is refused, as OpenAI refuses it.
pub fn cancel(store: &ResponseStore, id: &str) -> Response<Reply> {
    match store.get(id) {
        Some(stored) if stored.background => json_response(StatusCode::OK, stored.body.clone()),
        Some(_) => errors::openai(
            StatusCode::BAD_REQUEST,
            "Only responses created with background=true can be cancelled",
            None,
            None,
        ),
        None => not_found(id),
    }
}

/// `GET /v1/responses/{id}/input_items`: a page of the input items, newest
/// first unless `order=asc`, `limit` (1 to 100, default 20) long, after the
/// item `after` when given.
pub fn input_items(store: &ResponseStore, id: &str, query: Option<&str>) -> Response<Reply> {
    let Some(stored) = store.get(id) else {
        return not_found(id);
    };
    match page(&stored, query) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err((message, param)) => errors::openai(StatusCode::BAD_REQUEST, &message, Some(param), None),
    }
}

fn page(stored: &StoredResponse, query: Option<&str>) -> Result<String, (String, &'static str)> {
    let mut limit = DEFAULT_LIMIT;
    let mut ascending = false;
    let mut after = None;
    for (name, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
    {
        match name {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        (
                            format!("Invalid 'limit': {value}; expected 1 to {MAX_LIMIT}."),
                            "limit",
                        )
                    })?;
            }
            "order" => {
                ascending = match value {
                    "asc" => true,
                    "desc" => false,
                    _ => {
                        return Err((
                            format!("Invalid 'order': {value}; expected asc or desc."),
                            "order",
                        ));
                    }
                };
            }
            "after" => after = Some(value),
            _ => {}
        }
    }
    let mut items: Vec<&(String, Box<RawValue>)> = stored.items.iter().collect();
    if !ascending {
        items.reverse();
    }
    if let Some(after) = after {
        let at = items
            .iter()
            .position(|(id, _)| id == after)
            .ok_or_else(|| (format!("No input item with id '{after}'."), "after"))?;
        items.drain(..=at);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let list = ItemList {
        object: "list",
        data: items.iter().map(|(_, item)| &**item).collect(),
        first_id: items.first().map(|(id, _)| id.as_str()),
        last_id: items.last().map(|(id, _)| id.as_str()),
        has_more,
    };
    serde_json::to_string(&list).map_err(|error| (error.to_string(), "input"))
}

/// The items are written as stored, without a parse.
#[derive(Serialize)]
struct ItemList<'a> {
    object: &'static str,
    data: Vec<&'a RawValue>,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

fn not_found(id: &str) -> Response<Reply> {
    errors::openai(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
        None,
        None,
    )
}
