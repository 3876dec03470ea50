//! Chat completions: the echo as a `chat.completion`, with usage, or as the
//! chunk sequence a real upstream streams (role, content word by word,
//! finish, optional usage).

use gatewayz_domain::{ChatChunk, ChatError, ChatResponse, ProviderCall, Role, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::echo::{Echo, PER_MESSAGE, content_text, reply_text, word_tokens};
use super::wire::{refused, to_bytes, unix_now, unreadable};

const FINGERPRINT: &str = "fp_gatewayz_demo";

/// The answer to a non-streaming request.
pub(super) fn complete(call: &ProviderCall) -> Result<ChatResponse, ChatError> {
    Answer::for_call(call)?.into_response()
}

/// The chunks of a streaming request, made as they are read.
pub(super) fn stream(call: &ProviderCall) -> Result<Chunks, ChatError> {
    Ok(Answer::for_call(call)?.into_chunks())
}

/// What the demo reads of the body it is sent, as an upstream would.
#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    role: Role,
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl Message {
    /// The text of the content: the string itself, or the `text` parts joined
    /// by newlines.
    fn text(&self) -> String {
        content_text(self.content.as_ref(), &["text"])
    }
}

/// What the demo answers to one request, computed once.
struct Answer {
    id: String,
    created: u64,
    model: String,
    words: Vec<String>,
    finish_reason: &'static str,
    usage: Usage,
    choices: u32,
    include_usage: bool,
}

impl Answer {
    fn for_call(call: &ProviderCall) -> Result<Self, ChatError> {
        let request: Request = serde_json::from_slice(&call.body).map_err(|_| unreadable())?;
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(Message::text);
        let limit = request.max_completion_tokens.or(request.max_tokens);
        let echo = Echo::new(&reply_text(last_user), limit);
        let finish_reason = if echo.cut { "length" } else { "stop" };
        let choices = request.n.and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1);
        let completion_tokens = echo.tokens() * u64::from(choices);
        Ok(Self {
            id: format!("chatcmpl-{}", call.context.request_id),
            created: unix_now(),
            usage: Usage::new(prompt_tokens(&request), completion_tokens),
            include_usage: request
                .stream_options
                .and_then(|options| options.include_usage)
                .unwrap_or(false),
            model: request.model,
            words: echo.words,
            finish_reason,
            choices,
        })
    }

    fn usage_out(&self) -> UsageOut {
        UsageOut {
            prompt_tokens: self.usage.prompt_tokens,
            completion_tokens: self.usage.completion_tokens,
            total_tokens: self.usage.total_tokens,
        }
    }

    fn into_response(self) -> Result<ChatResponse, ChatError> {
        let content = self.words.join(" ");
        let choices: Vec<ChoiceOut<'_>> = (0..self.choices)
            .map(|index| ChoiceOut {
                index,
                message: Some(DeltaOut {
                    role: Some("assistant"),
                    content: Some(&content),
                }),
                delta: None,
                finish_reason: Some(self.finish_reason),
            })
            .collect();
        let answer = Out {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage: Some(self.usage_out()),
        };
        ChatResponse::from_json(to_bytes(&answer)).map_err(refused)
    }

    fn chunk(&self, choices: Vec<ChoiceOut<'_>>, usage: Option<UsageOut>) -> Result<ChatChunk, ChatError> {
        let chunk = Out {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        };
        ChatChunk::from_json(to_bytes(&chunk)).map_err(refused)
    }

    fn into_chunks(self) -> Chunks {
        Chunks {
            include_usage: self.include_usage,
            answer: self,
            choice: 0,
            step: 0,
        }
    }
}

/// A completion or a chunk as the demo writes it: its members in the order
/// OpenAI's API writes them.
#[derive(Serialize)]
struct Out<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// A choice: a whole `message`, or a stream's `delta` (with a `null`
/// `finish_reason` until the last).
#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<DeltaOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaOut<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<u64>,
}

/// The chunks of a streamed answer, made one at a time as the client reads
/// them: for each choice a role chunk, one chunk a word, a finish chunk; then
/// the usage chunk when asked for.
pub(super) struct Chunks {
    answer: Answer,
    include_usage: bool,
    choice: u32,
    /// 0: the role chunk; 1..=words: a word; words + 1: the finish chunk.
    step: usize,
}

