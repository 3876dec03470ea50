//! Drop-in routing: the catalog, `@provider/model`, the default route,
//! `/v1/models`, and `gateway_usage` with cost.

use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use crate::helpers::{TestApp, assert_openai_error, portkey_answering, sse_data};

fn completion(usage: Option<Value>) -> Value {
    let mut body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]});
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    body
}

async fn gateway(server: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("PORTKEY_API_KEY", "pk"),
        ("PROVIDER_OPENAI_API_KEY", "sk-openai"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant"),
        ("PROVIDER_MISTRAL_AI_API_KEY", "sk-mistral"),
        ("PROVIDER_GROQ_API_KEY", "sk-groq"),
    ];
    vars.extend_from_slice(extra);
    TestApp::in_front_of(server, &vars).await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

async fn last_upstream(server: &MockServer) -> (String, Value) {
    let requests = server.received_requests().await.unwrap();
    let request = requests.last().expect("a request reached Portkey");
    let provider = request
        .headers
        .get("x-portkey-provider")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (provider, serde_json::from_slice(&request.body).unwrap())
}

#[tokio::test]
async fn models_lists_the_catalog_in_openai_format() {
    let app = TestApp::production(&[]).await;

    let response = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(crate::helpers::KEY)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let models = body["data"].as_array().unwrap();
    let owner = |id: &str| {
        models
            .iter()
            .find(|model| model["id"] == id)
            .map(|model| model["owned_by"].clone())
    };
    assert_eq!(owner("demo-1"), Some(json!("demo")));
    assert_eq!(owner("gpt-4o-mini"), Some(json!("openai")));
    assert_eq!(
        owner("meta-llama/Meta-Llama-3.1-8B-Instruct"),
        Some(json!("deepinfra"))
    );
    assert!(
        models
            .iter()
            .all(|model| model["object"] == "model" && model["created"].is_u64())
    );
}

#[tokio::test]
async fn one_model_is_found_by_id_even_with_a_slash_and_an_unknown_one_is_404() {
    let app = TestApp::production(&[]).await;
    let get = |id: &str| {
        app.client
            .get(app.url(&format!("/v1/models/{id}")))
            .bearer_auth(crate::helpers::KEY)
            .send()
    };

    let model: Value = get("meta-llama/Meta-Llama-3.1-8B-Instruct")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["id"], "meta-llama/Meta-Llama-3.1-8B-Instruct");
    assert_eq!(model["owned_by"], "deepinfra");

    let missing = get("gpt-7").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "model_not_found");
}

#[tokio::test]
async fn models_need_the_gateway_key() {
    let app = TestApp::production(&[]).await;

    for path in ["/v1/models", "/v1/models/demo-1"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn a_catalog_id_routes_to_its_provider_and_upstream_model() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(None))).await;
    let app = gateway(&server, &[]).await;

    assert_eq!(app.post_chat(&ask("gpt-4o-mini")).await.status(), 200);
    let (provider, body) = last_upstream(&server).await;
    assert_eq!(
        (provider.as_str(), &body["model"]),
        ("openai", &json!("gpt-4o-mini"))
    );

    assert_eq!(
        app.post_chat(&ask("claude-3-5-sonnet-latest")).await.status(),
        200
    );
    let (provider, body) = last_upstream(&server).await;
    assert_eq!(provider, "anthropic");
    assert_eq!(body["max_tokens"], 4096, "the catalog's max_tokens: {body}");
}

#[tokio::test]
async fn the_at_syntax_routes_to_any_portkey_provider() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(None))).await;
    let app = gateway(&server, &[]).await;

    let response = app.post_chat(&ask("@mistral-ai/mistral-large-latest")).await;

    assert_eq!(response.status(), 200);
    let (provider, body) = last_upstream(&server).await;
    assert_eq!(provider, "mistral-ai");
    assert_eq!(body["model"], "mistral-large-latest");
}

#[tokio::test]
async fn the_default_route_takes_models_nothing_else_routes() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(None))).await;
    let app = gateway(
        &server,
        &[
            ("GATEWAYZ_DEFAULT_PROVIDER", "portkey"),
            ("GATEWAYZ_DEFAULT_PORTKEY_PROVIDER", "groq"),
        ],
    )
    .await;

    assert_eq!(app.post_chat(&ask("llama-3.3-70b-versatile")).await.status(), 200);

    let (provider, body) = last_upstream(&server).await;
    assert_eq!(
        (provider.as_str(), &body["model"]),
        ("groq", &json!("llama-3.3-70b-versatile"))
    );
}

