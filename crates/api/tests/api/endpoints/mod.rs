//! The APIs beside chat completions, end to end: embeddings, Anthropic Messages
//! (and its token count), OpenAI Responses and its calls by id.
//!
//! - [`demo`]: each API on the demo provider, whole and streamed;
//! - [`refusals`]: bad requests, models on APIs they do not serve, paths and
//!   methods, in each API's error shape;
//! - [`by_id`]: the Responses API's calls by id and follow-ups, per key;
//! - [`faults`]: an upstream that cuts a stream or answers an error status;
//! - [`memory`]: follow-ups pinned to their target, replicas sharing Redis;
//! - [`portkey_calls`]: what reaches Portkey on each API;
//! - [`usage`]: each request charged to its key once, as the upstream reported;
//! - [`through_portkey`]: the real Portkey gateway between the gateway and
//!   `gatewayz-upstream`.

mod by_id;
mod demo;
mod faults;
mod memory;
mod portkey_calls;
mod refusals;
mod through_portkey;
mod usage;

use serde_json::{Value, json};

use crate::helpers::{KEY, TestApp};
use crate::peers::PortkeyGateway;

pub const EMBEDDINGS: &str = "/v1/embeddings";
pub const MESSAGES: &str = "/v1/messages";
pub const COUNT_TOKENS: &str = "/v1/messages/count_tokens";
pub const RESPONSES: &str = "/v1/responses";

/// An Anthropic Messages request saying `text`.
pub fn message_request(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream, "system": "Be brief.",
        "messages": [{"role": "user", "content": text}]})
}

/// The token count request of the same conversation as [`message_request`].
pub fn count_request(model: &str, text: &str) -> Value {
    json!({"model": model, "system": "Be brief.", "messages": [{"role": "user", "content": text}]})
}

/// A Responses API request saying `text`.
pub fn response_request(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "input": text, "stream": stream})
}

/// `gatewayz-upstream` (crates/upstream) served on a free loopback port by
/// this test's runtime, as `config` says; its base URL, `http://<addr>/v1`.
pub async fn local_upstream(config: gatewayz_upstream::Config) -> String {
    let upstream = gatewayz_upstream::Upstream::bind(&config)
        .await
        .expect("the local upstream binds a loopback port");
    let address = upstream.local_addr().expect("its address");
    tokio::spawn(upstream.run());
    format!("http://{address}/v1")
}

/// The local upstream's settings with `--faults`: a body may ask for an
/// error status or a stream cut.
pub fn faulty() -> gatewayz_upstream::Config {
    gatewayz_upstream::Config {
        faults: true,
        ..gatewayz_upstream::Config::default()
    }
}

/// The gateway (default catalog) → the real Portkey gateway →
/// `gatewayz-upstream` served by this test's runtime; both peers live as
/// long as it does.
pub struct PortkeyChain {
    pub app: TestApp,
    _portkey: PortkeyGateway,
}

/// Starts a [`PortkeyChain`], or `None` (after saying so) where node is
/// absent and peers are optional.
pub async fn portkey_chain(test: &str) -> Option<PortkeyChain> {
    let portkey = PortkeyGateway::start(test)?;
    let upstream = local_upstream(gatewayz_upstream::Config::default()).await;
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &portkey.base_url()),
        ("PORTKEY_CUSTOM_HOST", &upstream),
        ("PORTKEY_API_KEY", "pk-endpoints-chain"),
        ("PROVIDER_OPENAI_API_KEY", "sk-endpoints-chain"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-endpoints-chain"),
    ])
    .await;
    Some(PortkeyChain {
        app,
        _portkey: portkey,
    })
}

/// A request with the test key as a bearer token.
pub async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    post_as(app, KEY, path, body).await
}

/// A request with `key` as a bearer token.
pub async fn post_as(app: &TestApp, key: &str, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("the request is sent")
}

/// A bodiless call of `method` on `path` with `key`.
pub async fn call_as(app: &TestApp, method: reqwest::Method, key: &str, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("the request is sent")
}

/// A response's status and JSON body.
pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("the body is read");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, body)
}

/// One typed SSE event: `event: <name>\ndata: <json>`.
#[derive(Debug)]
pub struct TypedEvent {
    pub name: String,
    pub data: Value,
}

