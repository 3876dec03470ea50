//! What each API refuses, in its own error shape: bad bodies, models on APIs
//! they do not serve, APIs Portkey does not serve for a provider, unknown
//! paths and wrong methods, and the gateway's overload.

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_anthropic_error, call_as, message_request, post,
    response_request, status_and_json,
};
use crate::helpers::{KEY, TestApp, assert_openai_error};

/// Asserts a 400 in Anthropic's shape naming `param`, and returns its error.
async fn anthropic_400(response: reqwest::Response, param: &str) -> Value {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    let error = assert_anthropic_error(&body).clone();
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["param"], param, "{body}");
    error
}

/// Asserts a 400 in OpenAI's shape naming `param`, and returns its error.
async fn openai_400(response: reqwest::Response, param: &str) -> Value {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    let error = assert_openai_error(&body).clone();
    assert_eq!(error["param"], param, "{body}");
    error
}

#[tokio::test]
async fn a_message_without_max_tokens_is_anthropics_400_naming_it() {
    let app = TestApp::production(&[]).await;
    let mut body = message_request("demo-1", "hi", false);
    body.as_object_mut().unwrap().remove("max_tokens");

    let error = anthropic_400(post(&app, MESSAGES, &body).await, "max_tokens").await;

    assert_eq!(error["code"], "missing_required_parameter");
    assert!(
        error["message"].as_str().unwrap().contains("max_tokens"),
        "{error}"
    );
    // A count needs none, but it needs messages.
    assert_eq!(post(&app, COUNT_TOKENS, &body).await.status(), 200);
    anthropic_400(
        post(&app, COUNT_TOKENS, &json!({"model": "demo-1", "messages": []})).await,
        "messages",
    )
    .await;
    anthropic_400(
        post(
            &app,
            MESSAGES,
            &json!({"model": "demo-1", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
        "max_tokens",
    )
    .await;
}

#[tokio::test]
async fn embeddings_with_a_bad_input_dimensions_or_format_are_refused_naming_it() {
    let app = TestApp::production(&[]).await;
    let cases = [
        (json!({"model": "demo-embedding-1"}), "input"),
        (json!({"model": "demo-embedding-1", "input": []}), "input"),
        (json!({"model": "demo-embedding-1", "input": 42}), "input"),
        (
            json!({"model": "demo-embedding-1", "input": [{"text": "hi"}]}),
            "input[0]",
        ),
        (
            json!({"model": "demo-embedding-1", "input": "hi", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "demo-embedding-1", "input": "hi", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ];

    for (body, param) in cases {
        let error = openai_400(post(&app, EMBEDDINGS, &body).await, param).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}: {error}");
    }
}

#[tokio::test]
async fn a_malformed_previous_response_id_or_response_id_is_a_400_and_an_unknown_one_a_404() {
    let app = TestApp::production(&[]).await;
    let mut body = response_request("demo-1", "hi", false);
    body["previous_response_id"] = json!("../admin");

    openai_400(post(&app, RESPONSES, &body).await, "previous_response_id").await;
    let by_id = call_as(&app, Method::GET, KEY, "/v1/responses/not.an.id").await;
    openai_400(by_id, "response_id").await;

    body["previous_response_id"] = json!("resp_never_made");
    let (status, answer) = status_and_json(post(&app, RESPONSES, &body).await).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(assert_openai_error(&answer)["param"], "previous_response_id");
    let (status, answer) =
        status_and_json(call_as(&app, Method::GET, KEY, "/v1/responses/resp_never_made").await).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(assert_openai_error(&answer)["code"], "response_not_found");
}

#[tokio::test]
async fn a_catalog_model_is_refused_on_an_api_it_does_not_serve() {
    let app = TestApp::production(&[]).await;

    for path in [MESSAGES, COUNT_TOKENS] {
        let body = message_request("demo-embedding-1", "hi", false);
        let error = anthropic_400(post(&app, path, &body).await, "model").await;
        assert_eq!(error["code"], "model_not_supported", "{path}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("/v1/embeddings"),
            "{error}"
        );
    }
    let error = openai_400(
        post(
            &app,
            RESPONSES,
            &response_request("demo-embedding-1", "hi", false),
        )
        .await,
        "model",
    )
    .await;
    assert_eq!(error["code"], "model_not_supported");
    for model in ["demo-1", "gpt-4o-mini"] {
        let body = json!({"model": model, "input": "hi"});
        let error = openai_400(post(&app, EMBEDDINGS, &body).await, "model").await;
        assert_eq!(error["code"], "model_not_supported", "{model}: {error}");
    }
    // Portkey serves the Responses API for OpenAI only.
    let body = response_request("claude-3-5-haiku-latest", "hi", false);
    let error = openai_400(post(&app, RESPONSES, &body).await, "model").await;
    assert_eq!(error["code"], "model_not_supported");
}

#[tokio::test]
async fn the_models_list_says_which_apis_each_model_serves() {
    let app = TestApp::production(&[]).await;

    let (status, list) = status_and_json(call_as(&app, Method::GET, KEY, "/v1/models").await).await;

    assert_eq!(status, 200);
    let endpoints = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|model| model["id"] == id)
            .map(|model| model["endpoints"].clone())
            .unwrap_or_else(|| panic!("{id} is not listed: {list}"))
    };
    assert_eq!(endpoints("demo-1"), json!(["chat", "messages", "responses"]));
    assert_eq!(endpoints("demo-embedding-1"), json!(["embeddings"]));
    assert_eq!(endpoints("text-embedding-3-small"), json!(["embeddings"]));
    // OpenAI's models generate, and only they have the Responses API;
    // Anthropic's have the Messages API.
    for (model, serves, not) in [
        ("gpt-4o-mini", ["chat", "responses"], "embeddings"),
        ("gpt-4o", ["chat", "responses"], "embeddings"),
        ("claude-3-5-sonnet-latest", ["chat", "messages"], "responses"),
        ("claude-3-5-haiku-latest", ["chat", "messages"], "responses"),
    ] {
        let listed = endpoints(model);
        for service in serves {
            assert!(
                listed.as_array().unwrap().contains(&json!(service)),
                "{model}: {listed}"
            );
        }
        assert!(
            !listed.as_array().unwrap().contains(&json!(not)),
            "{model}: {listed}"
        );
    }
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|model| model["endpoints"].as_array().is_some_and(|list| !list.is_empty())),
        "every model serves some API: {list}"
    );
    let (status, one) =
        status_and_json(call_as(&app, Method::GET, KEY, "/v1/models/demo-embedding-1").await).await;
    assert_eq!(status, 200);
    assert_eq!(one["endpoints"], json!(["embeddings"]));
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_anthropic_shaped_under_v1_messages_only() {
    let app = TestApp::production(&[]).await;

    for (method, path, status, kind) in [
        (Method::GET, MESSAGES, 405, "invalid_request_error"),
        (Method::DELETE, COUNT_TOKENS, 405, "invalid_request_error"),
        (Method::POST, "/v1/messages/batches", 404, "not_found_error"),
        (Method::GET, "/v1/messages/count_tokens/x", 404, "not_found_error"),
    ] {
        let (got, body) = status_and_json(call_as(&app, method.clone(), KEY, path).await).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(assert_anthropic_error(&body)["type"], kind, "{method} {path}");
    }
    for (method, path, status) in [
        (Method::GET, EMBEDDINGS, 405),
        (Method::GET, RESPONSES, 405),
        (Method::PUT, "/v1/responses/resp_1", 405),
        (Method::GET, "/v1/responses/resp_1/cancel", 405),
        (Method::POST, "/v1/responses/resp_1/input_items", 405),
        (Method::POST, "/v1/messagesx", 404),
    ] {
        let (got, body) = status_and_json(call_as(&app, method.clone(), KEY, path).await).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_openai_error(&body);
    }
}

#[tokio::test]
async fn a_bad_anthropic_header_is_refused_naming_it() {
    let app = TestApp::production(&[]).await;

    let response = app
        .client
        .post(app.url(MESSAGES))
        .bearer_auth(KEY)
        .header("anthropic-beta", "x".repeat(2000))
        .json(&message_request("demo-1", "hi", false))
        .send()
        .await
        .unwrap();

    anthropic_400(response, "anthropic-beta").await;
}

#[tokio::test]
async fn apis_portkey_does_not_serve_for_a_provider_are_refused_before_any_call() {
    let portkey = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&portkey)
        .await;
    let app = TestApp::in_front_of(
        &portkey,
        &[
            ("PORTKEY_API_KEY", "pk-refusals"),
            ("PROVIDER_OPENAI_API_KEY", "sk-refusals"),
            ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-refusals"),
            ("DEEPINFRA_API_KEY", "di-refusals"),
        ],
    )
    .await;

    // A token count is Anthropic's alone: never guessed for another provider.
    for (path, model) in [
        (COUNT_TOKENS, "@openai/gpt-4o-mini"),
        (COUNT_TOKENS, "@deepinfra/meta-llama/Meta-Llama-3.1-8B-Instruct"),
    ] {
        let body = message_request(model, "hi", false);
        let error = anthropic_400(post(&app, path, &body).await, "model").await;
        assert_eq!(error["code"], "endpoint_not_supported", "{path} {model}: {error}");
    }
    for (model, stream) in [
        ("@anthropic/claude-3-5-haiku-latest", false),
        ("@anthropic/claude-3-5-haiku-latest", true),
        ("@deepinfra/meta-llama/Meta-Llama-3.1-8B-Instruct", false),
    ] {
        let body = response_request(model, "hi", stream);
        let error = openai_400(post(&app, RESPONSES, &body).await, "model").await;
        assert_eq!(error["code"], "endpoint_not_supported", "{error}");
        let provider = model.trim_start_matches('@').split('/').next().unwrap();
        assert!(error["message"].as_str().unwrap().contains(provider), "{error}");
    }
    portkey.verify().await;
}

#[tokio::test]
async fn the_gateways_overload_is_anthropics_529_on_messages_and_a_503_elsewhere() {
    let app = TestApp::production(&[("GATEWAYZ_MEMORY_BUDGET_BYTES", "1048576")]).await;
    let long = "word ".repeat(400_000);

    let response = post(&app, MESSAGES, &message_request("demo-1", &long, false)).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = status_and_json(response).await;
    let error = assert_anthropic_error(&body);
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("overloaded_error"), &json!("overloaded"))
    );

    let response = post(
        &app,
        EMBEDDINGS,
        &json!({"model": "demo-embedding-1", "input": long}),
    )
    .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "overloaded");
}

