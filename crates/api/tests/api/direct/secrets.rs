//! A direct upstream's key, and an Azure upstream's, reach no log line (at
//! `RUST_LOG=debug`) and no answer, even when the upstream echoes the key it
//! received in its error (`echo_key`, as OpenAI does, on chat completions
//! whole and streamed and on embeddings): the echo is `[REDACTED]`. A
//! hostile upstream (wiremock) echoing a key in any field of an error, in
//! an error event mid-stream, or across the cut of a long body, fares no
//! better.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{
    AZURE_KEY, AZURE_KEY_ENV, CHAT, DirectGateway, LocalUpstream, VLLM_KEY, VLLM_KEY_ENV, keyed,
    upstream_entry,
};
use crate::endpoints::{EMBEDDINGS, MESSAGES, message_request};
use crate::helpers::KEY;

fn catalog(vllm: &LocalUpstream, azure: &LocalUpstream) -> String {
    format!(
        r#"{}{}
[[models]]
id = "llama"
upstream = "vllm"
upstream_model = "meta-llama/Llama-3.1-8B"

[[models]]
id = "azure-4o"
upstream = "azure-east"
upstream_model = "gpt-4o-prod"
"#,
        upstream_entry(
            "vllm",
            &vllm.openai_base(),
            &format!("api_key_env = \"{VLLM_KEY_ENV}\"")
        ),
        upstream_entry(
            "azure-east",
            &azure.azure_base(),
            &format!("api_key_env = \"{AZURE_KEY_ENV}\"\napi_version = \"2024-10-21\"")
        ),
    )
}

fn chat(model: &str, stream: bool, fault: Option<&str>) -> Value {
    let mut body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]});
    if let Some(fault) = fault {
        body["upstream_fault"] = json!(fault);
    }
    body
}

/// What the gateway tells a client of an echoed key.
const ECHO_REDACTED: &str = "Incorrect API key provided: [REDACTED]. You can find your API key at";