/// Reads a typed event stream to its end: every event named, its data a
/// JSON object whose `type` is its name; no `data: [DONE]`.
pub async fn typed_events(response: reqwest::Response) -> Vec<TypedEvent> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.expect("the body is read");
    assert!(
        body.ends_with("\n\n"),
        "an SSE body ends with a blank line: {body:?}"
    );
    assert!(!body.contains("[DONE]"), "typed streams have no [DONE]: {body}");
    body.split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event
                .split_once('\n')
                .unwrap_or_else(|| panic!("an event has a name and data: {event:?}"));
            let name = name
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("a typed event is named: {event:?}"));
            let data: Value = serde_json::from_str(
                data.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("one data line: {event:?}")),
            )
            .unwrap_or_else(|_| panic!("the data is JSON: {event:?}"));
            assert_eq!(data["type"], name, "an event's type is its name: {event}");
            TypedEvent {
                name: name.to_owned(),
                data,
            }
        })
        .collect()
}

/// The events' names, in order.
pub fn names(events: &[TypedEvent]) -> Vec<&str> {
    events.iter().map(|event| event.name.as_str()).collect()
}

/// The one event named `name`.
pub fn the_event<'a>(events: &'a [TypedEvent], name: &str) -> &'a Value {
    let mut found = events.iter().filter(|event| event.name == name);
    let event = found
        .next()
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(events)));
    assert!(found.next().is_none(), "one {name} in {:?}", names(events));
    &event.data
}

/// The text of a stream's deltas (`content_block_delta`'s `delta.text`,
/// `response.output_text.delta`'s `delta`).
pub fn streamed_text(events: &[TypedEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event.name.as_str() {
            "content_block_delta" => event.data["delta"]["text"].as_str(),
            "response.output_text.delta" => event.data["delta"].as_str(),
            _ => None,
        })
        .collect()
}

/// Asserts `body` is Anthropic's error shape, `{"type": "error", "error":
/// {"type", "message", ..}}` and nothing else, and returns its `error`.
pub fn assert_anthropic_error(body: &Value) -> &Value {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(
        body.as_object().map(serde_json::Map::len),
        Some(2),
        "only `type` and `error`: {body}"
    );
    let error = &body["error"];
    assert!(
        error["type"].as_str().is_some_and(|kind| !kind.is_empty()),
        "{body}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    assert!(error["source"].is_string(), "{body}");
    error
}

/// Asserts `data` is a Responses stream's error event: `{"type": "error",
/// "code", "message", "param", "source"}`.
pub fn assert_responses_error_event(data: &Value) {
    assert_eq!(data["type"], "error", "{data}");
    assert!(
        data["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{data}"
    );
    for member in ["code", "param", "source"] {
        assert!(data.get(member).is_some(), "no `{member}` in {data}");
    }
    assert!(data.get("error").is_none(), "not OpenAI's envelope: {data}");
}

/// Asserts `answer` carries `gateway_usage` with its timings and, when
/// `cost` is given, that cost as the gateway reports it (to the millionth of
/// a dollar); without, no cost.
pub fn assert_gateway_usage(answer: &Value, cost: Option<f64>) {
    let usage = &answer["gateway_usage"];
    let request = usage["request_ms"].as_f64();
    let upstream = usage["upstream_ms"].as_f64();
    assert!(
        request.is_some_and(|ms| ms >= 0.0) && upstream.is_some_and(|ms| ms >= 0.0),
        "timings in {answer}"
    );
    match cost {
        Some(cost) => {
            let cost = (cost * 1_000_000.0).round() / 1_000_000.0;
            let charged = usage["cost_usd"]
                .as_f64()
                .unwrap_or_else(|| panic!("no cost in {answer}"));
            assert!(
                (charged - cost).abs() < 1e-12,
                "cost {charged}, not {cost}: {answer}"
            );
        }
        None => assert!(usage.get("cost_usd").is_none(), "no cost expected: {answer}"),
    }
}

/// A price of `per_million` dollars a million tokens, for `tokens` tokens.
pub fn priced(tokens: u64, per_million: f64) -> f64 {
    tokens as f64 * per_million / 1_000_000.0
}
