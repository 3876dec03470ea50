//! Chat completions through a declared `[[upstreams]]` entry: whole and
//! streamed, priced, named in the answer's headers, the access line and the
//! metrics; `@<upstream>/<model>` without a catalog model; and exactly what
//! reaches the upstream.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{
    CHAT, CHUNKS, COMPLETION_TOKENS, DirectGateway, LocalUpstream, PROMPT_TOKENS, UPSTREAM_TEXT, VLLM_KEY,
    VLLM_KEY_ENV, chat_chunks, header, keyed, streamed_text, upstream_entry,
};
use crate::endpoints::{assert_gateway_usage, priced};
use crate::helpers::{KEY, assert_openai_error, sample, sse_data};

const UPSTREAM_MODEL: &str = "meta-llama/Llama-3.1-8B";
/// Dollars a million tokens: a token costs a thousandth (input) or two
/// thousandths (output) of a dollar, so costs are exact to 6 decimals.
const INPUT_PRICE: f64 = 1000.0;
const OUTPUT_PRICE: f64 = 2000.0;

/// `vllm` at `base_url` with its key and a static header, and `llama` on it,
/// priced.
fn catalog(base_url: &str) -> String {
    let upstream = upstream_entry(
        "vllm",
        base_url,
        &format!("api_key_env = \"{VLLM_KEY_ENV}\"\nheaders = {{ \"x-team\" = \"ml\" }}"),
    );
    format!(
        r#"{upstream}
[[models]]
id = "llama"
upstream = "vllm"
upstream_model = "{UPSTREAM_MODEL}"
input_usd_per_million = {INPUT_PRICE}
output_usd_per_million = {OUTPUT_PRICE}
"#
    )
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn ask_stream(model: &str, include_usage: bool) -> Value {
    let mut body = ask(model);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn cost(prompt: u64, completion: u64) -> f64 {
    priced(prompt, INPUT_PRICE) + priced(completion, OUTPUT_PRICE)
}

#[tokio::test]
async fn a_declared_upstream_answers_a_chat_completion_priced_and_named_as_it_served() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = DirectGateway::start(
        "json",
        &catalog(&upstream.openai_base()),
        &[(VLLM_KEY_ENV, VLLM_KEY)],
    );

    let response = gateway.post(CHAT, "direct-json-1", &ask("llama")).await;

    // The upstream requires the key: a 200 is proof the gateway sent it.
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/vllm")
    );
    let target = format!("vllm/{UPSTREAM_MODEL}");
    assert_eq!(
        header(&response, "x-gatewayz-target").as_deref(),
        Some(target.as_str())
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], UPSTREAM_TEXT);
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
    );
    // 9 × $0.001 + 14 × $0.002
    assert_gateway_usage(&answer, Some(cost(PROMPT_TOKENS, COMPLETION_TOKENS)));
    assert_eq!(answer["gateway_usage"]["cost_usd"], json!(0.037));

    let access = gateway.access_line("direct-json-1");
    assert_eq!(
        (
            &access["provider"],
            &access["upstream"],
            &access["model"],
            &access["target"]
        ),
        (
            &json!("openai-compatible"),
            &json!("vllm"),
            &json!("llama"),
            &json!(target)
        ),
        "{access}"
    );
    assert!(access.get("portkey_provider").is_none(), "{access}");
    assert_eq!(
        (
            &access["status"],
            &access["attempts"],
            &access["cost_usd"],
            &access["prompt_tokens"]
        ),
        (&json!(200), &json!(1), &json!(0.037), &json!(PROMPT_TOKENS)),
        "{access}"
    );

    // The direct upstream's name stands in the `portkey_provider` label.
    let metrics = gateway.metrics().await;
    let labels = r#"model="llama",portkey_provider="vllm",provider="openai-compatible""#;
    assert_eq!(
        sample(
            &metrics,
            &format!(
                r#"gatewayz_requests_total{{{labels},route="/v1/chat/completions",status_class="2xx"}}"#
            )
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("gatewayz_cost_usd_total{{{labels}}}")),
        Some(0.037),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_through_a_declared_upstream_ends_with_done_and_shows_usage_only_when_asked() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let gateway = DirectGateway::start(
        "stream",
        &catalog(&upstream.openai_base()),
        &[(VLLM_KEY_ENV, VLLM_KEY)],
    );
    let completion = CHUNKS as u64;

    for include_usage in [false, true] {
        let id = format!("direct-stream-{include_usage}");
        let response = gateway.post(CHAT, &id, &ask_stream("llama", include_usage)).await;

        assert_eq!(response.status(), 200, "include_usage: {include_usage}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(
            header(&response, "x-gatewayz-provider").as_deref(),
            Some("openai-compatible/vllm")
        );
        let chunks = chat_chunks(&sse_data(response).await);
        assert_eq!(streamed_text(&chunks), "tok0 tok1 tok2 ");
        assert!(
            chunks
                .iter()
                .any(|chunk| chunk["choices"][0]["finish_reason"] == "stop"),
            "{chunks:?}"
        );
        let with_usage: Vec<&Value> = chunks
            .iter()
            .filter(|chunk| chunk.get("usage").is_some())
            .collect();
        if include_usage {
            assert_eq!(with_usage.len(), 1, "one usage chunk: {chunks:?}");
            assert_eq!(
                with_usage[0]["usage"],
                json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion,
                    "total_tokens": PROMPT_TOKENS + completion})
            );
        } else {
            assert!(with_usage.is_empty(), "no usage chunk unasked: {chunks:?}");
        }
        // The cost rides on the last chunk, asked for usage or not.
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]), "{last}");
        assert_eq!(
            last["gateway_usage"]["cost_usd"],
            json!(0.015),
            "9 × $0.001 + 3 × $0.002: {last}"
        );
        assert!(
            (last["gateway_usage"]["cost_usd"].as_f64().unwrap() - cost(PROMPT_TOKENS, completion)).abs()
                < 1e-12
        );

        let access = gateway.access_line(&id);
        assert_eq!(
            (
                &access["stream"],
                &access["upstream"],
                &access["completion_tokens"]
            ),
            (&json!(true), &json!("vllm"), &json!(completion)),
            "{access}"
        );
    }
}

