//! An upstream that fails: `gatewayz-upstream` with faults plays Portkey
//! (`PORTKEY_BASE_URL` points straight at it, since the real Portkey drops
//! the `upstream_fault` a body asks for), cutting a stream after its first
//! delta or answering an error status. A cut stream ends with one error
//! event in the API's shape; a status is answered with the API's status and
//! error shape, streamed or not. An upstream's own error event mid-stream
//! (from a wiremock Portkey) keeps what the upstream said.

use serde_json::{Value, json};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_anthropic_error, assert_responses_error_event,
    count_request, faulty, local_upstream, message_request, names, post, response_request, status_and_json,
    streamed_text, typed_events,
};
use crate::helpers::{TestApp, assert_openai_error, sse_data};

const CHAT: &str = "/v1/chat/completions";
const OPENAI_MODEL: &str = "@openai/gpt-4o-mini";
const ANTHROPIC_MODEL: &str = "@anthropic/claude-x";

/// The gateway whose Portkey is a faulty upstream of 4 content chunks a
/// chat stream.
async fn gateway_before_faulty_upstream() -> TestApp {
    let upstream = local_upstream(gatewayz_upstream::Config {
        chunks: 4,
        ..faulty()
    })
    .await;
    TestApp::production(&[
        ("PORTKEY_BASE_URL", &upstream),
        ("PORTKEY_API_KEY", "pk-faults"),
        ("PROVIDER_OPENAI_API_KEY", "sk-faults"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-faults"),
    ])
    .await
}

fn with_fault(mut body: Value, fault: &str) -> Value {
    body["upstream_fault"] = json!(fault);
    body
}

fn chat_request(stream: bool) -> Value {
    json!({"model": OPENAI_MODEL, "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test]
async fn a_chat_stream_cut_by_the_upstream_ends_with_one_error_event_and_done() {
    let app = gateway_before_faulty_upstream().await;

    let response = post(&app, CHAT, &with_fault(chat_request(true), "cut")).await;

    assert_eq!(response.status(), 200);
    let events = sse_data(response).await;
    let (last, before) = events.split_last().unwrap();
    assert_eq!(last, "[DONE]", "{events:?}");
    let (error, chunks) = before.split_last().unwrap();
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(
        assert_openai_error(&error)["code"],
        "upstream_unavailable",
        "{error}"
    );
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|chunk| serde_json::from_str(chunk).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk" && chunk.get("error").is_none()),
        "{events:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 ", "the chunks before the cut");
}

#[tokio::test]
async fn a_messages_stream_cut_by_the_upstream_ends_with_one_anthropic_error_event() {
    let app = gateway_before_faulty_upstream().await;
    let body = with_fault(message_request(ANTHROPIC_MODEL, "Hello there", true), "cut");

    let events = typed_events(post(&app, MESSAGES, &body).await).await;

    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(streamed_text(&events), "You ", "the first delta only");
    let error = assert_anthropic_error(&events[4].data);
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("api_error"), &json!("upstream_unavailable")),
        "{error}"
    );
}

#[tokio::test]
async fn a_responses_stream_cut_by_the_upstream_ends_with_one_error_event() {
    let app = gateway_before_faulty_upstream().await;
    let body = with_fault(response_request(OPENAI_MODEL, "Hello there", true), "cut");

    let events = typed_events(post(&app, RESPONSES, &body).await).await;

    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "error"
        ]
    );
    assert_eq!(streamed_text(&events), "You ", "the first delta only");
    assert_responses_error_event(&events[5].data);
    assert_eq!(events[5].data["code"], "upstream_unavailable");
}

/// Each API's request, whole or streamed where the API streams.
fn requests(stream: bool) -> Vec<(&'static str, Value)> {
    let mut requests = vec![
        (CHAT, chat_request(stream)),
        (MESSAGES, message_request(ANTHROPIC_MODEL, "hi", stream)),
        (RESPONSES, response_request(OPENAI_MODEL, "hi", stream)),
    ];
    if !stream {
        requests.push((
            EMBEDDINGS,
            json!({"model": "@openai/text-embedding-3-small", "input": "hi"}),
        ));
        requests.push((COUNT_TOKENS, count_request(ANTHROPIC_MODEL, "hi")));
    }
    requests
}

