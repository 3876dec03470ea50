use serde_json::{Value, json};

use super::*;

fn stored(events: &[Value]) -> Vec<Bytes> {
    events
        .iter()
        .map(|event| Bytes::from(event.to_string()))
        .collect()
}

fn parsed(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn whole_of(endpoint: Endpoint, events: &[Value]) -> Value {
    parsed(&whole_from_chunks(endpoint, &stored(events)).unwrap())
}

fn chunks_of(endpoint: Endpoint, whole: &Value) -> Vec<Value> {
    chunks_from_whole(endpoint, &Bytes::from(whole.to_string()))
        .unwrap()
        .iter()
        .map(parsed)
        .collect()
}

/// An OpenAI chunk with the members every chunk of a stream repeats.
fn chunk(choices: Value) -> Value {
    json!({"id": "chatcmpl-B9", "object": "chat.completion.chunk", "created": 1_741_569_952,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
        "choices": choices, "usage": null})
}

fn delta(index: u64, delta: Value) -> Value {
    chunk(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]))
}

fn finish(index: u64, reason: &str) -> Value {
    chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}]))
}

fn usage_chunk() -> Value {
    let mut last = chunk(json!([]));
    last["usage"] = json!({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}});
    last
}

/// What the streamed answer's whole has around its choices.
fn completion(choices: Value, usage: Option<Value>) -> Value {
    let mut whole = json!({"id": "chatcmpl-B9", "object": "chat.completion", "created": 1_741_569_952,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
        "choices": choices});
    if let Some(usage) = usage {
        whole["usage"] = usage;
    }
    whole
}

#[test]
fn a_streamed_chat_answer_is_replayed_as_the_completion_it_makes() {
    let events = [
        delta(0, json!({"role": "assistant", "content": "", "refusal": null})),
        delta(0, json!({"content": "Hello"})),
        delta(0, json!({"content": "! How can I"})),
        delta(0, json!({"content": " help?"})),
        finish(0, "stop"),
        usage_chunk(),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole,
        completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?",
                "refusal": null}, "logprobs": null, "finish_reason": "stop"}]),
            Some(usage_chunk()["usage"].clone())
        )
    );
}

#[test]
fn tool_calls_split_across_deltas_are_merged_by_their_index() {
    let events = [
        delta(
            0,
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_DdmO",
            "type": "function", "function": {"name": "get_weather", "arguments": ""}}], "refusal": null}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"lo"}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "cation\": \"Par"}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 1, "id": "call_Xk2p", "type": "function",
            "function": {"name": "get_time", "arguments": ""}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\":"}}]}),
        ),
        // A call continued after another started, with no type: merged, typed `function`.
        delta(
            0,
            json!({"tool_calls": [{"index": 2, "id": "call_3", "function": {"name": "noop"}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"CET\"}"}}]}),
        ),
        finish(0, "tool_calls"),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole,
        completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [
                {"id": "call_DdmO", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}},
                {"id": "call_Xk2p", "type": "function",
                    "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}},
                {"id": "call_3", "type": "function", "function": {"name": "noop", "arguments": ""}}
            ]}, "logprobs": null, "finish_reason": "tool_calls"}]),
            None
        )
    );
}

#[test]
fn interleaved_choices_are_replayed_in_index_order_with_their_logprobs_and_usage() {
    let token = |text: &str| json!({"token": text, "logprob": -0.5, "bytes": [1], "top_logprobs": []});
    let with_logprobs = |index: u64, content: &str| {
        chunk(json!([{"index": index, "delta": {"content": content},
            "logprobs": {"content": [token(content)], "refusal": null}, "finish_reason": null}]))
    };
    let events = [
        delta(1, json!({"role": "assistant", "content": ""})),
        delta(0, json!({"role": "assistant", "content": ""})),
        with_logprobs(1, "Bonjour"),
        delta(0, json!({"content": "Hello"})),
        with_logprobs(1, " !"),
        finish(0, "length"),
        delta(0, json!({"content": " ignored? no: kept"})),
        finish(1, "stop"),
        usage_chunk(),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole,
        completion(
            json!([
                {"index": 0, "message": {"role": "assistant", "content": "Hello ignored? no: kept"},
                    "logprobs": null, "finish_reason": "length"},
                {"index": 1, "message": {"role": "assistant", "content": "Bonjour !"},
                    "logprobs": {"content": [token("Bonjour"), token(" !")]}, "finish_reason": "stop"}
            ]),
            Some(usage_chunk()["usage"].clone())
        )
    );
}

