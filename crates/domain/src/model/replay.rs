//! A stored answer replayed in the other form of its API: a stream's events
//! as the whole answer a JSON request gets, or a whole answer as the stream
//! a streaming request gets, so that one cached answer serves both. Chat
//! completions and Anthropic Messages only: embeddings have no stream, and
//! a Responses stream is not replayed.
//!
//! Both forms are the JSON texts the upstream sent: one object for a whole
//! answer, each event's `data:` object for a stream (no `data: ` prefix, no
//! `[DONE]`). What the gateway does not assemble (ids, usage, log
//! probabilities, a block of a type it does not know) is copied as it came,
//! never parsed into a tree and written out again. Whatever the bytes, the
//! answer is a [`ReplayError`], never a panic: a stream that does not hold
//! together is not replayed.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::endpoint::Endpoint;
use crate::json::{Edit, IgnoredString, JsonObject};

/// Why a stored answer cannot be replayed in the other form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The API has no such replay: embeddings have no stream, and only chat
    /// completions and Messages are replayed.
    #[error("`{endpoint}` {stored} cannot be replayed as {wanted}")]
    Unsupported {
        endpoint: Endpoint,
        stored: &'static str,
        wanted: &'static str,
    },
    /// The stored bytes are not what the API sends: where (`chunk 3`,
    /// `block 1`, ...) and what is wrong, never the value found.
    #[error("the stored answer cannot be replayed: {0}")]
    Malformed(String),
}

fn malformed(place: impl fmt::Display, problem: impl fmt::Display) -> ReplayError {
    ReplayError::Malformed(format!("{place}: {problem}"))
}

/// Where in a stored answer a problem is: `chunk 3`, `event 0`, `block 2`.
#[derive(Clone, Copy)]
struct At(&'static str, u64);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Replays a stored stream as the whole answer of the same API: chat
/// completion chunks as one `chat.completion`, Messages events as one
/// message.
///
/// # Errors
/// [`ReplayError::Unsupported`] for an endpoint other than chat completions
/// and Messages; [`ReplayError::Malformed`] when an event is not a JSON
/// object of its API's shape, or the events do not make one answer (no
/// chunk, no `message_start`, a delta for a block never started, tool input
/// that is not JSON, ...).
pub fn whole_from_chunks(endpoint: Endpoint, chunks: &[Bytes]) -> Result<Bytes, ReplayError> {
    match endpoint {
        Endpoint::Chat => chat_whole(chunks),
        Endpoint::Messages => message_whole(chunks),
        other => Err(ReplayError::Unsupported {
            endpoint: other,
            stored: "streams",
            wanted: "a whole answer",
        }),
    }
}

/// Replays a stored whole answer as the stream of the same API: a
/// `chat.completion` as `chat.completion.chunk`s, a message as Messages
/// events. What it returns is valid input for [`whole_from_chunks`], which
/// gives back an answer equal to `whole` when `whole` is in the shape it
/// writes.
///
/// # Errors
/// [`ReplayError::Unsupported`] for an endpoint other than chat completions
/// and Messages; [`ReplayError::Malformed`] when `whole` is not a JSON
/// object of its API's answer shape (text that is not a string, content
/// that is not an array, ...).
pub fn chunks_from_whole(endpoint: Endpoint, whole: &Bytes) -> Result<Vec<Bytes>, ReplayError> {
    match endpoint {
        Endpoint::Chat => chat_chunks(whole),
        Endpoint::Messages => message_events(whole),
        other => Err(ReplayError::Unsupported {
            endpoint: other,
            stored: "answers",
            wanted: "a stream",
        }),
    }
}

/// `T` read from `bytes`, which must be one JSON object (serde would read
/// a struct from an array too).
fn read<'a, T: Deserialize<'a>>(place: impl fmt::Display + Copy, bytes: &'a [u8]) -> Result<T, ReplayError> {
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(malformed(place, "not a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|error| malformed(place, crate::json::describe(&error)))
}

fn to_bytes(value: &impl Serialize) -> Result<Bytes, ReplayError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| malformed("writing", crate::json::describe(&error)))
}

/// A member read when present, `null` included (`Some(null)`), where
/// `Option` alone would read `null` as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn json_text(value: &RawValue) -> &[u8] {
    value.get().as_bytes()
}

