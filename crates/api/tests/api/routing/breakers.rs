//! Circuit breakers and the overall deadline.

use super::*;

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
