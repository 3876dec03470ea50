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

// --- The gateway, its catalog and the stand-in Portkey ---

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

// --- Retries ---

#[tokio::test]
async fn a_503_is_retried_and_the_client_gets_the_second_answer() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), ok("model-a")]),
    )
    .await;
    let app = gateway(&server, &one_target("retries = 2, backoff_base_ms = 5"), &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("openai/model-a"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from model-a");
    assert_eq!(calls_for(&server, "model-a").await.len(), 2);
    let metrics = app.metrics().await;
    let retries = [
        ("model", "smart"),
        ("target", "openai/model-a"),
        ("reason", "upstream_failed"),
    ];
    assert_eq!(
        metric(&metrics, "gatewayz_retries_total", &retries),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_catalogs_routing_table_is_every_models_default_and_a_model_or_target_may_override_it() {
    let server = MockServer::start().await;
    for model in ["model-a", "model-b", "model-c"] {
        on(&server, json!({"model": model}), failing(503)).await;
    }
    let catalog = r#"
[routing]
retries = 0
backoff_base_ms = 1
breaker_failures = 0

[[models]]
id = "plain"
portkey_provider = "openai"
upstream_model = "model-a"

[[models]]
id = "eager"
portkey_provider = "openai"
upstream_model = "model-b"
routing = { retries = 2 }

[[models]]
id = "picky"
routing = { retries = 2 }
[[models.targets]]
portkey_provider = "openai"
upstream_model = "model-c"
retries = 1
"#;
    let app = gateway(&server, catalog, &[]).await;

    for model in ["plain", "eager", "picky"] {
        assert_eq!(app.post_chat(&ask(model)).await.status(), 502, "{model}");
    }

    let calls = (
        calls_for(&server, "model-a").await.len(),
        calls_for(&server, "model-b").await.len(),
        calls_for(&server, "model-c").await.len(),
    );
    assert_eq!(calls, (1, 3, 2), "attempts of plain, eager and picky");
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_before_the_retry() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![
            failing(429).insert_header("retry-after", "1"),
            ok("model-a"),
        ]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 2, backoff_base_ms = 1, retry_after_max_ms = 5000"),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;
    let elapsed = started.elapsed();

    assert_eq!(response.status(), 200);
    assert!(
        elapsed >= Duration::from_secs(1),
        "the retry came after {elapsed:?}, before the upstream's Retry-After of 1 s"
    );
    assert_eq!(calls_for(&server, "model-a").await.len(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_retries_total",
            &[("model", "smart"), ("reason", "rate_limited")]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_gateway_waits_reaches_the_client_at_once() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        failing(429).insert_header("retry-after", "30"),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 2, backoff_base_ms = 1, retry_after_max_ms = 5000"),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("30"));
    let body: Value = response.json().await.unwrap();
    assert_openai_error(&body);
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_longer_than_the_gateway_waits_falls_back_at_once() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        failing(429).insert_header("retry-after", "30"),
    )
    .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let app = gateway(
        &server,
        &two_targets("retries = 2, backoff_base_ms = 1, retry_after_max_ms = 5000"),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("secondary"));
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_fallbacks_total",
            &[
                ("model", "smart"),
                ("from_target", "primary"),
                ("reason", "rate_limited")
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_retry_after_that_would_end_past_the_deadline_is_not_waited_out() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![
            failing(429).insert_header("retry-after", "2"),
            ok("model-a"),
        ]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 2, retry_after_max_ms = 5000, deadline_ms = 500"),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;

    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.status(),
        429,
        "the last failure is the answer, not a 504"
    );
    assert_eq!(header(&response, "retry-after").as_deref(), Some("2"));
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(400), ok("model-a")]),
    )
    .await;
    let app = gateway(&server, &one_target("retries = 2, backoff_base_ms = 1"), &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_openai_error(&body);
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "gatewayz_retries_total", &[("model", "smart")]),
        None,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_401_is_neither_retried_nor_fallen_back_from() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(401), ok("model-a")]),
    )
    .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let app = gateway(&server, &two_targets("retries = 2, backoff_base_ms = 1"), &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 500, "the gateway's credentials were refused");
    let body: Value = response.json().await.unwrap();
    assert!(
        assert_openai_error(&body)["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream authentication error"),
        "{body}"
    );
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
    assert_eq!(calls_for(&server, "model-b").await.len(), 0);
}