fn is_null(value: &RawValue) -> bool {
    value.get() == "null"
}

/// Keeps the first value given, a non-null one over a `null`.
fn keep<'a>(slot: &mut Option<&'a RawValue>, value: Option<&'a RawValue>) {
    let Some(value) = value else { return };
    if slot.is_none_or(|kept| is_null(kept) && !is_null(value)) {
        *slot = Some(value);
    }
}

/// `object` (a JSON object's text) with members set (`Some`: replaced, or
/// added at its end) or left out (`None`); the others as they came.
fn edited(
    place: impl fmt::Display + Copy,
    object: &[u8],
    set: &[(&str, Option<&[u8]>)],
) -> Result<Bytes, ReplayError> {
    let object = JsonObject::parse(Bytes::copy_from_slice(object))
        .map_err(|error| malformed(place, crate::json::describe(&error)))?;
    // Looked up by name: a usage may have many members, and none of this
    // may cost the product of two counts.
    let by_name: BTreeMap<&str, Option<&[u8]>> = set.iter().copied().collect();
    let had: BTreeSet<&str> = object.members().map(|(name, _)| name).collect();
    let added: Vec<(&str, &[u8])> = set
        .iter()
        .filter(|(name, _)| !had.contains(name))
        .filter_map(|(name, value)| value.map(|value| (*name, value)))
        .collect();
    Ok(object.rewrite(
        |name| {
            by_name
                .get(name)
                .map(|value| value.map_or(Edit::Drop, Edit::Replace))
        },
        &added,
    ))
}

/// JSON text the gateway wrote, as a value to embed.
fn raw(bytes: &[u8]) -> Result<&RawValue, ReplayError> {
    serde_json::from_slice(bytes).map_err(|error| malformed("writing", crate::json::describe(&error)))
}

/// A `chat.completion` or a `chat.completion.chunk`: the members replayed.
#[derive(Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
struct Envelope<'a, C> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    created: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    service_tier: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    system_fingerprint: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<Vec<C>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

/// The members every chunk repeats and a completion has once.
#[derive(Clone, Copy, Default)]
struct Head<'a> {
    id: Option<&'a RawValue>,
    created: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    service_tier: Option<&'a RawValue>,
    system_fingerprint: Option<&'a RawValue>,
}

impl<'a> Head<'a> {
    fn keep<C>(&mut self, read: &Envelope<'a, C>) {
        keep(&mut self.id, read.id);
        keep(&mut self.created, read.created);
        keep(&mut self.model, read.model);
        keep(&mut self.service_tier, read.service_tier);
        keep(&mut self.system_fingerprint, read.system_fingerprint);
    }
}

/// A completion's choice, or a chunk's.
#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: Option<u64>,
    /// A completion's `message`, a chunk's `delta`.
    #[serde(default, borrow, alias = "delta")]
    message: Option<Said<'a>>,
    #[serde(default, borrow)]
    logprobs: Option<LogprobsView<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<&'a RawValue>,
}

/// A message, or a delta of one.
#[derive(Deserialize, Default)]
struct Said<'a> {
    #[serde(default, borrow)]
    role: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    /// `Some(None)`: a `null` refusal, which a message has when it was not
    /// refused.
    #[serde(default, borrow, deserialize_with = "present")]
    refusal: Option<Option<Cow<'a, str>>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallView<'a>>>,
    #[serde(default, borrow)]
    function_call: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct CallView<'a> {
    /// A chunk's: which call a delta continues.
    #[serde(default)]
    index: u64,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize)]
struct LogprobsView<'a> {
    #[serde(default, borrow)]
    content: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    refusal: Option<Vec<&'a RawValue>>,
}

impl LogprobsView<'_> {
    fn has_any(&self) -> bool {
        self.content.is_some() || self.refusal.is_some()
    }
}

