//! A deterministic in-process provider: it answers by echoing the last user
//! message, with token counts and, when streaming, the chunk sequence a real
//! upstream sends (role, content word by word, finish, optional usage).

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use gatewayz_domain::model::Extra;
use gatewayz_domain::{
    ChatChunk, ChatError, ChatProvider, ChatRequest, ChatResponse, ChatStream, Choice, ChunkChoice, Delta,
    Message, ProviderCall, Role, Usage,
};
use serde_json::Value;

/// The `demo` provider. Needs no account and no network.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoProvider;

const FINGERPRINT: &str = "fp_gatewayz_demo";

/// The longest answer, in bytes: like a real model's output limit, it bounds
/// what one request can make the demo produce (times `n`, at most 128).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// What the demo answers to one request, computed once.
struct Answer {
    id: String,
    created: u64,
    model: String,
    words: Vec<String>,
    finish_reason: &'static str,
    usage: Usage,
    choices: u32,
}

impl Answer {
    fn for_call(call: &ProviderCall) -> Self {
        let request = &call.request;
        let text = reply_text(request);
        let cut = text.len() > MAX_ANSWER_BYTES;
        let end = (0..=MAX_ANSWER_BYTES.min(text.len()))
            .rev()
            .find(|end| text.is_char_boundary(*end))
            .unwrap_or(0);
        let text = &text[..end];
        let limit = request
            .output_token_limit()
            .and_then(|limit| usize::try_from(limit).ok())
            .unwrap_or(usize::MAX);
        // One word past the limit is enough to know the answer was cut.
        let mut words: Vec<String> = text
            .split_whitespace()
            .take(limit.saturating_add(1))
            .map(str::to_owned)
            .collect();
        let finish_reason = if words.len() > limit {
            words.truncate(limit);
            "length"
        } else if cut {
            "length"
        } else {
            "stop"
        };
        let choices = request.n.and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1);
        let completion_tokens = words.len() as u64 * u64::from(choices);
        Self {
            id: format!("chatcmpl-{}", call.context.request_id),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            model: request.model.clone(),
            words,
            finish_reason,
            usage: Usage::new(prompt_tokens(request), completion_tokens),
            choices,
        }
    }

    fn extra() -> Extra {
        let mut extra = Extra::new();
        extra.insert("system_fingerprint".into(), Value::from(FINGERPRINT));
        extra
    }

    fn into_response(self) -> ChatResponse {
        let content = self.words.join(" ");
        ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: (0..self.choices)
                .map(|index| Choice {
                    index,
                    message: Message::text(Role::Assistant, content.clone()),
                    finish_reason: Some(self.finish_reason.into()),
                    extra: Extra::new(),
                })
                .collect(),
            usage: Some(self.usage),
            extra: Self::extra(),
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra: Self::extra(),
        }
    }

    fn into_chunks(self, include_usage: bool) -> Chunks {
        Chunks {
            answer: self,
            include_usage,
            choice: 0,
            step: 0,
        }
    }
}

/// The chunks of a streamed answer, made one at a time as the client reads
/// them: for each choice a role chunk, one chunk a word, a finish chunk; then
/// the usage chunk when asked for.
struct Chunks {
    answer: Answer,
    include_usage: bool,
    choice: u32,
    /// 0: the role chunk; 1..=words: a word; words + 1: the finish chunk.
    step: usize,
}

impl Iterator for Chunks {
    type Item = ChatChunk;

    fn next(&mut self) -> Option<ChatChunk> {
        let answer = &self.answer;
        if self.choice < answer.choices {
            let (index, step) = (self.choice, self.step);
            self.step += 1;
            if self.step == answer.words.len() + 2 {
                self.step = 0;
                self.choice += 1;
            }
            let (delta, finish_reason) = match step {
                0 => (
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                ),
                word if word <= answer.words.len() => {
                    let text = &answer.words[word - 1];
                    let content = if word == 1 {
                        text.clone()
                    } else {
                        format!(" {text}")
                    };
                    let delta = Delta {
                        content: Some(content),
                        ..Delta::default()
                    };
                    (delta, None)
                }
                _ => (Delta::default(), Some(answer.finish_reason.to_owned())),
            };
            let choice = ChunkChoice {
                index,
                delta,
                finish_reason,
                extra: Extra::new(),
            };
            return Some(answer.chunk(vec![choice], None));
        }
        if std::mem::take(&mut self.include_usage) {
            return Some(answer.chunk(Vec::new(), Some(answer.usage.clone())));
        }
        None
    }
}

