//! What the gateway reads of the APIs other than chat completions: the
//! fields of their requests it checks and routes on, and the usage (and,
//! for the Responses API, the id) of their answers and stream events.
//! Everything else passes through as it came.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::endpoint::Endpoint;
use super::members::{optional, required};
use super::tokens::{PromptTokensDetails, Usage};
use crate::error::ValidationError;
use crate::json::{IgnoredString, JsonObject, ShapeError, read_shape};

/// The largest `dimensions` an embeddings request may ask for.
const MAX_DIMENSIONS: i64 = 65_536;

/// What the gateway reads of a request to an API other than chat.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub model: String,
    pub stream: Option<bool>,
    pub max_tokens: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub previous_response_id: Option<String>,
}

/// The fields of a request to `endpoint` (not chat), checked as its API
/// requires.
pub(super) fn fields(endpoint: Endpoint, object: &JsonObject) -> Result<Fields, ValidationError> {
    let model: String = required(object, "model")?;
    let mut fields = Fields {
        model,
        ..Fields::default()
    };
    match endpoint {
        Endpoint::Chat => {}
        Endpoint::Embeddings => {
            let Some(EmbeddingInput(count)) = optional(object, "input")? else {
                return Err(missing("input"));
            };
            if count == 0 {
                return Err(ValidationError::new("input", "`input` must not be empty"));
            }
            if let Some(dimensions) = optional::<i64>(object, "dimensions")?
                && !(1..=MAX_DIMENSIONS).contains(&dimensions)
            {
                return Err(ValidationError::new(
                    "dimensions",
                    format!("`dimensions` must be between 1 and {MAX_DIMENSIONS}, got {dimensions}"),
                ));
            }
            if let Some(format) = optional::<String>(object, "encoding_format")?
                && !matches!(format.as_str(), "float" | "base64")
            {
                return Err(ValidationError::new(
                    "encoding_format",
                    format!(
                        "`encoding_format` must be `float` or `base64`, got `{}`",
                        crate::text::quote(&format)
                    ),
                ));
            }
        }
        Endpoint::Messages | Endpoint::CountTokens => {
            let messages: Vec<IgnoredAny> = required(object, "messages")?;
            if messages.is_empty() {
                return Err(ValidationError::new(
                    "messages",
                    "`messages` must contain at least one message",
                ));
            }
            if endpoint == Endpoint::Messages {
                let max_tokens: i64 = required(object, "max_tokens")?;
                if max_tokens < 1 {
                    return Err(ValidationError::new(
                        "max_tokens",
                        format!("`max_tokens` must be at least 1, got {max_tokens}"),
                    ));
                }
                fields.max_tokens = Some(max_tokens);
                fields.stream = optional(object, "stream")?;
            }
        }
        Endpoint::Responses => {
            // A string, or an array of input items; read only for its type.
            let _: Option<ResponsesInput> = optional(object, "input")?;
            fields.stream = optional(object, "stream")?;
            fields.max_output_tokens = optional(object, "max_output_tokens")?;
            if let Some(limit) = fields.max_output_tokens.filter(|limit| *limit < 1) {
                return Err(ValidationError::new(
                    "max_output_tokens",
                    format!("`max_output_tokens` must be at least 1, got {limit}"),
                ));
            }
            fields.previous_response_id = optional(object, "previous_response_id")?;
            if let Some(id) = &fields.previous_response_id
                && !is_response_id(id)
            {
                return Err(ValidationError::new(
                    "previous_response_id",
                    "`previous_response_id` must be a response id: at most 256 letters, digits, `_` or `-`",
                ));
            }
        }
    }
    if fields.model.trim().is_empty() {
        return Err(ValidationError::new(
            "model",
            "`model` must be a non-empty string",
        ));
    }
    Ok(fields)
}

/// Whether `id` can be a response id: what the gateway keys its memory of
/// responses by and puts in an upstream's path.
pub fn is_response_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'))
}

