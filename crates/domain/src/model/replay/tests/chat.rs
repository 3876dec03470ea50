//! Chat completions: chunks as one completion, and back.

use serde_json::{Value, json};

use super::{chunks_of, parsed, whole_of};
use crate::model::endpoint::Endpoint;
use crate::model::replay::{chunks_from_whole, whole_from_chunks};
use bytes::Bytes;

/// An OpenAI chunk with the members every chunk of a stream repeats.
fn chunk(choices: Value) -> Value {
    json!({"id": "chatcmpl-B9", "object": "chat.completion.chunk", "created": 1_741_569_952,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
        "choices": choices, "usage": null})
}

pub(super) fn delta(index: u64, delta: Value) -> Value {
    chunk(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]))
}

pub(super) fn finish(index: u64, reason: &str) -> Value {
    chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}]))
}

pub(super) fn usage_chunk() -> Value {
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

fn chat_error(events: &[&str]) -> String {
    let events: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::copy_from_slice(event.as_bytes()))
        .collect();
    whole_from_chunks(Endpoint::Chat, &events)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_chat_stream_that_does_not_hold_together_is_refused_with_where_and_why() {
    let cases = [
        (chat_error(&[]), "the stream: no chunk"),
        (chat_error(&["{}", "[1]"]), "chunk 1: not a JSON object"),
        (chat_error(&["{\"choices\": [{\"index\": -1}]}"]), "chunk 0:"),
        (
            chat_error(&["{\"choices\": [{\"delta\": {\"content\": 5}}]}"]),
            "chunk 0:",
        ),
        (
            chat_error(&["{\"choices\": [{\"delta\": [\"content\"]}]}"]),
            "chunk 0: a value of the wrong type or content, expected a JSON object",
        ),
    ];
    for (error, expected) in cases {
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
    }
}