/// One choice as its deltas build it.
#[derive(Default)]
struct ChoiceParts<'a> {
    role: Option<&'a RawValue>,
    content: Option<String>,
    refusal: Option<Option<String>>,
    calls: BTreeMap<u64, CallParts<'a>>,
    function_call: Option<CallParts<'a>>,
    logprobs: Option<LogprobsView<'a>>,
    finish_reason: Option<&'a RawValue>,
}

#[derive(Default)]
struct CallParts<'a> {
    id: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    arguments: String,
}

impl<'a> CallParts<'a> {
    fn add(
        &mut self,
        id: Option<&'a RawValue>,
        kind: Option<&'a RawValue>,
        function: Option<FunctionView<'a>>,
    ) {
        keep(&mut self.id, id);
        keep(&mut self.kind, kind);
        if let Some(function) = function {
            keep(&mut self.name, function.name);
            self.arguments
                .push_str(function.arguments.as_deref().unwrap_or_default());
        }
    }

    fn written(&self) -> CallOut<'_> {
        CallOut {
            index: None,
            id: self.id,
            kind: self.kind.map_or(Text::Plain("function"), Text::Raw),
            function: FunctionOut {
                name: self.name,
                arguments: &self.arguments,
            },
        }
    }
}

impl<'a> ChoiceParts<'a> {
    fn add(&mut self, choice: ChoiceView<'a>) {
        let said = choice.message.unwrap_or_default();
        keep(&mut self.role, said.role);
        if let Some(text) = said.content {
            self.content.get_or_insert_default().push_str(&text);
        }
        if let Some(refusal) = said.refusal {
            let kept = self.refusal.get_or_insert_default();
            if let Some(text) = refusal {
                kept.get_or_insert_default().push_str(&text);
            }
        }
        for call in said.tool_calls.unwrap_or_default() {
            self.calls
                .entry(call.index)
                .or_default()
                .add(call.id, call.kind, call.function);
        }
        if let Some(function) = said.function_call {
            self.function_call
                .get_or_insert_default()
                .add(None, None, Some(function));
        }
        if let Some(logprobs) = choice.logprobs.filter(LogprobsView::has_any) {
            let kept = self.logprobs.get_or_insert(LogprobsView {
                content: None,
                refusal: None,
            });
            if let Some(content) = logprobs.content {
                kept.content.get_or_insert_default().extend(content);
            }
            if let Some(refusal) = logprobs.refusal {
                kept.refusal.get_or_insert_default().extend(refusal);
            }
        }
        if let Some(reason) = choice.finish_reason.filter(|reason| !is_null(reason)) {
            self.finish_reason = Some(reason);
        }
    }

    fn written(&self, index: u64) -> WholeChoiceOut<'_> {
        WholeChoiceOut {
            index,
            message: SaidOut {
                role: Some(self.role.map_or(Text::Plain("assistant"), Text::Raw)),
                content: Some(self.content.as_deref()),
                refusal: self.refusal.as_ref().map(Option::as_deref),
                tool_calls: self.calls.values().map(|call| call.written()).collect(),
                function_call: self.function_call.as_ref().map(|call| call.written().function),
            },
            logprobs: self.logprobs.as_ref(),
            finish_reason: self.finish_reason,
        }
    }
}

/// A completion or a chunk, as written.
#[derive(Serialize)]
struct EnvelopeOut<'v, C> {
    id: Option<&'v RawValue>,
    object: &'static str,
    created: Option<&'v RawValue>,
    model: Option<&'v RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'v RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'v RawValue>,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'v RawValue>,
}

impl<'v, C> EnvelopeOut<'v, C> {
    fn new(head: Head<'v>, object: &'static str, choices: Vec<C>, usage: Option<&'v RawValue>) -> Self {
        Self {
            id: head.id,
            object,
            created: head.created,
            model: head.model,
            service_tier: head.service_tier,
            system_fingerprint: head.system_fingerprint,
            choices,
            usage,
        }
    }
}

#[derive(Serialize)]
struct WholeChoiceOut<'v> {
    index: u64,
    message: SaidOut<'v>,
    logprobs: Option<&'v LogprobsView<'v>>,
    finish_reason: Option<&'v RawValue>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'v> {
    index: u64,
    delta: SaidOut<'v>,
    logprobs: Option<&'v LogprobsView<'v>>,
    finish_reason: Option<&'v RawValue>,
}

