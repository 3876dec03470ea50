//! Key limits enforced in the process (the embedded default): requests,
//! tokens and parallel limits with OpenAI's refusals and headers, budgets
//! on catalog prices, allow lists and expiry, and a stream left midway
//! charged once, from an estimate.

use serde_json::{Value, json};

use crate::helpers::{PRICED_CATALOG, PolicyFile, TestApp, entry, eventually, sample, slow_stream_upstream};

struct Setup {
    app: TestApp,
    policies: PolicyFile,
    _catalog: PolicyFile,
}

/// The production gateway with `policies` as its keys file, the priced
/// catalog, and Portkey at `portkey` when given.
async fn gateway(test: &str, policies: &str, portkey: Option<&str>) -> Setup {
    let policies = PolicyFile::new(&format!("limits-{test}"), policies);
    // A TOML file of the test's own, like the policies.
    let catalog = PolicyFile::new(&format!("limits-catalog-{test}"), PRICED_CATALOG);
    let mut vars = vec![
        ("GATEWAYZ_API_KEYS_FILE", policies.path().to_owned()),
        ("GATEWAYZ_API_KEYS_RELOAD_MS", "50".to_owned()),
        ("GATEWAYZ_CATALOG", catalog.path().to_owned()),
        ("PORTKEY_API_KEY", "pk-limits-test".to_owned()),
        ("PROVIDER_OPENAI_API_KEY", "sk-limits-test".to_owned()),
    ];
    if let Some(portkey) = portkey {
        vars.push(("PORTKEY_BASE_URL", portkey.to_owned()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(name, value)| (*name, value.as_str())).collect();
    Setup {
        app: TestApp::production(&vars).await,
        policies,
        _catalog: catalog,
    }
}

fn demo(max_tokens: u32) -> Value {
    json!({"model": "priced-demo", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello there"}]})
}

async fn send(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|value| value.to_str().unwrap())
}

async fn error_of(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.unwrap();
    body["error"].clone()
}

#[tokio::test]
async fn requests_past_the_rpm_get_openais_429_and_every_answer_its_headers() {
    let setup = gateway("rpm", &entry("team-a", "key-a", "rpm = 3\ntpm = 100000"), None).await;
    for remaining in ["2", "1", "0"] {
        let response = send(&setup.app, "key-a", &demo(16)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some(remaining)
        );
        assert!(header(&response, "x-ratelimit-reset-requests").is_some_and(|reset| reset.ends_with('s')));
        assert_eq!(header(&response, "x-ratelimit-limit-tokens"), Some("100000"));
        let tokens: u64 = header(&response, "x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert!(tokens < 100_000);
    }
    let refused = send(&setup.app, "key-a", &demo(16)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        header(&refused, "retry-after"),
        Some("20"),
        "an interval of 60 s / 3"
    );
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), Some("0"));
    let error = error_of(refused).await;
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("requests"), &json!("rate_limit_exceeded"))
    );
    assert!(error["message"].as_str().unwrap().contains("team-a"), "{error}");
    let metrics = setup.app.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "gatewayz_key_refusals_total{key=\"team-a\",reason=\"requests\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_reservation_past_the_tpm_is_refused_as_openai_refuses_it() {
    let setup = gateway("tpm", &entry("team-a", "key-a", "tpm = 1000"), None).await;
    let refused = send(&setup.app, "key-a", &demo(2000)).await;
    assert_eq!(refused.status(), 429);
    assert!(
        header(&refused, "retry-after").is_none(),
        "it never fits: nothing to wait for"
    );
    let error = error_of(refused).await;
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("tokens"), &json!("rate_limit_exceeded"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("Request too large") && message.contains("limit 1000"),
        "{error}"
    );
    let admitted = send(&setup.app, "key-a", &demo(100)).await;
    assert_eq!(admitted.status(), 200);
    assert!(
        header(&admitted, "x-ratelimit-remaining-requests").is_none(),
        "no rpm, no header"
    );
}

#[tokio::test]
async fn a_model_off_the_list_is_a_403_and_an_expired_key_a_401() {
    let policies = [
        entry("listed", "key-listed", "models = [\"priced-*\"]"),
        entry("expired", "key-expired", "expires_at = \"2020-01-01T00:00:00Z\""),
    ]
    .concat();
    let setup = gateway("lists", &policies, None).await;
    let other = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let refused = send(&setup.app, "key-listed", &other).await;
    assert_eq!(refused.status(), 403);
    let error = error_of(refused).await;
    assert_eq!(
        (&error["code"], &error["param"]),
        (&json!("model_not_allowed"), &json!("model"))
    );
    assert_eq!(send(&setup.app, "key-listed", &demo(16)).await.status(), 200);
    let expired = send(&setup.app, "key-expired", &demo(16)).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(error_of(expired).await["code"], "key_expired");
    let models = setup
        .app
        .client
        .get(setup.app.url("/v1/models"))
        .bearer_auth("key-expired")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401, "refused on every endpoint");
    assert_eq!(error_of(models).await["code"], "key_expired");
}