#[test]
fn a_refusal_and_a_legacy_function_call_are_concatenated_like_content() {
    let events = [
        delta(0, json!({"role": "assistant", "refusal": "I can't"})),
        delta(0, json!({"refusal": " help with that."})),
        delta(
            0,
            json!({"function_call": {"name": "lookup", "arguments": "{\"q\""}}),
        ),
        delta(0, json!({"function_call": {"arguments": ":1}"}})),
        finish(0, "function_call"),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole["choices"][0]["message"],
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that.",
            "function_call": {"name": "lookup", "arguments": "{\"q\":1}"}})
    );
}

#[test]
fn a_chat_completion_is_replayed_as_chunks_a_client_can_read() {
    let whole = completion(
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}]),
        Some(json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})),
    );

    let chunks = chunks_of(Endpoint::Chat, &whole);

    let head = |choices: Value| {
        json!({"id": "chatcmpl-B9", "object": "chat.completion.chunk", "created": 1_741_569_952,
            "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
            "choices": choices})
    };
    let mut last = head(json!([]));
    last["usage"] = whole["usage"].clone();
    assert_eq!(
        chunks,
        vec![
            head(
                json!([{"index": 0, "delta": {"role": "assistant", "content": "Hi", "refusal": null},
                "logprobs": null, "finish_reason": null}])
            ),
            head(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}, "logprobs": null, "finish_reason": null}])
            ),
            head(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}])),
            last,
        ]
    );
}

/// Chat completions in the shape [`whole_from_chunks`] writes.
fn canonical_completions() -> Vec<Value> {
    let token = json!({"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []});
    vec![
        completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}]),
            Some(json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})),
        ),
        completion(
            json!([
                {"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "b", "arguments": ""}}]},
                    "logprobs": null, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": "Hi", "refusal": "no",
                    "function_call": {"name": "old", "arguments": "{}"}},
                    "logprobs": {"content": [token]}, "finish_reason": "length"},
            ]),
            None,
        ),
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
    ]
}

#[test]
fn a_chat_completion_survives_a_round_trip_through_chunks() {
    for whole in canonical_completions() {
        let chunks: Vec<Bytes> = chunks_from_whole(Endpoint::Chat, &Bytes::from(whole.to_string())).unwrap();

        let again = parsed(&whole_from_chunks(Endpoint::Chat, &chunks).unwrap());

        assert_eq!(again, whole);
    }
}

#[test]
fn chat_chunks_survive_a_round_trip_through_the_completion() {
    for whole in canonical_completions() {
        let chunks = chunks_from_whole(Endpoint::Chat, &Bytes::from(whole.to_string())).unwrap();

        let rebuilt = whole_from_chunks(Endpoint::Chat, &chunks).unwrap();
        let again = chunks_from_whole(Endpoint::Chat, &rebuilt).unwrap();

        assert_eq!(
            again.iter().map(parsed).collect::<Vec<_>>(),
            chunks.iter().map(parsed).collect::<Vec<_>>()
        );
    }
}

#[test]
fn huge_indexes_are_keys_not_allocations() {
    let events = [
        chunk(json!([{"index": u64::MAX, "delta": {"content": "far"}}])),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 1_000_000_000u64, "id": "c",
            "function": {"name": "f", "arguments": "{}"}}]}}]),
        ),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(whole["choices"][0]["message"]["tool_calls"][0]["id"], "c");
    assert_eq!(whole["choices"][1]["index"], u64::MAX);
    assert_eq!(whole["choices"][1]["message"]["content"], "far");
}

