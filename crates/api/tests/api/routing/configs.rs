//! Portkey configs, the price of the target that served, the access log, and the issue's "done when" run.

use super::*;

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

#[tokio::test]
async fn a_portkey_config_or_virtual_key_that_cannot_travel_in_a_header_is_a_400_naming_it() {
    let server = MockServer::start().await;
    on(&server, json!({"model": "model-a"}), ok("model-a")).await;
    let app = gateway(&server, &one_target("retries = 0"), &[]).await;
    let cases = [
        (
            "portkey_config",
            json!({"note": "café"}),
            Some("invalid_portkey_config"),
        ),
        (
            "portkey_config",
            json!({"x": "a".repeat(8 * 1024)}),
            Some("invalid_portkey_config"),
        ),
        ("portkey_virtual_key", json!("vk with spaces"), None),
    ];

    for (field, value, code) in cases {
        let mut request = ask("smart");
        request[field] = value;
        let response = app.post_chat(&request).await;

        assert_eq!(response.status(), 400, "{field}");
        let body: Value = response.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["param"], field, "{body}");
        assert_eq!(error["code"].as_str(), code, "{body}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

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