/// A message, or a delta: a member left `None` is not written.
#[derive(Serialize, Default)]
struct SaidOut<'v> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Text<'v>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'v str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'v str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallOut<'v>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut<'v>>,
}

#[derive(Serialize)]
struct CallOut<'v> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    id: Option<&'v RawValue>,
    #[serde(rename = "type")]
    kind: Text<'v>,
    function: FunctionOut<'v>,
}

#[derive(Serialize)]
struct FunctionOut<'v> {
    name: Option<&'v RawValue>,
    arguments: &'v str,
}

/// A value as the upstream wrote it, or the gateway's default.
#[derive(Serialize, Clone, Copy)]
#[serde(untagged)]
enum Text<'v> {
    Raw(&'v RawValue),
    Plain(&'static str),
}

/// The chunks as one `chat.completion`: choices by index, text and tool
/// arguments concatenated, the first id, role, name given.
fn chat_whole(chunks: &[Bytes]) -> Result<Bytes, ReplayError> {
    if chunks.is_empty() {
        return Err(malformed("the stream", "no chunk"));
    }
    let mut head = Head::default();
    let mut choices: BTreeMap<u64, ChoiceParts<'_>> = BTreeMap::new();
    let mut usage = None;
    for (chunk, at) in chunks.iter().zip(0u64..) {
        let read: Envelope<'_, ChoiceView<'_>> = read(At("chunk", at), chunk)?;
        head.keep(&read);
        if let Some(given) = read.usage.filter(|given| !is_null(given)) {
            usage = Some(given);
        }
        for choice in read.choices.unwrap_or_default() {
            choices.entry(choice.index.unwrap_or(0)).or_default().add(choice);
        }
    }
    let written = choices
        .iter()
        .map(|(index, choice)| choice.written(*index))
        .collect();
    to_bytes(&EnvelopeOut::new(head, "chat.completion", written, usage))
}

/// A `chat.completion` as chunks: per choice, in index order, one delta
/// with the role and the text (and refusal), one per tool call, one with
/// the finish reason; then the usage in a chunk of no choice.
fn chat_chunks(whole: &[u8]) -> Result<Vec<Bytes>, ReplayError> {
    let read: Envelope<'_, ChoiceView<'_>> = read("the answer", whole)?;
    let mut head = Head::default();
    head.keep(&read);
    let mut choices: Vec<(u64, ChoiceView<'_>)> = read
        .choices
        .unwrap_or_default()
        .into_iter()
        .zip(0u64..)
        .map(|(choice, at)| (choice.index.unwrap_or(at), choice))
        .collect();
    choices.sort_by_key(|(index, _)| *index);
    let chunk = |choice: ChunkChoiceOut<'_>| {
        to_bytes(&EnvelopeOut::new(
            head,
            "chat.completion.chunk",
            vec![choice],
            None,
        ))
    };
    let mut out = Vec::new();
    for (index, choice) in &choices {
        let index = *index;
        let said = choice.message.as_ref();
        let content = said.and_then(|said| said.content.as_deref());
        let refusal = said.and_then(|said| said.refusal.as_ref().map(Option::as_deref));
        let role = said
            .and_then(|said| said.role)
            .map_or(Text::Plain("assistant"), Text::Raw);
        let logprobs = choice.logprobs.as_ref().filter(|logprobs| logprobs.has_any());
        out.push(chunk(ChunkChoiceOut {
            index,
            delta: SaidOut {
                role: Some(role),
                content: Some(content),
                refusal,
                ..SaidOut::default()
            },
            logprobs,
            finish_reason: None,
        })?);
        let calls = said
            .and_then(|said| said.tool_calls.as_deref())
            .unwrap_or_default();
        for (call, at) in calls.iter().zip(0u64..) {
            let function = call.function.as_ref();
            let written = CallOut {
                index: Some(at),
                id: call.id,
                kind: call.kind.map_or(Text::Plain("function"), Text::Raw),
                function: FunctionOut {
                    name: function.and_then(|function| function.name),
                    arguments: function
                        .and_then(|function| function.arguments.as_deref())
                        .unwrap_or_default(),
                },
            };
            out.push(chunk(ChunkChoiceOut {
                index,
                delta: SaidOut {
                    tool_calls: vec![written],
                    ..SaidOut::default()
                },
                logprobs: None,
                finish_reason: None,
            })?);
        }
        if let Some(function) = said.and_then(|said| said.function_call.as_ref()) {
            out.push(chunk(ChunkChoiceOut {
                index,
                delta: SaidOut {
                    function_call: Some(FunctionOut {
                        name: function.name,
                        arguments: function.arguments.as_deref().unwrap_or_default(),
                    }),
                    ..SaidOut::default()
                },
                logprobs: None,
                finish_reason: None,
            })?);
        }
        out.push(chunk(ChunkChoiceOut {
            index,
            delta: SaidOut::default(),
            logprobs: None,
            finish_reason: choice.finish_reason.filter(|reason| !is_null(reason)),
        })?);
    }
    let usage = read.usage.filter(|usage| !is_null(usage));
    // An answer of no choice still streams: one chunk of no choice.
    if usage.is_some() || out.is_empty() {
        let choices = Vec::<ChunkChoiceOut<'_>>::new();
        out.push(to_bytes(&EnvelopeOut::new(
            head,
            "chat.completion.chunk",
            choices,
            usage,
        ))?);
    }
    Ok(out)
}

/// A Messages event: the members of every type, each read when its type
/// has it.
#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content_block: Option<&'a RawValue>,
    #[serde(default, borrow)]
    delta: Option<&'a RawValue>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

/// A `content_block_delta`'s delta.
#[derive(Deserialize)]
struct BlockDeltaView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    citation: Option<&'a RawValue>,
}