/// An Anthropic stream: thinking, text and a tool call.
fn anthropic_stream() -> Vec<Value> {
    let block_delta =
        |index: u64, delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
    vec![
        json!({"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 2}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "ping"}),
        block_delta(
            0,
            json!({"type": "thinking_delta", "thinking": "The user asks about "}),
        ),
        block_delta(0, json!({"type": "thinking_delta", "thinking": "the weather."})),
        block_delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}),
        ),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        block_delta(1, json!({"type": "text_delta", "text": "Okay, let's check "})),
        block_delta(
            1,
            json!({"type": "text_delta", "text": "the weather for San Francisco, CA:"}),
        ),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
        block_delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"location\":"}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": " \"San Fra"}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "ncisco, CA\", \"unit\": \"f"}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "ahrenheit\"}"}),
        ),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn an_anthropic_stream_is_replayed_as_the_message_it_makes() {
    let whole = whole_of(Endpoint::Messages, &anthropic_stream());

    assert_eq!(
        whole,
        json!({"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [
                {"type": "thinking", "thinking": "The user asks about the weather.",
                    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
                {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": 89}})
    );
}

#[test]
fn citations_are_collected_into_their_text_block_and_other_blocks_kept_as_started() {
    let citation = json!({"type": "char_location", "cited_text": "The grass is green.", "document_index": 0,
        "document_title": "Facts", "start_char_index": 0, "end_char_index": 20});
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-opus-4-1", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "citations_delta", "citation": citation}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Green."}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 7, "input_tokens": null, "server_tool_use": {"web_search_requests": 0}}}),
        json!({"type": "message_stop"}),
    ];

    let whole = whole_of(Endpoint::Messages, &events);

    assert_eq!(
        whole,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-1", "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"},
                {"type": "text", "text": "Green.", "citations": [citation]}
            ], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 7, "server_tool_use": {"web_search_requests": 0}}})
    );
}

#[test]
fn a_message_is_replayed_as_the_events_anthropic_streams() {
    let whole = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "thinking", "thinking": "Hm.", "signature": "c2ln"},
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 9}});

    let events = chunks_of(Endpoint::Messages, &whole);

    let mut started = whole.clone();
    started["content"] = json!([]);
    started["stop_reason"] = Value::Null;
    assert_eq!(
        events,
        vec![
            json!({"type": "message_start", "message": started}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm."}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "c2ln"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": "{\"a\":[1,2]}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ]
    );
}

/// Messages in the shape [`whole_from_chunks`] writes.
fn canonical_messages() -> Vec<Value> {
    vec![
        whole_of(Endpoint::Messages, &anthropic_stream()),
        json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-opus-4-1", "content": [
                {"type": "redacted_thinking", "data": "EmwK"},
                {"type": "text", "text": "Green.", "citations": [{"type": "char_location", "cited_text": "x"}]},
                {"type": "text", "text": "", "citations": null},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
            ], "stop_reason": "stop_sequence", "stop_sequence": "END", "container": null,
            "usage": {"input_tokens": 10, "output_tokens": 7, "service_tier": "standard"}}),
        json!({"id": "msg_3", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": "max_tokens", "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 0}}),
    ]
}

#[test]
fn a_message_survives_a_round_trip_through_events() {
    for whole in canonical_messages() {
        let events = chunks_from_whole(Endpoint::Messages, &Bytes::from(whole.to_string())).unwrap();

        let again = parsed(&whole_from_chunks(Endpoint::Messages, &events).unwrap());

        assert_eq!(again, whole);
    }
}

#[test]
fn message_events_survive_a_round_trip_through_the_message() {
    for whole in canonical_messages() {
        let events = chunks_from_whole(Endpoint::Messages, &Bytes::from(whole.to_string())).unwrap();

        let rebuilt = whole_from_chunks(Endpoint::Messages, &events).unwrap();
        let again = chunks_from_whole(Endpoint::Messages, &rebuilt).unwrap();

        assert_eq!(
            again.iter().map(parsed).collect::<Vec<_>>(),
            events.iter().map(parsed).collect::<Vec<_>>()
        );
    }
}

