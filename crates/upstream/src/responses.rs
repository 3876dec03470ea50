//! Every answer's bytes, built once at start-up: serving one is a reference
//! count increment. An Azure deployment's answers, which name the
//! deployment as their model, are built per request.

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
    created: u64,
}

impl Responses {
    /// Builds the answers: a stream has `content_chunks` content events
    /// (the first also carries the assistant role), a finish event, the
    /// usage event when asked for, and `[DONE]`. `created` is the Unix time
    /// every answer reports.
    pub fn new(content_chunks: usize, created: u64) -> Self {
        Self::naming(MODEL, content_chunks, created)
    }

    /// The same answers, naming `model` as theirs.
    pub fn for_model(&self, model: &str) -> Self {
        Self::naming(model, self.content_chunks, self.created)
    }

    fn naming(model: &str, content_chunks: usize, created: u64) -> Self {
        // As a JSON string, quotes included.
        let model = serde_json::Value::from(model).to_string();
        let completion = format!(
            concat!(
                r#"{{"id":"{ID}","object":"chat.completion","created":{created},"model":{model},"#,
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"{COMPLETION}","refusal":null}},"#,
                r#""logprobs":null,"finish_reason":"stop"}}],"#,
                r#""usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total}}},"#,
                r#""system_fingerprint":"{FINGERPRINT}"}}"#,
            ),
            ID = ID,
            created = created,
            model = model,
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
                    r#""model":{model},"system_fingerprint":"{FINGERPRINT}","choices":[{choices}]{usage}}}"#,
                    "\n\n"
                ),
                ID = ID,
                created = created,
                model = model,
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
            created,
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

#[cfg(test)]
mod tests {
    use super::Responses;

    #[test]
    fn answers_for_a_model_name_it_as_a_json_string_and_keep_the_rest() {
        let responses = Responses::new(2, 1_700_000_000);

        let named = responses.for_model("my \"deployment\"");

        let completion: serde_json::Value = serde_json::from_slice(&named.completion()).unwrap();
        assert_eq!(completion["model"], "my \"deployment\"");
        assert_eq!(completion["created"], 1_700_000_000);
        let events = named.stream(true);
        assert_eq!(events.len(), responses.stream(true).len());
        for event in &events[..events.len() - 1] {
            let data = event.strip_prefix(b"data: ").unwrap();
            let chunk: serde_json::Value = serde_json::from_slice(data).unwrap();
            assert_eq!(chunk["model"], "my \"deployment\"");
        }
        let original: serde_json::Value = serde_json::from_slice(&responses.completion()).unwrap();
        assert_eq!(original["model"], "gpt-4o-mini");
    }
}
