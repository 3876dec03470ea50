//! Chat completions replayed: chunks as one `chat.completion`, and a
//! `chat.completion` as chunks.
//!
//! The gateway assembles what the API defines: per choice, the message's
//! role, content, refusal, tool calls and legacy function call, the log
//! probabilities and the finish reason; the usage; the members every chunk
//! repeats (id, created, model, ...). Every other member, a provider's own
//! or one added to the API since, is kept: in a message by
//! [`Rule::Delta`] (strings such as `reasoning_content` concatenated,
//! `annotations` concatenated, `audio` merged), elsewhere (beside the
//! choices, in a choice, in a tool call) the last value given. A whole
//! answer's other members are streamed where streams have them: a
//! message's in its first delta, a tool call's with the call, a choice's
//! with its finish reason, the answer's in every chunk.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{At, ReplayError, malformed};
use super::merge::{Merged, Rule};
use super::views::{Given, JsonStr, Member, View, Viewed, keep, read, to_bytes};

/// A `chat.completion` or a `chat.completion.chunk`: the members replayed.
#[derive(Default)]
struct Envelope<'a> {
    head: Head<'a>,
    choices: Vec<ChoiceView<'a>>,
    usage: Option<&'a RawValue>,
    /// A provider's members (`provider`, `citations`, ...).
    others: Vec<Member<'a>>,
}

impl<'de> View<'de> for Envelope<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error> {
        let head = &mut self.head;
        match name.as_ref() {
            "id" => head.id = Some(map.next_value()?),
            "created" => head.created = Some(map.next_value()?),
            "model" => head.model = Some(map.next_value()?),
            "service_tier" => head.service_tier = Some(map.next_value()?),
            "system_fingerprint" => head.system_fingerprint = Some(map.next_value()?),
            // The gateway writes the other form's.
            "object" => {
                map.next_value::<IgnoredAny>()?;
            }
            "choices" => self.choices = viewed(map.next_value()?),
            "usage" => self.usage = map.next_value()?,
            _ => self.others.push((name, map.next_value()?)),
        }
        Ok(())
    }
}

/// The views of a member that is an array of objects, or `null`.
fn viewed<T>(views: Option<Vec<Viewed<T>>>) -> Vec<T> {
    views
        .unwrap_or_default()
        .into_iter()
        .map(|Viewed(view)| view)
        .collect()
}

/// The members every chunk repeats and a completion has once (`null`
/// included: `Some(null)`).
#[derive(Clone, Copy, Default)]
struct Head<'a> {
    id: Option<&'a RawValue>,
    created: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    service_tier: Option<&'a RawValue>,
    system_fingerprint: Option<&'a RawValue>,
}

impl<'a> Head<'a> {
    fn keep(&mut self, read: &Head<'a>) {
        keep(&mut self.id, read.id);
        keep(&mut self.created, read.created);
        keep(&mut self.model, read.model);
        keep(&mut self.service_tier, read.service_tier);
        keep(&mut self.system_fingerprint, read.system_fingerprint);
    }
}

/// A completion's choice, or a chunk's.
#[derive(Default)]
struct ChoiceView<'a> {
    index: Option<u64>,
    /// A completion's `message`, a chunk's `delta`.
    message: Option<Said<'a>>,
    logprobs: Option<LogprobsView<'a>>,
    finish_reason: Option<&'a RawValue>,
    /// A provider's members (`native_finish_reason`, ...).
    others: Vec<Member<'a>>,
}

impl<'de> View<'de> for ChoiceView<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error> {
        match name.as_ref() {
            "index" => self.index = map.next_value()?,
            "message" | "delta" => {
                self.message = map
                    .next_value::<Option<Viewed<Said<'de>>>>()?
                    .map(|Viewed(said)| said);
            }
            "logprobs" => self.logprobs = map.next_value()?,
            "finish_reason" => self.finish_reason = map.next_value()?,
            _ => self.others.push((name, map.next_value()?)),
        }
        Ok(())
    }
}

