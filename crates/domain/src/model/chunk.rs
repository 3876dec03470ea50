//! A `chat.completion.chunk`: one event of a streamed completion, passed on
//! as the upstream wrote it.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::tokens::Usage;
use crate::json::{Edit, IgnoredString, JsonObject, ShapeError, read_shape, with_member};

/// One chunk: the upstream's JSON and what the gateway read of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatChunk {
    /// Whether `choices` is not empty: the chunk carries a piece of the
    /// completion (about a token of it), not only usage.
    choices: bool,
    json: Bytes,
    usage: Option<Usage>,
    finished: bool,
    /// The SSE event name of an API whose events are typed (Messages,
    /// Responses): the event's `type`.
    kind: Option<Box<str>>,
    /// Whether `usage` is the whole request's: else a part of it (Anthropic's
    /// `message_start` has the prompt's, `message_delta` the output's).
    usage_final: bool,
    /// The Responses API response's id, on the events that carry it.
    response_id: Option<Box<str>>,
    /// The event reports that the request failed upstream after its stream
    /// began (`response.failed`).
    failed: bool,
}

impl fmt::Debug for ChatChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatChunk")
            .field("bytes", &self.json.len())
            .field("usage", &self.usage)
            .field("finished", &self.finished)
            .finish()
    }
}

/// The members a chunk must have, read without copying them.
#[derive(Deserialize)]
struct View {
    #[serde(rename = "id")]
    _id: IgnoredString,
    #[serde(rename = "created")]
    _created: u64,
    #[serde(rename = "model")]
    _model: IgnoredString,
    choices: Vec<ChoiceView>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

/// The first chunk's `id`, `created` and `model`, for a chunk the gateway
/// writes itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChunkHead {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChatChunk {
    /// Reads a chunk: a JSON object with a string `id` and `model`, an
    /// integer `created` and an array `choices`; `usage` when it has one.
    ///
    /// # Errors
    /// A [`ShapeError`] naming the member at fault, for anything else.
    pub fn from_json(json: Bytes) -> Result<Self, ShapeError> {
        let view: View = read_shape(&json)?;
        Ok(Self {
            usage_final: view.usage.is_some(),
            usage: view.usage,
            finished: view.choices.iter().any(|choice| choice.finish_reason.is_some()),
            choices: !view.choices.is_empty(),
            json,
            kind: None,
            response_id: None,
            failed: false,
        })
    }

    /// Reads a stream event of `endpoint` (see [`Self::from_json`] for
    /// chat's): for Messages and Responses, an object with a string `type`.
    ///
    /// # Errors
    /// A [`ShapeError`] naming the member at fault; at `error` for an event
    /// that reports a failure.
    pub fn parse(endpoint: super::endpoint::Endpoint, json: Bytes) -> Result<Self, ShapeError> {
        if !endpoint.has_typed_events() {
            return Self::from_json(json);
        }
        let facts = super::other_apis::event(endpoint, &json)?;
        Ok(Self {
            choices: facts.piece,
            json,
            usage: facts.usage,
            finished: facts.finished,
            kind: Some(facts.kind.into_boxed_str()),
            usage_final: facts.usage_final,
            response_id: facts.response_id.map(String::into_boxed_str),
            failed: facts.failed,
        })
    }

    /// The event without the usage the gateway read of it: for an event the
    /// gateway wrote itself, whose counts are placeholders.
    #[must_use]
    pub(crate) fn without_usage(self) -> Self {
        Self {
            usage: None,
            usage_final: false,
            ..self
        }
    }

    /// The SSE event name, for APIs whose events are typed.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// Whether [`Self::usage`] is the whole request's, not a part of it.
    pub fn usage_is_final(&self) -> bool {
        self.usage_final
    }

    /// Whether the event reports that the request failed upstream.
    pub fn is_failure(&self) -> bool {
        self.failed
    }

    /// The Responses API response's id, on the events that carry it.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// The chunk's bytes, as the upstream wrote them.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Whether the chunk has choices (a piece of the completion).
    pub fn has_choices(&self) -> bool {
        self.choices
    }

    /// Whether a choice of this chunk has a `finish_reason`.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The chunk's `id`, `created` and `model` (read again: asked once a
    /// stream).
    pub fn head(&self) -> Option<ChunkHead> {
        serde_json::from_slice(&self.json).ok()
    }

    /// The chunk with the member `name: value` added at its end, and its
    /// `usage` left out when `keep_usage` is false; every other byte as the
    /// upstream wrote it.
    #[must_use]
    pub fn with_member(self, name: &str, value: &[u8], keep_usage: bool) -> Self {
        let json = if keep_usage {
            with_member(&self.json, name, value)
        } else {
            JsonObject::parse(self.json.clone()).ok().map(|object| {
                object.rewrite(
                    |member| (member == "usage").then_some(Edit::Drop),
                    &[(name, value)],
                )
            })
        };
        Self {
            json: json.unwrap_or(self.json),
            usage: self.usage.filter(|_| keep_usage),
            finished: self.finished,
            choices: self.choices,
            kind: self.kind,
            usage_final: self.usage_final,
            response_id: self.response_id,
            failed: self.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "{\"id\": \"c\", \"object\": \"chat.completion.chunk\", \"created\": 1, \"model\": \"m\",\
        \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"a\"}, \"finish_reason\": null, \"x\": 1}]}";

    #[test]
    fn a_chunk_is_read_for_its_finish_and_usage_and_kept_as_it_came() {
        let chunk = ChatChunk::from_json(Bytes::from(CHUNK)).unwrap();
        assert!(!chunk.is_finished());
        assert_eq!(chunk.usage(), None);
        assert_eq!(&chunk.json()[..], CHUNK.as_bytes());
        assert_eq!(
            chunk.head(),
            Some(ChunkHead {
                id: "c".into(),
                created: 1,
                model: "m".into()
            })
        );
        let finished = CHUNK.replace("\"finish_reason\": null", "\"finish_reason\": \"stop\"");
        assert!(ChatChunk::from_json(Bytes::from(finished)).unwrap().is_finished());
    }

    #[test]
    fn a_member_is_added_and_usage_left_out_on_demand() {
        let text = r#"{"id":"c","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let chunk = ChatChunk::from_json(Bytes::from(text)).unwrap();
        let kept = chunk.clone().with_member("g", b"1", true);
        assert_eq!(
            &kept.json()[..],
            format!("{},\"g\":1}}", &text[..text.len() - 1]).as_bytes()
        );
        let dropped = chunk.with_member("g", b"1", false);
        assert_eq!(
            &dropped.json()[..],
            br#"{"id":"c","created":1,"model":"m","choices":[],"g":1}"#
        );
        assert_eq!(dropped.usage(), None);
    }
}
