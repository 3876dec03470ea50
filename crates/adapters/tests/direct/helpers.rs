//! Direct upstreams pointed at a test server, and calls as the use case
//! makes them: `Route::Direct` and no credentials, the key in the adapter.

use std::collections::BTreeSet;
use std::time::Duration;

use gatewayz_adapters::direct::{DirectClient, DirectUpstream, UpstreamSpec};
use gatewayz_adapters::http::{HttpClient, Timeouts};
use gatewayz_domain::{
    ChatError, ChatRequest, Credentials, Endpoint, ProviderCall, RequestContext, ResponseAction,
    ResponseCall, Route, Service, UpstreamError,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The upstream every test calls unless it says otherwise.
pub const UPSTREAM: &str = "vllm";
pub const KEY: &str = "sk-direct-test-0123456789abcdef";
pub const AZURE: &str = "azure-east";
pub const AZURE_KEY: &str = "az-test-key-fedcba9876543210";
pub const API_VERSION: &str = "2024-10-21";
pub const REQUEST_ID: &str = "req-direct-1";
pub const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
pub const TRACESTATE: &str = "vendor=opaque,other=1";

/// Deadlines no test reaches unless it means to.
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(10),
    }
}

/// An OpenAI-compatible upstream under `{base}/v1`, with a key and a static
/// header, offering every API.
pub fn spec(base: &str) -> UpstreamSpec {
    UpstreamSpec {
        name: UPSTREAM.into(),
        base_url: format!("{base}/v1"),
        api_key: Some(SecretString::from(KEY)),
        headers: vec![("x-team".into(), "ml".into())],
        services: Some(Service::ALL.to_vec()),
        ..UpstreamSpec::default()
    }
}

/// An Azure OpenAI resource at `base`, offering every API.
pub fn azure_spec(base: &str) -> UpstreamSpec {
    UpstreamSpec {
        name: AZURE.into(),
        base_url: base.into(),
        api_key: Some(SecretString::from(AZURE_KEY)),
        api_version: Some(API_VERSION.into()),
        services: Some(Service::ALL.to_vec()),
        ..UpstreamSpec::default()
    }
}

pub fn client(spec: UpstreamSpec) -> DirectClient {
    client_with(spec, timeouts())
}

pub fn client_with(spec: UpstreamSpec, timeouts: Timeouts) -> DirectClient {
    DirectClient::new(
        HttpClient::new(timeouts).unwrap(),
        vec![DirectUpstream::new(spec).unwrap()],
    )
}

/// The adapter calling [`spec`] at `server`.
pub fn direct(server: &MockServer) -> DirectClient {
    client(spec(&server.uri()))
}

pub fn route(upstream: &str) -> Route {
    Route::Direct {
        upstream: upstream.into(),
    }
}

/// The context of every call: a request id and the client's trace headers.
pub fn context() -> RequestContext {
    RequestContext {
        traceparent: Some(TRACEPARENT.into()),
        tracestate: Some(TRACESTATE.into()),
        ..RequestContext::new(REQUEST_ID)
    }
}

/// A call of `endpoint` to `upstream`, its body sent as given.
pub fn call_on(upstream: &str, endpoint: Endpoint, body: &Value) -> ProviderCall {
    let bytes: bytes::Bytes = serde_json::to_vec(body).unwrap().into();
    ProviderCall {
        request: ChatRequest::parse_for(endpoint, bytes.clone()).unwrap(),
        body: bytes,
        route: route(upstream),
        credentials: Credentials::None,
        context: context(),
    }
}

/// A call of `endpoint` to [`UPSTREAM`].
pub fn call(endpoint: Endpoint, body: &Value) -> ProviderCall {
    call_on(UPSTREAM, endpoint, body)
}

pub fn chat_call() -> ProviderCall {
    call(Endpoint::Chat, &chat_body())
}

pub fn stream_call() -> ProviderCall {
    call(Endpoint::Chat, &stream_body())
}

/// A Responses API call by id to `upstream`.
pub fn by_id_on(upstream: &str, action: ResponseAction, query: Option<&str>) -> ResponseCall {
    ResponseCall {
        action,
        id: "resp_1".into(),
        query: query.map(str::to_owned),
        route: route(upstream),
        credentials: Credentials::None,
        context: context(),
    }
}

pub fn chat_body() -> Value {
    json!({"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]})
}

pub fn stream_body() -> Value {
    let mut body = chat_body();
    body["stream"] = json!(true);
    body
}

pub fn completion_json() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "llama-3-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    })
}

pub fn chunk_json(content: &str, finish_reason: Option<&str>) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "llama-3-8b",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}]})
}

/// An OpenAI-shaped error body, as vLLM and OpenAI send it (no `provider`).
pub fn openai_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
}

/// An SSE body of `events` (each a `data:` payload).
pub fn sse(events: &[String]) -> String {
    events.iter().map(|event| format!("data: {event}\n\n")).collect()
}

pub fn sse_response(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// A server answering every chat call under `/v1` with `response`.
pub async fn server_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// The one request the server received.
pub async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "exactly one upstream request");
    requests.remove(0)
}

pub async fn assert_no_request(server: &MockServer) {
    let requests = server.received_requests().await.unwrap();
    assert!(requests.is_empty(), "no request was to be sent: {requests:?}");
}

pub fn header_names(request: &wiremock::Request) -> BTreeSet<String> {
    request
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

/// The upstream's side of `error`, or a panic naming the error.
pub fn upstream_of(error: &ChatError) -> &UpstreamError {
    match error {
        ChatError::UpstreamAuth(upstream)
        | ChatError::RateLimited { error: upstream, .. }
        | ChatError::Timeout(upstream)
        | ChatError::UpstreamRejected(upstream)
        | ChatError::UpstreamFailed(upstream)
        | ChatError::Unavailable(upstream)
        | ChatError::InvalidUpstreamResponse(upstream) => upstream,
        other => panic!("not an upstream failure: {other:?}"),
    }
}