/// A `message_delta`'s delta, or a whole message's stop.
#[derive(Deserialize)]
struct StopView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    stop_reason: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    stop_sequence: Option<&'a RawValue>,
}

/// One content block as its deltas build it: its start, and what each kind
/// of delta added (`None`: no such delta came).
struct BlockParts<'a> {
    start: &'a RawValue,
    text: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    input: Option<String>,
    citations: Vec<&'a RawValue>,
}

impl<'a> BlockParts<'a> {
    fn new(start: &'a RawValue) -> Self {
        Self {
            start,
            text: None,
            thinking: None,
            signature: None,
            input: None,
            citations: Vec::new(),
        }
    }

    fn add(&mut self, place: At, delta: &'a RawValue) -> Result<(), ReplayError> {
        let delta: BlockDeltaView<'a> = read_raw(place, delta)?;
        let (kept, piece) = match delta.kind.as_ref() {
            "text_delta" => (&mut self.text, delta.text),
            "input_json_delta" => (&mut self.input, delta.partial_json),
            "thinking_delta" => (&mut self.thinking, delta.thinking),
            "signature_delta" => (&mut self.signature, delta.signature),
            "citations_delta" => {
                let citation = delta
                    .citation
                    .ok_or_else(|| malformed(place, "a citations_delta without its citation"))?;
                self.citations.push(citation);
                return Ok(());
            }
            // A delta this gateway cannot assemble would be lost: not replayed.
            _ => {
                return Err(malformed(
                    place,
                    "a delta of a type the gateway does not assemble",
                ));
            }
        };
        let piece = piece.ok_or_else(|| malformed(place, "a delta without the member its type names"))?;
        kept.get_or_insert_default().push_str(&piece);
        Ok(())
    }

