//! A `chat.completion` as the upstream wrote it: its bytes, passed on as
//! they came, and the usage the gateway reads from them.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use super::tokens::Usage;
use crate::json::{IgnoredString, ShapeError, member_insertion, read_shape};

/// A whole answer: the upstream's JSON, a member the gateway adds to it, and
/// what the gateway read of it.
///
/// The added member is kept beside the upstream's bytes, not spliced into a
/// copy of them: a large answer is written out as its parts
/// ([`Self::into_parts`]) and never held twice.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatResponse {
    json: Bytes,
    /// The added member's text, and the offset in `json` it goes before.
    added: Option<(usize, Bytes)>,
    usage: Option<Usage>,
    /// A Responses API answer's id.
    id: Option<String>,
}

impl fmt::Debug for ChatResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The answer is a completion someone asked for: only its size and
        // usage are shown.
        f.debug_struct("ChatResponse")
            .field("bytes", &self.len())
            .field("usage", &self.usage)
            .finish()
    }
}

/// The members a `chat.completion` must have, read without copying them.
#[derive(Deserialize)]
struct View {
    #[serde(rename = "id")]
    _id: IgnoredString,
    #[serde(rename = "created")]
    _created: u64,
    #[serde(rename = "model")]
    _model: IgnoredString,
    #[serde(rename = "choices")]
    _choices: Vec<IgnoredAny>,
    #[serde(default)]
    usage: Option<Usage>,
}

impl ChatResponse {
    /// Reads an answer: a JSON object with a string `id` and `model`, an
    /// integer `created` and an array `choices`; `usage` when it has one.
    ///
    /// # Errors
    /// A [`ShapeError`] naming the member at fault, for anything else.
    pub fn from_json(json: Bytes) -> Result<Self, ShapeError> {
        let view: View = read_shape(&json)?;
        Ok(Self {
            usage: view.usage,
            added: None,
            id: None,
            json,
        })
    }

    /// Reads an answer of `endpoint`: the members its API's answers always
    /// have, and its usage (see [`Self::from_json`] for chat's).
    ///
    /// # Errors
    /// A [`ShapeError`] naming the member at fault.
    pub fn parse(endpoint: super::endpoint::Endpoint, json: Bytes) -> Result<Self, ShapeError> {
        if endpoint == super::endpoint::Endpoint::Chat {
            return Self::from_json(json);
        }
        let facts = super::other_apis::answer(endpoint, &json)?;
        Ok(Self {
            usage: facts.usage,
            added: None,
            id: facts.id,
            json,
        })
    }

    /// The answer without the usage the gateway read of it: for an answer
    /// the gateway wrote itself, whose counts are placeholders.
    #[must_use]
    pub(crate) fn without_usage(self) -> Self {
        Self { usage: None, ..self }
    }

    /// The id of a Responses API answer.
    pub fn response_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The whole answer's text, in one buffer (a copy when a member was
    /// added: [`Self::into_parts`] writes it out without one).
    pub fn json(&self) -> Bytes {
        match &self.added {
            None => self.json.clone(),
            Some((at, member)) => {
                let mut whole = Vec::with_capacity(self.len());
                whole.extend_from_slice(&self.json[..*at]);
                whole.extend_from_slice(member);
                whole.extend_from_slice(&self.json[*at..]);
                whole.into()
            }
        }
    }

    /// The length of the whole answer's text.
    pub fn len(&self) -> usize {
        self.json.len() + self.added.as_ref().map_or(0, |(_, member)| member.len())
    }

    /// Never: an answer is at least `{}`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole answer's text as consecutive parts, none of them copied:
    /// the upstream's bytes up to the added member, the member, the rest.
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> {
        let (head, member, tail) = match self.added {
            None => (self.json, None, None),
            Some((at, member)) => (self.json.slice(..at), Some(member), Some(self.json.slice(at..))),
        };
        std::iter::once(head).chain(member).chain(tail)
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The answer with the member `name: value` added at its end, every other
    /// byte as the upstream wrote it.
    #[must_use]
    pub fn with_member(self, name: &str, value: &[u8]) -> Self {
        // A second member: the first is spliced in (a copy) to make room.
        let json = match self.added {
            None => self.json,
            Some(_) => self.json(),
        };
        // A parsed answer is an object: it ends with `}`.
        Self {
            added: member_insertion(&json, name, value),
            json,
            usage: self.usage,
            id: self.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_for_its_usage_and_kept_as_it_came() {
        let text = "{\"id\":\"c\",\n \"created\": 1, \"model\":\"m\", \"x_new\": {\"a\": [1, 2.50]},\
                    \"choices\":[], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 4}}";
        let answer = ChatResponse::from_json(Bytes::from(text)).unwrap();
        assert_eq!(
            answer.usage(),
            Some(&Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: None,
                prompt_tokens_details: None,
            })
        );
        assert_eq!(&answer.json()[..], text.as_bytes());
        let joined = answer.with_member("gateway_usage", b"{}");
        let expected = format!("{},\"gateway_usage\":{{}}}}", &text[..text.len() - 1]);
        assert_eq!(&joined.json()[..], expected.as_bytes());
        assert_eq!(joined.len(), expected.len());
        let parts: Vec<Bytes> = joined.clone().into_parts().collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), expected.as_bytes());
        let twice = joined.with_member("more", b"1");
        assert!(twice.json().ends_with(b",\"gateway_usage\":{},\"more\":1}"));
    }

    #[test]
    fn an_answer_without_its_members_is_refused() {
        for text in [
            r#"{"id": "c", "created": "soon", "model": "m", "choices": []}"#,
            r#"{"id": "c", "created": 1, "choices": []}"#,
            r#"{"id": "c", "created": 1, "model": "m", "choices": {}}"#,
            r#"[]"#,
        ] {
            assert!(ChatResponse::from_json(Bytes::from(text)).is_err(), "{text}");
        }
    }
}
