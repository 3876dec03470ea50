//! Anthropic's Messages API served by a model that speaks only chat
//! completions: the request written as a chat completion, and the answer
//! (whole, or event by event) written back as a message. What translates:
//! text, the system prompt, images (base64 or URL), tools and tool choice,
//! tool calls and their results, stop sequences, sampling, the user id, stop
//! reasons and usage. A block with no chat counterpart (a document, a
//! server tool, ...) is refused by name rather than dropped.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::chunk::ChatChunk;
use super::endpoint::Endpoint;
use super::response::ChatResponse;
use super::tokens::Usage;
use crate::error::{ChatError, ValidationError};
use crate::json::ShapeError;
use crate::ports::ChatStream;
use crate::text::quote;

mod views;

/// A chat chunk that cannot be written as a message's events.
fn unreadable(problem: &str) -> ChatError {
    ChatError::InvalidUpstreamResponse(crate::error::UpstreamError::new(
        crate::error::ErrorSource::Provider,
        None,
        format!("a chat chunk cannot be written as a message's events: {problem}"),
    ))
}

/// The chat-completion body that asks what the Messages `body` asks.
///
/// # Errors
/// A [`ValidationError`] naming the part of the request that has no chat
/// counterpart.
pub fn chat_body(body: &[u8]) -> Result<Bytes, ValidationError> {
    let request: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| ValidationError::body("Request body must be a JSON object"))?;
    let mut chat = Map::new();
    let mut messages = Vec::new();
    if let Some(system) = request.get("system") {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    let listed = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, message) in listed.iter().enumerate() {
        chat_messages(index, message, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    for (name, value) in &request {
        match name.as_str() {
            "model" | "max_tokens" | "temperature" | "top_p" | "stream" => {
                chat.insert(name.clone(), value.clone());
            }
            "stop_sequences" => {
                chat.insert("stop".into(), value.clone());
            }
            "metadata" => {
                if let Some(user) = value.get("user_id") {
                    chat.insert("user".into(), user.clone());
                }
            }
            "tools" => {
                chat.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                let (choice, parallel) = tool_choice(value)?;
                chat.insert("tool_choice".into(), choice);
                if let Some(parallel) = parallel {
                    chat.insert("parallel_tool_calls".into(), Value::Bool(parallel));
                }
            }
            // Sampling and reasoning settings chat completions do not take.
            "system" | "messages" | "top_k" | "thinking" | "service_tier" => {}
            other => {
                return Err(untranslatable(
                    other,
                    "a member with no chat-completions counterpart",
                ));
            }
        }
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(serde_json::to_vec(&chat).unwrap_or_default().into())
}

fn untranslatable(param: &str, what: &str) -> ValidationError {
    ValidationError::new(
        param,
        format!(
            "`{}` is {what}: it cannot be sent to a model that speaks only chat completions",
            quote(param)
        ),
    )
    .with_code("untranslatable")
}

/// A system prompt or a tool result: a string, or text blocks joined.
fn text_of(value: &Value, param: &str) -> Result<String, ValidationError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (index, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(block.get("text").and_then(Value::as_str).unwrap_or_default()),
                    _ => return Err(untranslatable(&format!("{param}[{index}]"), "not a text block")),
                }
            }
            Ok(texts.join("\n\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(ValidationError::new(
            param,
            format!("`{param}` must be a string or text blocks"),
        )),
    }
}

