//! The APIs beside chat completions on a direct upstream: embeddings where
//! a model says so, the Messages API sent as a chat completion (an
//! OpenAI-compatible server has no Messages API), and the Responses API
//! only on an upstream that lists it.

use serde_json::json;

use super::{
    CHAT, CHUNKS, COMPLETION_TOKENS, DirectGateway, LocalUpstream, PROMPT_TOKENS, UPSTREAM_TEXT, VLLM_KEY,
    VLLM_KEY_ENV, header, keyed, upstream_entry,
};
use crate::endpoints::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_anthropic_error, assert_gateway_usage,
    count_request, message_request, names, priced, response_request, status_and_json, streamed_text,
    the_event, typed_events,
};
use crate::helpers::{KEY, assert_openai_error};

/// Dollars a million tokens: a thousandth of a dollar a token.
const PRICE: f64 = 1000.0;

/// `vllm` (the default APIs: chat, messages, embeddings) and `vllm-resp`
/// (chat and the Responses API) on the same server, with a chat model, an
/// embeddings model and a Responses model.
fn catalog(base_url: &str) -> String {
    let key = format!("api_key_env = \"{VLLM_KEY_ENV}\"");
    format!(
        r#"{}{}
[[models]]
id = "llama"
upstream = "vllm"
upstream_model = "meta-llama/Llama-3.1-8B"
input_usd_per_million = {PRICE}
output_usd_per_million = {PRICE}

[[models]]
id = "embedder"
upstream = "vllm"
upstream_model = "text-embedder"
endpoints = ["embeddings"]
input_usd_per_million = {PRICE}
output_usd_per_million = 0

[[models]]
id = "responder"
upstream = "vllm-resp"
upstream_model = "gpt-4.1"
"#,
        upstream_entry("vllm", base_url, &key),
        upstream_entry(
            "vllm-resp",
            base_url,
            &format!("{key}\nendpoints = [\"chat\", \"responses\"]")
        ),
    )
}

fn gateway(test: &str, upstream: &LocalUpstream) -> DirectGateway {
    DirectGateway::start(
        test,
        &catalog(&upstream.openai_base()),
        &[(VLLM_KEY_ENV, VLLM_KEY)],
    )
}

#[tokio::test]
async fn an_embeddings_model_on_a_direct_upstream_is_answered_by_its_embeddings_path_and_priced() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = gateway("embeddings", &upstream);

    let response = gateway
        .post(
            EMBEDDINGS,
            "emb-1",
            &json!({"model": "embedder", "input": ["Hello there", "bye"], "dimensions": 4}),
        )
        .await;

    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/vllm")
    );
    let (status, answer) = status_and_json(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list", "{answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{answer}");
    for (index, item) in data.iter().enumerate() {
        assert_eq!(item["index"], index, "{answer}");
        assert_eq!(
            item["embedding"].as_array().map(Vec::len),
            Some(4),
            "the client's dimensions reached the upstream: {answer}"
        );
    }
    let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0, "{answer}");
    assert_gateway_usage(&answer, Some(priced(prompt, PRICE)));

    // An embeddings model serves nothing else, and a chat model no embeddings.
    let response = gateway
        .post(
            CHAT,
            "emb-2",
            &json!({"model": "embedder", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "model_not_supported");
    let response = gateway
        .post(EMBEDDINGS, "emb-3", &json!({"model": "llama", "input": "hi"}))
        .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "model_not_supported");

    // An upstream offers embeddings unless its endpoints say otherwise.
    let response = gateway
        .post(
            EMBEDDINGS,
            "emb-4",
            &json!({"model": "@vllm/any-embedder", "input": "hi"}),
        )
        .await;
    let (status, answer) = status_and_json(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"][0]["object"], "embedding", "{answer}");
}

#[tokio::test]
async fn a_messages_request_for_a_direct_model_is_sent_as_a_chat_completion_and_answered_as_a_message() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = gateway("messages", &upstream);

    let response = gateway
        .post(MESSAGES, "msg-1", &message_request("llama", "Hello there", false))
        .await;

    let (status, message) = status_and_json(response).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        (&message["type"], &message["role"], &message["stop_reason"]),
        (&json!("message"), &json!("assistant"), &json!("end_turn")),
        "{message}"
    );
    // The upstream's chat answer: its Messages API would have said
    // "You said: Hello there".
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": UPSTREAM_TEXT}])
    );
    assert_eq!(
        (
            &message["usage"]["input_tokens"],
            &message["usage"]["output_tokens"]
        ),
        (&json!(PROMPT_TOKENS), &json!(COMPLETION_TOKENS)),
        "the chat completion's usage: {message}"
    );
    assert_gateway_usage(&message, Some(priced(PROMPT_TOKENS + COMPLETION_TOKENS, PRICE)));

    let response = gateway
        .post(MESSAGES, "msg-2", &message_request("llama", "Hello there", true))
        .await;

    let events = typed_events(response).await;
    let order = names(&events);
    assert_eq!(order.first(), Some(&"message_start"), "{order:?}");
    assert_eq!(order.last(), Some(&"message_stop"), "{order:?}");
    assert_eq!(streamed_text(&events), "tok0 tok1 tok2 ");
    let delta = the_event(&events, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{delta}");
    assert_eq!(delta["usage"]["output_tokens"], CHUNKS, "{delta}");
    let access = gateway.access_line("msg-2");
    assert_eq!(
        (&access["endpoint"], &access["upstream"], &access["stream"]),
        (&json!("messages"), &json!("vllm"), &json!(true)),
        "{access}"
    );
}

