use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use futures::StreamExt;
use gatewayz_adapters::DemoProvider;
use gatewayz_adapters::mock::{MockChatProvider, MockKeyResolver};
use gatewayz_api::{Application, Settings, startup, telemetry};
use gatewayz_domain::{ChatService, Credentials, ProviderKind, Providers};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const KEY: &str = "test-gateway-key";

/// Logs stay silent unless `TEST_LOG` is set.
fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            // The test process's log thread lives as long as the process.
            std::mem::forget(telemetry::init(gatewayz_api::config::LogFormat::Pretty, None));
        }
    });
}

pub struct TestApp {
    pub address: String,
    pub admin: String,
    pub client: reqwest::Client,
}

impl TestApp {
    /// The gateway on the in-process demo provider.
    pub async fn demo() -> Self {
        Self::spawn(demo_service(), &[]).await
    }

    /// The gateway with `provider` serving `"provider": "demo"`.
    pub async fn with_provider(provider: MockChatProvider) -> Self {
        Self::spawn(mock_service(provider), &[]).await
    }

    /// The gateway wired as `main` wires it (demo, Portkey, keys from the
    /// variables), configured only by `vars`.
    pub async fn production(vars: &[(&str, &str)]) -> Self {
        let settings = settings(vars);
        let service = startup::chat_service(&settings).await.expect("the service wires");
        Self::start(&settings, service)
    }

    /// The production gateway with Portkey at `server` and `vars` set.
    pub async fn in_front_of(server: &wiremock::MockServer, vars: &[(&str, &str)]) -> Self {
        let base = format!("{}/v1", server.uri());
        let mut all = vec![("PORTKEY_BASE_URL", base.as_str())];
        all.extend_from_slice(vars);
        Self::production(&all).await
    }

    /// The gateway serving `service`, its HTTP service configured by `vars`.
    pub async fn spawn(service: ChatService, vars: &[(&str, &str)]) -> Self {
        Self::start(&settings(vars), service)
    }

    fn start(settings: &Settings, service: ChatService) -> Self {
        init_test_log();
        let application = Application::build(&settings.gateway, service).expect("the gateway starts");
        let address = format!("http://{}", application.address());
        let admin = format!("http://{}", application.admin_address());
        tokio::spawn(application.run_until_stopped());
        Self {
            address,
            admin,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client builds"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics read")
    }

    /// A chat request with the test key, to add a body to.
    pub fn chat(&self) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(KEY)
    }

    pub async fn post_chat(&self, body: &Value) -> reqwest::Response {
        self.chat().json(body).send().await.expect("request is sent")
    }
}

/// The settings of `vars` over the test defaults (loopback, port 0, the
/// test key), read as `main` reads the environment.
fn settings(vars: &[(&str, &str)]) -> Settings {
    let defaults = [
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_ADMIN_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
    ];
    let all: std::collections::BTreeMap<String, String> = defaults
        .iter()
        .chain(vars)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Settings::from_vars(all).expect("test settings are valid")
}

pub fn demo_service() -> ChatService {
    let providers = Providers::default().with(ProviderKind::Demo, Arc::new(DemoProvider));
    ChatService::new(providers, Arc::new(no_keys())).with_response_memory(Arc::new(
        gatewayz_adapters::responses::InProcessResponses::new(Duration::from_secs(3600)),
    ))
}

pub fn mock_service(provider: MockChatProvider) -> ChatService {
    let providers = Providers::default().with(ProviderKind::Demo, Arc::new(provider));
    ChatService::new(providers, Arc::new(no_keys()))
}

fn no_keys() -> MockKeyResolver {
    let mut keys = MockKeyResolver::new();
    keys.expect_resolve().returning(|_| Ok(Credentials::None));
    keys
}

/// A minimal valid demo request.
pub fn chat_body() -> Value {
    json!({"provider": "demo", "model": "demo-model", "messages": [{"role": "user", "content": "Hello there"}]})
}