/// The chat messages of one Messages message: tool results become `tool`
/// messages (first, as chat completions require them right after the call),
/// tool uses an assistant's `tool_calls`.
fn chat_messages(index: usize, message: &Value, out: &mut Vec<Value>) -> Result<(), ValidationError> {
    let param = format!("messages[{index}]");
    let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
    if !matches!(role, "user" | "assistant") {
        return Err(ValidationError::new(
            format!("{param}.role"),
            format!("`{param}.role` must be `user` or `assistant`"),
        ));
    }
    let blocks = match message.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(ValidationError::new(
                format!("{param}.content"),
                format!("`{param}.content` must be a string or an array of blocks"),
            ));
        }
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    for (at, block) in blocks.iter().enumerate() {
        let here = format!("{param}.content[{at}]");
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => {
                let piece = block.get("text").and_then(Value::as_str).unwrap_or_default();
                if role == "assistant" {
                    text.push_str(piece);
                } else {
                    parts.push(json!({"type": "text", "text": piece}));
                }
            }
            ("user", Some("image")) => parts.push(image(block, &here)?),
            ("user", Some("tool_result")) => {
                let content = block.get("content").map_or(Ok(String::new()), |content| {
                    text_of(content, &format!("{here}.content"))
                })?;
                out.push(json!({"role": "tool",
                    "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": content}));
            }
            ("assistant", Some("tool_use")) => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(
                    json!({"id": block.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                    "function": {"name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string()}}),
                );
            }
            // A model's earlier reasoning is its own: not sent back.
            ("assistant", Some("thinking" | "redacted_thinking")) => {}
            (_, kind) => {
                return Err(untranslatable(
                    &here,
                    &format!("a `{}` block", quote(kind.unwrap_or("untyped"))),
                ));
            }
        }
    }
    match role {
        "assistant" => {
            let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() {
                Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            out.push(message);
        }
        _ if !parts.is_empty() => out.push(json!({"role": "user", "content": parts})),
        _ => {}
    }
    Ok(())
}

fn image(block: &Value, param: &str) -> Result<Value, ValidationError> {
    let source = block.get("source").cloned().unwrap_or(Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => {
            return Err(untranslatable(
                &format!("{param}.source"),
                "an image source other than base64 or a URL",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tools(value: &Value) -> Result<Value, ValidationError> {
    let listed = value
        .as_array()
        .ok_or_else(|| ValidationError::new("tools", "`tools` must be an array"))?;
    let mut out = Vec::with_capacity(listed.len());
    for (index, tool) in listed.iter().enumerate() {
        // A client tool has no `type` (or `custom`); the others run at Anthropic.
        if let Some(kind) = tool
            .get("type")
            .and_then(Value::as_str)
            .filter(|kind| *kind != "custom")
        {
            return Err(untranslatable(
                &format!("tools[{index}]"),
                &format!("Anthropic's server tool `{}`", quote(kind)),
            ));
        }
        let mut function = json!({"name": tool.get("name").cloned().unwrap_or(Value::Null),
            "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(description) = tool.get("description") {
            function["description"] = description.clone();
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// The chat `tool_choice`, and `parallel_tool_calls` when the client said.
fn tool_choice(value: &Value) -> Result<(Value, Option<bool>), ValidationError> {
    let parallel = value
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disabled| !disabled);
    let choice = match value.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": value.get("name").cloned().unwrap_or(Value::Null)}})
        }
        _ => {
            return Err(ValidationError::new(
                "tool_choice",
                "`tool_choice.type` must be auto, any, tool or none",
            ));
        }
    };
    Ok((choice, parallel))
}

/// Anthropic's stop reason for a chat `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage for chat usage: cached prompt tokens are cache reads,
/// apart from the input tokens.
fn usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.copied().unwrap_or_default();
    let cached = usage.cached_prompt_tokens().min(usage.prompt_tokens);
    json!({"input_tokens": usage.prompt_tokens - cached, "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached})
}

/// A whole chat completion, as a message: read without building it as a
/// JSON tree ([`views`]), so that what it costs is about its size.
///
/// # Errors
/// A [`ShapeError`] when the completion has no first choice, or more than
/// [`views::MAX_TOOL_CALLS`] tool calls.
pub fn message(completion: &ChatResponse) -> Result<ChatResponse, ShapeError> {
    let json = completion.json();
    let read: views::Completion<'_> = serde_json::from_slice(&json).map_err(|error| ShapeError {
        at: None,
        problem: crate::json::describe(&error),
    })?;
    let choice = read.choices.0.ok_or_else(|| ShapeError {
        at: Some("choices".into()),
        problem: "no choice to translate".into(),
    })?;
    let said = choice.message;
    let mut content = Vec::new();
    if let Some(text) = said.content.as_deref().filter(|text| !text.is_empty()) {
        content.push(Block::Text { text });
    }
    let calls = said.tool_calls.map(|calls| calls.0).unwrap_or_default();
    for call in &calls {
        // Arguments that are not JSON are no input.
        let input = RawValue::from_string(call.function.arguments.as_deref().unwrap_or("{}").to_owned())
            .or_else(|_| RawValue::from_string("{}".to_owned()))
            .map_err(|error| ShapeError {
                at: None,
                problem: crate::json::describe(&error),
            })?;
        content.push(Block::ToolUse {
            id: call.id.as_deref().unwrap_or_default(),
            name: call.function.name.as_deref().unwrap_or_default(),
            input,
        });
    }
    let message = Message {
        id: read.id.as_deref().unwrap_or_default(),
        kind: "message",
        role: "assistant",
        model: read.model.as_deref().unwrap_or_default(),
        content,
        stop_reason: stop_reason(choice.finish_reason.as_deref()),
        stop_sequence: None,
        usage: usage_json(completion.usage()),
    };
    let translated = ChatResponse::parse(
        Endpoint::Messages,
        serde_json::to_vec(&message).unwrap_or_default().into(),
    )?;
    // No usage reported is no usage read: the zeros written are the
    // client's placeholder, not a count to charge.
    Ok(match completion.usage() {
        Some(_) => translated,
        None => translated.without_usage(),
    })
}

/// A message, as written.
#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: Value,
}

/// One content block of a message.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Box<RawValue>,
    },
}

/// About what building `body` as a JSON tree costs: its bytes, and for
/// each value (counted by the bytes that start or separate one, strings
/// included: an upper bound) a tree node.
pub fn translation_cost(body: &[u8]) -> usize {
    const NODE_BYTES: usize = 64;
    let values = body
        .iter()
        .filter(|byte| matches!(byte, b'{' | b'[' | b',' | b':'))
        .count();
    body.len().saturating_add(values.saturating_mul(NODE_BYTES))
}

/// A chat completion's stream, as a message's events: `message_start`,
/// a content block per text or tool call (`content_block_start`, deltas,
/// `content_block_stop`), `message_delta` with the stop reason and usage,
/// `message_stop`. A failure passes through as it came.
pub fn message_events(chunks: ChatStream) -> ChatStream {
    let state = Events::default();
    futures::stream::unfold((chunks, state), |(mut chunks, mut state)| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                return Some((event, (chunks, state)));
            }
            if state.ended {
                return None;
            }
            match chunks.next().await {
                Some(Ok(chunk)) => state.read(&chunk),
                Some(Err(error)) => {
                    state.ended = true;
                    state.ready.clear();
                    return Some((Err(error), (chunks, state)));
                }
                None => state.finish(),
            }
        }
    })
    .boxed()
}