    /// The block: its start with what the deltas built set into it.
    fn assembled(&self, place: At) -> Result<Bytes, ReplayError> {
        let start = self.start.get().as_bytes();
        // A block of no type is none a client can read: refused, even when
        // nothing is added to it.
        let read: StartView<'_> = read(place, start)?;
        let nothing_added = self.text.is_none()
            && self.thinking.is_none()
            && self.signature.is_none()
            && self.input.is_none()
            && self.citations.is_empty();
        if nothing_added {
            return Ok(Bytes::copy_from_slice(start));
        }
        // What a start holds comes first: a text block starts empty, but
        // a block may start with some of its text.
        let joined = |started: Option<Cow<'_, str>>, added: &Option<String>| {
            added
                .as_ref()
                .map(|added| to_bytes(&format!("{}{added}", started.as_deref().unwrap_or_default())))
                .transpose()
        };
        let text = joined(read.text, &self.text)?;
        let thinking = joined(read.thinking, &self.thinking)?;
        let signature = joined(read.signature, &self.signature)?;
        let input = match self.input.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(Bytes::from_static(b"{}")),
            Some(input) => {
                serde_json::from_str::<&RawValue>(input)
                    .map_err(|_| malformed(place, "tool input whose pieces do not make JSON"))?;
                Some(Bytes::copy_from_slice(input.as_bytes()))
            }
        };
        let citations = if self.citations.is_empty() {
            None
        } else {
            let mut all = read.citations.unwrap_or_default();
            all.extend(&self.citations);
            Some(to_bytes(&all)?)
        };
        let set = [
            ("text", text.as_deref()),
            ("thinking", thinking.as_deref()),
            ("signature", signature.as_deref()),
            ("input", input.as_deref()),
            ("citations", citations.as_deref()),
        ];
        // Only the members a delta built are set; `None` here is "as it came".
        let set: Vec<(&str, Option<&[u8]>)> = set.into_iter().filter(|(_, value)| value.is_some()).collect();
        edited(place, start, &set)
    }
}

/// What a block's start already holds of what deltas add to.
#[derive(Deserialize)]
struct StartView<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredString,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    citations: Option<Vec<&'a RawValue>>,
}

