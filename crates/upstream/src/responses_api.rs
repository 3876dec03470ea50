//! `POST /v1/responses`, OpenAI's Responses API: an echo of the last user
//! text as one assistant message, whole or as the API's named stream events
//! (one `response.output_text.delta` per word). Each created response is
//! remembered (see [`ResponseStore`]) for retrieval, listing of its input
//! items, deletion and `previous_response_id`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::errors;
use crate::ids::Ids;
use crate::reply::{Reply, SseBody, json_response, named_event, sse_response};
use crate::response_store::{ResponseStore, StoredResponse};
use crate::words;

/// What creating a response needs besides the request.
#[derive(Debug)]
pub struct Creation<'a> {
    pub ids: &'a Ids,
    pub store: &'a ResponseStore,
    /// Between two text deltas of a stream.
    pub gap: Duration,
    /// Whether to close a stream's connection after its first text delta.
    pub cut: bool,
}

/// A 400 or 404 in OpenAI's shape.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl Refusal {
    fn bad(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param,
            code: None,
        }
    }
}

/// The request's input, as the items `input_items` lists.
#[derive(Debug)]
struct Input {
    items: Vec<Value>,
    last_user_text: String,
    tokens: usize,
}

/// The answer to `POST /v1/responses`.
pub fn create(body: &[u8], creation: &Creation<'_>) -> Response<Reply> {
    match respond(body, creation) {
        Ok(response) => response,
        Err(refusal) => errors::openai(refusal.status, &refusal.message, refusal.param, refusal.code),
    }
}

fn respond(body: &[u8], creation: &Creation<'_>) -> Result<Response<Reply>, Refusal> {
    let request: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Refusal::bad("The request body is not a JSON object.", None))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad("Missing required parameter: 'model'.", Some("model")))?;
    let previous = match request.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if creation.store.get(id).is_some() => Some(id.as_str()),
        Some(Value::String(id)) => {
            return Err(Refusal {
                status: StatusCode::NOT_FOUND,
                message: format!("Previous response with id '{id}' not found."),
                param: Some("previous_response_id"),
                code: Some("previous_response_not_found"),
            });
        }
        Some(_) => {
            return Err(Refusal::bad(
                "Invalid type for 'previous_response_id': expected a string.",
                Some("previous_response_id"),
            ));
        }
    };
    let input = match request.get("input") {
        None | Some(Value::Null) if previous.is_some() => Input {
            items: Vec::new(),
            last_user_text: String::new(),
            tokens: 0,
        },
        None | Some(Value::Null) => {
            return Err(Refusal::bad(
                "Missing required parameter: 'input'.",
                Some("input"),
            ));
        }
        Some(input) => {
            read_input(input, creation.ids).map_err(|message| Refusal::bad(message, Some("input")))?
        }
    };
    let stream = request.get("stream").is_some_and(|stream| stream == true);
    if creation.cut && !stream {
        return Err(Refusal::bad("only a stream can be cut", None));
    }
    let instructions = request.get("instructions").and_then(Value::as_str).unwrap_or("");
    let input_tokens = (input.tokens + words::count(instructions)).max(1);
    let text = format!("You said: {}", input.last_user_text);
    let pieces = words::pieces(&text);
    let output_tokens = pieces.len();
    let head = Head {
        id: creation.ids.next("resp_"),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        model,
        previous,
    };
    let message_id = creation.ids.next("msg_");
    let message = |status: &str, content: Value| {
        json!({"type": "message", "id": message_id, "status": status, "role": "assistant",
            "content": content})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let usage = json!({
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let completed = head.object(
        &request,
        "completed",
        json!([message("completed", json!([part(&text)]))]),
        usage,
    );
    let completed_body = Bytes::from(completed.to_string());
    if request.get("store") != Some(&Value::Bool(false)) {
        let items = input
            .items
            .iter()
            .map(|item| {
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                serde_json::value::to_raw_value(item).map(|raw| (id, raw))
            })
            .collect::<Result<_, _>>()
            .map_err(|error| Refusal::bad(error.to_string(), Some("input")))?;
        creation.store.insert(
            head.id.clone(),
            StoredResponse {
                body: completed_body.clone(),
                background: request.get("background") == Some(&Value::Bool(true)),
                items,
            },
        );
    }
    if !stream {
        return Ok(json_response(StatusCode::OK, completed_body));
    }
    let mut events = EventStream::default();
    let in_progress = head.object(&request, "in_progress", json!([]), Value::Null);
    events.push("response.created", json!({"response": in_progress}));
    events.push("response.in_progress", json!({"response": in_progress}));
    events.push(
        "response.output_item.added",
        json!({"output_index": 0, "item": message("in_progress", json!([]))}),
    );
    let at = json!({"item_id": message_id, "output_index": 0, "content_index": 0});
    let with_at = |mut data: Value| {
        if let (Some(data), Some(at)) = (data.as_object_mut(), at.as_object()) {
            data.extend(at.clone());
        }
        data
    };
    events.push("response.content_part.added", with_at(json!({"part": part("")})));
    let first_delta = events.events.len();
    for piece in &pieces {
        events.push(
            "response.output_text.delta",
            with_at(json!({"delta": piece, "logprobs": []})),
        );
    }
    let after_deltas = events.events.len();
    events.push(
        "response.output_text.done",
        with_at(json!({"text": text, "logprobs": []})),
    );
    events.push(
        "response.content_part.done",
        with_at(json!({"part": part(&text)})),
    );
    events.push(
        "response.output_item.done",
        json!({"output_index": 0, "item": message("completed", json!([part(&text)]))}),
    );
    events.push("response.completed", json!({"response": completed}));
    let mut body = SseBody::new(Arc::from(events.events), after_deltas, creation.gap).paced_from(first_delta);
    if creation.cut {
        body = body.cut_at(first_delta + 1);
    }
    Ok(sse_response(body))
}

/// What every state of one response shares.
#[derive(Debug)]
struct Head<'a> {
    id: String,
    created_at: u64,
    model: &'a str,
    previous: Option<&'a str>,
}

impl Head<'_> {
    /// The response object in `status`, echoing the request's settings (or
    /// OpenAI's defaults) as OpenAI does; every member the `openai` SDK's
    /// `Response` model requires is there.
    fn object(&self, request: &Value, status: &str, output: Value, usage: Value) -> Value {
        let echo = |key: &str, default: Value| {
            request
                .get(key)
                .filter(|value| !value.is_null())
                .cloned()
                .unwrap_or(default)
        };
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": echo("background", json!(false)), "error": null, "incomplete_details": null,
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "metadata": echo("metadata", json!({})), "model": self.model, "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
            "previous_response_id": self.previous,
            "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
            "service_tier": "default", "store": echo("store", json!(true)),
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")), "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)), "truncation": echo("truncation", json!("disabled")),
            "usage": usage, "user": echo("user", Value::Null),
        })
    }
}