#[tokio::test]
async fn direct_routes_are_not_retried() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), ok("model-a")]),
    )
    .await;
    let app = gateway(&server, &one_target("retries = 2, backoff_base_ms = 1"), &[]).await;

    let at_syntax = app.post_chat(&ask("@openai/model-a")).await;
    assert_eq!(at_syntax.status(), 502);
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);

    // The explicit fields win over the catalog id: the model goes upstream as is.
    on(
        &server,
        json!({"model": "smart"}),
        script(vec![failing(503), ok("smart")]),
    )
    .await;
    let mut fields = ask("smart");
    fields["portkey_provider"] = json!("openai");
    let direct = app.post_chat(&fields).await;
    assert_eq!(direct.status(), 502);
    assert_eq!(calls_for(&server, "smart").await.len(), 1);
}

// --- Fallbacks ---

#[tokio::test]
async fn a_primary_that_keeps_failing_falls_back_to_the_secondary() {
    for status in [503, 502, 500, 504] {
        let server = MockServer::start().await;
        on(&server, json!({"model": "model-a"}), failing(status)).await;
        on(&server, json!({"model": "model-b"}), ok("model-b")).await;
        let app = gateway(
            &server,
            &two_targets("retries = 1, backoff_base_ms = 1, breaker_failures = 0"),
            &[],
        )
        .await;

        let response = app.post_chat(&ask("smart")).await;

        assert_eq!(response.status(), 200, "primary answering {status}");
        assert_eq!(served_by(&response).as_deref(), Some("secondary"), "{status}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "from model-b");
        assert_eq!(
            calls_for(&server, "model-a").await.len(),
            2,
            "the first attempt and one retry of the primary ({status})"
        );
        let metrics = app.metrics().await;
        assert_eq!(
            metric(
                &metrics,
                "gatewayz_fallbacks_total",
                &[("model", "smart"), ("from_target", "primary")]
            ),
            Some(1.0),
            "{status}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_primary_that_times_out_falls_back_to_the_secondary() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ok("model-a").set_delay(Duration::from_secs(3)),
    )
    .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let app = gateway(
        &server,
        &two_targets("retries = 0"),
        &[("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", "200")],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served_by(&response).as_deref(), Some("secondary"));
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_fallbacks_total",
            &[("from_target", "primary"), ("reason", "timeout")]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_target_without_credentials_falls_back_to_the_next() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    // No PROVIDER_GROQ_API_KEY is set.
    let catalog = r#"
[[models]]
id = "smart"
[[models.targets]]
name = "keyless"
portkey_provider = "groq"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
"#;
    let app = gateway(&server, catalog, &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("secondary"));
    assert_eq!(calls_for(&server, "model-a").await.len(), 0);
}

#[tokio::test]
async fn a_nested_loadbalance_group_serves_when_the_primary_fails() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    on(&server, json!({"model": "model-c"}), failing(502)).await;
    let catalog = r#"
[[models]]
id = "smart"
strategy = "fallback"
routing = { retries = 0, breaker_failures = 0 }
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
strategy = "loadbalance"
[[models.targets.targets]]
name = "pool-b"
portkey_provider = "openai"
upstream_model = "model-b"
weight = 1
[[models.targets.targets]]
name = "pool-c"
portkey_provider = "anthropic"
upstream_model = "model-c"
weight = 1
"#;
    let app = gateway(&server, catalog, &[]).await;

    for _ in 0..40 {
        let response = app.post_chat(&ask("smart")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response).as_deref(), Some("pool-b"));
    }
    assert_eq!(calls_for(&server, "model-a").await.len(), 40);
    // Binomial(40, 1/2): outside 5..=35 is about 4.7 standard deviations away.
    let to_c = calls_for(&server, "model-c").await.len();
    assert!(
        (5..=35).contains(&to_c),
        "pool-c was tried first about half the time, not {to_c} times in 40"
    );
}

