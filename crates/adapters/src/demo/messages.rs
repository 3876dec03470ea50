//! Anthropic's Messages: the echo as a `message`, or as the events Anthropic
//! streams; and the count of the input tokens a Messages call on the same
//! body reports.

use gatewayz_domain::{ChatChunk, ChatError, ChatResponse, Endpoint, ProviderCall};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::echo::{Echo, PER_MESSAGE, content_text, reply_text, word_tokens};
use super::hashing::fnv1a;
use super::wire::{refused, to_bytes, unreadable};

/// The answer to a non-streaming request.
pub(super) fn complete(call: &ProviderCall) -> Result<ChatResponse, ChatError> {
    let answer = Answer::for_call(call)?;
    let text = answer.echo.text();
    let message = answer.message(Some(&text));
    ChatResponse::parse(Endpoint::Messages, to_bytes(&message)).map_err(refused)
}

/// The events of a streaming request, made as they are read.
pub(super) fn stream(call: &ProviderCall) -> Result<Events, ChatError> {
    Ok(Events {
        answer: Answer::for_call(call)?,
        step: 0,
    })
}

/// The answer to `/v1/messages/count_tokens`.
pub(super) fn count_tokens(call: &ProviderCall) -> Result<ChatResponse, ChatError> {
    let request: Request = serde_json::from_slice(&call.body).map_err(|_| unreadable())?;
    let count = Count {
        input_tokens: request.input_tokens(),
    };
    ChatResponse::parse(Endpoint::CountTokens, to_bytes(&count)).map_err(refused)
}

/// What the demo reads of the body.
#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    /// Not echoed, but counted.
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    max_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    /// A string, or an array of blocks whose `text` blocks are read.
    #[serde(default)]
    content: Option<Value>,
}

impl Message {
    fn text(&self) -> String {
        content_text(self.content.as_ref(), &["text"])
    }
}

impl Request {
    /// Words plus a per-message overhead, as the chat demo counts; the
    /// system prompt counts as a message.
    fn input_tokens(&self) -> u64 {
        let system = self.system.as_ref().map_or(0, |system| {
            word_tokens(&content_text(Some(system), &["text"])) + PER_MESSAGE
        });
        let messages: u64 = self
            .messages
            .iter()
            .map(|message| word_tokens(&message.text()) + PER_MESSAGE)
            .sum();
        system + messages
    }
}

/// What the demo answers to one request, computed once.
struct Answer {
    id: String,
    model: String,
    echo: Echo,
    input_tokens: u64,
}

impl Answer {
    fn for_call(call: &ProviderCall) -> Result<Self, ChatError> {
        let request: Request = serde_json::from_slice(&call.body).map_err(|_| unreadable())?;
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == "user")
            .map(Message::text);
        Ok(Self {
            // The same body, the same message.
            id: format!("msg_demo_{:016x}", fnv1a(&call.body)),
            echo: Echo::new(&reply_text(last_user), request.max_tokens),
            input_tokens: request.input_tokens(),
            model: request.model,
        })
    }

    fn stop_reason(&self) -> &'static str {
        if self.echo.cut { "max_tokens" } else { "end_turn" }
    }

    /// The whole message with `text`, or (`None`) the one a stream starts
    /// with: no content yet, one output token.
    fn message<'a>(&'a self, text: Option<&'a str>) -> MessageOut<'a> {
        MessageOut {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: text.map(TextBlock::new).into_iter().collect(),
            stop_reason: text.map(|_| self.stop_reason()),
            stop_sequence: None,
            usage: UsageOut {
                input_tokens: self.input_tokens,
                output_tokens: text.map_or(1, |_| self.echo.tokens()),
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
            },
        }
    }
}

/// A `message`, its members in the order Anthropic's API writes them.
#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<TextBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: UsageOut,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> TextBlock<'a> {
    fn new(text: &'a str) -> Self {
        Self { kind: "text", text }
    }
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

#[derive(Serialize)]
struct Count {
    input_tokens: u64,
}

/// A stream event, `type` first.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: TextBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: TextDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta,
        usage: OutputUsage,
    },
    MessageStop,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

/// The events of a streamed message, in Anthropic's order: `message_start`,
/// `content_block_start`, `ping`, one `content_block_delta` a word,
/// `content_block_stop`, `message_delta` (stop reason and output tokens),
/// `message_stop`.
pub(super) struct Events {
    answer: Answer,
    step: usize,
}