/// Named events, numbered by `sequence_number` from 0.
#[derive(Debug, Default)]
struct EventStream {
    events: Vec<Bytes>,
}

impl EventStream {
    fn push(&mut self, kind: &str, mut data: Value) {
        if let Some(fields) = data.as_object_mut() {
            fields.insert("type".to_owned(), Value::from(kind));
            fields.insert("sequence_number".to_owned(), Value::from(self.events.len()));
        }
        self.events.push(named_event(kind, &data));
    }
}

/// `input`: a string (one user message) or an array of input items. Message
/// items get an id, a status and content parts; other items an id.
fn read_input(input: &Value, ids: &Ids) -> Result<Input, String> {
    let given: Vec<Value> = match input {
        Value::String(text) => vec![json!({"role": "user", "content": text})],
        Value::Array(items) => items.clone(),
        _ => {
            return Err("Invalid type for 'input': expected a string or an array of input items.".to_owned());
        }
    };
    let mut read = Input {
        items: Vec::with_capacity(given.len()),
        last_user_text: String::new(),
        tokens: 0,
    };
    for (index, mut item) in given.into_iter().enumerate() {
        let Some(fields) = item.as_object_mut() else {
            return Err(format!("Invalid type for 'input[{index}]': expected an object."));
        };
        let is_message = match fields.get("type") {
            None => true,
            Some(kind) => kind == "message",
        };
        if !is_message {
            if !fields.contains_key("id") {
                fields.insert("id".to_owned(), Value::from(ids.next("item_")));
            }
            read.items.push(item);
            continue;
        }
        let role = match fields.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant" | "system" | "developer")) => role.to_owned(),
            _ => return Err(format!("Invalid value for 'input[{index}].role'.")),
        };
        let (text, content) = match fields.get("content") {
            Some(Value::String(text)) if role == "assistant" => (
                text.clone(),
                json!([{"type": "output_text", "text": text, "annotations": []}]),
            ),
            Some(Value::String(text)) => (text.clone(), json!([{"type": "input_text", "text": text}])),
            Some(Value::Array(parts)) => (text_of(parts), Value::Array(parts.clone())),
            _ => return Err(format!("Invalid type for 'input[{index}].content'.")),
        };
        read.tokens += words::count(&text);
        if role == "user" {
            read.last_user_text.clone_from(&text);
        }
        let id = match fields.get("id") {
            Some(Value::String(id)) => id.clone(),
            _ => ids.next("msg_"),
        };
        read.items.push(
            json!({"id": id, "type": "message", "role": role, "status": "completed", "content": content}),
        );
    }
    Ok(read)
}

/// The text parts of a message's content, one per line.
fn text_of(parts: &[Value]) -> String {
    parts
        .iter()
        .filter(|part| {
            matches!(
                part.get("type").and_then(Value::as_str),
                Some("input_text" | "output_text" | "text")
            )
        })
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::read_input;
    use crate::ids::Ids;
    use serde_json::json;

    #[test]
    fn a_string_input_is_one_user_message_item() {
        let input = read_input(&json!("hello there"), &Ids::new()).unwrap();

        assert_eq!(input.last_user_text, "hello there");
        assert_eq!(input.tokens, 2);
        assert_eq!(input.items.len(), 1);
        assert_eq!(input.items[0]["role"], "user");
        assert_eq!(
            input.items[0]["content"],
            json!([{"type": "input_text", "text": "hello there"}])
        );
        assert!(input.items[0]["id"].as_str().unwrap().starts_with("msg_"));
    }

    #[test]
    fn echoes_the_last_user_text_of_an_item_array() {
        let items = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"type": "message", "role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"},
                {"type": "input_image", "image_url": "x"}]},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]);

        let input = read_input(&items, &Ids::new()).unwrap();

        assert_eq!(input.last_user_text, "second");
        assert_eq!(input.tokens, 5);
        assert_eq!(input.items[2]["content"][0]["type"], "output_text");
        assert!(input.items[4]["id"].as_str().unwrap().starts_with("item_"));
        assert!(read_input(&json!(3), &Ids::new()).is_err());
        assert!(read_input(&json!([{"role": "robot", "content": "x"}]), &Ids::new()).is_err());
    }
}