#[tokio::test]
async fn a_targets_model_output_limit_and_credentials_do_not_leak_into_the_next_target() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let catalog = r#"
[[models]]
id = "smart"
routing = { retries = 0 }
[[models.targets]]
name = "primary"
portkey_provider = "anthropic"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
"#;
    let app = gateway(&server, catalog, &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 200);
    let primary = &calls_for(&server, "model-a").await[0];
    let sent: Value = serde_json::from_slice(&primary.body).unwrap();
    assert_eq!(sent["max_tokens"], 4096, "Anthropic needs a limit: {sent}");
    assert_eq!(primary.headers["x-portkey-provider"], "anthropic");
    let secondary = &calls_for(&server, "model-b").await[0];
    let sent: Value = serde_json::from_slice(&secondary.body).unwrap();
    assert!(
        sent.get("max_tokens").is_none(),
        "the primary's limit leaked: {sent}"
    );
    assert_eq!(secondary.headers["x-portkey-provider"], "openai");
    assert_eq!(secondary.headers["authorization"], "Bearer sk-openai-routing");
}

#[tokio::test]
async fn when_every_target_fails_the_client_hears_what_an_upstream_said() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    // No PROVIDER_GROQ_API_KEY: the groq target is skipped.
    let keyless_last = r#"
[[models]]
id = "smart"
routing = { retries = 0 }
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
name = "keyless"
portkey_provider = "groq"
upstream_model = "model-k"
"#;
    let app = gateway(&server, keyless_last, &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_openai_error(&body)["message"],
        "Upstream service error: upstream says 503",
        "{body}"
    );
}

// --- Streams ---

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_falls_back() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    on(&server, json!({"model": "model-b"}), streamed("model-b")).await;
    let app = gateway(&server, &two_targets("retries = 0"), &[]).await;

    let response = app.post_chat(&ask_stream("smart")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("secondary"));
    let events = sse_data(response).await;
    assert_eq!(streamed_text(&events), "from model-b");
    assert_eq!(calls_for(&server, "model-a").await.len(), 1);
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_error_falls_back() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ResponseTemplate::new(200).set_body_raw(
            sse_body(&[json!({"error": {"message": "overloaded"}})], false),
            "text/event-stream",
        ),
    )
    .await;
    on(&server, json!({"model": "model-b"}), streamed("model-b")).await;
    let app = gateway(&server, &two_targets("retries = 0"), &[]).await;

    let response = app.post_chat(&ask_stream("smart")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("secondary"));
    let events = sse_data(response).await;
    assert_eq!(streamed_text(&events), "from model-b");
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_chunk_is_neither_retried_nor_fallen_back() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ResponseTemplate::new(200).set_body_raw(
            sse_body(
                &[
                    chunk("model-a", "one", None),
                    json!({"error": {"message": "boom"}}),
                ],
                false,
            ),
            "text/event-stream",
        ),
    )
    .await;
    on(&server, json!({"model": "model-b"}), streamed("model-b")).await;
    let app = gateway(&server, &two_targets("retries = 2, backoff_base_ms = 1"), &[]).await;

    let response = app.post_chat(&ask_stream("smart")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response).as_deref(), Some("primary"));
    let events = sse_data(response).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "one");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("boom"),
        "{error}"
    );
    assert_eq!(events[2], "[DONE]");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

// --- Load balancing ---

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loadbalance_group_splits_requests_by_weight() {
    const REQUESTS: usize = 1_000;
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), ok("model-a")).await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let catalog = r#"
[[models]]
id = "smart"
strategy = "loadbalance"
routing = { retries = 0 }
[[models.targets]]
name = "heavy"
portkey_provider = "openai"
upstream_model = "model-a"
weight = 80
[[models.targets]]
name = "light"
portkey_provider = "openai"
upstream_model = "model-b"
weight = 20
"#;
    let app = gateway(&server, catalog, &[]).await;

    let served = fan_out(REQUESTS, 16, |_| async {
        let response = app.post_chat(&ask("smart")).await;
        assert_eq!(response.status(), 200);
        served_by(&response)
    })
    .await;

    let heavy = served
        .iter()
        .filter(|name| name.as_deref() == Some("heavy"))
        .count();
    let light = served
        .iter()
        .filter(|name| name.as_deref() == Some("light"))
        .count();
    assert_eq!(heavy + light, REQUESTS, "every answer names its target");
    // sd = sqrt(0.8 · 0.2 / 1000) ≈ 0.0126: ± 0.05 is about 4 sd.
    #[allow(clippy::cast_precision_loss)]
    let share = heavy as f64 / REQUESTS as f64;
    assert!((share - 0.8).abs() <= 0.05, "heavy served {share}");
    assert_eq!(calls_for(&server, "model-a").await.len(), heavy);
}

