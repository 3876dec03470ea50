//! What the adapter sends, and what it makes of a successful answer.

use std::collections::BTreeSet;
use std::time::Duration;

use gatewayz_adapters::env::EnvSettings;
use gatewayz_domain::{ChatError, ChatProvider, UpstreamProvider};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{
    ANTHROPIC_KEY, OPENAI_KEY, PORTKEY_KEY, call, chat_body, completion_json, only_request, openai_call,
    provider, route, server_answering,
};

fn header_names(request: &wiremock::Request) -> BTreeSet<String> {
    request
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn direct_mode_sends_the_provider_slug_and_key_and_nothing_else_of_note() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    provider(&server, &[("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", "12345")])
        .complete(openai_call(chat_body()))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/v1/chat/completions");
    let headers = &request.headers;
    assert_eq!(headers["x-portkey-api-key"], PORTKEY_KEY);
    assert_eq!(headers["x-portkey-provider"], "openai");
    assert_eq!(headers["authorization"], format!("Bearer {OPENAI_KEY}").as_str());
    assert_eq!(headers["x-portkey-trace-id"], "req-123");
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["x-portkey-request-timeout"], "12345");
    assert_eq!(headers["content-type"], "application/json");
    let portkey_headers: BTreeSet<_> = header_names(&request)
        .into_iter()
        .filter(|name| name.starts_with("x-portkey-"))
        .collect();
    assert_eq!(
        portkey_headers,
        BTreeSet::from(
            [
                "x-portkey-api-key",
                "x-portkey-provider",
                "x-portkey-trace-id",
                "x-portkey-request-timeout"
            ]
            .map(str::to_owned)
        )
    );
}

#[tokio::test]
async fn virtual_key_mode_sends_the_virtual_key_instead_of_provider_and_key() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    provider(&server, &[])
        .complete(call(
            route(UpstreamProvider::Anthropic, Some("vk-anthropic")),
            chat_body(),
        ))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.headers["x-portkey-api-key"], PORTKEY_KEY);
    assert_eq!(request.headers["x-portkey-virtual-key"], "vk-anthropic");
    let names = header_names(&request);
    assert!(!names.contains("x-portkey-provider"), "{names:?}");
    assert!(!names.contains("authorization"), "{names:?}");
    let raw = format!("{:?}", request.headers);
    assert!(
        !raw.contains(ANTHROPIC_KEY),
        "the provider key is not sent in virtual-key mode"
    );
}

#[tokio::test]
async fn a_portkey_config_is_sent_as_x_portkey_config_beside_the_usual_headers() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let config = gatewayz_domain::PortkeyRouting::from_value(
        "portkey_config",
        serde_json::json!({"strategy": {"mode": "fallback"}, "targets": [{"provider": "openai"}]}),
    )
    .unwrap();
    let with_config = gatewayz_domain::Route::Portkey {
        provider: UpstreamProvider::OpenAi,
        virtual_key: None,
        config: Some(config),
    };

    provider(&server, &[])
        .complete(call(with_config, chat_body()))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(
        request.headers["x-portkey-config"],
        r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"openai"}]}"#
    );
    assert_eq!(request.headers["x-portkey-provider"], "openai");
    assert_eq!(request.headers["x-portkey-api-key"], PORTKEY_KEY);
}

#[tokio::test]
async fn google_ai_is_sent_as_portkeys_google_slug() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let keys = gatewayz_adapters::EnvKeyResolver::from_vars(
        [("PORTKEY_API_KEY", "pk"), ("PROVIDER_GOOGLE_AI_KEY", "g-key")]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let mut google = call(route(UpstreamProvider::OpenAi, None), chat_body());
    google.route = route(UpstreamProvider::GoogleAi, None);
    google.credentials = gatewayz_domain::KeyResolver::resolve(&keys, &google.route).unwrap();

    provider(&server, &[]).complete(google).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.headers["x-portkey-provider"], "google");
    assert_eq!(request.headers["authorization"], "Bearer g-key");
}

#[tokio::test]
async fn a_configured_custom_host_is_sent_to_portkey() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    provider(&server, &[("PORTKEY_CUSTOM_HOST", "http://127.0.0.1:9000/v1")])
        .complete(openai_call(chat_body()))
        .await
        .unwrap();

    assert_eq!(
        only_request(&server).await.headers["x-portkey-custom-host"],
        "http://127.0.0.1:9000/v1"
    );
}