#[tokio::test]
async fn a_custom_catalog_file_replaces_the_built_in_one() {
    let file = std::env::temp_dir().join(format!("gatewayz-catalog-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[[models]]\nid = \"house-model\"\nprovider = \"portkey\"\nportkey_provider = \"openai\"\nupstream_model = \"gpt-4o\"\n",
    )
    .unwrap();
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(None))).await;
    let app = gateway(&server, &[("GATEWAYZ_CATALOG", file.to_str().unwrap())]).await;

    assert_eq!(app.post_chat(&ask("house-model")).await.status(), 200);
    assert_eq!(
        app.post_chat(&ask("gpt-4o-mini")).await.status(),
        404,
        "built-in ids are gone"
    );
    std::fs::remove_file(&file).unwrap();

    let (_, body) = last_upstream(&server).await;
    assert_eq!(body["model"], "gpt-4o");
}

#[tokio::test]
async fn a_priced_model_reports_its_cost_from_the_upstream_usage() {
    let usage = json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500});
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(Some(usage)))).await;
    let app = gateway(&server, &[]).await;

    let body: Value = app.post_chat(&ask("gpt-4o-mini")).await.json().await.unwrap();

    // 1000 × $0.15/M + 500 × $0.60/M
    assert_eq!(body["gateway_usage"]["cost_usd"], json!(0.00045));
    let request_ms = body["gateway_usage"]["request_ms"].as_f64().unwrap();
    let upstream_ms = body["gateway_usage"]["upstream_ms"].as_f64().unwrap();
    assert!(request_ms >= upstream_ms && upstream_ms > 0.0, "{body}");
}

#[tokio::test]
async fn no_cost_is_guessed_without_a_price_or_without_usage() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_json(completion(None))).await;
    let app = gateway(&server, &[]).await;

    for model in ["gpt-4o-mini", "@openai/unpriced-model"] {
        let body: Value = app.post_chat(&ask(model)).await.json().await.unwrap();
        assert!(body["gateway_usage"]["request_ms"].is_number(), "{body}");
        assert!(body["gateway_usage"].get("cost_usd").is_none(), "{model}: {body}");
    }
}

#[tokio::test]
async fn a_stream_reports_its_cost_on_the_final_chunk_with_or_without_usage() {
    let app = TestApp::production(&[]).await;

    for wants_usage in [false, true] {
        let mut request = ask("demo-1");
        request["stream"] = json!(true);
        if wants_usage {
            request["stream_options"] = json!({"include_usage": true});
        }
        let events = sse_data(app.post_chat(&request).await).await;
        let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(last["choices"], json!([]));
        let cost = last["gateway_usage"]["cost_usd"].as_f64().expect("a cost");
        assert!(cost > 0.0);
        assert_eq!(last.get("usage").is_some(), wants_usage, "{last}");
        if wants_usage {
            let usage = &last["usage"];
            let expected = (usage["prompt_tokens"].as_f64().unwrap() * 0.10
                + usage["completion_tokens"].as_f64().unwrap() * 0.20)
                / 1e6;
            assert!(
                (cost - (expected * 1e6).round() / 1e6).abs() < 1e-12,
                "{cost} vs {expected}"
            );
        }
        let usage_chunks = events.iter().filter(|event| event.contains("\"usage\"")).count();
        assert_eq!(usage_chunks, usize::from(wants_usage));
    }
}

#[tokio::test]
async fn a_stream_always_asks_the_upstream_for_usage() {
    let server = portkey_answering(ResponseTemplate::new(200).set_body_raw(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        "text/event-stream",
    ))
    .await;
    let app = gateway(&server, &[]).await;
    let mut request = ask("gpt-4o-mini");
    request["stream"] = json!(true);

    let events = sse_data(app.post_chat(&request).await).await;

    let (_, body) = last_upstream(&server).await;
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    let closing: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        closing["gateway_usage"].get("cost_usd").is_none(),
        "no usage upstream, no cost: {closing}"
    );
}