// --- Circuit breakers ---

#[tokio::test]
async fn a_circuit_opens_after_repeated_failures_and_a_good_probe_closes_it() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), failing(503), failing(503), ok("model-a")]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 0, breaker_failures = 3, breaker_cooldown_ms = 300"),
        &[],
    )
    .await;
    let state = [("model", "smart"), ("target", "openai/model-a")];

    for _ in 0..2 {
        assert_eq!(app.post_chat(&ask("smart")).await.status(), 502);
    }
    assert_ne!(
        metric(&app.metrics().await, "gatewayz_breaker_state", &state),
        Some(2.0),
        "two failures of three leave the circuit closed"
    );
    let opened = Instant::now();
    assert_eq!(app.post_chat(&ask("smart")).await.status(), 502);

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "gatewayz_breaker_state", &state),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_breaker_transitions_total",
            &[
                ("model", "smart"),
                ("target", "openai/model-a"),
                ("state", "open")
            ]
        ),
        Some(1.0),
        "{metrics}"
    );

    let refused = app.post_chat(&ask("smart")).await;
    assert_eq!(refused.status(), 503);
    let retry_after: u64 = header(&refused, "retry-after")
        .expect("a Retry-After with an open circuit")
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 1,
        "the 300 ms left of the cool-down, in whole seconds"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "circuit_open", "{body}");
    assert_eq!(
        calls_for(&server, "model-a").await.len(),
        3,
        "an open circuit keeps requests from the upstream"
    );

    // After the cool-down one probe goes through; it succeeds.
    let mut probed = None;
    for _ in 0..150 {
        let response = app.post_chat(&ask("smart")).await;
        if response.status() == 200 {
            probed = Some(opened.elapsed());
            break;
        }
        assert_eq!(response.status(), 503);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probed = probed.expect("a probe succeeded within 3 s");
    assert!(probed >= Duration::from_millis(300), "probed after {probed:?}");
    assert_eq!(calls_for(&server, "model-a").await.len(), 4, "one probe");

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "gatewayz_breaker_state", &state),
        Some(0.0),
        "{metrics}"
    );
    for entered in ["half_open", "closed"] {
        assert_eq!(
            metric(
                &metrics,
                "gatewayz_breaker_transitions_total",
                &[("model", "smart"), ("state", entered)]
            ),
            Some(1.0),
            "{entered}: {metrics}"
        );
    }
    assert_eq!(app.post_chat(&ask("smart")).await.status(), 200, "closed again");
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again() {
    let server = MockServer::start().await;
    // Two failures open the circuit; the first probe fails, the second succeeds.
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), failing(503), failing(503), ok("model-a")]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 0, breaker_failures = 2, breaker_cooldown_ms = 200"),
        &[],
    )
    .await;
    let state = [("model", "smart"), ("target", "openai/model-a")];
    for _ in 0..2 {
        assert_eq!(app.post_chat(&ask("smart")).await.status(), 502);
    }
    assert_eq!(
        metric(&app.metrics().await, "gatewayz_breaker_state", &state),
        Some(2.0)
    );

    let mut statuses = Vec::new();
    for _ in 0..150 {
        let status = app.post_chat(&ask("smart")).await.status().as_u16();
        statuses.push(status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|status| **status == 502).count(),
        1,
        "one failed probe: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|status| [200, 502, 503].contains(status)),
        "{statuses:?}"
    );
    assert_eq!(
        calls_for(&server, "model-a").await.len(),
        4,
        "two failures, then two probes"
    );
    let metrics = app.metrics().await;
    let entered = |state: &str| {
        metric(
            &metrics,
            "gatewayz_breaker_transitions_total",
            &[("model", "smart"), ("state", state)],
        )
    };
    assert_eq!(
        (entered("open"), entered("half_open"), entered("closed")),
        (Some(2.0), Some(2.0), Some(1.0)),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_probe_whose_client_left_lets_the_next_request_probe() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![
            failing(503),
            failing(503),
            ok("model-a").set_delay(Duration::from_secs(5)),
            ok("model-a"),
        ]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 0, breaker_failures = 2, breaker_cooldown_ms = 200"),
        &[],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(app.post_chat(&ask("smart")).await.status(), 502);
    }

    // Each client gives up after 300 ms: the first probe hangs and is left.
    let mut outcomes = Vec::new();
    for _ in 0..60 {
        let outcome = app
            .chat()
            .timeout(Duration::from_millis(300))
            .json(&ask("smart"))
            .send()
            .await
            .map(|response| response.status().as_u16());
        outcomes.push(outcome.as_ref().ok().copied());
        if outcome.as_ref().is_ok_and(|status| *status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(outcomes.last(), Some(&Some(200)), "{outcomes:?}");
    assert!(
        outcomes.contains(&None),
        "the hanging probe was left: {outcomes:?}"
    );
    assert_eq!(calls_for(&server, "model-a").await.len(), 4, "two probes");
}

#[tokio::test]
async fn a_target_that_hangs_past_the_model_deadline_counts_against_its_circuit() {
    // The attempt is cut by the model's deadline, not by the adapter's own
    // timeouts: it still counts as the target's failure.
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ok("model-a").set_delay(Duration::from_secs(2)),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 0, deadline_ms = 200, breaker_failures = 2, breaker_cooldown_ms = 60000"),
        &[],
    )
    .await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.post_chat(&ask("smart")).await.status().as_u16());
    }

    assert_eq!(
        statuses,
        [504, 504, 503, 503],
        "the circuit opens after two timeouts"
    );
    assert_eq!(calls_for(&server, "model-a").await.len(), 2);
}

