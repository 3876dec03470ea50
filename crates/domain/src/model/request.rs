//! A chat-completion request: the client's JSON, parsed once into what the
//! gateway reads of it, and written upstream with only the gateway's changes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use super::endpoint::Endpoint;
use super::members::{optional, required};
use super::role::Role;
use crate::error::ValidationError;
use crate::json::{Edit, IgnoredString, JsonObject};
use crate::text::quote;

/// The members that steer the gateway and never leave it.
pub const ROUTING_FIELDS: [&str; 4] = [
    "provider",
    "portkey_provider",
    "portkey_virtual_key",
    "portkey_config",
];

/// A chat-completion request as the client sent it. Cloning it is cheap: the
/// body and what was read of it are shared.
#[derive(Clone)]
pub struct ChatRequest(Arc<Parsed>);

/// What the gateway reads of a request; everything else is only passed on.
#[derive(Debug)]
struct Parsed {
    endpoint: Endpoint,
    object: JsonObject,
    fields: RequestFields,
}

/// The fields the gateway validates or routes on, as the client sent them.
/// Integers are signed so that an out-of-range value gets a validation
/// message naming its bound instead of a type error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFields {
    pub model: String,
    pub messages: Vec<MessageFacts>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    /// `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// The Responses API's output limit.
    pub max_output_tokens: Option<i64>,
    /// The Responses API's follow-up of an earlier response.
    pub previous_response_id: Option<String>,
}

/// What validation needs of one message: never its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    pub role: Role,
    pub content: ContentFacts,
    pub tool_calls: bool,
    pub function_call: bool,
    pub tool_call_id: bool,
}

/// A message's content, as far as validation cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ContentFacts {
    /// Absent or `null`.
    #[default]
    None,
    Text,
    /// Per part, whether it is an object with a string `type`.
    Parts(Vec<bool>),
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body holds the prompt: only the routing facts are shown.
        f.debug_struct("ChatRequest")
            .field("endpoint", &self.0.endpoint)
            .field("model", &self.0.fields.model)
            .field("stream", &self.is_stream())
            .field("body_bytes", &self.0.object.bytes().len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ChatRequest {
    fn eq(&self, other: &Self) -> bool {
        self.0.object == other.0.object
    }
}

/// How the upstream's copy of a request differs from the client's.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamEdits<'a> {
    /// The model the upstream knows (a catalog or `@provider/model` route
    /// names another than the client's).
    pub model: &'a str,
    /// `max_tokens` to send when the client set no output limit.
    pub max_tokens: Option<i64>,
    /// Ask for a stream's usage whether or not the client did, so that its
    /// cost can be known.
    pub stream_usage: bool,
}

impl ChatRequest {
    /// Reads a request body.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the field at fault (`messages[0].role`),
    /// with the client's value quoted at most [`crate::text::QUOTE_MAX`]
    /// characters long: `invalid_json` for a body that is not one JSON
    /// object, `missing_required_parameter`, `duplicate_parameter`.
    pub fn parse(body: Bytes) -> Result<Self, ValidationError> {
        Self::parse_for(Endpoint::Chat, body)
    }