#[tokio::test]
async fn no_direct_or_azure_key_reaches_a_log_line_or_an_answer_even_when_the_upstream_echoes_it() {
    let vllm = LocalUpstream::start(keyed(VLLM_KEY));
    let azure = LocalUpstream::start(keyed(AZURE_KEY));
    let gateway = DirectGateway::start(
        "secrets",
        &catalog(&vllm, &azure),
        &[
            (VLLM_KEY_ENV, VLLM_KEY),
            (AZURE_KEY_ENV, AZURE_KEY),
            ("RUST_LOG", "debug"),
        ],
    );
    // (path, body, whether the upstream echoes the key)
    let mut requests: Vec<(&str, Value, bool)> = Vec::new();
    for model in ["llama", "azure-4o"] {
        for stream in [false, true] {
            requests.push((CHAT, chat(model, stream, None), false));
            requests.push((CHAT, chat(model, stream, Some("echo_key")), true));
            requests.push((CHAT, chat(model, stream, Some("500")), false));
        }
        requests.push((CHAT, chat(model, true, Some("cut")), false));
        requests.push((
            EMBEDDINGS,
            json!({"model": format!("@{}/emb", if model == "llama" { "vllm" } else { "azure-east" }),
                "input": "hi", "upstream_fault": "echo_key"}),
            true,
        ));
        // A Messages request is sent as a chat completion, which has no
        // room for `upstream_fault`: no fault here, only the keys' path.
        for stream in [false, true] {
            requests.push((MESSAGES, message_request(model, "hi", stream), false));
        }
    }

    let mut answers = Vec::new();
    let last = requests.len() - 1;
    for (index, (path, body, echoes)) in requests.into_iter().enumerate() {
        let response = gateway.post(path, &format!("secrets-{index}"), &body).await;
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let answer = format!("{headers}\n{}", response.text().await.unwrap());
        if echoes {
            assert_eq!(
                status, 500,
                "an upstream 401 is the gateway's upstream auth error: {answer}"
            );
            assert!(
                answer.contains(ECHO_REDACTED),
                "{path} {body}: the echo is redacted: {answer}"
            );
        }
        answers.push(answer);
    }
    gateway.access_line(&format!("secrets-{last}"));

    let lines = gateway.binary.lines();
    assert!(
        lines.iter().any(|line| line.contains(r#""level":"DEBUG""#)),
        "debug logs were written: {lines:#?}"
    );
    assert!(
        lines.iter().any(|line| line.contains("[REDACTED]")),
        "the echoed errors were logged, redacted: {lines:#?}"
    );
    for secret in [VLLM_KEY, AZURE_KEY, KEY] {
        // Not even the first characters of a key.
        let start = &secret[..secret.len().min(12)];
        for line in &lines {
            assert!(!line.contains(start), "{secret} in a log line: {line}");
        }
        for answer in &answers {
            assert!(!answer.contains(start), "{secret} in an answer: {answer}");
        }
    }
}

/// An SSE body of `events`, one `data:` line each.
fn sse(events: &[String]) -> ResponseTemplate {
    let body: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    ResponseTemplate::new(200).set_body_raw(body.into_bytes(), "text/event-stream")
}

#[tokio::test]
async fn keys_a_hostile_direct_upstream_echoes_in_any_field_reach_neither_the_client_nor_the_log() {
    let echoed = json!({"error": {"message": format!("bad key {VLLM_KEY}"), "param": VLLM_KEY,
        "code": format!("Bearer {VLLM_KEY}")}});
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]});
    let server = MockServer::start().await;
    let openai = |model: &str| {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", format!("Bearer {VLLM_KEY}").as_str()))
            .and(body_partial_json(json!({"model": model})))
    };
    let mounts = [
        // Every field of an error, whole and mid-stream.
        openai("echo-400").respond_with(ResponseTemplate::new(400).set_body_json(&echoed)),
        openai("echo-stream").respond_with(sse(&[chunk.to_string(), echoed.to_string()])),
        // A key straddling the cut of a body that is not JSON.
        openai("straddle").respond_with(
            ResponseTemplate::new(500).set_body_string(format!("{}{VLLM_KEY}", "E".repeat(498))),
        ),
        // Azure's key, echoed from where Azure takes it.
        Mock::given(method("POST"))
            .and(path("/openai/deployments/az-echo/chat/completions"))
            .and(header("api-key", AZURE_KEY))
            .respond_with(
                ResponseTemplate::new(401).set_body_json(json!({"error": {"code": "401",
                "message": format!("Access denied for key {AZURE_KEY}")}})),
            ),
    ];
    for mock in mounts {
        mock.mount(&server).await;
    }
    let catalog = format!(
        "{}{}",
        upstream_entry(
            "vllm",
            &format!("{}/v1", server.uri()),
            &format!("api_key_env = \"{VLLM_KEY_ENV}\"")
        ),
        upstream_entry(
            "azure-east",
            &server.uri(),
            &format!("api_key_env = \"{AZURE_KEY_ENV}\"\napi_version = \"2024-10-21\"")
        ),
    );
    let gateway = DirectGateway::start(
        "secrets-hostile",
        &catalog,
        &[(VLLM_KEY_ENV, VLLM_KEY), (AZURE_KEY_ENV, AZURE_KEY)],
    );
    let post = |id: &'static str, model: &str, stream: bool| {
        let body = chat(model, stream, None);
        let gateway = &gateway;
        async move {
            let response = gateway.post(CHAT, id, &body).await;
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let mut answers = Vec::new();

    let (status, text) = post("hostile-400", "@vllm/echo-400", false).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&error["error"]["param"], &error["error"]["code"]),
        (&json!("[REDACTED]"), &json!("Bearer [REDACTED]")),
        "{text}"
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("bad key [REDACTED]"),
        "{text}"
    );
    answers.push(text);

    let (status, text) = post("hostile-stream", "@vllm/echo-stream", true).await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    let error: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(error["error"]["param"], "[REDACTED]", "{text}");
    assert_eq!(error["error"]["source"], "provider", "{text}");
    assert_eq!(events[2], "[DONE]");
    answers.push(text);

    let (status, text) = post("hostile-straddle", "@vllm/straddle", false).await;
    assert_eq!(status, 502, "{text}");
    assert!(!text.contains(&VLLM_KEY[..4]), "{text}");
    answers.push(text);

    let (status, text) = post("hostile-azure", "@azure-east/az-echo", false).await;
    assert_eq!(status, 500, "a 401 from the upstream: {text}");
    assert!(text.contains("Access denied for key [REDACTED]"), "{text}");
    answers.push(text);

    let azure_calls: Vec<wiremock::Request> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path().starts_with("/openai/"))
        .collect();
    assert_eq!(azure_calls.len(), 1);
    assert_eq!(azure_calls[0].url.query(), Some("api-version=2024-10-21"));
    assert!(
        azure_calls[0].headers.get("authorization").is_none(),
        "Azure's key goes in api-key alone: {:?}",
        azure_calls[0].headers
    );

    gateway.access_line("hostile-azure");
    let lines = gateway.binary.lines();
    for secret in [VLLM_KEY, AZURE_KEY] {
        let start = &secret[..12];
        for line in &lines {
            assert!(!line.contains(start), "{secret} in a log line: {line}");
        }
        for answer in &answers {
            assert!(!answer.contains(start), "{secret} in an answer: {answer}");
        }
    }
}