/// The events as one message: `message_start`'s message with its content
/// built from the blocks in index order, the stop from `message_delta`, and
/// the usage `message_delta` gives over the start's.
fn message_whole(events: &[Bytes]) -> Result<Bytes, ReplayError> {
    let mut message: Option<(&RawValue, MessageView<'_>)> = None;
    let mut blocks: BTreeMap<u64, BlockParts<'_>> = BTreeMap::new();
    let mut stop_reason = None;
    let mut stop_sequence = None;
    let mut usages: Vec<JsonObject> = Vec::new();
    for (event, at) in events.iter().zip(0u64..) {
        let place = At("event", at);
        let read: EventView<'_> = read(place, event)?;
        let index = || read.index.ok_or_else(|| malformed(place, "no `index`"));
        match read.kind.as_ref() {
            "message_start" => {
                if message.is_some() {
                    return Err(malformed(place, "a second `message_start`"));
                }
                let started = read.message.ok_or_else(|| malformed(place, "no `message`"))?;
                let view: MessageView<'_> = read_raw(place, started)?;
                if view.usage.is_some_and(|usage| !usage.get().starts_with('{')) {
                    return Err(malformed(place, "a `usage` that is not an object"));
                }
                message = Some((started, view));
            }
            "content_block_start" => {
                let start = read
                    .content_block
                    .ok_or_else(|| malformed(place, "no `content_block`"))?;
                match blocks.entry(index()?) {
                    Entry::Occupied(_) => return Err(malformed(place, "a block started twice")),
                    Entry::Vacant(vacant) => {
                        vacant.insert(BlockParts::new(start));
                    }
                }
            }
            "content_block_delta" => {
                let delta = read.delta.ok_or_else(|| malformed(place, "no `delta`"))?;
                let block = blocks
                    .get_mut(&index()?)
                    .ok_or_else(|| malformed(place, "a delta for a block never started"))?;
                block.add(place, delta)?;
            }
            "message_delta" => {
                if let Some(delta) = read.delta {
                    let stop: StopView<'_> = read_raw(place, delta)?;
                    stop_reason = stop.stop_reason.or(stop_reason);
                    stop_sequence = stop.stop_sequence.or(stop_sequence);
                }
                if let Some(usage) = read.usage.filter(|usage| !is_null(usage)) {
                    usages.push(
                        JsonObject::parse(Bytes::copy_from_slice(usage.get().as_bytes()))
                            .map_err(|_| malformed(place, "a `usage` that is not an object"))?,
                    );
                }
            }
            "error" => return Err(malformed(place, "the stream ended on an error")),
            // `content_block_stop`, `message_stop`, `ping`, and event types
            // added since: nothing to assemble.
            _ => {}
        }
    }
    let (message, started) = message.ok_or_else(|| malformed("the stream", "no `message_start`"))?;
    let mut content = Vec::from(&b"["[..]);
    for (index, block) in &blocks {
        if content.len() > 1 {
            content.push(b',');
        }
        let block = block.assembled(At("block", *index))?;
        content.extend_from_slice(&block);
    }
    content.push(b']');
    let usage = merged_usage(started.usage, &usages)?;
    // A message always has its stop: `null` when no event gave it.
    let stop_reason = stop_reason.or(started.stop_reason);
    let stop_sequence = stop_sequence.or(started.stop_sequence);
    let mut set = vec![
        ("content", Some(&content[..])),
        ("stop_reason", Some(stop_reason.map_or(&b"null"[..], json_text))),
        (
            "stop_sequence",
            Some(stop_sequence.map_or(&b"null"[..], json_text)),
        ),
    ];
    if let Some(usage) = &usage {
        set.push(("usage", Some(&usage[..])));
    }
    edited("`message_start`", message.get().as_bytes(), &set)
}

fn read_raw<'a, T: Deserialize<'a>>(
    place: impl fmt::Display + Copy,
    value: &'a RawValue,
) -> Result<T, ReplayError> {
    read(place, value.get().as_bytes())
}

/// The start's usage with each member the `message_delta`s give (the last
/// of each, a `null` counting nothing); `None` when there is neither.
fn merged_usage(started: Option<&RawValue>, usages: &[JsonObject]) -> Result<Option<Bytes>, ReplayError> {
    // Each name where it was first given, with the last value given.
    let mut given: Vec<(&str, &[u8])> = Vec::new();
    let mut at: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, value) in usages.iter().flat_map(|usage| usage.members()) {
        if value == b"null" {
            continue;
        }
        match at.entry(name) {
            Entry::Occupied(kept) => {
                if let Some(kept) = given.get_mut(*kept.get()) {
                    kept.1 = value;
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(given.len());
                given.push((name, value));
            }
        }
    }
    let set: Vec<(&str, Option<&[u8]>)> = given.iter().map(|(name, value)| (*name, Some(*value))).collect();
    match started {
        Some(started) => edited("`usage`", started.get().as_bytes(), &set).map(Some),
        None if set.is_empty() => Ok(None),
        None => edited("`usage`", b"{}", &set).map(Some),
    }
}

/// A whole message, or the one `message_start` gives: what events are made
/// from, or assembled into.
#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    stop_reason: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    stop_sequence: Option<&'a RawValue>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UsageView<'a> {
    #[serde(default, borrow)]
    output_tokens: Option<&'a RawValue>,
}

/// A content block of a whole message: what its deltas carry.
#[derive(Deserialize)]
struct BlockView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default, borrow)]
    thinking: Option<&'a RawValue>,
    #[serde(default, borrow)]
    signature: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    citations: Option<Vec<&'a RawValue>>,
}

/// A Messages event, as written.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventOut<'v> {
    MessageStart {
        message: &'v RawValue,
    },
    ContentBlockStart {
        index: u64,
        content_block: &'v RawValue,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDeltaOut<'v>,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        delta: StopOut<'v>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<OutputTokens<'v>>,
    },
    MessageStop,
}

/// A `content_block_delta`'s delta, as written.
#[derive(Serialize)]
#[serde(tag = "type")]
enum BlockDeltaOut<'v> {
    #[serde(rename = "text_delta")]
    Text { text: &'v RawValue },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'v str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'v RawValue },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'v RawValue },
    #[serde(rename = "citations_delta")]
    Citations { citation: &'v RawValue },
}

#[derive(Serialize)]
struct StopOut<'v> {
    stop_reason: Option<&'v RawValue>,
    stop_sequence: Option<&'v RawValue>,
}

#[derive(Serialize)]
struct OutputTokens<'v> {
    output_tokens: &'v RawValue,
}

fn is_string(value: &RawValue) -> bool {
    value.get().starts_with('"')
}