    /// Reads a request body sent to `endpoint`, checking what that API
    /// requires of it (see [`Self::parse`] for the errors).
    ///
    /// # Errors
    /// A [`ValidationError`] naming the field at fault.
    pub fn parse_for(endpoint: Endpoint, body: Bytes) -> Result<Self, ValidationError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(
                ValidationError::body("Request body is empty: expected a JSON object")
                    .with_code("invalid_json"),
            );
        }
        let object = JsonObject::parse(body).map_err(|error| match error.classify() {
            Category::Data => {
                ValidationError::body("Request body must be a JSON object").with_code("invalid_json")
            }
            _ => ValidationError::body(format!("Malformed JSON body: {error}")).with_code("invalid_json"),
        })?;
        if let Some(name) = object
            .duplicates()
            .into_iter()
            .find(|name| is_read(endpoint, name))
        {
            let name = quote(name).into_owned();
            return Err(ValidationError::new(
                name.clone(),
                format!("Duplicate parameter: `{name}` is given more than once"),
            )
            .with_code("duplicate_parameter"));
        }
        let fields = match endpoint {
            Endpoint::Chat => chat_fields(&object)?,
            other => super::other_apis::fields(other, &object)?.into_request_fields(),
        };
        Ok(Self(Arc::new(Parsed {
            endpoint,
            object,
            fields,
        })))
    }

    /// The API the request was sent to.
    pub fn endpoint(&self) -> Endpoint {
        self.0.endpoint
    }

    /// What the gateway read of the request.
    pub fn fields(&self) -> &RequestFields {
        &self.0.fields
    }

    /// The client's model name.
    pub fn model(&self) -> &str {
        &self.0.fields.model
    }

    /// The client's body, as it came.
    pub fn body(&self) -> &Bytes {
        self.0.object.bytes()
    }

    /// The top-level members' names and JSON texts, as the client sent them.
    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.object.members()
    }

    /// A top-level member's JSON text, if the client sent it.
    pub fn member(&self, name: &str) -> Option<&[u8]> {
        self.0.object.get(name)
    }

    /// Whether the client asked for an SSE stream.
    pub fn is_stream(&self) -> bool {
        self.0.fields.stream.unwrap_or(false)
    }

    /// Whether the client asked for a final usage chunk on a stream (chat
    /// only: the other APIs' streams always carry their usage).
    pub fn wants_stream_usage(&self) -> bool {
        self.0.endpoint != Endpoint::Chat || self.0.fields.include_usage.unwrap_or(false)
    }

    /// The output token limit the client set, whichever field it used.
    pub fn output_token_limit(&self) -> Option<i64> {
        let fields = &self.0.fields;
        fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .or(fields.max_output_tokens)
    }

    /// The members that hold the prompt, by the endpoint's names.
    pub fn prompt_members(&self) -> &'static [&'static str] {
        match self.0.endpoint {
            Endpoint::Chat => &["messages", "tools", "functions"],
            Endpoint::Embeddings => &["input"],
            Endpoint::Messages | Endpoint::CountTokens => &["system", "messages", "tools"],
            Endpoint::Responses => &["instructions", "input", "tools"],
        }
    }

    /// The response a Responses API request continues, if any.
    pub fn previous_response_id(&self) -> Option<&str> {
        self.0.fields.previous_response_id.as_deref()
    }

    /// The body the upstream is sent: the client's, without the routing
    /// fields, with `edits`. Every other member passes as the client wrote it.
    pub fn upstream_body(&self, edits: UpstreamEdits<'_>) -> Bytes {
        let model = serde_json::to_vec(edits.model).unwrap_or_default();
        // Only a chat completion is given a default limit or asked for its
        // stream's usage: the other APIs' limits are the client's to set,
        // and their streams carry usage.
        let chat = self.0.endpoint == Endpoint::Chat;
        let edits = UpstreamEdits {
            max_tokens: edits.max_tokens.filter(|_| chat),
            stream_usage: edits.stream_usage && chat,
            ..edits
        };
        let stream_options = (edits.stream_usage && self.is_stream() && !self.wants_stream_usage())
            .then(|| self.stream_options_with_usage());
        let max_tokens = edits
            .max_tokens
            .filter(|_| self.output_token_limit().is_none())
            .map(|limit| limit.to_string());
        let mut added: Vec<(&str, &[u8])> = Vec::new();
        if let Some(limit) = &max_tokens {
            added.push(("max_tokens", limit.as_bytes()));
        }
        let missing_options = self.member("stream_options").is_none();
        if let (Some(options), true) = (&stream_options, missing_options) {
            added.push(("stream_options", options));
        }
        self.0.object.rewrite(
            |name| match name {
                "model" => Some(Edit::Replace(&model)),
                "max_tokens" if max_tokens.is_some() => Some(Edit::Drop),
                "stream_options" => stream_options.as_deref().map(Edit::Replace),
                name if ROUTING_FIELDS.contains(&name) => Some(Edit::Drop),
                _ => None,
            },
            &added,
        )
    }

    /// The client's `stream_options` with `include_usage: true`, its other
    /// members kept.
    fn stream_options_with_usage(&self) -> Vec<u8> {
        let mut options = self
            .member("stream_options")
            .and_then(|text| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(text).ok())
            .unwrap_or_default();
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        serde_json::to_vec(&options).unwrap_or_default()
    }
}