#[tokio::test]
async fn bodies_the_gateway_cannot_read_are_refused_in_anthropics_shape_on_messages() {
    let app = TestApp::production(&[("GATEWAYZ_MAX_BODY_BYTES", "2048")]).await;
    let send = |content_type: &'static str, body: String| {
        app.client
            .post(app.url(MESSAGES))
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    for (content_type, body, status, kind) in [
        (
            "application/json",
            "{\"model\": ".to_owned(),
            400,
            "invalid_request_error",
        ),
        (
            "text/plain",
            message_request("demo-1", "hi", false).to_string(),
            415,
            "invalid_request_error",
        ),
        (
            "application/json",
            message_request("demo-1", &"long ".repeat(1000), false).to_string(),
            413,
            "request_too_large",
        ),
    ] {
        let (got, answer) = status_and_json(send(content_type, body).await.unwrap()).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(assert_anthropic_error(&answer)["type"], kind, "{answer}");
    }
    let (status, answer) =
        status_and_json(post(&app, MESSAGES, &message_request("no-such-model", "hi", false)).await).await;
    assert_eq!(status, 404, "{answer}");
    let error = assert_anthropic_error(&answer);
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("not_found_error"), &json!("model_not_found"))
    );
}

#[tokio::test]
async fn past_the_in_flight_limit_messages_get_anthropics_529_and_responses_a_503() {
    let portkey = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": [], "model": "m"}))
                .set_delay(std::time::Duration::from_secs(2)),
        )
        .mount(&portkey)
        .await;
    let app = TestApp::in_front_of(
        &portkey,
        &[
            ("GATEWAYZ_MAX_IN_FLIGHT", "1"),
            ("PORTKEY_API_KEY", "pk-refusals"),
            ("PROVIDER_OPENAI_API_KEY", "sk-refusals"),
        ],
    )
    .await;
    let holder = tokio::spawn(
        app.client
            .post(app.url(EMBEDDINGS))
            .bearer_auth(KEY)
            .json(&json!({"model": "@openai/text-embedding-3-small", "input": "hi"}))
            .send(),
    );
    crate::helpers::eventually(5, "the one slot is taken", || async {
        !portkey.received_requests().await.unwrap().is_empty()
    })
    .await;

    let response = post(&app, MESSAGES, &message_request("demo-1", "hi", false)).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = status_and_json(response).await;
    assert_eq!(
        assert_anthropic_error(&body)["type"],
        "overloaded_error",
        "{body}"
    );
    let (status, body) =
        status_and_json(post(&app, RESPONSES, &response_request("demo-1", "hi", false)).await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "overloaded");

    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
}
