//! What operators see: metrics on the admin listener, readiness, the
//! gateway's response headers, and gateway keys rotated through a file.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, eventually, sample};

async fn portkey() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "busy"})))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(json!({"error": {"message": "busy"}, "provider": "openai"})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-portkey-trace-id", "pk-trace-9")
                .insert_header("x-portkey-cache-status", "MISS")
                .insert_header("x-portkey-retry-attempt-count", "0")
                .set_body_json(json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})),
        )
        .mount(&server)
        .await;
    server
}

async fn gateway(server: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("PORTKEY_API_KEY", "pk"), ("PROVIDER_OPENAI_API_KEY", "sk")];
    vars.extend_from_slice(extra);
    TestApp::in_front_of(server, &vars).await
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn metrics_show_every_family_with_plausible_values() {
    let server = portkey().await;
    let app = gateway(&server, &[]).await;
    app.post_chat(&ask("gpt-4o-mini", false))
        .await
        .text()
        .await
        .unwrap();
    crate::helpers::sse_data(app.post_chat(&ask("demo-1", true)).await).await;
    app.post_chat(&ask("@openai/busy", false))
        .await
        .text()
        .await
        .unwrap();
    app.client
        .post(app.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();

    let text = app.metrics().await;

    let value = |line: &str| sample(&text, line).unwrap_or_else(|| panic!("no sample {line}\n{text}"));
    let openai = r#"model="gpt-4o-mini",portkey_provider="openai",provider="portkey""#;
    let demo = r#"model="demo-1",portkey_provider="none",provider="demo""#;
    assert_eq!(
        value(&format!(
            r#"gatewayz_requests_total{{{openai},route="/v1/chat/completions",status_class="2xx"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            r#"gatewayz_requests_total{{{demo},route="/v1/chat/completions",status_class="2xx"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(
            r#"gatewayz_requests_total{model="other",portkey_provider="openai",provider="portkey",route="/v1/chat/completions",status_class="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"gatewayz_requests_total{model="none",portkey_provider="none",provider="none",route="/v1/chat/completions",status_class="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&format!(r#"gatewayz_tokens_total{{kind="prompt",{openai}}}"#)),
        10.0
    );
    assert_eq!(
        value(&format!(r#"gatewayz_tokens_total{{kind="completion",{openai}}}"#)),
        20.0
    );
    // 10 × $0.15/M + 20 × $0.60/M, rounded to 6 decimals.
    assert_eq!(
        value(&format!(r#"gatewayz_cost_usd_total{{{openai}}}"#)),
        0.000014
    );
    assert!(value(&format!(r#"gatewayz_cost_usd_total{{{demo}}}"#)) > 0.0);
    assert_eq!(
        value(&format!(
            r#"gatewayz_time_to_first_token_seconds_count{{{demo}}}"#
        )),
        1.0
    );
    assert!(value(&format!(r#"gatewayz_upstream_duration_seconds_sum{{{openai}}}"#)) > 0.0);
    assert_eq!(
        value(r#"gatewayz_overhead_seconds_count{route="/v1/chat/completions"}"#),
        3.0
    );
    assert!(
        value(&format!(
            r#"gatewayz_request_duration_seconds_count{{{openai},route="/v1/chat/completions"}}"#
        )) >= 1.0
    );
    assert_eq!(
        value(
            r#"gatewayz_upstream_errors_total{kind="rate_limited",portkey_provider="openai",provider="portkey",source="provider"}"#
        ),
        1.0
    );
    assert_eq!(value("gatewayz_in_flight_requests"), 0.0);
}

#[tokio::test]
async fn readiness_health_and_metrics_live_on_the_admin_listener_only() {
    let app = TestApp::production(&[]).await;

    let ready = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    for base in [&app.address, &app.admin] {
        let health = app.client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "{base}");
    }
    let public_metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public_metrics.status(), 404);
    let admin_metrics = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert!(
        admin_metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[tokio::test]
async fn answers_name_their_provider_and_pass_on_portkeys_headers() {
    let server = portkey().await;
    let app = gateway(&server, &[]).await;

    let response = app.post_chat(&ask("gpt-4o-mini", false)).await;

    let headers = response.headers();
    assert_eq!(headers["x-gatewayz-provider"], "portkey/openai");
    assert_eq!(headers["x-portkey-trace-id"], "pk-trace-9");
    assert_eq!(headers["x-portkey-cache-status"], "MISS");
    assert_eq!(headers["x-portkey-retry-attempt-count"], "0");
    assert_eq!(headers["x-request-id"].len(), 32);

    let demo = app.post_chat(&ask("demo-1", false)).await;
    assert_eq!(demo.headers()["x-gatewayz-provider"], "demo");
    assert!(demo.headers().get("x-portkey-trace-id").is_none());
}

#[tokio::test]
async fn gateway_keys_rotate_through_the_file_without_a_restart() {
    let file = std::env::temp_dir().join(format!("gatewayz-keys-{}", std::process::id()));
    // Written whole, as Kubernetes swaps a mounted Secret, never half-way.
    let write = |text: String| {
        let next = file.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &file).unwrap();
    };
    write("# rotated by the platform\nold-key\nshared-key\n".into());
    let app = TestApp::production(&[
        ("GATEWAYZ_API_KEYS_FILE", file.to_str().unwrap()),
        ("GATEWAYZ_API_KEYS_RELOAD_MS", "50"),
    ])
    .await;
    let status = |key: &'static str| {
        let request = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&ask("demo-1", false));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("old-key").await, 200);

    // Requests keep flowing with a key that stays in the file while it turns over.
    let steady = {
        let client = app.client.clone();
        let url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                let response = client
                    .post(&url)
                    .bearer_auth("shared-key")
                    .json(&ask("demo-1", false))
                    .send()
                    .await
                    .unwrap();
                statuses.push(response.status().as_u16());
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    let digest = "sha256:".to_owned() + &sha256_hex("hashed-new-key");
    write(format!("new-key\nshared-key\n{digest}  # team b\n"));
    eventually(5, "the new keys are taken", || async {
        status("new-key").await == 200
    })
    .await;
    assert_eq!(status("hashed-new-key").await, 200);
    assert_eq!(
        status("old-key").await,
        401,
        "a key taken out of the file stops working"
    );
    assert!(
        steady.await.unwrap().iter().all(|status| *status == 200),
        "no request was dropped"
    );

    std::fs::write(&file, "sha256:not-a-digest\n").unwrap();
    eventually(5, "the bad file is rejected", || async {
        sample(
            &app.metrics().await,
            r#"gatewayz_api_key_reloads_total{result="error"}"#,
        ) == Some(1.0)
    })
    .await;
    assert_eq!(status("new-key").await, 200, "a bad file keeps the previous keys");
    std::fs::remove_file(&file).unwrap();
}

fn sha256_hex(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