/// A message, or a delta of one.
#[derive(Default)]
struct Said<'a> {
    role: Option<&'a RawValue>,
    content: Option<Cow<'a, str>>,
    /// `Some(None)`: a `null` refusal, which a message has when it was not
    /// refused.
    refusal: Option<Option<Cow<'a, str>>>,
    tool_calls: Vec<CallView<'a>>,
    function_call: Option<FunctionView<'a>>,
    /// What the API added since, or a provider did: `reasoning_content`,
    /// `reasoning`, `annotations`, `audio`, ...
    others: Vec<Member<'a>>,
}

impl<'de> View<'de> for Said<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error> {
        let text = |text: Option<JsonStr<'de>>| text.map(|JsonStr(text)| text);
        match name.as_ref() {
            "role" => self.role = map.next_value()?,
            "content" => self.content = text(map.next_value()?),
            "refusal" => self.refusal = Some(text(map.next_value()?)),
            "tool_calls" => self.tool_calls = viewed(map.next_value()?),
            "function_call" => self.function_call = map.next_value()?,
            _ => self.others.push((name, map.next_value()?)),
        }
        Ok(())
    }
}

#[derive(Default)]
struct CallView<'a> {
    /// A chunk's: which call a delta continues.
    index: u64,
    id: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    function: Option<FunctionView<'a>>,
    /// A provider's members (Gemini's `extra_content`, ...).
    others: Vec<Member<'a>>,
}

impl<'de> View<'de> for CallView<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error> {
        match name.as_ref() {
            "index" => self.index = map.next_value::<Option<u64>>()?.unwrap_or_default(),
            "id" => self.id = map.next_value()?,
            "type" => self.kind = map.next_value()?,
            "function" => self.function = map.next_value()?,
            _ => self.others.push((name, map.next_value()?)),
        }
        Ok(())
    }
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
    /// The message's other members.
    message_others: Merged<'a>,
    logprobs: Option<LogprobsView<'a>>,
    finish_reason: Option<&'a RawValue>,
    /// The choice's other members.
    others: Merged<'a>,
}

#[derive(Default)]
struct CallParts<'a> {
    id: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    arguments: String,
    others: Merged<'a>,
}

impl<'a> CallParts<'a> {
    fn add(&mut self, place: At, call: CallView<'a>) -> Result<(), ReplayError> {
        keep(&mut self.id, call.id);
        keep(&mut self.kind, call.kind);
        if let Some(function) = call.function {
            keep(&mut self.name, function.name);
            self.arguments
                .push_str(function.arguments.as_deref().unwrap_or_default());
        }
        self.others.add_all(place, Rule::Last, call.others)
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
            others: Others::Merged(&self.others),
        }
    }
}

impl<'a> ChoiceParts<'a> {
    fn add(&mut self, place: At, choice: ChoiceView<'a>) -> Result<(), ReplayError> {
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
        for call in said.tool_calls {
            self.calls.entry(call.index).or_default().add(place, call)?;
        }
        if let Some(function) = said.function_call {
            let call = CallView {
                function: Some(function),
                ..CallView::default()
            };
            self.function_call.get_or_insert_default().add(place, call)?;
        }
        self.message_others.add_all(place, Rule::Delta, said.others)?;
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
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        self.others.add_all(place, Rule::Last, choice.others)
    }

