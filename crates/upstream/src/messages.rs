//! Anthropic's Messages API, as Portkey calls it for an `anthropic` request
//! (`POST <custom host>/messages`): an echo of the last user message, whole
//! or streamed one word per `content_block_delta`, and
//! `/messages/count_tokens`. The answer also says which `anthropic-version`
//! and `anthropic-beta` headers arrived (`upstream_saw`), so a test can see
//! that a gateway forwarded them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::errors;
use crate::ids::Ids;
use crate::reply::{Reply, SseBody, json_response, named_event, sse_response};
use crate::words;

/// What a Messages request says, once checked.
#[derive(Debug)]
struct Conversation<'a> {
    model: &'a str,
    stream: bool,
    /// The text of the last user message's text blocks.
    last_user_text: String,
    /// Words of the system prompt and of every message's text, at least 1.
    input_tokens: usize,
}

/// What a stream needs besides the request.
#[derive(Debug)]
pub struct Streaming<'a> {
    pub ids: &'a Ids,
    /// Between two content deltas.
    pub gap: Duration,
    /// Whether to close the connection after the first content delta.
    pub cut: bool,
}

/// The answer to `POST /v1/messages`.
pub fn create(body: &[u8], headers: &HeaderMap, streaming: &Streaming<'_>) -> Response<Reply> {
    let request = parse(body);
    let conversation = match request
        .as_ref()
        .map_err(String::clone)
        .and_then(|request| read(request, true))
    {
        Ok(conversation) => conversation,
        Err(message) => return errors::anthropic(StatusCode::BAD_REQUEST, &message),
    };
    if streaming.cut && !conversation.stream {
        return errors::anthropic(StatusCode::BAD_REQUEST, "only a stream can be cut");
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map_or(Value::Null, Value::from)
    };
    let saw =
        json!({"anthropic_version": header("anthropic-version"), "anthropic_beta": header("anthropic-beta")});
    let id = streaming.ids.next("msg_");
    let text = format!("You said: {}", conversation.last_user_text);
    let pieces = words::pieces(&text);
    let input_tokens = conversation.input_tokens;
    let usage = |output_tokens: usize| {
        json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    };
    if !conversation.stream {
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "model": conversation.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": usage(pieces.len()), "upstream_saw": saw,
        });
        return json_response(StatusCode::OK, message.to_string());
    }
    let start = json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": conversation.model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": usage(1), "upstream_saw": saw,
    }});
    let mut events: Vec<Bytes> = vec![
        named_event("message_start", &start),
        named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        named_event("ping", &json!({"type": "ping"})),
    ];
    let first_delta = events.len();
    events.extend(pieces.iter().map(|piece| {
        named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
        )
    }));
    let after_deltas = events.len();
    events.push(named_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(named_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": pieces.len()}}),
    ));
    events.push(named_event("message_stop", &json!({"type": "message_stop"})));
    let mut body = SseBody::new(Arc::from(events), after_deltas, streaming.gap).paced_from(first_delta);
    if streaming.cut {
        body = body.cut_at(first_delta + 1);
    }
    sse_response(body)
}

/// The answer to `POST /v1/messages/count_tokens`: the `input_tokens` the
/// same conversation's message reports.
pub fn count_tokens(body: &[u8]) -> Response<Reply> {
    let request = parse(body);
    match request
        .as_ref()
        .map_err(String::clone)
        .and_then(|request| read(request, false))
    {
        Ok(conversation) => json_response(
            StatusCode::OK,
            json!({"input_tokens": conversation.input_tokens}).to_string(),
        ),
        Err(message) => errors::anthropic(StatusCode::BAD_REQUEST, &message),
    }
}

/// The request body, when it is a JSON object.
fn parse(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| "The request body is not a JSON object.".to_owned())
}

/// Checks the fields Anthropic requires (`max_tokens` only for a message)
/// and reads the conversation.
fn read(request: &Value, needs_max_tokens: bool) -> Result<Conversation<'_>, String> {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?;
    if needs_max_tokens && !request.get("max_tokens").is_some_and(Value::is_u64) {
        return Err("max_tokens: Field required".to_owned());
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let mut input_tokens = request
        .get("system")
        .map_or(0, |system| words::count(&text_of(system)));
    let mut last_user_text = None;
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        let content = message.get("content");
        let (Some(role @ ("user" | "assistant")), Some(content)) = (role, content) else {
            return Err(format!(
                "messages.{index}: a message needs a role (user or assistant) and content"
            ));
        };
        let text = text_of(content);
        input_tokens += words::count(&text);
        if role == "user" {
            last_user_text = Some(text);
        }
    }
    Ok(Conversation {
        model,
        stream: request.get("stream").is_some_and(|stream| stream == true),
        last_user_text: last_user_text.unwrap_or_default(),
        input_tokens: input_tokens.max(1),
    })
}

/// The text of a content (or system prompt): a string, or the `text` of its
/// text blocks, one per line.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::read;
    use serde_json::json;

    #[test]
    fn echoes_the_last_user_text_blocks_and_counts_every_word() {
        let request = json!({"model": "claude", "max_tokens": 5, "system": "be brief",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "second"},
                {"type": "image", "source": {}}, {"type": "text", "text": "part"}]},
        ]});

        let conversation = read(&request, true).unwrap();

        assert_eq!(conversation.last_user_text, "second\npart");
        assert_eq!(conversation.input_tokens, 2 + 2 + 2 + 2);
        assert!(!conversation.stream);
    }

    #[test]
    fn refuses_a_message_without_max_tokens_but_counts_its_tokens() {
        let request = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(read(&request, true).unwrap_err(), "max_tokens: Field required");
        assert_eq!(read(&request, false).unwrap().input_tokens, 1);
        assert!(read(&json!({"model": "claude", "max_tokens": 1}), true).is_err());
        assert!(read(&json!({"model": "claude", "max_tokens": 1, "messages": []}), true).is_err());
    }
}