/// Whether the gateway reads the member `name` of a request to `endpoint`
/// (a duplicate of one would be ambiguous: the gateway and the upstream
/// might read different ones).
fn is_read(endpoint: Endpoint, name: &str) -> bool {
    let read: &[&str] = match endpoint {
        Endpoint::Chat => &[
            "model",
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "n",
            "stream",
            "stream_options",
        ],
        Endpoint::Embeddings => &["model", "input", "dimensions", "encoding_format"],
        // What a translation to chat completions reads too.
        Endpoint::Messages | Endpoint::CountTokens => &[
            "model",
            "messages",
            "max_tokens",
            "stream",
            "system",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "top_p",
            "metadata",
        ],
        Endpoint::Responses => &[
            "model",
            "input",
            "stream",
            "max_output_tokens",
            "previous_response_id",
        ],
    };
    read.contains(&name) || ROUTING_FIELDS.contains(&name)
}

impl super::other_apis::Fields {
    fn into_request_fields(self) -> RequestFields {
        RequestFields {
            model: self.model,
            stream: self.stream,
            max_tokens: self.max_tokens,
            max_output_tokens: self.max_output_tokens,
            previous_response_id: self.previous_response_id,
            ..RequestFields::default()
        }
    }
}

/// What the gateway reads of a chat-completion request.
fn chat_fields(object: &JsonObject) -> Result<RequestFields, ValidationError> {
    Ok(RequestFields {
        model: required(object, "model")?,
        messages: required(object, "messages")?,

        max_tokens: optional(object, "max_tokens")?,
        max_completion_tokens: optional(object, "max_completion_tokens")?,
        temperature: optional(object, "temperature")?,
        top_p: optional(object, "top_p")?,
        frequency_penalty: optional(object, "frequency_penalty")?,
        presence_penalty: optional(object, "presence_penalty")?,
        n: optional(object, "n")?,
        stream: optional(object, "stream")?,
        include_usage: optional::<StreamOptions>(object, "stream_options")?
            .and_then(|options| options.include_usage),
        max_output_tokens: None,
        previous_response_id: None,
    })
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl<'de> Deserialize<'de> for MessageFacts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Message {
            role: Role,
            #[serde(default)]
            content: Option<ContentFacts>,
            #[serde(default)]
            tool_calls: Option<Vec<IgnoredAny>>,
            #[serde(default)]
            function_call: Option<IgnoredAny>,
            #[serde(default)]
            tool_call_id: Option<IgnoredString>,
        }

        let message = Message::deserialize(deserializer)?;
        Ok(Self {
            role: message.role,
            content: message.content.unwrap_or_default(),
            tool_calls: message.tool_calls.is_some(),
            function_call: message.function_call.is_some(),
            tool_call_id: message.tool_call_id.is_some(),
        })
    }
}

// Hand-written so that a wrong type says what is expected instead of "did not
// match any variant", and the text is never kept.
impl<'de> Deserialize<'de> for ContentFacts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = ContentFacts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ContentFacts::Text)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(part) = seq.next_element::<Shape>()? {
                    parts.push(part == Shape::TypedObject);
                }
                Ok(ContentFacts::Parts(parts))
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

/// What kind of value something is, read without keeping any of it: for an
/// object, whether its `type` member is a string (what a content part needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    TypedObject,
    Object,
    String,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;

        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut shape = Shape::Object;
                while let Some(IsType(is_type)) = map.next_key()? {
                    if is_type {
                        if map.next_value::<Shape>()? == Shape::String {
                            shape = Shape::TypedObject;
                        }
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(shape)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Shape::String)
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Shape::Other)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Shape::Other)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Shape::Other)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Shape::Other)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Shape::Other)
            }
        }

        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// Whether a member name is `type`.
struct IsType(bool);