impl Iterator for Events {
    type Item = Result<ChatChunk, ChatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let answer = &self.answer;
        let words = answer.echo.words.len();
        let step = self.step;
        self.step += 1;
        let piece;
        let event = match step {
            0 => Event::MessageStart {
                message: answer.message(None),
            },
            1 => Event::ContentBlockStart {
                index: 0,
                content_block: TextBlock::new(""),
            },
            2 => Event::Ping,
            word if word < 3 + words => {
                piece = answer.echo.piece(word - 3);
                Event::ContentBlockDelta {
                    index: 0,
                    delta: TextDelta {
                        kind: "text_delta",
                        text: &piece,
                    },
                }
            }
            stop if stop == 3 + words => Event::ContentBlockStop { index: 0 },
            delta if delta == 4 + words => Event::MessageDelta {
                delta: StopDelta {
                    stop_reason: answer.stop_reason(),
                    stop_sequence: None,
                },
                usage: OutputUsage {
                    output_tokens: answer.echo.tokens(),
                },
            },
            last if last == 5 + words => Event::MessageStop,
            _ => return None,
        };
        Some(ChatChunk::parse(Endpoint::Messages, to_bytes(&event)).map_err(refused))
    }
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::ChatProvider;
    use serde_json::json;

    use super::super::DemoProvider;
    use super::super::testing::{call_to, events, value};
    use super::*;

    fn body(max_tokens: u32) -> Value {
        json!({"model": "claude-demo", "max_tokens": max_tokens, "system": "be brief",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "hello"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
                {"type": "text", "text": "there"}]}
        ]})
    }

    #[tokio::test]
    async fn a_message_echoes_the_last_user_text_with_anthropic_usage() {
        let answer = DemoProvider
            .complete(call_to(Endpoint::Messages, &body(100)))
            .await
            .unwrap();
        let message = value(&answer.json());
        // system 2 + 4, messages 2 + 4, 2 + 4, 2 + 4
        let input = 24;
        assert_eq!(
            message,
            json!({"id": message["id"], "type": "message", "role": "assistant", "model": "claude-demo",
                "content": [{"type": "text", "text": "You said: hello there"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": 4,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
        );
        let id = message["id"].as_str().unwrap();
        assert!(
            id.starts_with("msg_demo_") && id.len() == "msg_demo_".len() + 16,
            "{id}"
        );
        let usage = answer.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (input, 4));
    }

    #[tokio::test]
    async fn the_same_body_gets_the_same_message() {
        let first = DemoProvider
            .complete(call_to(Endpoint::Messages, &body(100)))
            .await
            .unwrap();
        let second = DemoProvider
            .complete(call_to(Endpoint::Messages, &body(100)))
            .await
            .unwrap();
        assert_eq!(first.json(), second.json());
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_echo_and_stops_with_max_tokens() {
        let answer = DemoProvider
            .complete(call_to(Endpoint::Messages, &body(2)))
            .await
            .unwrap();
        let message = value(&answer.json());
        assert_eq!(message["content"][0]["text"], "You said:");
        assert_eq!(message["stop_reason"], "max_tokens");
        assert_eq!(message["usage"]["output_tokens"], 2);
    }

    #[tokio::test]
    async fn count_tokens_reports_the_input_tokens_of_the_message() {
        let message = DemoProvider
            .complete(call_to(Endpoint::Messages, &body(100)))
            .await
            .unwrap();
        let mut counted = body(100);
        counted.as_object_mut().unwrap().remove("max_tokens");
        let count = DemoProvider
            .complete(call_to(Endpoint::CountTokens, &counted))
            .await
            .unwrap();
        assert_eq!(
            value(&count.json()),
            json!({"input_tokens": value(&message.json())["usage"]["input_tokens"]})
        );
        assert_eq!(count.usage(), None);
    }

    #[test]
    fn a_stream_sends_anthropics_events_in_order_each_one_read_as_anthropics() {
        let chunks: Vec<ChatChunk> = stream(&call_to(Endpoint::Messages, &body(100)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let kinds: Vec<&str> = chunks.iter().map(|chunk| chunk.kind().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(chunks.last().unwrap().is_finished());
        let usage = chunks[8].usage().unwrap();
        assert!(chunks[8].usage_is_final());
        assert_eq!(usage.completion_tokens, 4);
        assert_eq!(chunks[0].usage().unwrap().prompt_tokens, 24);

        let events = events(chunks.into_iter().map(Ok));
        let start = &events[0]["message"];
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["stop_reason"], Value::Null);
        assert_eq!(start["usage"]["output_tokens"], 1);
        assert_eq!(events[1]["content_block"], json!({"type": "text", "text": ""}));
        let text: Vec<&str> = events[3..7]
            .iter()
            .map(|event| {
                assert_eq!(event["index"], 0);
                assert_eq!(event["delta"]["type"], "text_delta");
                event["delta"]["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(text, ["You", " said:", " hello", " there"]);
        assert_eq!(
            events[8],
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 4}})
        );
        assert_eq!(events[9], json!({"type": "message_stop"}));
    }

    #[test]
    fn a_cut_stream_stops_with_max_tokens() {
        let events = events(stream(&call_to(Endpoint::Messages, &body(1))).unwrap());
        assert_eq!(events.len(), 7);
        assert_eq!(events[3]["delta"]["text"], "You");
        assert_eq!(events[5]["delta"]["stop_reason"], "max_tokens");
    }
}