#[tokio::test]
async fn unknown_fields_survive_both_ways() {
    let mut answer = completion_json();
    answer["provider"] = json!("openai");
    answer["x_upstream"] = json!({"a": [1, 2]});
    answer["choices"][0]["message"]["refusal"] = Value::Null;
    let server = server_answering(ResponseTemplate::new(200).set_body_json(answer.clone())).await;
    let mut body = chat_body();
    body["x_client"] = json!({"deep": true});
    body["messages"][0]["x_note"] = json!("kept");

    let response = provider(&server, &[])
        .complete(openai_call(body.clone()))
        .await
        .unwrap();

    let sent: Value = serde_json::from_slice(&only_request(&server).await.body).unwrap();
    assert_eq!(sent, body);
    assert_eq!(serde_json::from_slice::<Value>(&response.json()).unwrap(), answer);
}

#[tokio::test]
async fn a_200_that_is_not_a_chat_completion_is_an_invalid_upstream_response() {
    for body in ["not json", "{\"id\": \"x\"}", "[]", ""] {
        let server = server_answering(ResponseTemplate::new(200).set_body_string(body)).await;

        let error = provider(&server, &[])
            .complete(openai_call(chat_body()))
            .await
            .unwrap_err();

        assert!(
            matches!(error, ChatError::InvalidUpstreamResponse(_)),
            "{body:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_at_the_request_deadline() {
    let server = server_answering(
        ResponseTemplate::new(200)
            .set_body_json(completion_json())
            .set_delay(Duration::from_secs(5)),
    )
    .await;

    let error = provider(&server, &[("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", "200")])
        .complete(openai_call(chat_body()))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, ChatError::Timeout(e) if e.message.contains("200 ms")),
        "{error:?}"
    );
}

/// The error of a call to a Portkey at `address`.
async fn complete_at(address: std::net::SocketAddr) -> ChatError {
    let config = gatewayz_adapters::PortkeySettings::from_vars([(
        "PORTKEY_BASE_URL".to_owned(),
        format!("http://{address}/v1"),
    )])
    .unwrap();
    let http = gatewayz_adapters::http::HttpClient::new(
        gatewayz_adapters::http::UpstreamSettings::default()
            .timeouts()
            .unwrap(),
    )
    .unwrap();
    gatewayz_adapters::PortkeyClient::new(&config, http)
        .unwrap()
        .complete(openai_call(chat_body()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let error = complete_at(address).await;

    assert!(
        matches!(&error, ChatError::Unavailable(e) if e.message.contains("cannot connect")),
        "{error:?}"
    );
    assert!(!error.to_string().contains(PORTKEY_KEY));
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_keys_never_reach_another_host() {
    let elsewhere = wiremock::MockServer::start().await;
    let server = server_answering(
        ResponseTemplate::new(307)
            .insert_header("location", format!("{}/v1/chat/completions", elsewhere.uri())),
    )
    .await;

    let error = provider(&server, &[])
        .complete(call(
            route(UpstreamProvider::OpenAi, Some("vk-secret")),
            chat_body(),
        ))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, ChatError::UpstreamFailed(e) if e.status == Some(307)),
        "{error:?}"
    );
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_refused() {
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(33 * 1024 * 1024));
    let server = server_answering(ResponseTemplate::new(200).set_body_raw(huge, "application/json")).await;

    let error = provider(&server, &[])
        .complete(openai_call(chat_body()))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, ChatError::InvalidUpstreamResponse(e) if e.message.contains("larger than")),
        "{error:?}"
    );
}

#[test]
fn timeouts_outside_one_ms_to_a_day_stop_the_start() {
    for (name, value) in [
        ("GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS", "0"),
        ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "18446744073709551615"),
    ] {
        let settings =
            gatewayz_adapters::http::UpstreamSettings::from_vars([(name.to_owned(), value.to_owned())])
                .unwrap();
        let error = gatewayz_adapters::http::HttpClient::from_settings(&settings).unwrap_err();
        assert!(error.to_string().starts_with(name), "{error}");
    }
}

#[tokio::test]
async fn portkeys_trace_cache_and_retry_headers_are_noted_for_the_client() {
    let server = server_answering(
        ResponseTemplate::new(200)
            .insert_header("x-portkey-trace-id", "trace-1")
            .insert_header("x-portkey-cache-status", "MISS")
            .insert_header("x-portkey-retry-attempt-count", "0")
            .insert_header("x-portkey-other", "not passed")
            .set_body_json(completion_json()),
    )
    .await;
    let call = openai_call(chat_body());
    let record = call.context.record.clone();

    provider(&server, &[]).complete(call).await.unwrap();

    assert_eq!(
        record.snapshot().passed_on,
        [
            ("x-portkey-trace-id", "trace-1".to_owned()),
            ("x-portkey-cache-status", "MISS".to_owned()),
            ("x-portkey-retry-attempt-count", "0".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_connection_reset_before_any_answer_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Take each connection and close it without a byte of answer.
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    let error = complete_at(address).await;

    assert!(matches!(&error, ChatError::Unavailable(_)), "{error:?}");
}