impl<'de> Deserialize<'de> for IsType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = IsType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(IsType(name == "type"))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(text: &str) -> Result<ChatRequest, ValidationError> {
        ChatRequest::parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    const BODY: &str = r#"{"x_first": {"b": 1, "a": [1.50, 2]}, "model": "gpt", "stream": true,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"no": "type"}], "x": 1},
                     {"role": "assistant", "content": null, "tool_calls": [{"id": "t"}]},
                     {"role": "tool", "content": "42", "tool_call_id": "t"}],
        "provider": "portkey", "portkey_virtual_key": "vk-secret", "temperature": 0.7}"#;

    #[test]
    fn the_fields_are_read_once_and_the_message_text_is_not_kept() {
        let request = parse(BODY).unwrap();
        let fields = request.fields();
        assert_eq!(fields.model, "gpt");
        assert_eq!(fields.temperature, Some(0.7));
        assert!(request.is_stream() && !request.wants_stream_usage());
        assert_eq!(
            fields.messages,
            [
                MessageFacts {
                    role: Role::User,
                    content: ContentFacts::Parts(vec![true, false]),
                    tool_calls: false,
                    function_call: false,
                    tool_call_id: false,
                },
                MessageFacts {
                    role: Role::Assistant,
                    content: ContentFacts::None,
                    tool_calls: true,
                    function_call: false,
                    tool_call_id: false,
                },
                MessageFacts {
                    role: Role::Tool,
                    content: ContentFacts::Text,
                    tool_calls: false,
                    function_call: false,
                    tool_call_id: true,
                },
            ]
        );
        assert!(!format!("{request:?}").contains("vk-secret"));
    }

    #[test]
    fn the_upstream_body_changes_only_what_the_gateway_must() {
        let request = parse(BODY).unwrap();

        let body = request.upstream_body(UpstreamEdits {
            model: "gpt-4o",
            max_tokens: Some(64),
            stream_usage: true,
        });

        let text = std::str::from_utf8(&body).unwrap();
        // Every member the gateway does not change is written as it came.
        assert!(
            text.starts_with(r#"{"x_first":{"b": 1, "a": [1.50, 2]},"model":"gpt-4o","stream":true,"#),
            "{text}"
        );
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["max_tokens"], 64);
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        for routing in ROUTING_FIELDS {
            assert!(sent.get(routing).is_none(), "{routing} was forwarded");
        }
        let original: Value = serde_json::from_str(BODY).unwrap();
        assert_eq!(sent["messages"], original["messages"]);
    }

    #[test]
    fn the_clients_limit_and_stream_options_are_kept() {
        let request = parse(
            r#"{"model": "m", "messages": [], "stream": true, "max_completion_tokens": 5,
                "stream_options": {"include_usage": false, "x": 1}}"#,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&request.upstream_body(UpstreamEdits {
            model: "m",
            max_tokens: Some(64),
            stream_usage: true,
        }))
        .unwrap();
        assert_eq!(sent.get("max_tokens"), None);
        assert_eq!(sent["max_completion_tokens"], 5);
        assert_eq!(sent["stream_options"], json!({"include_usage": true, "x": 1}));
    }

    #[test]
    fn a_request_that_is_not_one_names_its_param_and_code() {
        let cases = [
            ("", None, Some("invalid_json")),
            ("[1]", None, Some("invalid_json")),
            (r#"{"model": "m""#, None, Some("invalid_json")),
            (
                r#"{"messages": []}"#,
                Some("model"),
                Some("missing_required_parameter"),
            ),
            (
                r#"{"model": "m"}"#,
                Some("messages"),
                Some("missing_required_parameter"),
            ),
            (
                r#"{"model": "m", "model": "n", "messages": []}"#,
                Some("model"),
                Some("duplicate_parameter"),
            ),
            (r#"{"model": 5, "messages": []}"#, Some("model"), None),
            (
                r#"{"model": "m", "messages": [{"role": 5}]}"#,
                Some("messages[0].role"),
                None,
            ),
            (
                r#"{"model": "m", "messages": [{"content": "x"}]}"#,
                Some("messages[0].role"),
                Some("missing_required_parameter"),
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": 1}]}"#,
                Some("messages[0].content"),
                None,
            ),
            (
                r#"{"model": "m", "messages": [], "max_tokens": "many"}"#,
                Some("max_tokens"),
                None,
            ),
            (
                r#"{"model": "m", "messages": [], "stream_options": {"include_usage": 1}}"#,
                Some("stream_options.include_usage"),
                None,
            ),
        ];
        for (text, param, code) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.param.as_deref(), param, "{text}: {}", error.message);
            assert_eq!(error.code.as_deref(), code, "{text}: {}", error.message);
        }
    }

    #[test]
    fn a_huge_refused_value_is_quoted_short() {
        let text = format!(
            r#"{{"model": "m", "messages": [{{"role": "{}"}}]}}"#,
            "r".repeat(100_000)
        );
        let error = parse(&text).unwrap_err();
        assert!(error.message.len() < 400, "{}", error.message.len());
    }

    #[test]
    fn a_duplicate_of_a_member_the_gateway_does_not_read_passes_through() {
        let request = parse(r#"{"model": "m", "messages": [], "x": 1, "x": 2}"#).unwrap();
        let body = request.upstream_body(UpstreamEdits {
            model: "m",
            ..UpstreamEdits::default()
        });
        assert_eq!(&body[..], br#"{"model":"m","messages":[],"x":1,"x":2}"#);
    }
}
