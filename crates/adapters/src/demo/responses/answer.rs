//! What the demo reads of a Responses API request, and the response it
//! makes of it: remembered with its input unless the request says
//! `store: false`.

use std::sync::Mutex;

use bytes::Bytes;
use gatewayz_domain::{ChatError, ErrorSource, ProviderCall, UpstreamError, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::value::to_raw_value;
use serde_json::{Map, Value, json};

use super::super::echo::{Echo, PER_MESSAGE, content_text, reply_text, word_tokens};
use super::super::hashing::unique_id;
use super::super::stored::{InputItem, ResponseStore, StoredResponse, lock};
use super::super::wire::{to_bytes, unix_now, unreadable};

/// What the demo reads of the body.
#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    temperature: Option<Value>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    top_p: Option<Value>,
    #[serde(default)]
    truncation: Option<Value>,
    #[serde(default)]
    user: Option<Value>,
}

/// `input`: a string (one user message) or an array of items.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

/// The request's settings a `response` echoes, as sent or the API's
/// defaults, in the order OpenAI writes them.
#[derive(Serialize)]
struct Settings {
    parallel_tool_calls: Value,
    reasoning: Value,
    temperature: Value,
    text: Value,
    tool_choice: Value,
    tools: Value,
    top_p: Value,
    truncation: Value,
    user: Value,
    metadata: Value,
}

impl Request {
    fn settings(&mut self) -> Settings {
        let or = |value: &mut Option<Value>, default: Value| value.take().unwrap_or(default);
        Settings {
            parallel_tool_calls: or(&mut self.parallel_tool_calls, json!(true)),
            reasoning: or(&mut self.reasoning, json!({"effort": null, "summary": null})),
            temperature: or(&mut self.temperature, json!(1.0)),
            text: or(&mut self.text, json!({"format": {"type": "text"}})),
            tool_choice: or(&mut self.tool_choice, json!("auto")),
            tools: or(&mut self.tools, json!([])),
            top_p: or(&mut self.top_p, json!(1.0)),
            truncation: or(&mut self.truncation, json!("disabled")),
            user: or(&mut self.user, Value::Null),
            metadata: or(&mut self.metadata, json!({})),
        }
    }
}

/// What the demo read of the input.
struct ReadInput {
    /// The items as the API lists them, each with an id.
    items: Vec<InputItem>,
    last_user: Option<String>,
    /// Words plus a per-message overhead, as the chat demo counts.
    tokens: u64,
}

/// Reads the input, and makes its items as OpenAI lists them: a message's
/// string content as one text part, an id and a status where they lack.
fn read_input(input: Option<Input>) -> Result<ReadInput, ChatError> {
    let items = match input {
        None => Vec::new(),
        Some(Input::Text(text)) => vec![json!({"type": "message", "role": "user", "content": text})],
        Some(Input::Items(items)) => items,
    };
    let mut read = ReadInput {
        items: Vec::with_capacity(items.len()),
        last_user: None,
        tokens: 0,
    };
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut item) = item else {
            return Err(ChatError::Invalid(ValidationError::new(
                format!("input[{index}]"),
                "An input item must be an object",
            )));
        };
        read.tokens += PER_MESSAGE;
        let role = item.get("role").and_then(Value::as_str).map(str::to_owned);
        let is_message = matches!(item.get("type").and_then(Value::as_str), None | Some("message"));
        let prefix = match role.as_deref() {
            Some(role) if is_message => {
                let text = content_text(item.get("content"), &["input_text", "output_text", "text"]);
                read.tokens += word_tokens(&text);
                if role == "user" {
                    read.last_user = Some(text);
                }
                normalize_message(&mut item, role);
                "msg_demo_"
            }
            _ => "item_demo_",
        };
        let id = match item.get("id").and_then(Value::as_str) {
            Some(given) => given.to_owned(),
            None => {
                let id = unique_id(prefix);
                item.insert("id".to_owned(), Value::String(id.clone()));
                id
            }
        };
        let json = to_raw_value(&item).map_err(|_| unreadable())?;
        read.items.push(InputItem { id, json });
    }
    Ok(read)
}

/// A message item as the API lists it: typed, with a status, its string
/// content as one text part.
fn normalize_message(item: &mut Map<String, Value>, role: &str) {
    item.insert("type".to_owned(), json!("message"));
    item.entry("status").or_insert_with(|| json!("completed"));
    if let Some(Value::String(text)) = item.get_mut("content") {
        let text = std::mem::take(text);
        let part = if role == "assistant" {
            json!({"type": "output_text", "text": text, "annotations": []})
        } else {
            json!({"type": "input_text", "text": text})
        };
        item.insert("content".to_owned(), json!([part]));
    }
}