#[tokio::test]
async fn a_budget_is_never_passed_by_more_than_one_reservation() {
    // Each answer costs about 0.02 (a dollar a thousand tokens); a
    // reservation, the prompt's estimate and 16 output tokens, about as much.
    let setup = gateway(
        "budget",
        &entry("team-a", "key-a", "budget_usd = 0.1\nbudget_period = \"day\""),
        None,
    )
    .await;
    let mut served = 0;
    let mut remaining = Vec::new();
    loop {
        let response = send(&setup.app, "key-a", &demo(16)).await;
        if response.status() == 429 {
            let retry: u64 = header(&response, "retry-after").unwrap().parse().unwrap();
            assert!(retry > 0 && retry <= 86_400, "until the day's end: {retry}");
            let error = error_of(response).await;
            assert_eq!(
                (&error["type"], &error["code"]),
                (&json!("insufficient_quota"), &json!("budget_exceeded"))
            );
            break;
        }
        assert_eq!(response.status(), 200);
        remaining.push(
            header(&response, "x-gatewayz-budget-remaining-usd")
                .unwrap()
                .parse::<f64>()
                .unwrap(),
        );
        served += 1;
        assert!(served < 20, "the budget never ran out");
    }
    assert!(served >= 2, "{served}");
    // Each admission's headroom, its reservation taken (0 once it passes).
    assert!(
        remaining.windows(2).all(|pair| pair[1] <= pair[0]),
        "{remaining:?}"
    );
    assert!(remaining[0] > remaining[1], "{remaining:?}");
    let metrics = setup.app.metrics().await;
    let charged = sample(
        &metrics,
        "gatewayz_key_spend_usd_total{estimated=\"false\",key=\"team-a\"}",
    )
    .unwrap();
    let (_, standing) = admin_key(&setup.app, "team-a").await;
    let spent = standing["standing"]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - charged).abs() < 1e-6,
        "the store and the metric agree: {spent} vs {charged}"
    );
    assert!(
        charged <= 0.1 + 0.05,
        "within one reservation of the budget: {charged}"
    );
}

async fn admin_key(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/admin/keys/{id}", app.admin))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_stream_left_midway_is_charged_once_from_an_estimate() {
    let upstream = slow_stream_upstream().await;
    let setup = gateway(
        "stream",
        &entry(
            "team-a",
            "key-a",
            "max_parallel = 1\nbudget_usd = 100\nbudget_period = \"month\"",
        ),
        Some(&upstream),
    )
    .await;
    let body = json!({"model": "priced-stream", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let response = send(&setup.app, "key-a", &body).await;
    assert_eq!(response.status(), 200);
    // While it streams, its one parallel slot is taken.
    let second = send(&setup.app, "key-a", &body).await;
    assert_eq!(second.status(), 429);
    let error = error_of(second).await;
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("rate_limit_error"), &json!("rate_limit_exceeded"))
    );
    let mut stream = response.bytes_stream();
    let mut read = 0;
    while read < 3 {
        use futures::StreamExt;
        let bytes = stream.next().await.unwrap().unwrap();
        read += bytes.windows(6).filter(|window| window == b"data: ").count();
    }
    drop(stream);

    let metrics_line = "gatewayz_key_spend_usd_total{estimated=\"true\",key=\"team-a\"}";
    eventually(5, "the left stream is settled", || async {
        sample(&setup.app.metrics().await, metrics_line).is_some()
    })
    .await;
    let charged = sample(&setup.app.metrics().await, metrics_line).unwrap();
    let (_, standing) = admin_key(&setup.app, "team-a").await;
    let spent = standing["standing"]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - charged).abs() < 1e-6,
        "settled once: store {spent}, metric {charged}"
    );
    // The prompt's estimate and a token per chunk relayed, far less than
    // the 500 output tokens reserved.
    assert!(charged > 0.0 && charged < 0.2, "{charged}");
    assert_eq!(standing["standing"]["in_flight"], 0, "its slot came back");
    let tokens = sample(
        &setup.app.metrics().await,
        "gatewayz_key_tokens_total{estimated=\"true\",key=\"team-a\"}",
    );
    assert!(tokens.is_some_and(|tokens| tokens >= 3.0), "{tokens:?}");
    assert_eq!(
        send(&setup.app, "key-a", &demo(16)).await.status(),
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn a_limit_added_to_a_key_applies_on_the_next_request_after_reload() {
    let setup = gateway("reload", &entry("team-a", "key-a", ""), None).await;
    for _ in 0..3 {
        assert_eq!(send(&setup.app, "key-a", &demo(16)).await.status(), 200);
    }
    setup.policies.write(&entry("team-a", "key-a", "rpm = 1"));
    eventually(5, "the limit is taken", || async {
        let (_, key) = admin_key(&setup.app, "team-a").await;
        key["rpm"] == 1
    })
    .await;
    assert_eq!(send(&setup.app, "key-a", &demo(16)).await.status(), 200);
    assert_eq!(send(&setup.app, "key-a", &demo(16)).await.status(), 429);
}