#[test]
fn apis_with_no_other_form_are_refused_by_name() {
    for endpoint in [Endpoint::Embeddings, Endpoint::CountTokens, Endpoint::Responses] {
        let whole = whole_from_chunks(endpoint, &[Bytes::from_static(b"{}")]).unwrap_err();
        let chunks = chunks_from_whole(endpoint, &Bytes::from_static(b"{}")).unwrap_err();

        assert!(matches!(whole, ReplayError::Unsupported { .. }), "{whole}");
        assert_eq!(
            chunks.to_string(),
            format!("`{endpoint}` answers cannot be replayed as a stream")
        );
    }
}

fn chat_error(events: &[&str]) -> String {
    let events: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::copy_from_slice(event.as_bytes()))
        .collect();
    whole_from_chunks(Endpoint::Chat, &events)
        .unwrap_err()
        .to_string()
}

fn messages_error(events: &[Value]) -> String {
    whole_from_chunks(Endpoint::Messages, &stored(events))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_stream_that_does_not_hold_together_is_refused_with_where_and_why() {
    let start = json!({"type": "message_start", "message": {"id": "m", "type": "message", "content": []}});
    let tool = json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}});
    let cases = [
        (chat_error(&[]), "the stream: no chunk"),
        (chat_error(&["{}", "[1]"]), "chunk 1: not a JSON object"),
        (chat_error(&["{\"choices\": [{\"index\": -1}]}"]), "chunk 0:"),
        (
            chat_error(&["{\"choices\": [{\"delta\": {\"content\": 5}}]}"]),
            "chunk 0:",
        ),
        (messages_error(&[json!({"type": "ping"})]), "no `message_start`"),
        (
            messages_error(&[start.clone(), start.clone()]),
            "event 1: a second `message_start`",
        ),
        (
            messages_error(&[
                start.clone(),
                json!({"type": "content_block_delta", "index": 3,
                "delta": {"type": "text_delta", "text": "x"}}),
            ]),
            "event 1: a delta for a block never started",
        ),
        (
            messages_error(&[
                start.clone(),
                tool.clone(),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            ]),
            "block 0: tool input whose pieces do not make JSON",
        ),
        (
            messages_error(&[
                start.clone(),
                tool.clone(),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "future_delta", "x": 1}}),
            ]),
            "event 2: a delta of a type the gateway does not assemble",
        ),
        (
            messages_error(&[start.clone(), tool.clone(), tool]),
            "event 2: a block started twice",
        ),
        (
            messages_error(&[
                start,
                json!({"type": "error", "error": {"type": "overloaded_error"}}),
            ]),
            "event 1: the stream ended on an error",
        ),
    ];
    for (error, expected) in cases {
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
    }
}