fn string_member<'a>(
    place: At,
    value: Option<&'a RawValue>,
    name: &str,
) -> Result<&'a RawValue, ReplayError> {
    value
        .filter(|value| is_string(value))
        .ok_or_else(|| malformed(place, format_args!("a `{name}` that is not a string")))
}

/// A message as events: `message_start` (the message with no content and
/// no stop yet), per block a start with its text, thinking or input empty,
/// one delta with all of it and a stop, then `message_delta` with the stop
/// and the output tokens, and `message_stop`.
fn message_events(whole: &[u8]) -> Result<Vec<Bytes>, ReplayError> {
    let read: MessageView<'_> = read("the answer", whole)?;
    let content: Vec<&RawValue> = match read.content {
        Some(content) => serde_json::from_str(content.get())
            .map_err(|_| malformed("the answer", "a `content` that is not an array"))?,
        None => Vec::new(),
    };
    let output_tokens = match read.usage {
        Some(usage) => read_raw::<UsageView<'_>>("the answer's `usage`", usage)?.output_tokens,
        None => None,
    };
    let started = edited(
        "the answer",
        whole,
        &[
            ("content", Some(&b"[]"[..])),
            ("stop_reason", Some(&b"null"[..])),
            ("stop_sequence", Some(&b"null"[..])),
        ],
    )?;
    let mut out = vec![to_bytes(&EventOut::MessageStart {
        message: raw(&started)?,
    })?];
    for (block, index) in content.into_iter().zip(0u64..) {
        let place = At("block", index);
        let view: BlockView<'_> = read_raw(place, block)?;
        let mut deltas = Vec::new();
        let start = match view.kind.as_ref() {
            "text" => {
                let citations = view.citations.unwrap_or_default();
                deltas.extend(
                    citations
                        .iter()
                        .map(|citation| BlockDeltaOut::Citations { citation }),
                );
                deltas.push(BlockDeltaOut::Text {
                    text: string_member(place, view.text, "text")?,
                });
                let dropped = (!citations.is_empty()).then_some(("citations", None));
                let set: Vec<_> = [Some(("text", Some(&b"\"\""[..]))), dropped]
                    .into_iter()
                    .flatten()
                    .collect();
                edited(place, block.get().as_bytes(), &set)?
            }
            "thinking" => {
                deltas.push(BlockDeltaOut::Thinking {
                    thinking: string_member(place, view.thinking, "thinking")?,
                });
                let signature = view.signature.filter(|signature| is_string(signature));
                if let Some(signature) = signature {
                    deltas.push(BlockDeltaOut::Signature { signature });
                }
                let dropped = signature.map(|_| ("signature", None));
                let set: Vec<_> = [Some(("thinking", Some(&b"\"\""[..]))), dropped]
                    .into_iter()
                    .flatten()
                    .collect();
                edited(place, block.get().as_bytes(), &set)?
            }
            // `tool_use`, `server_tool_use`, `mcp_tool_use`: input streamed as
            // JSON text.
            kind if kind.ends_with("tool_use") => {
                if let Some(input) = view.input {
                    deltas.push(BlockDeltaOut::InputJson {
                        partial_json: input.get(),
                    });
                }
                edited(place, block.get().as_bytes(), &[("input", Some(&b"{}"[..]))])?
            }
            // Anything else (redacted thinking, a tool's result, ...) comes
            // whole in its start.
            _ => Bytes::copy_from_slice(block.get().as_bytes()),
        };
        out.push(to_bytes(&EventOut::ContentBlockStart {
            index,
            content_block: raw(&start)?,
        })?);
        for delta in deltas {
            out.push(to_bytes(&EventOut::ContentBlockDelta { index, delta })?);
        }
        out.push(to_bytes(&EventOut::ContentBlockStop { index })?);
    }
    out.push(to_bytes(&EventOut::MessageDelta {
        delta: StopOut {
            stop_reason: read.stop_reason,
            stop_sequence: read.stop_sequence,
        },
        usage: output_tokens.map(|output_tokens| OutputTokens { output_tokens }),
    })?);
    out.push(to_bytes(&EventOut::MessageStop)?);
    Ok(out)
}

#[cfg(test)]
mod tests;
