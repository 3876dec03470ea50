//! Every answer's bytes, built once at start-up: serving one is a reference
//! count increment.

use std::sync::Arc;

use bytes::Bytes;

const ID: &str = "chatcmpl-gatewayz-upstream";
const MODEL: &str = "gpt-4o-mini";
const FINGERPRINT: &str = "fp_gatewayz_upstream";
const PROMPT_TOKENS: usize = 9;
const COMPLETION: &str = "Hello! I am the benchmark upstream. How can I help you today?";
const COMPLETION_TOKENS: usize = 14;

/// The precomputed answers.
#[derive(Debug, Clone)]
pub struct Responses {
    completion: Bytes,
    stream_with_usage: Arc<[Bytes]>,
    stream_without_usage: Arc<[Bytes]>,
    content_chunks: usize,
}

impl Responses {
    /// Builds the answers: a stream has `content_chunks` content events
    /// (the first also carries the assistant role), a finish event, the
    /// usage event when asked for, and `[DONE]`. `created` is the Unix time
    /// every answer reports.
    pub fn new(content_chunks: usize, created: u64) -> Self {
        let completion = format!(
            concat!(
                r#"{{"id":"{ID}","object":"chat.completion","created":{created},"model":"{MODEL}","#,
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"{COMPLETION}","refusal":null}},"#,
                r#""logprobs":null,"finish_reason":"stop"}}],"#,
                r#""usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total}}},"#,
                r#""system_fingerprint":"{FINGERPRINT}"}}"#,
            ),
            ID = ID,
            created = created,
            MODEL = MODEL,
            COMPLETION = COMPLETION,
            prompt = PROMPT_TOKENS,
            completion = COMPLETION_TOKENS,
            total = PROMPT_TOKENS + COMPLETION_TOKENS,
            FINGERPRINT = FINGERPRINT,
        );
        let chunk = |choices: &str, usage: Option<&str>| {
            let usage = usage
                .map(|usage| format!(r#","usage":{usage}"#))
                .unwrap_or_default();
            Bytes::from(format!(
                concat!(
                    r#"data: {{"id":"{ID}","object":"chat.completion.chunk","created":{created},"#,
                    r#""model":"{MODEL}","system_fingerprint":"{FINGERPRINT}","choices":[{choices}]{usage}}}"#,
                    "\n\n"
                ),
                ID = ID,
                created = created,
                MODEL = MODEL,
                FINGERPRINT = FINGERPRINT,
                choices = choices,
                usage = usage,
            ))
        };
        let mut events: Vec<Bytes> = (0..content_chunks)
            .map(|index| {
                let role = if index == 0 { r#""role":"assistant","# } else { "" };
                chunk(
                    &format!(
                        r#"{{"index":0,"delta":{{{role}"content":"tok{index} "}},"logprobs":null,"finish_reason":null}}"#
                    ),
                    None,
                )
            })
            .collect();
        events.push(chunk(
            r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
            None,
        ));
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        let mut without_usage = events.clone();
        without_usage.push(done.clone());
        let usage = format!(
            r#"{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{content_chunks},"total_tokens":{}}}"#,
            PROMPT_TOKENS + content_chunks
        );
        events.push(chunk("", Some(&usage)));
        events.push(done);
        Self {
            completion: Bytes::from(completion),
            stream_with_usage: events.into(),
            stream_without_usage: without_usage.into(),
            content_chunks,
        }
    }

    /// The `chat.completion` body.
    pub fn completion(&self) -> Bytes {
        self.completion.clone()
    }

    /// The SSE events of a stream, each a complete `data: …\n\n`.
    pub fn stream(&self, include_usage: bool) -> Arc<[Bytes]> {
        if include_usage {
            Arc::clone(&self.stream_with_usage)
        } else {
            Arc::clone(&self.stream_without_usage)
        }
    }

    /// How many of a stream's first events carry content.
    pub fn content_chunks(&self) -> usize {
        self.content_chunks
    }
}
