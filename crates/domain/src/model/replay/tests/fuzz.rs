//! Bytes of any shape: never a panic, and what replays round trips.

use serde_json::{Value, json};

use super::chat::{delta, finish, usage_chunk};
use super::messages::anthropic_stream;
use super::{parsed, stored};
use crate::model::endpoint::Endpoint;
use crate::model::replay::{chunks_from_whole, whole_from_chunks};
use bytes::Bytes;

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

/// An event built from the members each API reads, and members it merges
/// without knowing them, each maybe of the wrong type or missing.
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
            "function": {"name": pick(&[json!("f")]), "arguments": pick(&[json!("{\"a\""), json!(":1}")])},
            "extra_content": pick(&[Value::Null, json!({"google": {"thought_signature": "s"}})])});
        let said = json!({"role": pick(&[json!("assistant"), Value::Null]),
        "content": pick(&[json!("hi"), Value::Null]), "refusal": pick(&[Value::Null, json!("no")]),
        "tool_calls": pick(&[json!([call]), Value::Null]),
        "function_call": pick(&[Value::Null, json!({"name": "g", "arguments": "{}"})]),
        "reasoning_content": pick(&[Value::Null, json!("think"), json!("")]),
        "annotations": pick(&[Value::Null, json!([]), json!([{"type": "url_citation"}])]),
        "audio": pick(&[
            Value::Null,
            json!({"id": "audio_1", "data": "AAAA"}),
            json!({"transcript": "t", "data": null}),
            json!({"expires_at": 1}),
        ])});
        let choice = json!({"index": index, "delta": said,
            "logprobs": pick(&[Value::Null, json!({"content": [{"token": "a"}]})]),
            "finish_reason": pick(&[Value::Null, json!("stop")]),
            "native_finish_reason": pick(&[Value::Null, json!("STOP")])});
        return json!({"id": pick(&[json!("chatcmpl-1")]), "model": "m", "created": 1,
            "provider": pick(&[json!("openai"), Value::Null]),
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
        json!({"stop_reason": "end_turn", "stop_sequence": null, "container": {"id": "c"}}),
    ]);
    let message = pick(&[json!({"id": "m", "type": "message", "content": [], "usage": {"input_tokens": 1}})]);
    json!({"type": kind, "index": index, "content_block": block, "delta": delta, "message": message,
        "usage": pick(&[json!({"output_tokens": 3}), Value::Null]),
        "context_management": pick(&[Value::Null, json!({"applied_edits": []})])})
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