/// The last user message, echoed; a greeting when there is none.
fn reply_text(request: &ChatRequest) -> String {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .and_then(|message| message.content.as_ref())
        .map(|content| content.text());
    match last_user {
        Some(text) if !text.trim().is_empty() => format!("You said: {text}"),
        _ => "Hello from the Gatewayz demo provider.".to_owned(),
    }
}

/// A rough token count: words plus a per-message overhead, as chat formats add.
fn prompt_tokens(request: &ChatRequest) -> u64 {
    const PER_MESSAGE: u64 = 4;
    request
        .messages
        .iter()
        .map(|message| {
            let words = message
                .content
                .as_ref()
                .map_or(0, |content| content.text().split_whitespace().count());
            words as u64 + PER_MESSAGE
        })
        .sum()
}

#[async_trait]
impl ChatProvider for DemoProvider {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        Ok(Answer::for_call(&call).into_response())
    }

    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError> {
        let include_usage = call.request.wants_stream_usage();
        let chunks = Answer::for_call(&call).into_chunks(include_usage);
        Ok(futures::stream::iter(chunks.map(Ok)).boxed())
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use gatewayz_domain::{Credentials, RequestContext, Route};
    use serde_json::json;

    use super::*;

    fn call(body: Value) -> ProviderCall {
        ProviderCall {
            request: serde_json::from_value(body).unwrap(),
            route: Route::Demo,
            credentials: Credentials::None,
            context: RequestContext::new("req-1"),
        }
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

        assert_eq!(response.id, "chatcmpl-req-1");
        assert_eq!(response.model, "demo-1");
        let choice = &response.choices[0];
        assert_eq!(
            choice.message.content.as_ref().unwrap().text(),
            "You said: hello there"
        );
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
        let usage = response.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens.unwrap()
            ),
            (12, 4, 16)
        );
    }

    #[tokio::test]
    async fn max_tokens_truncates_and_finishes_with_length() {
        let response = DemoProvider
            .complete(call(
                json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]}),
            ))
            .await
            .unwrap();
        assert_eq!(
            response.choices[0].message.content.as_ref().unwrap().text(),
            "You said:"
        );
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("length"));
    }

    #[tokio::test]
    async fn a_huge_message_gets_a_bounded_answer() {
        for huge in ["word ".repeat(MAX_ANSWER_BYTES), "é".repeat(MAX_ANSWER_BYTES * 4)] {
            let body = json!({"model": "m", "n": 128, "messages": [{"role": "user", "content": huge}]});
            let response = DemoProvider.complete(call(body)).await.unwrap();
            assert_eq!(response.choices.len(), 128);
            let text = response.choices[0].message.content.as_ref().unwrap().text();
            assert!(
                text.len() <= MAX_ANSWER_BYTES && text.len() > MAX_ANSWER_BYTES - 8,
                "{}",
                text.len()
            );
            assert_eq!(response.choices[0].finish_reason.as_deref(), Some("length"));
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
        let indexes: Vec<u32> = chunks.iter().map(|chunk| chunk.choices[0].index).collect();
        assert_eq!(indexes, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn stream_sends_role_words_finish_and_usage_when_asked() {
        let chunks: Vec<ChatChunk> = DemoProvider
            .stream(call(
                json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
            ))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();

        let deltas: Vec<_> = chunks
            .iter()
            .filter_map(|chunk| chunk.choices.first())
            .map(|choice| (choice.delta.content.clone(), choice.finish_reason.clone()))
            .collect();
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(
            deltas,
            vec![
                (Some(String::new()), None),
                (Some("You".into()), None),
                (Some(" said:".into()), None),
                (Some(" hi".into()), None),
                (None, Some("stop".into())),
            ]
        );
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage.as_ref().map(|usage| usage.completion_tokens), Some(3));
    }
}