fn missing(name: &str) -> ValidationError {
    ValidationError::new(name, format!("Missing required parameter: `{name}`"))
        .with_code("missing_required_parameter")
}

/// An embeddings `input`, read for how many inputs it holds: a string, an
/// array of strings, one array of token ids, or an array of them.
struct EmbeddingInput(usize);

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = EmbeddingInput;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, an array of strings, an array of token ids, or an array of them")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(EmbeddingInput(1))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut count = 0;
                let mut tokens = false;
                while let Some(item) = seq.next_element::<InputItem>()? {
                    match item {
                        InputItem::Token => tokens = true,
                        InputItem::Text | InputItem::Tokens => count += 1,
                    }
                }
                // One array of token ids is one input.
                Ok(EmbeddingInput(if tokens { count + 1 } else { count }))
            }
        }

        deserializer.deserialize_any(InputVisitor)
    }
}

/// One item of an embeddings `input` array.
enum InputItem {
    Text,
    Token,
    Tokens,
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = InputItem;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(InputItem::Text)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(InputItem::Token)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<u64>()?.is_some() {}
                Ok(InputItem::Tokens)
            }
        }

        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A Responses API `input`: a string or an array of items.
struct ResponsesInput;

impl<'de> Deserialize<'de> for ResponsesInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = ResponsesInput;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of input items")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ResponsesInput)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResponsesInput)
            }
        }

        deserializer.deserialize_any(InputVisitor)
    }
}

/// Anthropic's `usage`: cache writes and reads are prompt tokens too.
#[derive(Deserialize, Default)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    fn usage(&self) -> Usage {
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens.unwrap_or(0),
            total_tokens: Some(prompt.saturating_add(self.output_tokens.unwrap_or(0))),
            prompt_tokens_details: self.cache_read_input_tokens.map(|cached| PromptTokensDetails {
                cached_tokens: Some(cached),
            }),
        }
    }
}

/// The Responses API's `usage`.
#[derive(Deserialize)]
struct ResponsesUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<PromptTokensDetails>,
}

impl ResponsesUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: self.total_tokens,
            prompt_tokens_details: self.input_tokens_details,
        }
    }
}