#[tokio::test]
async fn the_responses_api_is_refused_on_an_upstream_that_does_not_list_it_and_served_where_it_does() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = gateway("responses", &upstream);

    // By name, on an upstream without it: the adapter refuses.
    let response = gateway
        .post(
            RESPONSES,
            "resp-1",
            &response_request("@vllm/gpt-4.1", "hello", false),
        )
        .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    let error = assert_openai_error(&body);
    assert_eq!(
        (&error["code"], &error["param"], &error["source"]),
        (
            &json!("endpoint_not_supported"),
            &json!("model"),
            &json!("gateway")
        ),
        "{body}"
    );
    assert!(error["message"].as_str().unwrap().contains("`vllm`"), "{body}");
    // A catalog model on it does not serve the API at all.
    let response = gateway
        .post(RESPONSES, "resp-2", &response_request("llama", "hello", false))
        .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "model_not_supported");
    // Nor does any direct upstream count tokens.
    let response = gateway
        .post(COUNT_TOKENS, "resp-3", &count_request("@vllm/m", "hello"))
        .await;
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_anthropic_error(&body)["code"], "endpoint_not_supported");

    // Listed: by name and by a catalog model, whole and streamed.
    for (model, id) in [("@vllm-resp/gpt-4.1", "resp-4"), ("responder", "resp-5")] {
        let response = gateway
            .post(RESPONSES, id, &response_request(model, "hello", false))
            .await;
        let (status, answer) = status_and_json(response).await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert_eq!(answer["object"], "response", "{answer}");
        assert_eq!(answer["status"], "completed", "{answer}");
        assert_eq!(answer["output"][0]["content"][0]["text"], "You said: hello");
    }
    let response = gateway
        .post(RESPONSES, "resp-6", &response_request("responder", "hello", true))
        .await;
    let events = typed_events(response).await;
    assert_eq!(streamed_text(&events), "You said: hello");
    assert_eq!(
        names(&events).last(),
        Some(&"response.completed"),
        "{:?}",
        names(&events)
    );
    let access = gateway.access_line("resp-6");
    assert_eq!(
        (&access["endpoint"], &access["upstream"]),
        (&json!("responses"), &json!("vllm-resp")),
        "{access}"
    );

    // A response the upstream stores is retrieved from it by id.
    let created = the_event(&events, "response.completed");
    let id = created["response"]["id"].as_str().unwrap();
    let response = gateway
        .client
        .get(gateway.url(&format!("{RESPONSES}/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/vllm-resp")
    );
    let (status, stored) = status_and_json(response).await;
    assert_eq!((status, &stored["id"]), (200, &json!(id)), "{stored}");
    assert_eq!(stored["output"][0]["content"][0]["text"], "You said: hello");
}

#[tokio::test]
async fn the_models_list_shows_each_direct_model_owned_by_its_upstream_with_the_apis_it_serves() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = gateway("models", &upstream);

    let response = gateway
        .client
        .get(gateway.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();

    let (status, list) = status_and_json(response).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<(&str, &str, Vec<&str>)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| {
            (
                model["id"].as_str().unwrap(),
                model["owned_by"].as_str().unwrap(),
                model["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|endpoint| endpoint.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("llama", "vllm", vec!["chat", "messages"]),
            ("embedder", "vllm", vec!["embeddings"]),
            ("responder", "vllm-resp", vec!["chat", "messages", "responses"]),
        ]
    );
}