/// `chat_body()` with `patch`'s fields set (a `null` removes the field).
pub fn chat_body_with(patch: Value) -> Value {
    let mut body = chat_body();
    let object = body.as_object_mut().expect("the base body is an object");
    for (key, value) in patch.as_object().expect("patch is an object") {
        if value.is_null() {
            object.remove(key);
        } else {
            object.insert(key.clone(), value.clone());
        }
    }
    body
}

/// Reads an SSE body to the end and returns each event's `data` payload.
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let body = response.text().await.expect("body is read");
    assert!(
        body.ends_with("\n\n"),
        "an SSE body ends with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("every event is a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// Reads from an SSE body until one whole event has arrived, within a
/// deadline, and returns its `data` payload.
pub async fn next_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> String {
    let deadline = Duration::from_secs(5);
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            return event
                .trim_end()
                .strip_prefix("data: ")
                .expect("a data event")
                .to_owned();
        }
        let bytes = tokio::time::timeout(deadline, body.next())
            .await
            .expect("an event arrives before the deadline")
            .expect("the body has not ended")
            .expect("the body reads");
        buffer.push_str(std::str::from_utf8(&bytes).expect("events are UTF-8"));
    }
}

/// Asserts `body` is OpenAI's error shape and returns its `error` object.
pub fn assert_openai_error(body: &Value) -> &Value {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no `error` in {body}"));
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    error
}

/// A plain one-choice `chat.completion` for mocks to return.
pub fn completion(model: &str, text: &str) -> gatewayz_domain::ChatResponse {
    let answer = json!({"id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000,
        "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    gatewayz_domain::ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap()
}

/// The JSON body the upstream was sent on `call`.
pub fn sent(call: &gatewayz_domain::ProviderCall) -> Value {
    serde_json::from_slice(&call.body).expect("the upstream body is JSON")
}

/// Waits until `check` holds, polling every 20 ms, for at most `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample line of a metrics text (`name{labels} value`).
pub fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A stand-in Portkey answering every chat call with `response`.
pub async fn portkey_answering(response: wiremock::ResponseTemplate) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/chat/completions"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One `[[keys]]` entry for `key`, with `fields` added.
pub fn entry(id: &str, key: &str, fields: &str) -> String {
    format!(
        "[[keys]]\nid = \"{id}\"\nkey_sha256 = \"{}\"\n{fields}\n\n",
        sha256_hex(key)
    )
}

/// A TOML file of the test's own (a key policy file, a catalog), removed
/// when the test ends.
pub struct PolicyFile(PathBuf);

impl PolicyFile {
    pub fn new(test: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "gatewayz-key-policies-{}-{test}.toml",
            std::process::id()
        ));
        let file = Self(path);
        file.write(text);
        file
    }

    /// Written whole, as Kubernetes swaps a mounted Secret, never half-way.
    pub fn write(&self, text: &str) {
        let next = self.0.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &self.0).unwrap();
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Portkey stand-in that streams a content chunk every 50 ms, 200 of
/// them, on each connection: enough for a client to leave midway.
pub async fn slow_stream_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0; 64 * 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if tokio::io::AsyncWriteExt::write_all(&mut socket, head.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                for _ in 0..200 {
                    let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                        "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "word "},
                        "finish_reason": null}]});
                    let event = format!("data: {chunk}\n\n");
                    let framed = format!("{:x}\r\n{event}\r\n", event.len());
                    if tokio::io::AsyncWriteExt::write_all(&mut socket, framed.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            });
        }
    });
    format!("http://{address}/v1")
}

/// A catalog of two models priced at a dollar a thousand tokens (a thousand
/// µ$ a token): a demo model, and a Portkey model for streams.
pub const PRICED_CATALOG: &str = r#"
[[models]]
id = "priced-demo"
provider = "demo"
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "priced-stream"
provider = "portkey"
portkey_provider = "openai"
upstream_model = "gpt-4o-mini"
input_usd_per_million = 1000
output_usd_per_million = 1000
"#;
