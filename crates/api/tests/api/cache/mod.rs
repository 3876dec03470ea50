//! The response cache, end to end: the real gateway in front of a stand-in
//! Portkey (wiremock) that counts its calls and numbers its answers, with a
//! catalog of models that cache.
//!
//! - [`answer`]: an answer as the tests read it;
//! - [`basics`]: hits and misses, what decides the key, keys' scopes and
//!   the client's `Cache-Control`;
//! - [`storing`]: what is never stored (errors, cut streams, answers over
//!   the entry limit);
//! - [`replay`]: a stream served whole and a whole answer as a stream;
//! - [`coalescing`]: identical requests in flight share one upstream call;
//! - [`keys`]: key policies' time to live, and hits against key limits;
//! - [`apis`]: embeddings and Anthropic Messages;
//! - [`redis`]: replicas sharing a real Redis, and a Redis that dies;
//! - [`metrics`]: the cache's metrics and access log fields;
//! - [`paced`]: a slow streaming stand-in, for clients that join or leave.

mod answer;
mod apis;
mod basics;
mod coalescing;
mod followers;
mod keys;
mod metrics;
mod paced;
mod redis;
mod replay;
mod storing;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{KEY, PolicyFile, TestApp, sample};
pub use answer::{Answer, assert_cached_usage, post};

pub const CHAT: &str = "/v1/chat/completions";

/// Models that cache (`cached` priced, `shared` across keys), one that
/// does not, an embedding model and an Anthropic one, all through Portkey
/// without retries, so that every request makes exactly one upstream call.
pub const CATALOG: &str = r#"
[routing]
retries = 0

[[models]]
id = "cached"
portkey_provider = "openai"
upstream_model = "gpt-4o-mini"
cache_ttl_s = 600
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "cached-other"
portkey_provider = "openai"
upstream_model = "gpt-4o"
cache_ttl_s = 600

[[models]]
id = "shared"
portkey_provider = "openai"
upstream_model = "gpt-4o-mini"
cache_ttl_s = 600
cache_scope = "shared"

[[models]]
id = "uncached"
portkey_provider = "openai"
upstream_model = "gpt-4o-mini"

[[models]]
id = "embedder"
portkey_provider = "openai"
upstream_model = "text-embedding-3-small"
endpoints = ["embeddings"]
cache_ttl_s = 600

[[models]]
id = "claude"
portkey_provider = "anthropic"
upstream_model = "claude-x"
endpoints = ["messages"]
cache_ttl_s = 600
"#;

/// What the stand-in's `n`-th chat call answers (from 1).
pub fn answer_text(n: usize) -> String {
    format!("Answer number {n} from upstream")
}

/// The usage every stand-in answer reports: 15 tokens, $0.015 on `cached`.
pub const PROMPT_TOKENS: u64 = 10;
pub const COMPLETION_TOKENS: u64 = 5;

pub fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-cache", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_cache",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
}

/// The bytes of the stand-in's whole answer saying `text`.
pub fn completion_bytes(text: &str) -> Vec<u8> {
    serde_json::to_vec(&completion(text)).unwrap()
}

fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-cache", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
}

/// A stream saying `text` a word a chunk: the role, the words, the finish
/// reason, and the usage chunk.
pub fn chunks(text: &str) -> Vec<Value> {
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    chunks.extend(
        text.split_inclusive(' ')
            .map(|word| chunk(json!({"content": word}), Value::Null)),
    );
    chunks.push(chunk(json!({}), json!("stop")));
    chunks.push(json!({"id": "chatcmpl-cache", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}}));
    chunks
}

/// An SSE body of `events`, ending with `[DONE]` when `done`.
pub fn sse(events: &[Value], done: bool) -> String {
    let mut body: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

/// The stand-in Portkey's chat completions: its `n`-th call answers
/// [`answer_text`]`(n)`, whole or streamed as the body's `stream` asks,
/// after `delay`.
struct NumberedAnswers {
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Respond for NumberedAnswers {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let text = answer_text(n);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let template = if body["stream"] == true {
            ResponseTemplate::new(200).set_body_raw(sse(&chunks(&text), true), "text/event-stream")
        } else {
            ResponseTemplate::new(200).set_body_raw(completion_bytes(&text), "application/json")
        };
        template.set_delay(self.delay)
    }
}

/// A stand-in Portkey answering chat completions with numbered answers.
pub async fn portkey() -> MockServer {
    portkey_after(Duration::ZERO).await
}

/// [`portkey`], each answer sent after `delay`.
pub async fn portkey_after(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CHAT))
        .respond_with(NumberedAnswers {
            calls: Arc::default(),
            delay,
        })
        .mount(&server)
        .await;
    server
}