/// The embeddings API's `usage`: prompt tokens only.
#[derive(Deserialize)]
struct EmbeddingsUsage {
    prompt_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// What the gateway reads of a whole answer.
#[derive(Debug, Default)]
pub(super) struct AnswerFacts {
    pub usage: Option<Usage>,
    /// A Responses API answer's id.
    pub id: Option<String>,
}

/// Reads an answer of `endpoint` (not chat): the members its API always
/// has, and its usage.
pub(super) fn answer(endpoint: Endpoint, json: &[u8]) -> Result<AnswerFacts, ShapeError> {
    match endpoint {
        Endpoint::Chat => Ok(AnswerFacts::default()),
        Endpoint::Embeddings => {
            #[derive(Deserialize)]
            struct View {
                #[serde(rename = "data")]
                _data: Vec<IgnoredAny>,
                #[serde(default)]
                usage: Option<EmbeddingsUsage>,
            }
            let view: View = read_shape(json)?;
            Ok(AnswerFacts {
                usage: view.usage.map(|usage| Usage {
                    total_tokens: usage.total_tokens,
                    ..Usage::new(usage.prompt_tokens, 0)
                }),
                id: None,
            })
        }
        Endpoint::Messages => {
            #[derive(Deserialize)]
            struct View {
                #[serde(rename = "id")]
                _id: IgnoredString,
                #[serde(rename = "content")]
                _content: Vec<IgnoredAny>,
                #[serde(default)]
                usage: Option<AnthropicUsage>,
            }
            let view: View = read_shape(json)?;
            Ok(AnswerFacts {
                usage: view.usage.as_ref().map(AnthropicUsage::usage),
                id: None,
            })
        }
        Endpoint::CountTokens => {
            #[derive(Deserialize)]
            struct View {
                #[serde(rename = "input_tokens")]
                _input_tokens: u64,
            }
            let _: View = read_shape(json)?;
            // Counting is not generating: nothing is spent.
            Ok(AnswerFacts::default())
        }
        Endpoint::Responses => {
            let view: ResponseView = read_shape(json)?;
            Ok(AnswerFacts {
                usage: view.usage.as_ref().map(ResponsesUsage::usage),
                id: Some(view.id),
            })
        }
    }
}

/// A Responses API `response` object.
#[derive(Deserialize)]
struct ResponseView {
    id: String,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

/// What the gateway reads of one stream event.
#[derive(Debug, Default)]
pub(super) struct EventFacts {
    /// The event's `type`: its SSE event name.
    pub kind: String,
    pub usage: Option<Usage>,
    /// Whether `usage` is the whole request's (else a part, to merge).
    pub usage_final: bool,
    /// Whether it carries a piece of the output (about a token).
    pub piece: bool,
    /// Whether the stream is complete with it.
    pub finished: bool,
    /// The Responses API response's id, from the event that names it.
    pub response_id: Option<String>,
    /// Whether it reports that the response failed (`response.failed`).
    pub failed: bool,
}

/// Reads a stream event of `endpoint` (Messages or Responses): an object
/// with a string `type`; an `error` event is a [`ShapeError`] at `error`,
/// for the adapter to read as the failure it reports.
pub(super) fn event(endpoint: Endpoint, json: &[u8]) -> Result<EventFacts, ShapeError> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    let Typed { kind } = read_shape(json)?;
    let mut facts = EventFacts::default();
    match (endpoint, kind.as_str()) {
        (_, "error") => {
            return Err(ShapeError {
                at: Some("error".to_owned()),
                problem: "the upstream reported an error".to_owned(),
            });
        }
        (Endpoint::Messages, "message_start") => {
            #[derive(Deserialize)]
            struct Start {
                message: StartMessage,
            }
            #[derive(Deserialize)]
            struct StartMessage {
                #[serde(default)]
                usage: Option<AnthropicUsage>,
            }
            let start: Start = read_shape(json)?;
            facts.usage = start.message.usage.as_ref().map(AnthropicUsage::usage);
        }
        (Endpoint::Messages, "message_delta") => {
            #[derive(Deserialize)]
            struct Delta {
                #[serde(default)]
                usage: Option<AnthropicUsage>,
            }
            let delta: Delta = read_shape(json)?;
            facts.usage = delta.usage.as_ref().map(AnthropicUsage::usage);
            facts.usage_final = facts.usage.is_some();
        }
        (Endpoint::Messages, "content_block_delta") => facts.piece = true,
        (Endpoint::Messages, "message_stop") => facts.finished = true,
        (Endpoint::Responses, "response.output_text.delta" | "response.function_call_arguments.delta") => {
            facts.piece = true;
        }
        (Endpoint::Responses, "response.created" | "response.in_progress" | "response.queued") => {
            #[derive(Deserialize)]
            struct Event {
                response: ResponseView,
            }
            let event: Event = read_shape(json)?;
            facts.response_id = Some(event.response.id);
        }
        (Endpoint::Responses, "response.completed" | "response.incomplete" | "response.failed") => {
            #[derive(Deserialize)]
            struct Event {
                response: ResponseView,
            }
            let event: Event = read_shape(json)?;
            facts.usage = event.response.usage.as_ref().map(ResponsesUsage::usage);
            facts.usage_final = facts.usage.is_some();
            facts.response_id = Some(event.response.id);
            facts.finished = true;
            facts.failed = kind == "response.failed";
        }
        _ => {}
    }
    facts.kind = kind;
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::model::ChatRequest;

    fn parse(endpoint: Endpoint, body: serde_json::Value) -> Result<ChatRequest, ValidationError> {
        ChatRequest::parse_for(endpoint, Bytes::from(body.to_string()))
    }

