//! Fallbacks, streams and weighted load balancing over a model's targets.

use super::*;

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
