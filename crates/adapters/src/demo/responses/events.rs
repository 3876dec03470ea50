//! A response as the events OpenAI streams, made as they are read.

use gatewayz_domain::{ChatChunk, ChatError, Endpoint};
use serde::Serialize;
use serde_json::Value;

use super::super::wire::{refused, to_bytes};
use super::answer::{Answer, OutputMessage, OutputText, ResponseOut};

/// A stream event: `type`, then `sequence_number`.
#[derive(Serialize)]
#[serde(tag = "type")]
enum Event<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: usize,
        response: ResponseOut<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: usize,
        response: ResponseOut<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        sequence_number: usize,
        output_index: u32,
        item: OutputMessage<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        delta: &'a str,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        text: &'a str,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        sequence_number: usize,
        output_index: u32,
        item: OutputMessage<'a>,
    },
    /// The last event: the whole response, `response.completed` or, when
    /// an output limit cut it, `response.incomplete`.
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: usize,
        response: ResponseOut<'a>,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        sequence_number: usize,
        response: ResponseOut<'a>,
    },
}

/// The events of a streamed response, in OpenAI's order: `created`,
/// `in_progress`, `output_item.added`, `content_part.added`, one
/// `output_text.delta` a word, `output_text.done`, `content_part.done`,
/// `output_item.done`, `completed` (or `incomplete`); numbered from 0.
pub struct Events {
    answer: Answer,
    step: usize,
}

impl Events {
    pub(super) fn new(answer: Answer) -> Self {
        Self { answer, step: 0 }
    }
}

impl Iterator for Events {
    type Item = Result<ChatChunk, ChatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let answer = &self.answer;
        let words = answer.echo.words.len();
        let sequence_number = self.step;
        self.step += 1;
        let item_id = answer.message_id.as_str();
        let piece;
        let event = match sequence_number {
            0 => Event::Created {
                sequence_number,
                response: answer.response(false),
            },
            1 => Event::InProgress {
                sequence_number,
                response: answer.response(false),
            },
            2 => Event::ItemAdded {
                sequence_number,
                output_index: 0,
                item: answer.message(false),
            },
            3 => Event::PartAdded {
                sequence_number,
                item_id,
                output_index: 0,
                content_index: 0,
                part: OutputText::new(""),
            },
            word if word < 4 + words => {
                piece = answer.echo.piece(word - 4);
                Event::TextDelta {
                    sequence_number,
                    item_id,
                    output_index: 0,
                    content_index: 0,
                    delta: &piece,
                    logprobs: Vec::new(),
                }
            }
            step if step == 4 + words => Event::TextDone {
                sequence_number,
                item_id,
                output_index: 0,
                content_index: 0,
                text: &answer.text,
                logprobs: Vec::new(),
            },
            step if step == 5 + words => Event::PartDone {
                sequence_number,
                item_id,
                output_index: 0,
                content_index: 0,
                part: OutputText::new(&answer.text),
            },
            step if step == 6 + words => Event::ItemDone {
                sequence_number,
                output_index: 0,
                item: answer.message(true),
            },
            // The same response as answered and remembered: made alike.
            step if step == 7 + words && answer.echo.cut => Event::Incomplete {
                sequence_number,
                response: answer.response(true),
            },
            step if step == 7 + words => Event::Completed {
                sequence_number,
                response: answer.response(true),
            },
            _ => return None,
        };
        Some(ChatChunk::parse(Endpoint::Responses, to_bytes(&event)).map_err(refused))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use gatewayz_domain::{ResponseAction, ResponseCall};
    use serde_json::json;

    use super::super::super::stored::{MAX_BYTES, ResponseStore, respond_by_id};
    use super::super::super::testing::{call_to, events, value};
    use super::super::stream;
    use super::super::tests::conversation;
    use super::*;

    fn memory() -> Mutex<ResponseStore> {
        Mutex::new(ResponseStore::new(8, MAX_BYTES))
    }

    #[test]
    fn a_stream_sends_openais_events_in_order_each_one_read_as_openais() {
        let memory = memory();
        let chunks: Vec<ChatChunk> = stream(&call_to(Endpoint::Responses, &conversation()), &memory)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let kinds: Vec<&str> = chunks.iter().map(|chunk| chunk.kind().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let completed = chunks.last().unwrap();
        assert!(completed.is_finished() && completed.usage_is_final());
        let usage = completed.usage().unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
            (31, 4, Some(35))
        );
        let id = chunks[0].response_id().unwrap().to_owned();
        assert_eq!(completed.response_id(), Some(id.as_str()));

        let events = events(chunks.into_iter().map(Ok));
        for (number, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], number);
        }
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[0]["response"]["output"], json!([]));
        assert_eq!(events[0]["response"]["usage"], Value::Null);
        let item_id = &events[2]["item"]["id"];
        assert_eq!(events[2]["item"]["content"], json!([]));
        assert_eq!(events[3]["part"]["text"], "");
        let deltas: Vec<&str> = events[4..8]
            .iter()
            .map(|event| {
                assert_eq!(&event["item_id"], item_id);
                event["delta"].as_str().unwrap()
            })
            .collect();
        assert_eq!(deltas, ["You", " said:", " hello", " there"]);
        assert_eq!(events[8]["text"], "You said: hello there");
        assert_eq!(events[9]["part"]["text"], "You said: hello there");
        assert_eq!(events[10]["item"]["status"], "completed");
        let call = ResponseCall {
            action: ResponseAction::Retrieve,
            id,
            query: None,
            route: gatewayz_domain::Route::Demo,
            credentials: gatewayz_domain::Credentials::None,
            context: gatewayz_domain::RequestContext::new("req-2"),
        };
        let retrieved = value(&respond_by_id(&memory, &call).unwrap());
        assert_eq!(retrieved, events[11]["response"]);
    }

    #[test]
    fn a_cut_stream_ends_incomplete() {
        let body = json!({"model": "m", "input": "a b c", "max_output_tokens": 1, "stream": true});
        let events = events(stream(&call_to(Endpoint::Responses, &body), &memory()).unwrap());
        assert_eq!(events.len(), 9);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
    }
}
