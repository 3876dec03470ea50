//! Anthropic Messages replayed: events as one message, and a message as
//! events.
//!
//! A block of a type the gateway does not know is kept as its start gave
//! it, or streamed whole in its start; a delta of a type it does not know
//! is refused, since it cannot be assembled. What a `message_delta` gives
//! besides the stop and the usage (`container`, `stop_details`,
//! `context_management`) is set on the message, and streamed back in the
//! `message_delta`, where the Anthropic SDKs read it.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{At, ReplayError, malformed};
use super::merge::{Merged, Rule};
use super::views::{
    Members, Viewed, edited, is_null, is_string, json_text, members, present, raw, read, read_raw, to_bytes,
};
use crate::json::{IgnoredString, JsonObject};

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
pub(super) fn whole(events: &[Bytes]) -> Result<Bytes, ReplayError> {
    let mut message: Option<(&RawValue, MessageView<'_>)> = None;
    let mut blocks: BTreeMap<u64, BlockParts<'_>> = BTreeMap::new();
    let mut stop_reason = None;
    let mut stop_sequence = None;
    let mut usages: Vec<JsonObject> = Vec::new();
    let mut given_by_deltas = Merged::default();
    for (event, at) in events.iter().zip(0u64..) {
        let place = At("event", at);
        let view: EventView<'_> = read(place, event)?;
        let index = || view.index.ok_or_else(|| malformed(place, "no `index`"));
        match view.kind.as_ref() {
            "message_start" => {
                if message.is_some() {
                    return Err(malformed(place, "a second `message_start`"));
                }
                let started = view.message.ok_or_else(|| malformed(place, "no `message`"))?;
                let started_view: MessageView<'_> = read_raw(place, started)?;
                if started_view
                    .usage
                    .is_some_and(|usage| !usage.get().starts_with('{'))
                {
                    return Err(malformed(place, "a `usage` that is not an object"));
                }
                message = Some((started, started_view));
            }
            "content_block_start" => {
                let start = view
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
                let delta = view.delta.ok_or_else(|| malformed(place, "no `delta`"))?;
                let block = blocks
                    .get_mut(&index()?)
                    .ok_or_else(|| malformed(place, "a delta for a block never started"))?;
                block.add(place, delta)?;
            }
            "message_delta" => {
                if let Some(delta) = view.delta {
                    let stop: StopView<'_> = read_raw(place, delta)?;
                    stop_reason = stop.stop_reason.or(stop_reason);
                    stop_sequence = stop.stop_sequence.or(stop_sequence);
                    let given = members(place, delta)?;
                    let given = given.into_iter().filter(|(name, _)| of_the_message(name));
                    given_by_deltas.add_all(place, Rule::Last, given)?;
                }
                if let Some(usage) = view.usage.filter(|usage| !is_null(usage)) {
                    usages.push(
                        JsonObject::parse(Bytes::copy_from_slice(usage.get().as_bytes()))
                            .map_err(|_| malformed(place, "a `usage` that is not an object"))?,
                    );
                }
                let Viewed(Members(given)) = read(place, event)?;
                let given = given.into_iter().filter(|(name, _)| of_the_message(name));
                given_by_deltas.add_all(place, Rule::Last, given)?;
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
    // A `null` given does not undo what the start gave.
    let started_with: BTreeSet<Cow<'_, str>> = members("`message_start`", message)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut others = given_by_deltas.written()?;
    others.retain(|(name, value)| value != b"null" || !started_with.contains(*name));
    set.extend(others.iter().map(|(name, value)| (*name, Some(&value[..]))));
    edited("`message_start`", message.get().as_bytes(), &set)
}

/// Whether a member a `message_delta` gives, in the event or in its delta,
/// is the message's (`container`, `stop_details`, `context_management`):
/// not one the events define, nor one assembled from the events.
fn of_the_message(name: &str) -> bool {
    !matches!(
        name,
        "type"
            | "index"
            | "message"
            | "content_block"
            | "delta"
            | "usage"
            | "content"
            | "stop_reason"
            | "stop_sequence"
    )
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
    /// What a `message_delta` streams beside the stop.
    #[serde(default, borrow, deserialize_with = "present")]
    container: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    stop_details: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    context_management: Option<&'a RawValue>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        context_management: Option<&'v RawValue>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'v RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_details: Option<&'v RawValue>,
}

#[derive(Serialize)]
struct OutputTokens<'v> {
    output_tokens: &'v RawValue,
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
pub(super) fn events(whole: &[u8]) -> Result<Vec<Bytes>, ReplayError> {
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
            container: read.container,
            stop_details: read.stop_details,
        },
        usage: output_tokens.map(|output_tokens| OutputTokens { output_tokens }),
        context_management: read.context_management,
    })?);
    out.push(to_bytes(&EventOut::MessageStop)?);
    Ok(out)
}