#[tokio::test]
async fn a_4xx_refusal_is_a_sign_of_life_that_resets_the_failure_count() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![
            failing(503),
            failing(503),
            failing(400),
            failing(503),
            failing(503),
            ok("model-a"),
        ]),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 0, breaker_failures = 3, breaker_cooldown_ms = 60000"),
        &[],
    )
    .await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.post_chat(&ask("smart")).await.status().as_u16());
    }

    assert_eq!(statuses, [502, 502, 400, 502, 502, 200]);
    assert_eq!(calls_for(&server, "model-a").await.len(), 6);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_breaker_transitions_total",
            &[("model", "smart"), ("state", "open")]
        ),
        None,
        "{metrics}"
    );
}

#[tokio::test]
async fn an_open_circuit_sends_requests_straight_to_the_fallback() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    let catalog = r#"
[[models]]
id = "guarded"
routing = { retries = 0, breaker_failures = 3, breaker_cooldown_ms = 60000 }
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
provider = "demo"
"#;
    let app = gateway(&server, catalog, &[]).await;

    for _ in 0..6 {
        let response = app.post_chat(&ask("guarded")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response).as_deref(), Some("demo/guarded"));
    }

    assert_eq!(
        calls_for(&server, "model-a").await.len(),
        3,
        "the open circuit skips the primary"
    );
    let metrics = app.metrics().await;
    let fallbacks = |reason: &str| {
        metric(
            &metrics,
            "gatewayz_fallbacks_total",
            &[
                ("model", "guarded"),
                ("from_target", "primary"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(
        (fallbacks("upstream_failed"), fallbacks("circuit_open")),
        (Some(3.0), Some(3.0)),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "gatewayz_breaker_state",
            &[("model", "guarded"), ("target", "primary")]
        ),
        Some(2.0)
    );
}

// --- The deadline ---

#[tokio::test]
async fn the_model_deadline_bounds_all_attempts_with_a_504_from_the_gateway() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ok("model-a").set_delay(Duration::from_secs(2)),
    )
    .await;
    let app = gateway(
        &server,
        &one_target("retries = 2, backoff_base_ms = 1, deadline_ms = 300"),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app.post_chat(&ask("smart")).await;
    let elapsed = started.elapsed();

    assert_eq!(response.status(), 504);
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1_500)).contains(&elapsed),
        "answered after {elapsed:?}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["source"], "gateway", "{body}");
}

#[tokio::test]
async fn past_the_deadline_no_further_target_is_called() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        ok("model-a").set_delay(Duration::from_secs(2)),
    )
    .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let app = gateway(&server, &two_targets("retries = 0, deadline_ms = 300"), &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 504);
    assert_eq!(calls_for(&server, "model-b").await.len(), 0);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "gatewayz_fallbacks_total", &[("model", "smart")]),
        None,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_model_deadline_covers_a_streams_fallback_too() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        streamed("model-a").set_delay(Duration::from_secs(2)),
    )
    .await;
    on(
        &server,
        json!({"model": "model-b"}),
        streamed("model-b").set_delay(Duration::from_secs(2)),
    )
    .await;
    let app = gateway(&server, &two_targets("retries = 0, deadline_ms = 300"), &[]).await;

    let started = Instant::now();
    let response = app.post_chat(&ask_stream("smart")).await;

    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["source"], "gateway", "{body}");
}

