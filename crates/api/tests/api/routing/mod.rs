//! Routing of catalog models over their targets, end to end: retries,
//! `Retry-After`, fallbacks, weighted load balancing, circuit breakers, the
//! overall deadline and Portkey configs. Every target goes through one
//! stand-in Portkey; targets are told apart by the upstream model they send.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{KEY, TestApp, assert_openai_error, sse_data};

mod breakers;
mod configs;
mod fallbacks;
mod retries;

/// Writes `catalog` to a file of its own and returns its path.
fn catalog_file(catalog: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "gatewayz-routing-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, catalog).unwrap();
    file
}

/// The gateway in front of `server` with `catalog` as its model catalog.
async fn gateway(server: &MockServer, catalog: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = catalog_file(catalog);
    let mut vars = vec![
        ("PORTKEY_API_KEY", "pk-routing"),
        ("PROVIDER_OPENAI_API_KEY", "sk-openai-routing"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-routing"),
        ("GATEWAYZ_CATALOG", file.to_str().unwrap()),
    ];
    vars.extend_from_slice(extra);
    let app = TestApp::in_front_of(server, &vars).await;
    // The catalog is read once, at start.
    std::fs::remove_file(&file).unwrap();
    app
}

/// A model `smart` with one target, `openai/model-a`, and `routing` as its
/// routing table (inline TOML, without braces).
fn one_target(routing: &str) -> String {
    format!(
        "[[models]]\nid = \"smart\"\nportkey_provider = \"openai\"\nupstream_model = \"model-a\"\nrouting = {{ {routing} }}\n"
    )
}

/// A model `smart` that falls back from `primary` (model-a) to `secondary`
/// (model-b), with `routing` as its routing table.
fn two_targets(routing: &str) -> String {
    format!(
        r#"
[[models]]
id = "smart"
strategy = "fallback"
routing = {{ {routing} }}
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
"#
    )
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn ask_stream(model: &str) -> Value {
    let mut body = ask(model);
    body["stream"] = json!(true);
    body
}

/// What an upstream model answers: the text says who answered.
fn completion(model: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {model}")},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}, "provider": "openai"})
}

fn ok(model: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(model))
}

fn failing(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": format!("upstream says {status}"),
        "type": "server_error", "param": null, "code": null}, "provider": "openai"}))
}

fn chunk(model: &str, content: &str, finish_reason: Option<&str>) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}]})
}

/// An SSE body of `events`, one `data:` line each.
fn sse_body(events: &[Value], done: bool) -> String {
    let mut body: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

/// A whole stream from `model`: its text is `from <model>`.
fn streamed(model: &str) -> ResponseTemplate {
    let body = sse_body(
        &[
            chunk(model, "from ", None),
            chunk(model, model, None),
            chunk(model, "", Some("stop")),
        ],
        true,
    );
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// Answers in the order given, then repeats the last answer.
struct Script {
    answers: Vec<ResponseTemplate>,
    next: AtomicUsize,
}

fn script(answers: Vec<ResponseTemplate>) -> Script {
    assert!(!answers.is_empty());
    Script {
        answers,
        next: AtomicUsize::new(0),
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        self.answers[index.min(self.answers.len() - 1)].clone()
    }
}

/// Mounts `answer` for the chat calls whose body holds `body` (e.g. the
/// upstream model).
async fn on(server: &MockServer, body: Value, answer: impl Respond + 'static) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(body))
        .respond_with(answer)
        .mount(server)
        .await;
}

/// The chat calls that reached Portkey for upstream `model`.
async fn calls_for(server: &MockServer, model: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| {
            serde_json::from_slice::<Value>(&request.body).is_ok_and(|body| body["model"] == model)
        })
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// The target that served, as the gateway names it.
fn served_by(response: &reqwest::Response) -> Option<String> {
    header(response, "x-gatewayz-target")
}

/// The value of the sample of `name` whose labels include all of `labels`
/// (in any order), if there is one.
fn metric(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let Some((series, _)) = line.rsplit_once(' ') else {
                return false;
            };
            let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
            metric_name == name
                && labels
                    .iter()
                    .all(|(label, value)| label_text.contains(&format!("{label}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The text of an SSE stream's chunks, checked to end with `[DONE]`.
fn streamed_text(events: &[String]) -> String {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    events[..events.len() - 1]
        .iter()
        .map(|event| {
            let chunk: Value = serde_json::from_str(event).unwrap();
            assert!(chunk.get("error").is_none(), "an error event: {event}");
            chunk["choices"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|choice| choice["delta"]["content"].as_str())
                .collect::<String>()
        })
        .collect()
}

/// Runs `count` requests, `concurrency` at a time.
async fn fan_out<T, F, Fut>(count: usize, concurrency: usize, request: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures::stream::iter(0..count)
        .map(request)
        .buffer_unordered(concurrency)
        .collect()
        .await
}