#[test]
fn a_whole_answer_of_the_wrong_shape_is_refused() {
    let cases = [
        (Endpoint::Chat, "not json"),
        (Endpoint::Chat, "[]"),
        (
            Endpoint::Chat,
            r#"{"choices": [{"message": {"content": [{"type": "text"}]}}]}"#,
        ),
        (Endpoint::Messages, r#"{"content": "a string"}"#),
        (
            Endpoint::Messages,
            r#"{"content": [{"type": "text", "text": 5}]}"#,
        ),
        (Endpoint::Messages, r#"{"content": [{"no": "type"}]}"#),
    ];
    for (endpoint, whole) in cases {
        let result = chunks_from_whole(endpoint, &Bytes::from(whole));

        assert!(
            matches!(result, Err(ReplayError::Malformed(_))),
            "{whole}: {result:?}"
        );
    }
}

/// A value of any JSON type, often one the member does not take.
fn any_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(..if depth > 2 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!([0, 1, 2, 1_000_000_000u64, u64::MAX, -1, 1.5])[rng.usize(..7)].clone(),
        3 => json!(["", "x", "{", "{\"a\":", "}", "null", "text_delta", "é\u{0}"])[rng.usize(..8)].clone(),
        4 | 5 => json!("{}"),
        6 => Value::Array((0..rng.usize(..3)).map(|_| any_value(rng, depth + 1)).collect()),
        _ => {
            let names = [
                "type", "index", "text", "input", "content", "delta", "usage", "id", "name",
            ];
            Value::Object(
                (0..rng.usize(..4))
                    .map(|_| {
                        (
                            names[rng.usize(..names.len())].to_owned(),
                            any_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// An event built from the members each API reads, each maybe of the wrong
/// type or missing.
fn fuzzed_event(rng: &mut fastrand::Rng, endpoint: Endpoint) -> Value {
    let mut pick = |options: &[Value]| {
        if rng.u8(..16) == 0 {
            any_value(rng, 0)
        } else {
            options[rng.usize(..options.len())].clone()
        }
    };
    let index = pick(&[json!(0), json!(1), json!(1_000_000_000u64)]);
    if endpoint == Endpoint::Chat {
        let call = json!({"index": index, "id": pick(&[json!("c"), Value::Null]),
            "function": {"name": pick(&[json!("f")]), "arguments": pick(&[json!("{\"a\""), json!(":1}")])}});
        let said = json!({"role": pick(&[json!("assistant"), Value::Null]),
            "content": pick(&[json!("hi"), Value::Null]), "refusal": pick(&[Value::Null, json!("no")]),
            "tool_calls": pick(&[json!([call]), Value::Null]),
            "function_call": pick(&[Value::Null, json!({"name": "g", "arguments": "{}"})])});
        let choice = json!({"index": index, "delta": said,
            "logprobs": pick(&[Value::Null, json!({"content": [{"token": "a"}]})]),
            "finish_reason": pick(&[Value::Null, json!("stop")])});
        return json!({"id": pick(&[json!("chatcmpl-1")]), "model": "m", "created": 1,
            "choices": pick(&[json!([choice]), json!([])]),
            "usage": pick(&[Value::Null, json!({"total_tokens": 1})])});
    }
    let kind = pick(&[
        json!("message_start"),
        json!("content_block_start"),
        json!("content_block_delta"),
        json!("content_block_delta"),
        json!("content_block_stop"),
        json!("message_delta"),
        json!("message_stop"),
        json!("ping"),
    ]);
    let block = pick(&[
        json!({"type": "text", "text": ""}),
        json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        json!({"type": "thinking", "thinking": ""}),
        json!({"type": "image"}),
    ]);
    let delta = pick(&[
        json!({"type": "text_delta", "text": "a"}),
        json!({"type": "input_json_delta", "partial_json": "{\"a\":"}),
        json!({"type": "input_json_delta", "partial_json": "1}"}),
        json!({"type": "thinking_delta", "thinking": "t"}),
        json!({"type": "signature_delta", "signature": "s"}),
        json!({"type": "citations_delta", "citation": {"type": "x"}}),
        json!({"stop_reason": "end_turn", "stop_sequence": null}),
    ]);
    let message = pick(&[json!({"id": "m", "type": "message", "content": [], "usage": {"input_tokens": 1}})]);
    json!({"type": kind, "index": index, "content_block": block, "delta": delta, "message": message,
        "usage": pick(&[json!({"output_tokens": 3}), Value::Null])})
}

/// Bytes of one event broken the ways stored bytes break: cut short, a
/// byte changed, or nested deeper than a parser goes.
fn broken(rng: &mut fastrand::Rng, event: &Value) -> Bytes {
    let mut bytes = event.to_string().into_bytes();
    match rng.u8(..6) {
        0 => bytes.truncate(rng.usize(..=bytes.len())),
        1 if !bytes.is_empty() => {
            let at = rng.usize(..bytes.len());
            bytes[at] = b"{}[]\",:0\\"[rng.usize(..9)];
        }
        2 => {
            let depth = 10_000;
            bytes = format!("{{\"choices\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        _ => {}
    }
    Bytes::from(bytes)
}

#[test]
fn arbitrary_event_sequences_never_panic_and_what_replays_round_trips() {
    let mut replayed = [0; 2];
    for endpoint in [Endpoint::Chat, Endpoint::Messages] {
        for seed in 0..3_000 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let events: Vec<Bytes> = (0..rng.usize(..12))
                .map(|at| {
                    let mut event = fuzzed_event(&mut rng, endpoint);
                    // Most streams open as they should, to reach past the start.
                    if at == 0 && endpoint == Endpoint::Messages && rng.u8(..4) != 0 {
                        event["type"] = json!("message_start");
                    }
                    if rng.u8(..8) == 0 {
                        broken(&mut rng, &event)
                    } else {
                        Bytes::from(event.to_string())
                    }
                })
                .collect();

            let Ok(whole) = whole_from_chunks(endpoint, &events) else {
                continue;
            };
            // A whole answer replayed as a stream replays as the same answer.
            if let Ok(chunks) = chunks_from_whole(endpoint, &whole) {
                let again = whole_from_chunks(endpoint, &chunks).unwrap();
                assert_eq!(parsed(&again), parsed(&whole), "seed {seed}");
                replayed[usize::from(endpoint == Endpoint::Messages)] += 1;
            }
        }
    }
    // The fuzzing reaches past the first error often enough to mean something.
    assert!(
        replayed.iter().all(|count| *count > 300),
        "replayed: {replayed:?}"
    );
}

#[test]
fn arbitrary_whole_answers_never_panic() {
    for endpoint in [Endpoint::Chat, Endpoint::Messages] {
        for seed in 0..2_000 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut whole = any_value(&mut rng, 0);
            if rng.bool() {
                whole = json!({"choices": [{"index": any_value(&mut rng, 0),
                    "message": any_value(&mut rng, 0), "logprobs": any_value(&mut rng, 0)}],
                    "content": [any_value(&mut rng, 0), {"type": "text", "text": any_value(&mut rng, 0)},
                        {"type": "tool_use", "input": any_value(&mut rng, 0)}],
                    "usage": any_value(&mut rng, 0)});
            }
            let bytes = broken(&mut rng, &whole);

            if let Ok(chunks) = chunks_from_whole(endpoint, &bytes) {
                // What is streamed is read back.
                whole_from_chunks(endpoint, &chunks).unwrap();
            }
        }
    }
}

#[test]
fn real_streams_cut_reordered_or_broken_never_panic() {
    let chat = [
        delta(0, json!({"role": "assistant", "content": ""})),
        delta(
            0,
            json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\""}}]}),
        ),
        delta(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        ),
        finish(0, "tool_calls"),
        usage_chunk(),
    ];
    for (endpoint, stream) in [
        (Endpoint::Chat, chat.to_vec()),
        (Endpoint::Messages, anthropic_stream()),
    ] {
        for seed in 0..2_000 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut events = stream.clone();
            // At most three of five or more events go: some are left.
            for _ in 0..rng.usize(1..4) {
                let (at, other) = (rng.usize(..events.len()), rng.usize(..events.len()));
                match rng.u8(..3) {
                    0 => drop(events.remove(at)),
                    1 => events.insert(at, events[other].clone()),
                    _ => events.swap(at, other),
                }
            }
            let mut bytes = stored(&events);
            let at = rng.usize(..bytes.len());
            bytes[at] = broken(&mut rng, &events[at]);

            if let Ok(whole) = whole_from_chunks(endpoint, &bytes) {
                let chunks = chunks_from_whole(endpoint, &whole).unwrap();
                assert_eq!(
                    parsed(&whole_from_chunks(endpoint, &chunks).unwrap()),
                    parsed(&whole)
                );
            }
        }
    }
}
