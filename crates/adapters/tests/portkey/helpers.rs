use gatewayz_adapters::env::EnvSettings;
use gatewayz_adapters::http::{HttpClient, UpstreamSettings};
use gatewayz_adapters::{EnvKeyResolver, PortkeyClient, PortkeySettings};
use gatewayz_domain::{KeyResolver, ProviderCall, RequestContext, Route, UpstreamProvider};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const PORTKEY_KEY: &str = "pk-test-portkey-key";
pub const OPENAI_KEY: &str = "sk-test-openai-key";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-key";

/// The adapter pointed at `server`, with `vars` on top of the defaults.
pub fn provider(server: &MockServer, vars: &[(&str, &str)]) -> PortkeyClient {
    let base = format!("{}/v1", server.uri());
    let all = [("PORTKEY_BASE_URL", base.as_str())]
        .iter()
        .chain(vars)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect::<std::collections::BTreeMap<_, _>>();
    // The timeouts (`GATEWAYZ_UPSTREAM_*`) are the shared client's.
    let http = HttpClient::from_settings(&UpstreamSettings::from_vars(all.clone()).unwrap()).unwrap();
    PortkeyClient::new(&PortkeySettings::from_vars(all).unwrap(), http).unwrap()
}

pub fn keys() -> EnvKeyResolver {
    EnvKeyResolver::from_vars(
        [
            ("PORTKEY_API_KEY", PORTKEY_KEY),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
            ("PROVIDER_ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    )
    .unwrap()
}

pub fn route(upstream: UpstreamProvider, virtual_key: Option<&str>) -> Route {
    Route::Portkey {
        provider: upstream,
        virtual_key: virtual_key.map(SecretString::from),
        config: None,
    }
}

/// A call as the use case would make it, credentials resolved by [`keys`].
pub fn call(route: Route, body: Value) -> ProviderCall {
    let bytes: bytes::Bytes = serde_json::to_vec(&body).unwrap().into();
    ProviderCall {
        request: gatewayz_domain::ChatRequest::parse(bytes.clone()).unwrap(),
        // What the use case sends is its own concern: the body passes as given.
        body: bytes,
        credentials: keys().resolve(&route).unwrap(),
        route,
        context: RequestContext {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..RequestContext::new("req-123")
        },
    }
}

pub fn openai_call(body: Value) -> ProviderCall {
    call(route(UpstreamProvider::OpenAi, None), body)
}

pub fn chat_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

pub fn completion_json() -> Value {
    json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    })
}

pub fn chunk_json(content: &str, finish_reason: Option<&str>) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}]})
}

/// An SSE body of `events` (each a `data:` payload).
pub fn sse(events: &[String]) -> String {
    events.iter().map(|event| format!("data: {event}\n\n")).collect()
}

/// A server answering every chat call with `response`.
pub async fn server_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

pub fn sse_response(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// The one request the server received.
pub async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "exactly one upstream request");
    requests.remove(0)
}