impl Iterator for Chunks {
    type Item = Result<ChatChunk, ChatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let answer = &self.answer;
        if self.choice < answer.choices {
            let (index, step) = (self.choice, self.step);
            self.step += 1;
            if self.step == answer.words.len() + 2 {
                self.step = 0;
                self.choice += 1;
            }
            let text = match step {
                0 => String::new(),
                1 => answer.words[0].clone(),
                word if word <= answer.words.len() => format!(" {}", answer.words[word - 1]),
                _ => String::new(),
            };
            let last = step > answer.words.len();
            let delta = DeltaOut {
                role: (step == 0).then_some("assistant"),
                content: (!last).then_some(text.as_str()),
            };
            let choice = ChoiceOut {
                index,
                message: None,
                delta: Some(delta),
                finish_reason: last.then_some(answer.finish_reason),
            };
            return Some(answer.chunk(vec![choice], None));
        }
        if std::mem::take(&mut self.include_usage) {
            return Some(answer.chunk(Vec::new(), Some(answer.usage_out())));
        }
        None
    }
}

/// A rough token count: words plus a per-message overhead, as chat formats add.
fn prompt_tokens(request: &Request) -> u64 {
    request
        .messages
        .iter()
        .map(|message| word_tokens(&message.text()) + PER_MESSAGE)
        .sum()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::TryStreamExt;
    use gatewayz_domain::{ChatProvider, Endpoint};
    use serde_json::json;

    use super::super::testing::call_to;
    use super::super::{DemoProvider, MAX_ANSWER_BYTES};
    use super::*;

    /// A call as the domain makes it: the upstream body.
    fn call(body: Value) -> ProviderCall {
        call_to(Endpoint::Chat, &body)
    }

    fn value(json: &Bytes) -> Value {
        super::super::testing::value(json)
    }

    #[tokio::test]
    async fn complete_echoes_the_last_user_message_with_usage() {
        let response = DemoProvider
            .complete(call(json!({"model": "demo-1", "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "hello there"}
            ]})))
            .await
            .unwrap();

        let answer = value(&response.json());
        assert_eq!(answer["id"], "chatcmpl-req-1");
        assert_eq!(answer["model"], "demo-1");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "You said: hello there"
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
        assert_eq!(response.usage(), Some(&Usage::new(12, 4)));
        assert_eq!(answer["usage"]["total_tokens"], 16);
    }

    #[tokio::test]
    async fn max_tokens_truncates_and_finishes_with_length() {
        let response = DemoProvider
            .complete(call(
                json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]}),
            ))
            .await
            .unwrap();
        let answer = value(&response.json());
        assert_eq!(answer["choices"][0]["message"]["content"], "You said:");
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
    }

    #[tokio::test]
    async fn a_huge_message_gets_a_bounded_answer() {
        for huge in ["word ".repeat(MAX_ANSWER_BYTES), "é".repeat(MAX_ANSWER_BYTES * 4)] {
            let body = json!({"model": "m", "n": 128, "messages": [{"role": "user", "content": huge}]});
            let response = DemoProvider.complete(call(body)).await.unwrap();
            let answer = value(&response.json());
            assert_eq!(answer["choices"].as_array().unwrap().len(), 128);
            let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
            assert!(
                text.len() <= MAX_ANSWER_BYTES && text.len() > MAX_ANSWER_BYTES - 8,
                "{}",
                text.len()
            );
            assert_eq!(answer["choices"][0]["finish_reason"], "length");
        }
    }

    #[tokio::test]
    async fn every_choice_streams_its_own_sequence() {
        let chunks: Vec<ChatChunk> = DemoProvider
            .stream(call(json!({"model": "m", "stream": true, "n": 2, "messages": [{"role": "user", "content": "hi"}]})))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let indexes: Vec<u64> = chunks
            .iter()
            .map(|chunk| value(chunk.json())["choices"][0]["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn stream_sends_role_words_finish_and_usage_when_asked() {
        let chunks: Vec<Value> = DemoProvider
            .stream(call(
                json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
            ))
            .await
            .unwrap()
            .map_ok(|chunk| value(chunk.json()))
            .try_collect()
            .await
            .unwrap();

        let deltas: Vec<(Value, Value)> = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"].get(0))
            .map(|choice| {
                (
                    choice["delta"]["content"].clone(),
                    choice["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            deltas,
            vec![
                (json!(""), Value::Null),
                (json!("You"), Value::Null),
                (json!(" said:"), Value::Null),
                (json!(" hi"), Value::Null),
                (Value::Null, json!("stop")),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 3);
    }
}
