//! An answer as these tests read it: status, what the cache said
//! (`x-gatewayz-cache`, `age`), and the body, whole or as a chat stream.

use serde_json::Value;

use crate::helpers::TestApp;

/// One answer, read whole, with what the cache said of it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `x-gatewayz-cache`.
    pub cache: Option<String>,
    /// `age`, in seconds.
    pub age: Option<u64>,
    pub text: String,
}

/// `body` sent to `at` with `key` (and `Cache-Control` when given).
pub async fn post(app: &TestApp, key: &str, at: &str, body: &Value, cache_control: Option<&str>) -> Answer {
    let mut request = app.client.post(app.url(at)).bearer_auth(key).json(body);
    if let Some(cache_control) = cache_control {
        request = request.header("cache-control", cache_control);
    }
    Answer::read(request.send().await.expect("the request is sent")).await
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Self {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let cache = header("x-gatewayz-cache");
        let age = header("age").map(|age| age.parse().expect("age is whole seconds"));
        Self {
            status: response.status().as_u16(),
            cache,
            age,
            text: response.text().await.expect("the body is read"),
        }
    }

    pub fn cache(&self) -> Option<&str> {
        self.cache.as_deref()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }

    /// A whole chat answer's content.
    pub fn content(&self) -> String {
        let body = self.json();
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no content in {body}"))
            .to_owned()
    }

    /// A whole answer's text without the `gateway_usage` the gateway added
    /// as its last member, and that member.
    pub fn without_gateway_usage(&self) -> (String, Value) {
        const MEMBER: &str = ",\"gateway_usage\":";
        let at = self
            .text
            .rfind(MEMBER)
            .unwrap_or_else(|| panic!("no gateway_usage in {}", self.text));
        let usage = &self.text[at + MEMBER.len()..self.text.len() - 1];
        let usage = serde_json::from_str(usage).unwrap_or_else(|_| panic!("gateway_usage is JSON: {usage}"));
        (format!("{}}}", &self.text[..at]), usage)
    }

    /// A chat stream's events: the JSON chunks, after asserting that the
    /// stream ends with `[DONE]` and has no error event.
    pub fn chunks(&self) -> Vec<Value> {
        assert_eq!(self.status, 200, "{}", self.text);
        let events: Vec<&str> = self
            .text
            .split_terminator("\n\n")
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("a data event: {event:?}"))
            })
            .collect();
        let (last, chunks) = events.split_last().expect("a stream has events");
        assert_eq!(*last, "[DONE]", "{}", self.text);
        chunks
            .iter()
            .map(|chunk| {
                let chunk: Value = serde_json::from_str(chunk).unwrap_or_else(|_| panic!("JSON: {chunk}"));
                assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
                assert!(chunk.get("error").is_none(), "an error event: {chunk}");
                chunk
            })
            .collect()
    }

    /// A chat stream's text: its chunks' content deltas.
    pub fn streamed_text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    /// The `gateway_usage` of a chat stream (on one chunk only).
    pub fn streamed_gateway_usage(&self) -> Value {
        let chunks = self.chunks();
        let mut usages = chunks.iter().filter_map(|chunk| chunk.get("gateway_usage"));
        let usage = usages
            .next()
            .unwrap_or_else(|| panic!("no gateway_usage in {}", self.text));
        assert!(usages.next().is_none(), "one gateway_usage: {}", self.text);
        usage.clone()
    }
}

/// Asserts `usage` is a hit's `gateway_usage`: cached, free, no upstream.
pub fn assert_cached_usage(usage: &Value) {
    assert_eq!(usage["cached"], true, "{usage}");
    assert_eq!(usage["cost_usd"], 0.0, "{usage}");
    assert_eq!(usage["upstream_ms"], 0.0, "{usage}");
    assert!(
        usage["request_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{usage}"
    );
}