#[tokio::test]
async fn at_upstream_routes_without_a_catalog_model_and_an_unknown_name_lists_the_declared_ones() {
    let upstream = LocalUpstream::start(keyed(VLLM_KEY));
    let base = upstream.openai_base();
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    // Only the upstreams declared in [[upstreams]] are routable by name;
    // the inline one (named after its model, never its host) is a catalog
    // model's alone.
    let catalog = format!(
        r#"{}{}
[[models]]
id = "inline"
provider = "openai-compatible"
base_url = "{base}"
api_key_env = "{VLLM_KEY_ENV}"

[[models]]
id = "llama"
upstream = "vllm"
upstream_model = "{UPSTREAM_MODEL}"
input_usd_per_million = {INPUT_PRICE}
output_usd_per_million = {OUTPUT_PRICE}
"#,
        upstream_entry("vllm", &base, &format!("api_key_env = \"{VLLM_KEY_ENV}\"")),
        upstream_entry("azure-east", &base, &format!("api_key_env = \"{VLLM_KEY_ENV}\"")),
    );
    let gateway = DirectGateway::start("at-routing", &catalog, &[(VLLM_KEY_ENV, VLLM_KEY)]);

    // Any model on a declared upstream, by name.
    let response = gateway.post(CHAT, "at-1", &ask("@vllm/some-other-model")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/vllm")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], UPSTREAM_TEXT);
    // No catalog price for that upstream model: no cost is guessed.
    assert_gateway_usage(&answer, None);
    let access = gateway.access_line("at-1");
    assert_eq!(
        (&access["upstream"], &access["model"]),
        (&json!("vllm"), &json!("@vllm/some-other-model")),
        "{access}"
    );

    // Prices are found by what is called: the same upstream and model as
    // `llama` costs what `llama` costs.
    let response = gateway
        .post(CHAT, "at-2", &ask(&format!("@vllm/{UPSTREAM_MODEL}")))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_gateway_usage(&answer, Some(cost(PROMPT_TOKENS, COMPLETION_TOKENS)));

    // The inline model serves under its own id; its upstream is named
    // after it, and its host is shown to no client.
    let response = gateway.post(CHAT, "at-3", &ask("inline")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/inline")
    );
    let listed = gateway
        .client
        .get(gateway.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(r#""owned_by":"inline""#), "{listed}");
    assert!(!listed.contains(&host), "{listed}");

    for (model, unknown) in [
        ("@acme/x".to_owned(), "acme".to_owned()),
        ("@inline/x".to_owned(), "inline".to_owned()),
        (format!("@{host}/x"), host.clone()),
    ] {
        let response = gateway.post(CHAT, "at-unknown", &ask(&model)).await;
        assert_eq!(response.status(), 400, "{model}");
        let body: Value = response.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(
            (&error["param"], &error["code"], &error["source"]),
            (&json!("model"), &json!("unsupported_provider"), &json!("gateway")),
            "{body}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("Unsupported provider `{unknown}`")),
            "{message}"
        );
        assert!(
            message.contains("openai") && message.ends_with(", vllm, azure-east."),
            "the Portkey providers, then the declared upstreams: {message}"
        );
    }
}

#[tokio::test]
async fn only_the_upstreams_key_its_static_headers_and_the_body_reach_a_direct_upstream() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "chatcmpl-1",
            "object": "chat.completion", "created": 1, "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})))
        .mount(&server)
        .await;
    let base = format!("{}/v1", server.uri());
    // `open`: the same server, declared without a key.
    let capped = "[[models]]\nid = \"capped\"\nupstream = \"vllm\"\nmax_tokens = 77\n";
    let gateway = DirectGateway::start(
        "what-reaches",
        &format!("{}{}{capped}", upstream_entry("open", &base, ""), catalog(&base)),
        &[(VLLM_KEY_ENV, VLLM_KEY)],
    );
    let mut body = ask("llama");
    body["user"] = json!("user-7");
    body["max_tokens"] = json!(5);

    let response = gateway
        .client
        .post(gateway.url(CHAT))
        .bearer_auth(KEY)
        .header("x-request-id", "reach-1")
        .header("cookie", "session=client-cookie")
        .header("x-custom-client", "private")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_gateway_usage(&answer, Some(cost(2, 1)));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {VLLM_KEY}").as_str()
    );
    assert_eq!(request.headers["x-team"], "ml");
    assert_eq!(request.headers["x-request-id"], "reach-1");
    assert_eq!(
        request.headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    for leaked in ["cookie", "x-custom-client", "api-key"] {
        assert!(
            request.headers.get(leaked).is_none(),
            "{leaked} reached the upstream"
        );
    }
    let headers = format!("{:?}", request.headers);
    assert!(
        !headers.contains(KEY),
        "the gateway key never goes upstream: {headers}"
    );
    assert!(!headers.contains("x-portkey"), "no Portkey header: {headers}");
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        sent,
        json!({"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "Hello there"}],
            "user": "user-7", "max_tokens": 5}),
        "the upstream model, the client's fields, nothing of the gateway's"
    );

    // A catalog `max_tokens` fills a request's missing limit; a Messages
    // request goes as the chat completion that asks the same.
    let response = gateway.post(CHAT, "reach-3", &ask("capped")).await;
    assert_eq!(response.status(), 200);
    let response = gateway
        .post(
            crate::endpoints::MESSAGES,
            "reach-4",
            &crate::endpoints::message_request("llama", "Hello there", false),
        )
        .await;
    assert_eq!(response.status(), 200);
    let requests = server.received_requests().await.unwrap();
    let sent: Vec<(String, Value)> = requests[1..]
        .iter()
        .map(|request| {
            (
                request.url.path().to_owned(),
                serde_json::from_slice(&request.body).unwrap(),
            )
        })
        .collect();
    assert_eq!(sent[0].1["max_tokens"], 77, "{:?}", sent[0]);
    assert_eq!(sent[1].0, "/v1/chat/completions");
    assert_eq!(
        sent[1].1,
        json!({"model": UPSTREAM_MODEL, "max_tokens": 64, "stream": false, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]}),
        "{:?}",
        sent[1]
    );

    // Without a key, no credential at all: never the client's own, nor
    // a Portkey routing field the client sent.
    let mut body = ask("@open/m");
    body["portkey_virtual_key"] = json!("vk-client-secret-1");
    body["portkey_config"] = json!({"retry": {"attempts": 2}});
    let response = gateway.post(CHAT, "reach-2", &body).await;
    assert_eq!(response.status(), 200);
    let requests = server.received_requests().await.unwrap();
    let request = requests.last().unwrap();
    assert!(
        request.headers.get("authorization").is_none(),
        "{:?}",
        request.headers
    );
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        sent,
        json!({"model": "m", "messages": [{"role": "user", "content": "Hello there"}]})
    );
}