    fn written(&self, index: u64) -> WholeChoiceOut<'_> {
        WholeChoiceOut {
            index,
            message: SaidOut {
                role: Some(self.role.map_or(Text::Plain("assistant"), Text::Raw)),
                content: Some(self.content.as_deref()),
                refusal: self.refusal.as_ref().map(Option::as_deref),
                others: Others::Merged(&self.message_others),
                tool_calls: self.calls.values().map(|call| call.written()).collect(),
                function_call: self.function_call.as_ref().map(|call| call.written().function),
            },
            logprobs: self.logprobs.as_ref(),
            finish_reason: self.finish_reason,
            others: Others::Merged(&self.others),
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
    #[serde(flatten)]
    others: Others<'v>,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'v RawValue>,
}

impl<'v, C> EnvelopeOut<'v, C> {
    fn new(
        (head, others): (Head<'v>, Others<'v>),
        object: &'static str,
        choices: Vec<C>,
        usage: Option<&'v RawValue>,
    ) -> Self {
        Self {
            id: head.id,
            object,
            created: head.created,
            model: head.model,
            service_tier: head.service_tier,
            system_fingerprint: head.system_fingerprint,
            others,
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
    #[serde(flatten)]
    others: Others<'v>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'v> {
    index: u64,
    delta: SaidOut<'v>,
    logprobs: Option<&'v LogprobsView<'v>>,
    finish_reason: Option<&'v RawValue>,
    #[serde(flatten)]
    others: Others<'v>,
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
    #[serde(flatten)]
    others: Others<'v>,
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
    #[serde(flatten)]
    others: Others<'v>,
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

/// The members the gateway does not assemble, written among those it does:
/// merged from a stream's pieces, or as a whole answer gave them.
#[derive(Clone, Copy, Default)]
enum Others<'v> {
    #[default]
    None,
    Merged(&'v Merged<'v>),
    Given(Given<'v>),
}

impl Serialize for Others<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => serializer.serialize_map(Some(0))?.end(),
            Self::Merged(merged) => merged.serialize(serializer),
            Self::Given(given) => given.serialize(serializer),
        }
    }
}

/// The chunks as one `chat.completion`: choices by index, text and tool
/// arguments concatenated, the first id, role, name given, the other
/// members merged.
pub(super) fn whole(chunks: &[Bytes]) -> Result<Bytes, ReplayError> {
    if chunks.is_empty() {
        return Err(malformed("the stream", "no chunk"));
    }
    let mut head = Head::default();
    let mut others = Merged::default();
    let mut choices: BTreeMap<u64, ChoiceParts<'_>> = BTreeMap::new();
    let mut usage = None;
    for (chunk, at) in chunks.iter().zip(0u64..) {
        let place = At("chunk", at);
        let Viewed(read) = read::<Viewed<Envelope<'_>>>(place, chunk)?;
        head.keep(&read.head);
        others.add_all(place, Rule::Last, read.others)?;
        if let Some(given) = read.usage {
            usage = Some(given);
        }
        for choice in read.choices {
            choices
                .entry(choice.index.unwrap_or(0))
                .or_default()
                .add(place, choice)?;
        }
    }
    let written = choices
        .iter()
        .map(|(index, choice)| choice.written(*index))
        .collect();
    to_bytes(&EnvelopeOut::new(
        (head, Others::Merged(&others)),
        "chat.completion",
        written,
        usage,
    ))
}

/// A `chat.completion` as chunks: per choice, in index order, one delta
/// with the role, the text (and refusal) and the message's other members,
/// one per tool call, one with the finish reason and the choice's other
/// members; then the usage in a chunk of no choice. Each chunk has the
/// answer's other members.
pub(super) fn chunks(whole: &[u8]) -> Result<Vec<Bytes>, ReplayError> {
    let Viewed(read) = read::<Viewed<Envelope<'_>>>("the answer", whole)?;
    let head = (read.head, Others::Given(Given(&read.others)));
    let mut choices: Vec<(u64, &ChoiceView<'_>)> = read
        .choices
        .iter()
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
    for (index, choice) in choices {
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
                others: said.map_or(Others::None, |said| Others::Given(Given(&said.others))),
                ..SaidOut::default()
            },
            logprobs,
            finish_reason: None,
            others: Others::None,
        })?);
        let calls = said.map(|said| &said.tool_calls[..]).unwrap_or_default();
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
                others: Others::Given(Given(&call.others)),
            };
            out.push(chunk(ChunkChoiceOut {
                index,
                delta: SaidOut {
                    tool_calls: vec![written],
                    ..SaidOut::default()
                },
                logprobs: None,
                finish_reason: None,
                others: Others::None,
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
                others: Others::None,
            })?);
        }
        out.push(chunk(ChunkChoiceOut {
            index,
            delta: SaidOut::default(),
            logprobs: None,
            finish_reason: choice.finish_reason,
            others: Others::Given(Given(&choice.others)),
        })?);
    }
    // An answer of no choice still streams: one chunk of no choice.
    if read.usage.is_some() || out.is_empty() {
        let choices = Vec::<ChunkChoiceOut<'_>>::new();
        out.push(to_bytes(&EnvelopeOut::new(
            head,
            "chat.completion.chunk",
            choices,
            read.usage,
        ))?);
    }
    Ok(out)
}