#[tokio::test]
async fn an_upstream_429_is_a_429_with_retry_after_in_each_apis_shape_streamed_or_not() {
    let app = gateway_before_faulty_upstream().await;

    for stream in [false, true] {
        for (path, body) in requests(stream) {
            let response = post(&app, path, &with_fault(body, "429")).await;
            let what = format!("{path} (stream: {stream})");
            assert_eq!(response.status(), 429, "{what}");
            assert_eq!(response.headers()["retry-after"], "1", "{what}");
            assert_eq!(response.headers()["content-type"], "application/json", "{what}");
            let (_, body) = status_and_json(response).await;
            if path.starts_with(MESSAGES) {
                assert_eq!(
                    assert_anthropic_error(&body)["type"],
                    "rate_limit_error",
                    "{what}: {body}"
                );
            } else {
                let error = assert_openai_error(&body);
                assert_eq!(error["type"], "rate_limit_error", "{what}: {body}");
                assert_eq!(error["source"], "provider", "{what}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_500_is_a_502_in_each_apis_shape_streamed_or_not() {
    let app = gateway_before_faulty_upstream().await;

    for stream in [false, true] {
        for (path, body) in requests(stream) {
            let response = post(&app, path, &with_fault(body, "500")).await;
            let what = format!("{path} (stream: {stream})");
            let (status, body) = status_and_json(response).await;
            assert_eq!(status, 502, "{what}: {body}");
            if path.starts_with(MESSAGES) {
                assert_eq!(
                    assert_anthropic_error(&body)["type"],
                    "api_error",
                    "{what}: {body}"
                );
            } else {
                let error = assert_openai_error(&body);
                assert_eq!(
                    (&error["type"], &error["code"]),
                    (&json!("server_error"), &json!("upstream_error"))
                );
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_400_keeps_its_status_and_is_the_clients_fault_in_each_apis_shape() {
    let app = gateway_before_faulty_upstream().await;

    for (path, body) in requests(false) {
        let (status, body) = status_and_json(post(&app, path, &with_fault(body, "400")).await).await;
        assert_eq!(status, 400, "{path}: {body}");
        if path.starts_with(MESSAGES) {
            assert_eq!(
                assert_anthropic_error(&body)["type"],
                "invalid_request_error",
                "{path}: {body}"
            );
        } else {
            assert_eq!(
                assert_openai_error(&body)["type"],
                "invalid_request_error",
                "{path}: {body}"
            );
        }
    }
}

/// A Portkey stand-in streaming `events` (name, data) on `at`.
async fn portkey_streaming(at: &str, events: &[(&str, Value)]) -> wiremock::MockServer {
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(at))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn an_anthropic_error_event_mid_stream_is_passed_on_with_its_type() {
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 1}}});
    let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let portkey = portkey_streaming(MESSAGES, &[("message_start", start), ("error", overloaded)]).await;
    let app = TestApp::in_front_of(
        &portkey,
        &[
            ("PORTKEY_API_KEY", "pk-faults"),
            ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-faults"),
        ],
    )
    .await;

    let events =
        typed_events(post(&app, MESSAGES, &message_request(ANTHROPIC_MODEL, "hi", true)).await).await;

    assert_eq!(names(&events), ["message_start", "error"]);
    let error = assert_anthropic_error(&events[1].data);
    assert!(
        error["message"].as_str().unwrap().contains("Overloaded"),
        "{error}"
    );
    // Anthropic's clients tell a retryable overload by its type.
    assert_eq!(error["type"], "overloaded_error", "{error}");
}

#[tokio::test]
async fn a_responses_error_event_mid_stream_keeps_the_upstreams_message_and_code() {
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}});
    let failure = json!({"type": "error", "code": "server_error", "message": "The server had an error",
        "param": null, "sequence_number": 1});
    let portkey = portkey_streaming(RESPONSES, &[("response.created", created), ("error", failure)]).await;
    let app = TestApp::in_front_of(
        &portkey,
        &[
            ("PORTKEY_API_KEY", "pk-faults"),
            ("PROVIDER_OPENAI_API_KEY", "sk-faults"),
        ],
    )
    .await;

    let events = typed_events(post(&app, RESPONSES, &response_request(OPENAI_MODEL, "hi", true)).await).await;

    assert_eq!(names(&events), ["response.created", "error"]);
    let error = &events[1].data;
    assert_responses_error_event(error);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("The server had an error"), "{error}");
    assert!(
        !message.contains("sequence_number"),
        "the event's message, not its JSON: {error}"
    );
    assert_eq!(error["code"], "server_error", "{error}");
}
