//! A `chat.completion` as the upstream wrote it: its bytes, passed on as
//! they came, and the usage the gateway reads from them.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::json::{IgnoredString, ShapeError, read_shape, with_member};

/// Token counts of one completion. Other members of the upstream's `usage`
/// (`prompt_tokens_details`, ...) reach the client in the upstream's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Some providers leave it out; it is then left out, not invented.
    #[serde(default)]
    pub total_tokens: Option<u64>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: Some(prompt_tokens + completion_tokens),
        }
    }
}

/// A whole answer: the upstream's JSON and what the gateway read of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatResponse {
    json: Bytes,
    usage: Option<Usage>,
}

impl fmt::Debug for ChatResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The answer is a completion someone asked for: only its size and
        // usage are shown.
        f.debug_struct("ChatResponse")
            .field("bytes", &self.json.len())
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
            json,
        })
    }

    /// The answer's bytes, as the upstream wrote them.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The answer with the member `name: value` added at its end, every other
    /// byte as the upstream wrote it.
    #[must_use]
    pub fn with_member(self, name: &str, value: &[u8]) -> Self {
        // A parsed answer is an object: it ends with `}`.
        Self {
            json: with_member(&self.json, name, value).unwrap_or(self.json),
            usage: self.usage,
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
                total_tokens: None
            })
        );
        assert_eq!(&answer.json()[..], text.as_bytes());
        let joined = answer.with_member("gateway_usage", b"{}");
        assert_eq!(
            &joined.json()[..],
            format!("{},\"gateway_usage\":{{}}}}", &text[..text.len() - 1]).as_bytes()
        );
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
