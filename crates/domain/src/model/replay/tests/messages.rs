//! Anthropic Messages: events as one message, and back.

use serde_json::{Value, json};

use super::{chunks_of, parsed, stored, whole_of};
use crate::model::endpoint::Endpoint;
use crate::model::replay::{chunks_from_whole, whole_from_chunks};
use bytes::Bytes;

/// An Anthropic stream: thinking, text and a tool call.
pub(super) fn anthropic_stream() -> Vec<Value> {
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

/// The container a code execution ran in, which a `message_delta` gives.
fn container() -> Value {
    json!({"id": "container_011CZ6zWu2Tk7vXA", "expires_at": "2025-10-01T12:34:56.789Z"})
}

/// Context editing, which a `message_delta` reports.
fn context_management() -> Value {
    json!({"applied_edits": [{"type": "clear_tool_uses_20250919", "cleared_tool_uses": 2,
        "cleared_input_tokens": 5000}]})
}

/// The message of a code execution with context editing: the container
/// and the edits are the `message_delta`'s.
fn code_execution_message() -> Value {
    json!({"id": "msg_01Cx", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "The mean is 3."}], "stop_reason": "end_turn", "stop_sequence": null,
        "container": container(), "usage": {"input_tokens": 1520, "output_tokens": 42},
        "context_management": context_management()})
}

#[test]
fn what_a_message_delta_gives_beside_the_stop_is_set_on_the_message() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_01Cx", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
            "container": null, "usage": {"input_tokens": 1520, "output_tokens": 3}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "The mean is 3."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null,
            "container": container()}, "usage": {"output_tokens": 42},
            "context_management": context_management()}),
        json!({"type": "message_stop"}),
    ];

    let whole = whole_of(Endpoint::Messages, &events);

    assert_eq!(whole, code_execution_message());
}

#[test]
fn a_message_streams_its_container_and_context_edits_in_the_message_delta() {
    let events = chunks_of(Endpoint::Messages, &code_execution_message());

    // The Anthropic SDKs take both from the `message_delta`, over the start's.
    assert_eq!(
        events.iter().rev().nth(1),
        Some(
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null,
            "container": container()}, "usage": {"output_tokens": 42},
            "context_management": context_management()})
        )
    );
}

#[test]
fn a_block_of_an_unknown_type_round_trips_whole_and_a_delta_of_an_unknown_type_is_refused() {
    let compaction = json!({"type": "compaction", "content": "The user asked for the mean of 1..5."});
    let whole = json!({"id": "msg_4", "type": "message", "role": "assistant", "model": "claude-opus-4-5",
        "content": [compaction, {"type": "text", "text": "3."}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 2}});

    let events = chunks_of(Endpoint::Messages, &whole);
    let again = whole_of(Endpoint::Messages, &events);
    let refused = messages_error(&[
        events[0].clone(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "compaction"}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "compaction_delta", "content": "The user asked"}}),
    ]);

    assert_eq!(
        events[1..4],
        [
            json!({"type": "content_block_start", "index": 0, "content_block": compaction}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ]
    );
    assert_eq!(again, whole);
    assert!(
        refused.ends_with("event 2: a delta of a type the gateway does not assemble"),
        "{refused}"
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
        code_execution_message(),
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

fn messages_error(events: &[Value]) -> String {
    whole_from_chunks(Endpoint::Messages, &stored(events))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_messages_stream_that_does_not_hold_together_is_refused_with_where_and_why() {
    let start = json!({"type": "message_start", "message": {"id": "m", "type": "message", "content": []}});
    let tool = json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}});
    let cases = [
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
                start.clone(),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"text": ""}}),
            ]),
            "block 0: missing field `type`",
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
