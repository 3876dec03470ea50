//! Retries of one target: which failures, how long between, and `Retry-After`.

use super::*;

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