/// Makes the stand-in's first chat call answer `first` instead (later
/// calls are numbered from 1 as before).
pub async fn first_call_answers(server: &MockServer, first: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(CHAT))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
}

/// The gateway in front of a stand-in Portkey, with [`CATALOG`] and, when
/// given, a key policy file; both files live as long as it does.
pub struct Gateway {
    pub app: TestApp,
    pub portkey: MockServer,
    _files: Vec<PolicyFile>,
}

/// The variables a gateway of these tests starts with: Portkey at
/// `portkey`, the providers' keys, and `catalog` as the catalog file.
pub fn vars<'a>(portkey: &'a str, catalog: &'a PolicyFile) -> Vec<(&'a str, &'a str)> {
    vec![
        ("PORTKEY_BASE_URL", portkey),
        ("PORTKEY_API_KEY", "pk-cache-test"),
        ("PROVIDER_OPENAI_API_KEY", "sk-cache-test"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-cache-test"),
        ("GATEWAYZ_CATALOG", catalog.path()),
    ]
}

impl Gateway {
    /// The gateway for `test` (which names its files) before `portkey`,
    /// with `extra` variables.
    pub async fn start(test: &str, portkey: MockServer, extra: &[(&str, &str)]) -> Self {
        Self::with_policies(test, portkey, None, extra).await
    }

    /// [`Gateway::start`] with `policies` as the key policy file.
    pub async fn with_policies(
        test: &str,
        portkey: MockServer,
        policies: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        let (app, files) = app_before(test, &format!("{}/v1", portkey.uri()), policies, extra).await;
        Self {
            app,
            portkey,
            _files: files,
        }
    }

    /// How many calls the stand-in received on `at`.
    pub async fn calls(&self, at: &str) -> usize {
        upstream_calls(&self.portkey, at).await
    }

    /// A chat request with the test key.
    pub async fn chat(&self, body: &Value) -> Answer {
        post(&self.app, KEY, CHAT, body, None).await
    }

    /// A chat request with the test key and `cache_control`.
    pub async fn chat_with(&self, body: &Value, cache_control: &str) -> Answer {
        post(&self.app, KEY, CHAT, body, Some(cache_control)).await
    }

    /// The admin listener's metric sample of `line_start` (0 when absent).
    pub async fn metric(&self, line_start: &str) -> f64 {
        sample(&self.app.metrics().await, line_start).unwrap_or(0.0)
    }
}

/// The gateway for `test` before the Portkey at `base` (its `/v1` URL),
/// with [`CATALOG`], `policies` as its key policy file when given, and
/// `extra` variables; and the files, to keep while it runs.
pub async fn app_before(
    test: &str,
    base: &str,
    policies: Option<&str>,
    extra: &[(&str, &str)],
) -> (TestApp, Vec<PolicyFile>) {
    let catalog = PolicyFile::new(&format!("cache-catalog-{test}"), CATALOG);
    let policies = policies.map(|text| PolicyFile::new(&format!("cache-keys-{test}"), text));
    let mut all = vars(base, &catalog);
    if let Some(policies) = &policies {
        all.push(("GATEWAYZ_API_KEYS_FILE", policies.path()));
    }
    all.extend_from_slice(extra);
    let app = TestApp::production(&all).await;
    (app, std::iter::once(catalog).chain(policies).collect())
}

/// How many calls `server` received on `at`.
pub async fn upstream_calls(server: &MockServer, at: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.path() == at)
        .count()
}

/// A chat request to `model` saying `text`.
pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// `body` with `patch`'s members set.
pub fn with(mut body: Value, patch: Value) -> Value {
    for (name, value) in patch.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}