// --- Portkey configs ---

#[tokio::test]
async fn a_target_whose_portkey_config_retries_is_not_retried_by_the_gateway() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    let catalog = r#"
[[models]]
id = "smart"
routing = { retries = 2, backoff_base_ms = 1 }
[[models.targets]]
portkey_provider = "openai"
upstream_model = "model-a"
portkey_config = { retry = { attempts = 3 } }
"#;
    let app = gateway(&server, catalog, &[]).await;

    let response = app.post_chat(&ask("smart")).await;

    assert_eq!(response.status(), 502);
    let calls = calls_for(&server, "model-a").await;
    assert_eq!(calls.len(), 1, "one layer of retries: Portkey's");
    let config: Value = serde_json::from_slice(calls[0].headers["x-portkey-config"].as_bytes()).unwrap();
    assert_eq!(config, json!({"retry": {"attempts": 3}}));
}

#[tokio::test]
async fn a_requests_portkey_config_is_sent_as_a_header_and_its_retries_replace_the_gateways() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), ok("model-a")]),
    )
    .await;
    let app = gateway(&server, &one_target("retries = 2, backoff_base_ms = 1"), &[]).await;

    let config = json!({"retry": {"attempts": 2}, "cache": {"mode": "simple"}});
    let mut request = ask("smart");
    request["portkey_config"] = config.clone();
    let response = app.post_chat(&request).await;

    assert_eq!(response.status(), 502, "Portkey retried, the gateway did not");
    let calls = calls_for(&server, "model-a").await;
    assert_eq!(calls.len(), 1);
    let sent: Value = serde_json::from_slice(calls[0].headers["x-portkey-config"].as_bytes()).unwrap();
    assert_eq!(sent, config);
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert!(body.get("portkey_config").is_none(), "{body}");

    // A saved config's id goes as it is.
    let mut saved = ask("smart");
    saved["portkey_config"] = json!("pc-house-123");
    assert_eq!(app.post_chat(&saved).await.status(), 200);
    let calls = calls_for(&server, "model-a").await;
    assert_eq!(calls[1].headers["x-portkey-config"], "pc-house-123");

    // A direct route takes it too.
    let mut direct = ask("@openai/model-a");
    direct["portkey_config"] = json!("pc-direct-9");
    app.post_chat(&direct).await;
    let calls = calls_for(&server, "model-a").await;
    assert_eq!(calls[2].headers["x-portkey-config"], "pc-direct-9");
}

#[tokio::test]
async fn a_requests_portkey_config_wins_over_the_targets() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), ok("model-a")).await;
    let catalog = r#"
[[models]]
id = "smart"
portkey_provider = "openai"
upstream_model = "model-a"
portkey_config = { cache = { mode = "simple" } }
"#;
    let app = gateway(&server, catalog, &[]).await;

    assert_eq!(app.post_chat(&ask("smart")).await.status(), 200);
    let mut request = ask("smart");
    request["portkey_config"] = json!({"metadata": {"team": "search"}});
    assert_eq!(app.post_chat(&request).await.status(), 200);

    let configs: Vec<Value> = calls_for(&server, "model-a")
        .await
        .iter()
        .map(|call| serde_json::from_slice(call.headers["x-portkey-config"].as_bytes()).unwrap())
        .collect();
    assert_eq!(
        configs,
        [
            json!({"cache": {"mode": "simple"}}),
            json!({"metadata": {"team": "search"}})
        ]
    );
}