    #[test]
    fn embeddings_inputs_of_every_form_are_read_and_wrong_ones_named() {
        for input in [
            json!("a"),
            json!(["a", "b"]),
            json!([1, 2, 3]),
            json!([[1, 2], [3]]),
        ] {
            assert!(
                parse(Endpoint::Embeddings, json!({"model": "e", "input": input})).is_ok(),
                "{input}"
            );
        }
        for (body, param) in [
            (json!({"model": "e"}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [{"a": 1}]}), "input[0]"),
            (json!({"model": "e", "input": "a", "dimensions": 0}), "dimensions"),
            (
                json!({"model": "e", "input": "a", "encoding_format": "hex"}),
                "encoding_format",
            ),
        ] {
            let error = parse(Endpoint::Embeddings, body.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{body}: {}", error.message);
        }
    }

    #[test]
    fn a_messages_request_needs_messages_and_max_tokens() {
        let ok = json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let request = parse(Endpoint::Messages, ok.clone()).unwrap();
        assert_eq!(request.output_token_limit(), Some(5));
        assert!(!request.is_stream());
        let mut counted = ok.clone();
        counted.as_object_mut().unwrap().remove("max_tokens");
        assert!(parse(Endpoint::CountTokens, counted.clone()).is_ok());
        for (endpoint, body, param) in [
            (Endpoint::Messages, counted, "max_tokens"),
            (
                Endpoint::Messages,
                json!({"model": "c", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (Endpoint::CountTokens, json!({"model": "c"}), "messages"),
            (
                Endpoint::Messages,
                json!({"model": "", "max_tokens": 5, "messages": [1]}),
                "model",
            ),
        ] {
            let error = parse(endpoint, body.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{body}: {}", error.message);
        }
    }

    #[test]
    fn a_responses_request_reads_its_limit_and_the_response_it_follows() {
        let request = parse(
            Endpoint::Responses,
            json!({"model": "g", "input": "hi", "max_output_tokens": 9, "previous_response_id": "resp_1"}),
        )
        .unwrap();
        assert_eq!(request.output_token_limit(), Some(9));
        assert_eq!(request.previous_response_id(), Some("resp_1"));
        for (body, param) in [
            (json!({"model": "g", "input": 5}), "input"),
            (
                json!({"model": "g", "previous_response_id": "../x"}),
                "previous_response_id",
            ),
            (json!({"model": "g", "max_output_tokens": 0}), "max_output_tokens"),
        ] {
            let error = parse(Endpoint::Responses, body.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{body}: {}", error.message);
        }
    }

    #[test]
    fn anthropic_usage_counts_cache_writes_and_reads_as_prompt() {
        let facts = answer(
            Endpoint::Messages,
            json!({"id": "m", "content": [], "usage": {"input_tokens": 3, "output_tokens": 4,
                "cache_creation_input_tokens": 10, "cache_read_input_tokens": 20}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let usage = facts.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (33, 4));
        assert_eq!(usage.cached_prompt_tokens(), 20);
    }

    #[test]
    fn stream_events_say_their_type_usage_and_end() {
        let start = json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 7, "output_tokens": 1}}});
        let facts = event(Endpoint::Messages, start.to_string().as_bytes()).unwrap();
        assert_eq!(facts.kind, "message_start");
        assert_eq!(facts.usage.map(|usage| usage.prompt_tokens), Some(7));
        assert!(!facts.usage_final);
        let delta = json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}});
        let facts = event(Endpoint::Messages, delta.to_string().as_bytes()).unwrap();
        assert!(facts.usage_final);
        let completed = json!({"type": "response.completed", "sequence_number": 9,
            "response": {"id": "resp_1", "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}}});
        let facts = event(Endpoint::Responses, completed.to_string().as_bytes()).unwrap();
        assert!(facts.finished && facts.usage_final);
        assert_eq!(facts.response_id.as_deref(), Some("resp_1"));
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}});
        assert!(event(Endpoint::Messages, error.to_string().as_bytes()).is_err());
    }
}
