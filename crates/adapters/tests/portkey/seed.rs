//! The seed system's eight unit tests, under their original names.

use gatewayz_adapters::EnvKeyResolver;
use gatewayz_domain::{ChatProvider, Credentials, KeyError, KeyResolver, UpstreamAuth, UpstreamProvider};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{
    ANTHROPIC_KEY, OPENAI_KEY, PORTKEY_KEY, call, completion_json, keys, only_request, openai_call, provider,
    route, server_answering,
};

fn upstream_key(credentials: Credentials) -> (String, UpstreamAuth) {
    match credentials {
        Credentials::Portkey { api_key, upstream } => (api_key.expose_secret().to_owned(), upstream),
        Credentials::None => panic!("Portkey credentials expected"),
    }
}

#[test]
fn get_portkey_client_virtual_key_success() {
    let (portkey, upstream) = upstream_key(
        keys()
            .resolve(&route(UpstreamProvider::OpenAi, Some("vk-openai-1")))
            .unwrap(),
    );
    assert_eq!(portkey, PORTKEY_KEY);
    assert!(matches!(upstream, UpstreamAuth::VirtualKey(key) if key.expose_secret() == "vk-openai-1"));
}

#[test]
fn get_portkey_client_direct_openai_success() {
    let (portkey, upstream) = upstream_key(keys().resolve(&route(UpstreamProvider::OpenAi, None)).unwrap());
    assert_eq!(portkey, PORTKEY_KEY);
    assert!(matches!(upstream, UpstreamAuth::ProviderKey(key) if key.expose_secret() == OPENAI_KEY));
}

#[test]
fn get_portkey_client_direct_anthropic_success() {
    let (_, upstream) = upstream_key(keys().resolve(&route(UpstreamProvider::Anthropic, None)).unwrap());
    assert!(matches!(upstream, UpstreamAuth::ProviderKey(key) if key.expose_secret() == ANTHROPIC_KEY));
}

#[test]
fn get_portkey_client_missing_portkey_key_raises() {
    let keys =
        EnvKeyResolver::from_vars([("PROVIDER_OPENAI_API_KEY".to_owned(), OPENAI_KEY.to_owned())]).unwrap();
    let error = keys.resolve(&route(UpstreamProvider::OpenAi, None)).unwrap_err();
    assert_eq!(error, KeyError::PortkeyKeyMissing);
    assert_eq!(error.to_string(), "Portkey API key not configured");
}

#[test]
fn get_portkey_client_missing_provider_key_raises() {
    let keys = EnvKeyResolver::from_vars([("PORTKEY_API_KEY".to_owned(), PORTKEY_KEY.to_owned())]).unwrap();
    let error = keys.resolve(&route(UpstreamProvider::OpenAi, None)).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("Provider API key not configured for openai"),
        "{error}"
    );
}

#[tokio::test]
async fn make_portkey_request_openai_forwards_args_virtual() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2, "max_tokens": 64, "top_p": 0.9, "user": "u-1", "seed": 7});

    provider(&server, &[])
        .complete(call(
            route(UpstreamProvider::OpenAi, Some("vk-openai-1")),
            body.clone(),
        ))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(serde_json::from_slice::<Value>(&request.body).unwrap(), body);
    assert_eq!(request.headers["x-portkey-virtual-key"], "vk-openai-1");
    assert_eq!(request.headers["x-portkey-api-key"], PORTKEY_KEY);
    assert!(request.headers.get("x-portkey-provider").is_none());
    assert!(request.headers.get("authorization").is_none());
}

#[tokio::test]
async fn process_portkey_response_happy() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;

    let response = provider(&server, &[])
        .complete(openai_call(crate::helpers::chat_body()))
        .await
        .unwrap();

    let answer: Value = serde_json::from_slice(&response.json()).unwrap();
    assert_eq!(answer["id"], "chatcmpl-abc");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let usage = response.usage().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens.unwrap()
        ),
        (9, 2, 11)
    );
}

#[tokio::test]
async fn process_portkey_response_no_usage() {
    let mut body = completion_json();
    body.as_object_mut().unwrap().remove("usage");
    let server = server_answering(ResponseTemplate::new(200).set_body_json(body)).await;

    let response = provider(&server, &[])
        .complete(openai_call(crate::helpers::chat_body()))
        .await
        .unwrap();

    assert_eq!(response.usage(), None);
    let answer: Value = serde_json::from_slice(&response.json()).unwrap();
    assert!(answer.get("usage").is_none(), "no invented usage");
}
