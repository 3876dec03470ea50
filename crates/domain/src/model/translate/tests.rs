use futures::stream;
use serde_json::json;

use super::*;

fn chat_of(messages_request: Value) -> Value {
    serde_json::from_slice(&chat_body(messages_request.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn a_messages_request_is_written_as_the_chat_completion_that_asks_the_same() {
    let request = json!({
        "model": "gpt-4o-mini", "max_tokens": 100, "stream": true, "temperature": 0.5, "top_k": 3,
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "-3 C"}]},
                {"type": "text", "text": "Thanks"}
            ]}
        ]
    });

    let chat = chat_of(request);

    assert_eq!(
        chat,
        json!({
            "model": "gpt-4o-mini", "max_tokens": 100, "stream": true, "temperature": 0.5,
            "stream_options": {"include_usage": true}, "stop": ["END"], "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
            ]
        })
    );
}

#[test]
fn what_has_no_chat_counterpart_is_refused_by_name() {
    let cases = [
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "data": "x"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0]",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "mcp_servers": []}),
            "mcp_servers",
        ),
    ];
    for (request, param) in cases {
        let error = chat_body(request.to_string().as_bytes()).unwrap_err();
        assert_eq!(error.param.as_deref(), Some(param), "{}", error.message);
        assert_eq!(error.code.as_deref(), Some("untranslatable"));
    }
}

#[test]
fn a_whole_completion_is_written_as_a_message() {
    let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 10}}});
    let completion = ChatResponse::from_json(completion.to_string().into()).unwrap();

    let message = message(&completion).unwrap();

    let value: Value = serde_json::from_slice(&message.json()).unwrap();
    assert_eq!(
        value,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_9", "name": "weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 10}})
    );
    // Read back as the gateway reads a message: the same tokens, counted once.
    let usage = message.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (30, 7));
}

fn chunk(delta: Value, finish: Option<&str>) -> Result<ChatChunk, ChatError> {
    let value = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Ok(ChatChunk::from_json(value.to_string().into()).unwrap())
}

#[tokio::test]
async fn a_chat_stream_is_written_as_a_messages_event_stream() {
    let usage = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}});
    let chunks = vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "He"}), None),
        chunk(json!({"content": "llo"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        Ok(ChatChunk::from_json(usage.to_string().into()).unwrap()),
    ];

    let events: Vec<Value> = message_events(stream::iter(chunks).boxed())
        .map(|event| serde_json::from_slice(event.unwrap().json()).unwrap())
        .collect()
        .await;

    let kinds: Vec<_> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[2]["delta"], json!({"type": "text_delta", "text": "He"}));
    assert_eq!(events[5]["index"], 1);
    assert_eq!(
        events[5]["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
    );
    assert_eq!(
        events[7]["delta"],
        json!({"type": "input_json_delta", "partial_json": "\"Oslo\"}"})
    );
    assert_eq!(events[9]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[9]["usage"]["input_tokens"], 12);
    assert_eq!(events[9]["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn a_failure_mid_stream_passes_through_and_ends_it() {
    let chunks = vec![
        chunk(json!({"content": "He"}), None),
        Err(ChatError::Invalid(ValidationError::body("boom"))),
        chunk(json!({"content": "never"}), None),
    ];

    let events: Vec<_> = message_events(stream::iter(chunks).boxed()).collect().await;

    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events[..3].iter().all(Result::is_ok));
    assert!(matches!(events[3], Err(ChatError::Invalid(_))));
}

#[test]
fn a_hostile_completion_costs_its_size_to_read_and_too_many_tool_calls_are_refused() {
    // A hundred thousand extra choices: read past, never kept.
    let extra = vec!["{}"; 100_000].join(",");
    let text = format!(
        "{{\"id\":\"c\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[\
         {{\"index\":0,\"finish_reason\":\"stop\",\"message\":{{\"role\":\"assistant\",\"content\":\"ok\"}}}},{extra}]}}"
    );
    let translated = message(&ChatResponse::from_json(text.into()).unwrap()).unwrap();
    let value: Value = serde_json::from_slice(&translated.json()).unwrap();
    assert_eq!(value["content"], json!([{"type": "text", "text": "ok"}]));

    let calls: Vec<Value> = (0..=views::MAX_TOOL_CALLS)
        .map(|at| json!({"id": format!("call_{at}"), "type": "function", "function": {"name": "f", "arguments": "{}"}}))
        .collect();
    let completion = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": calls}}]});
    let error = message(&ChatResponse::from_json(completion.to_string().into()).unwrap()).unwrap_err();
    assert!(
        error.problem.contains("expected at most 128 tool calls"),
        "{error}"
    );
}

#[test]
fn the_cost_of_a_translation_follows_the_number_of_values_not_only_the_size() {
    let image = format!("{{\"data\":\"{}\"}}", "A".repeat(100_000));
    let numbers = format!("[{}]", vec!["1"; 50_000].join(","));

    // One long string costs about its size; many small values, a node each.
    assert!(translation_cost(image.as_bytes()) < image.len() + 1000);
    assert!(translation_cost(numbers.as_bytes()) > numbers.len() * 30);
}

#[tokio::test]
async fn without_the_upstreams_usage_a_message_carries_placeholders_but_no_count() {
    let completion = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]});
    let whole = message(&ChatResponse::from_json(completion.to_string().into()).unwrap()).unwrap();
    let value: Value = serde_json::from_slice(&whole.json()).unwrap();
    assert_eq!(value["usage"]["output_tokens"], 0);
    assert_eq!(whole.usage(), None);

    let events: Vec<ChatChunk> =
        message_events(stream::iter(vec![chunk(json!({"content": "ok"}), Some("stop"))]).boxed())
            .map(Result::unwrap)
            .collect()
            .await;
    let delta = events
        .iter()
        .find(|event| event.kind() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.usage(), None);
    assert!(!delta.usage_is_final());
}

#[tokio::test]
async fn a_chunk_that_cannot_be_read_ends_the_stream_on_a_failure_not_a_clean_stop() {
    let odd = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": ["not", "text"]}, "finish_reason": null}]});
    let chunks = vec![
        chunk(json!({"content": "He"}), None),
        Ok(ChatChunk::from_json(odd.to_string().into()).unwrap()),
        chunk(json!({"content": "never"}), Some("stop")),
    ];

    let events: Vec<_> = message_events(stream::iter(chunks).boxed()).collect().await;

    let last = events.last().unwrap();
    assert!(
        matches!(last, Err(ChatError::InvalidUpstreamResponse(_))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .filter_map(|event| event.as_ref().ok())
            .all(|event| event.kind() != Some("message_stop"))
    );
}