/// The block being written: text, or the tool call at this chat index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Text,
    Tool(u64),
}

#[derive(Default)]
struct Events {
    ready: VecDeque<Result<ChatChunk, ChatError>>,
    started: bool,
    open: Option<Part>,
    /// Blocks opened so far: the next one's index.
    blocks: u64,
    stop: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

impl Events {
    fn emit(&mut self, event: &Value) {
        let event = self.event(event);
        self.ready.push_back(event);
    }

    fn event(&self, event: &Value) -> Result<ChatChunk, ChatError> {
        let bytes = serde_json::to_vec(event).unwrap_or_default();
        ChatChunk::parse(Endpoint::Messages, bytes.into()).map_err(|shape| unreadable(&shape.to_string()))
    }

    fn read(&mut self, chunk: &ChatChunk) {
        let read = match serde_json::from_slice::<views::Completion<'_>>(chunk.json()) {
            Ok(read) => read,
            // Not a message that looks whole: the stream ends on the failure.
            Err(error) => {
                self.ended = true;
                self.ready
                    .push_back(Err(unreadable(&crate::json::describe(&error))));
                return;
            }
        };
        if !std::mem::replace(&mut self.started, true) {
            self.emit(
                &json!({"type": "message_start", "message": {"id": read.id, "type": "message",
                "role": "assistant", "model": read.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            );
        }
        if let Some(usage) = chunk.usage() {
            self.usage = Some(*usage);
        }
        let Some(choice) = read.choices.0 else {
            return;
        };
        let delta = choice.message;
        if let Some(text) = delta.content.as_deref().filter(|text| !text.is_empty()) {
            self.open_block(Part::Text, || json!({"type": "text", "text": ""}));
            self.emit(&json!({"type": "content_block_delta", "index": self.blocks - 1,
                "delta": {"type": "text_delta", "text": text}}));
        }
        for call in delta.tool_calls.map(|calls| calls.0).unwrap_or_default() {
            let at = call.index.unwrap_or(0);
            let function = &call.function;
            if self.open != Some(Part::Tool(at)) {
                self.open_block(
                    Part::Tool(at),
                    || json!({"type": "tool_use", "id": call.id, "name": function.name, "input": {}}),
                );
            }
            if let Some(arguments) = function.arguments.as_deref().filter(|a| !a.is_empty()) {
                self.emit(&json!({"type": "content_block_delta", "index": self.blocks - 1,
                    "delta": {"type": "input_json_delta", "partial_json": arguments}}));
            }
        }
        if let Some(finish) = choice.finish_reason {
            self.stop = Some(finish.into_owned());
        }
    }

    /// Closes the open block unless it is `block`, and opens `block`.
    fn open_block(&mut self, block: Part, start: impl FnOnce() -> Value) {
        if self.open == Some(block) {
            return;
        }
        self.close_block();
        self.emit(&json!({"type": "content_block_start", "index": self.blocks, "content_block": start()}));
        self.blocks += 1;
        self.open = Some(block);
    }

    fn close_block(&mut self) {
        if self.open.take().is_some() {
            self.emit(&json!({"type": "content_block_stop", "index": self.blocks - 1}));
        }
    }

    fn finish(&mut self) {
        self.ended = true;
        if !self.started {
            return;
        }
        self.close_block();
        let delta = self.event(&json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop.as_deref()), "stop_sequence": null},
            "usage": usage_json(self.usage.as_ref())}));
        // Without the upstream's usage, the zeros are no count to charge.
        let delta = match self.usage {
            Some(_) => delta,
            None => delta.map(ChatChunk::without_usage),
        };
        self.ready.push_back(delta);
        self.emit(&json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests;