#[tokio::test]
async fn a_portkey_config_that_is_neither_an_object_nor_an_id_is_a_400() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), ok("model-a")).await;
    let app = gateway(&server, &one_target("retries = 0"), &[]).await;

    for invalid in [json!(7), json!([1, 2]), json!(true), json!("")] {
        let mut request = ask("smart");
        request["portkey_config"] = invalid.clone();
        let response = app.post_chat(&request).await;

        assert_eq!(response.status(), 400, "{invalid}");
        let body: Value = response.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["param"], "portkey_config", "{invalid}: {body}");
        assert_eq!(error["code"], "invalid_portkey_config", "{invalid}: {body}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

// --- Cost ---

#[tokio::test]
async fn the_price_is_the_price_of_the_target_that_served() {
    let server = MockServer::start().await;
    on(
        &server,
        json!({"model": "model-a"}),
        script(vec![failing(503), ok("model-a")]),
    )
    .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let catalog = r#"
[[models]]
id = "smart"
routing = { retries = 0, breaker_failures = 0 }
input_usd_per_million = 1
output_usd_per_million = 2
[[models.targets]]
name = "primary"
portkey_provider = "openai"
upstream_model = "model-a"
[[models.targets]]
name = "secondary"
portkey_provider = "openai"
upstream_model = "model-b"
input_usd_per_million = 100
output_usd_per_million = 200
"#;
    let app = gateway(&server, catalog, &[]).await;

    let mut costs = Vec::new();
    for _ in 0..2 {
        let response = app.post_chat(&ask("smart")).await;
        let target = served_by(&response);
        let body: Value = response.json().await.unwrap();
        costs.push((target, body["gateway_usage"]["cost_usd"].clone()));
    }

    // 2 prompt and 2 completion tokens each.
    assert_eq!(
        costs,
        [
            (Some("secondary".to_owned()), json!(0.0006)),
            (Some("primary".to_owned()), json!(0.000006)),
        ]
    );
}

// --- The access log ---

#[tokio::test]
async fn the_access_log_names_the_target_that_served_and_the_attempts() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let file = catalog_file(&two_targets("retries = 1, backoff_base_ms = 1"));
    let base = format!("{}/v1", server.uri());
    let binary = crate::binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_API_KEY", "pk-routing"),
        ("PROVIDER_OPENAI_API_KEY", "sk-openai-routing"),
        ("GATEWAYZ_CATALOG", file.to_str().unwrap()),
    ]);
    std::fs::remove_file(&file).unwrap();

    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", binary.address))
        .bearer_auth(KEY)
        .json(&ask("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let access = binary.wait_for_event(5, "the access line", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["status"] == 200
    });
    assert_eq!(access["fields"]["target"], "secondary", "{access}");
    assert_eq!(
        access["fields"]["attempts"], 3,
        "two of the primary, one of the secondary: {access}"
    );
}

// --- Done when ---

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_primary_never_costs_a_client_its_answer_over_200_requests() {
    const REQUESTS: usize = 200;
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), failing(503)).await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "model-b", "stream": true})))
        .respond_with(streamed("model-b"))
        .with_priority(1)
        .mount(&server)
        .await;
    on(&server, json!({"model": "model-b"}), ok("model-b")).await;
    let app = gateway(
        &server,
        &two_targets("retries = 1, backoff_base_ms = 2, breaker_failures = 3, breaker_cooldown_ms = 100"),
        &[],
    )
    .await;

    let results = fan_out(REQUESTS, 8, |index| {
        let app = &app;
        async move {
            let stream = index % 2 == 1;
            let body = if stream { ask_stream("smart") } else { ask("smart") };
            let response = app.post_chat(&body).await;
            let status = response.status().as_u16();
            let target = served_by(&response);
            let text = if status != 200 {
                response.text().await.unwrap()
            } else if stream {
                streamed_text(&sse_data(response).await)
            } else {
                let body: Value = response.json().await.unwrap();
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            (stream, status, target, text)
        }
    })
    .await;

    let failures: Vec<_> = results
        .iter()
        .filter(|(_, status, target, text)| {
            *status != 200 || target.as_deref() != Some("secondary") || text != "from model-b"
        })
        .collect();
    assert!(failures.is_empty(), "{} failed: {failures:?}", failures.len());
    let streams = results.iter().filter(|(stream, ..)| *stream).count();
    assert_eq!((streams, results.len() - streams), (100, 100));

    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            "gatewayz_breaker_transitions_total",
            &[("model", "smart"), ("target", "primary"), ("state", "open")]
        )
        .is_some_and(|opened| opened >= 1.0),
        "the primary's circuit opened during the run: {metrics}"
    );
    let primary_calls = calls_for(&server, "model-a").await.len();
    assert!(
        primary_calls < REQUESTS,
        "the open circuit spared the primary: {primary_calls} calls for {REQUESTS} requests"
    );
}