/// What the demo answers to one request, computed once and remembered.
pub(super) struct Answer {
    id: String,
    pub(super) message_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    previous_response_id: Option<String>,
    store: bool,
    settings: Settings,
    pub(super) echo: Echo,
    pub(super) text: String,
    input_tokens: u64,
    /// The whole response, as answered, retrieved and streamed last.
    pub(super) json: Bytes,
}

impl Answer {
    pub(super) fn for_call(call: &ProviderCall, memory: &Mutex<ResponseStore>) -> Result<Self, ChatError> {
        let mut request: Request = serde_json::from_slice(&call.body).map_err(|_| unreadable())?;
        let input = read_input(request.input.take())?;
        // A follow-up's prompt carries the conversation so far.
        let previous = match &request.previous_response_id {
            None => 0,
            Some(id) => lock(memory)
                .get(id)
                .map(|previous| previous.tokens)
                .ok_or_else(|| previous_not_found(id))?,
        };
        let instructions = request
            .instructions
            .as_deref()
            .map_or(0, |instructions| word_tokens(instructions) + PER_MESSAGE);
        let echo = Echo::new(&reply_text(input.last_user), request.max_output_tokens);
        let mut answer = Self {
            id: unique_id("resp_demo_"),
            message_id: unique_id("msg_demo_"),
            created_at: unix_now(),
            settings: request.settings(),
            model: request.model,
            instructions: request.instructions,
            max_output_tokens: request.max_output_tokens,
            previous_response_id: request.previous_response_id,
            store: request.store.unwrap_or(true),
            text: echo.text(),
            echo,
            input_tokens: instructions + input.tokens + previous,
            json: Bytes::new(),
        };
        answer.json = to_bytes(&answer.response(true));
        if answer.store {
            let stored = StoredResponse {
                response: answer.json.clone(),
                items: input.items,
                tokens: answer.input_tokens + answer.echo.tokens(),
            };
            lock(memory).remember(answer.id.clone(), stored);
        }
        Ok(answer)
    }

    /// `completed`, or `incomplete` when an output limit cut the echo.
    pub(super) fn status(&self) -> &'static str {
        if self.echo.cut { "incomplete" } else { "completed" }
    }

    /// The whole response, or (`done` false) the one a stream starts with:
    /// in progress, no output, no usage.
    pub(super) fn response(&self, done: bool) -> ResponseOut<'_> {
        let output_tokens = self.echo.tokens();
        ResponseOut {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            status: if done { self.status() } else { "in_progress" },
            background: false,
            completed_at: (done && !self.echo.cut).then_some(self.created_at),
            error: None,
            incomplete_details: (done && self.echo.cut).then_some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
            instructions: self.instructions.as_deref(),
            max_output_tokens: self.max_output_tokens,
            max_tool_calls: None,
            model: &self.model,
            output: if done {
                vec![self.message(true)]
            } else {
                Vec::new()
            },
            previous_response_id: self.previous_response_id.as_deref(),
            service_tier: "default",
            store: self.store,
            settings: &self.settings,
            usage: done.then(|| UsageOut {
                input_tokens: self.input_tokens,
                input_tokens_details: InputDetails {
                    cached_tokens: 0,
                    cache_write_tokens: 0,
                },
                output_tokens,
                output_tokens_details: OutputDetails { reasoning_tokens: 0 },
                total_tokens: self.input_tokens + output_tokens,
            }),
        }
    }

    /// The output message, whole, or (`done` false) as a stream adds it.
    pub(super) fn message(&self, done: bool) -> OutputMessage<'_> {
        OutputMessage {
            kind: "message",
            id: &self.message_id,
            status: if done { self.status() } else { "in_progress" },
            role: "assistant",
            content: if done {
                vec![OutputText::new(&self.text)]
            } else {
                Vec::new()
            },
        }
    }
}

/// The refusal of a follow-up of a response the demo does not remember, as
/// OpenAI words it.
fn previous_not_found(id: &str) -> ChatError {
    ChatError::UpstreamRejected(UpstreamError {
        param: Some("previous_response_id".to_owned()),
        code: Some("previous_response_not_found".to_owned()),
        ..UpstreamError::new(
            ErrorSource::Provider,
            Some(404),
            format!("Previous response with id '{id}' not found."),
        )
    })
}

/// A `response`, its members in the order OpenAI writes them.
#[derive(Serialize)]
pub(super) struct ResponseOut<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    completed_at: Option<u64>,
    error: Option<Value>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<i64>,
    max_tool_calls: Option<u64>,
    model: &'a str,
    output: Vec<OutputMessage<'a>>,
    previous_response_id: Option<&'a str>,
    service_tier: &'static str,
    store: bool,
    #[serde(flatten)]
    settings: &'a Settings,
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
pub(super) struct OutputMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText<'a>>,
}

#[derive(Serialize)]
pub(super) struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: Vec<Value>,
    logprobs: Vec<Value>,
}

impl<'a> OutputText<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}
