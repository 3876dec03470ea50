//! Chat completions: the members a provider or a newer API adds beyond
//! those the gateway assembles (DeepSeek's `reasoning_content`,
//! OpenRouter's `reasoning`, web search `annotations`, `audio`, a provider's
//! members beside the choices), kept both ways.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{chunks_of, parsed, stored, whole_of};
use crate::model::endpoint::Endpoint;
use crate::model::replay::{chunks_from_whole, whole_from_chunks};

/// A DeepSeek reasoner chunk: its members around one choice.
fn deepseek_chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "0f2b9e4c-6a7d-4c1e-9b55-2d3f8a1c7e90", "object": "chat.completion.chunk",
        "created": 1_738_000_000, "model": "deepseek-reasoner", "system_fingerprint": "fp_7e73fd9a08_prod0225",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]})
}

fn deepseek_usage() -> Value {
    json!({"prompt_tokens": 12, "completion_tokens": 42, "total_tokens": 54,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 30},
        "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 12})
}

/// A DeepSeek reasoner stream: the reasoning in `reasoning_content` deltas
/// while `content` is `null`, then the answer while `reasoning_content` is
/// `null`, the usage with the finish reason.
fn deepseek_stream() -> Vec<Value> {
    let mut last = deepseek_chunk(json!({"content": "", "reasoning_content": null}), json!("stop"));
    last["usage"] = deepseek_usage();
    vec![
        deepseek_chunk(
            json!({"role": "assistant", "content": null, "reasoning_content": ""}),
            Value::Null,
        ),
        deepseek_chunk(json!({"content": null, "reasoning_content": "Okay"}), Value::Null),
        deepseek_chunk(
            json!({"content": null, "reasoning_content": ", the user greets me."}),
            Value::Null,
        ),
        deepseek_chunk(
            json!({"content": null, "reasoning_content": " I should greet back."}),
            Value::Null,
        ),
        deepseek_chunk(
            json!({"content": "Hello", "reasoning_content": null}),
            Value::Null,
        ),
        deepseek_chunk(
            json!({"content": "! How can I help?", "reasoning_content": null}),
            Value::Null,
        ),
        last,
    ]
}

/// The completion DeepSeek answers a JSON request with.
fn deepseek_completion() -> Value {
    json!({"id": "0f2b9e4c-6a7d-4c1e-9b55-2d3f8a1c7e90", "object": "chat.completion", "created": 1_738_000_000,
        "model": "deepseek-reasoner", "system_fingerprint": "fp_7e73fd9a08_prod0225",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?",
            "reasoning_content": "Okay, the user greets me. I should greet back."},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": deepseek_usage()})
}

#[test]
fn deepseek_reasoning_content_deltas_are_concatenated_into_the_message() {
    let whole = whole_of(Endpoint::Chat, &deepseek_stream());

    assert_eq!(whole, deepseek_completion());
}

#[test]
fn a_message_with_reasoning_content_streams_it_in_its_first_delta() {
    let chunks = chunks_of(Endpoint::Chat, &deepseek_completion());

    let chunk = |choices: Value| {
        json!({"id": "0f2b9e4c-6a7d-4c1e-9b55-2d3f8a1c7e90", "object": "chat.completion.chunk",
            "created": 1_738_000_000, "model": "deepseek-reasoner", "system_fingerprint": "fp_7e73fd9a08_prod0225",
            "choices": choices})
    };
    let mut last = chunk(json!([]));
    last["usage"] = deepseek_usage();
    assert_eq!(
        chunks,
        vec![
            chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": "Hello! How can I help?",
                "reasoning_content": "Okay, the user greets me. I should greet back."},
                "logprobs": null, "finish_reason": null}])
            ),
            chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])),
            last,
        ]
    );
}

/// A citation of a web search, as `gpt-4o-search-preview` gives them.
fn url_citation(start: u64, end: u64, title: &str, url: &str) -> Value {
    json!({"type": "url_citation", "url_citation": {"start_index": start, "end_index": end,
        "title": title, "url": url}})
}

fn search_chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-BV7g", "object": "chat.completion.chunk", "created": 1_746_800_000,
        "model": "gpt-4o-search-preview-2025-03-11", "system_fingerprint": "",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]})
}

fn search_completion() -> Value {
    let paris = url_citation(
        17,
        71,
        "Paris - Wikipedia",
        "https://en.wikipedia.org/wiki/Paris?utm_source=openai",
    );
    let meteo = url_citation(
        72,
        118,
        "Paris weather",
        "https://meteofrance.com/paris?utm_source=openai",
    );
    json!({"id": "chatcmpl-BV7g", "object": "chat.completion", "created": 1_746_800_000,
        "model": "gpt-4o-search-preview-2025-03-11", "system_fingerprint": "",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "Paris is sunny. ([en.wikipedia.org](https://en.wikipedia.org/wiki/Paris)) ([meteofrance.com](https://meteofrance.com/paris))",
            "refusal": null, "annotations": [paris, meteo]},
            "logprobs": null, "finish_reason": "stop"}]})
}

#[test]
fn web_search_annotations_from_several_deltas_are_concatenated_in_order() {
    let whole = search_completion();
    let annotations = &whole["choices"][0]["message"]["annotations"];
    let events = [
        search_chunk(
            json!({"role": "assistant", "content": "", "refusal": null, "annotations": []}),
            Value::Null,
        ),
        search_chunk(json!({"content": "Paris is sunny. "}), Value::Null),
        search_chunk(
            json!({"content": "([en.wikipedia.org](https://en.wikipedia.org/wiki/Paris))"}),
            Value::Null,
        ),
        search_chunk(json!({"annotations": [annotations[0]]}), Value::Null),
        search_chunk(
            json!({"content": " ([meteofrance.com](https://meteofrance.com/paris))"}),
            Value::Null,
        ),
        search_chunk(json!({"annotations": [annotations[1]]}), Value::Null),
        search_chunk(json!({}), json!("stop")),
    ];

    let replayed = whole_of(Endpoint::Chat, &events);

    assert_eq!(replayed, whole);
}

#[test]
fn a_message_with_annotations_streams_them_in_its_first_delta() {
    let whole = search_completion();

    let chunks = chunks_of(Endpoint::Chat, &whole);

    let message = &whole["choices"][0]["message"];
    assert_eq!(
        chunks,
        vec![
            search_chunk(
                json!({"role": "assistant", "content": message["content"], "refusal": null,
                    "annotations": message["annotations"]}),
                Value::Null
            ),
            search_chunk(json!({}), json!("stop")),
        ]
    );
}

/// An answer in audio, streamed as `gpt-4o-audio-preview` does: the
/// transcript and the base64 data in pieces, the id once, the expiry last.
fn audio_stream() -> Vec<Value> {
    let delta = |delta: Value| {
        json!({"id": "chatcmpl-AQ3L", "object": "chat.completion.chunk", "created": 1_730_764_995,
            "model": "gpt-4o-audio-preview-2024-10-01", "system_fingerprint": "fp_6e2d124157",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    };
    let mut last = delta(json!({}));
    last["choices"][0]["finish_reason"] = json!("stop");
    vec![
        delta(json!({"role": "assistant", "content": null, "refusal": null,
            "audio": {"id": "audio_672960c3a3e48190aed70377a7d6c941", "data": "CAAIAAkA"}})),
        delta(json!({"audio": {"transcript": "Hello"}})),
        delta(json!({"audio": {"data": "CgAPABEA"}})),
        delta(json!({"audio": {"transcript": " there!"}})),
        delta(json!({"audio": {"data": "EQARABMA"}})),
        delta(json!({"audio": {"expires_at": 1_730_768_595}})),
        last,
    ]
}

fn audio_completion() -> Value {
    json!({"id": "chatcmpl-AQ3L", "object": "chat.completion", "created": 1_730_764_995,
        "model": "gpt-4o-audio-preview-2024-10-01", "system_fingerprint": "fp_6e2d124157",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "audio": {"id": "audio_672960c3a3e48190aed70377a7d6c941", "data": "CAAIAAkACgAPABEAEQARABMA",
                "transcript": "Hello there!", "expires_at": 1_730_768_595}},
            "logprobs": null, "finish_reason": "stop"}]})
}

#[test]
fn audio_pieces_are_merged_into_one_audio_object() {
    let whole = whole_of(Endpoint::Chat, &audio_stream());

    assert_eq!(whole, audio_completion());
}

/// What Portkey streams from Perplexity: its name and the search's
/// citations in every chunk, beside the choices.
fn perplexity_chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "3c1e7a52-94d0-4b8f-8d3e-6f2a0b9c4d11", "object": "chat.completion.chunk",
        "created": 1_746_900_000, "model": "sonar", "provider": "perplexity-ai",
        "citations": ["https://www.britannica.com/place/Paris", "https://en.wikipedia.org/wiki/Paris"],
        "choices": [{"delta": delta, "index": 0, "finish_reason": finish_reason}]})
}

#[test]
fn a_providers_members_beside_the_choices_are_kept_and_streamed_in_every_chunk() {
    let events = [
        perplexity_chunk(
            json!({"role": "assistant", "content": "Paris is the capital"}),
            Value::Null,
        ),
        perplexity_chunk(json!({"content": " of France [1][2]."}), json!("stop")),
    ];

    let whole = whole_of(Endpoint::Chat, &events);
    let chunks = chunks_of(Endpoint::Chat, &whole);

    assert_eq!(
        whole,
        json!({"id": "3c1e7a52-94d0-4b8f-8d3e-6f2a0b9c4d11", "object": "chat.completion",
            "created": 1_746_900_000, "model": "sonar", "provider": "perplexity-ai",
            "citations": ["https://www.britannica.com/place/Paris", "https://en.wikipedia.org/wiki/Paris"],
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "Paris is the capital of France [1][2]."}, "logprobs": null, "finish_reason": "stop"}]})
    );
    let mut first = perplexity_chunk(
        json!({"role": "assistant", "content": "Paris is the capital of France [1][2]."}),
        Value::Null,
    );
    first["choices"][0]["logprobs"] = Value::Null;
    let mut last = perplexity_chunk(json!({}), json!("stop"));
    last["choices"][0]["logprobs"] = Value::Null;
    assert_eq!(chunks, vec![first, last]);
}

/// An OpenRouter chunk: its provider beside the choices, the upstream's
/// own finish reason in the choice.
fn openrouter_chunk(delta: Value, finish_reason: Value, native: Value) -> Value {
    json!({"id": "gen-1746-Xq2", "provider": "DeepInfra", "model": "deepseek/deepseek-r1",
        "object": "chat.completion.chunk", "created": 1_746_950_000,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
            "native_finish_reason": native, "logprobs": null}]})
}

#[test]
fn openrouter_reasoning_is_concatenated_and_other_members_keep_their_last_value() {
    let events = [
        openrouter_chunk(
            json!({"role": "assistant", "content": "", "reasoning": "Two"}),
            Value::Null,
            Value::Null,
        ),
        openrouter_chunk(
            json!({"role": "assistant", "content": "", "reasoning": " plus two.", "x_step": {"n": 1}}),
            Value::Null,
            Value::Null,
        ),
        openrouter_chunk(
            json!({"role": "assistant", "content": "4", "reasoning": null, "x_step": {"n": 2}}),
            Value::Null,
            Value::Null,
        ),
        openrouter_chunk(
            json!({"role": "assistant", "content": "", "reasoning": null}),
            json!("stop"),
            json!("stop"),
        ),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole,
        json!({"id": "gen-1746-Xq2", "object": "chat.completion", "created": 1_746_950_000,
            "model": "deepseek/deepseek-r1", "provider": "DeepInfra",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4",
                "reasoning": "Two plus two.", "x_step": {"n": 2}},
                "logprobs": null, "finish_reason": "stop", "native_finish_reason": "stop"}]})
    );
}

#[test]
fn a_member_given_only_as_null_stays_null_and_null_never_undoes_a_value() {
    let delta = |delta: Value| super::chat::delta(0, delta);
    let events = [
        delta(
            json!({"role": "assistant", "content": "", "reasoning_content": null, "audio": null,
            "annotations": null, "x_only_null": null}),
        ),
        delta(json!({"reasoning_content": "R", "audio": {"transcript": "T"}, "annotations": [1]})),
        delta(json!({"reasoning_content": null, "audio": null, "annotations": null, "x_only_null": null})),
    ];

    let whole = whole_of(Endpoint::Chat, &events);

    assert_eq!(
        whole["choices"][0]["message"],
        json!({"role": "assistant", "content": "", "reasoning_content": "R", "audio": {"transcript": "T"},
            "annotations": [1], "x_only_null": null})
    );
}

/// Completions with members the gateway does not assemble, in the shape
/// [`whole_from_chunks`] writes.
fn completions_with_added_members() -> Vec<Value> {
    let gemini = json!({"id": "chatcmpl-g1", "object": "chat.completion", "created": 1_746_960_000,
        "model": "gemini-3-pro-preview", "provider": "google",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_g1", "type": "function", "function": {"name": "f", "arguments": "{}"},
                "extra_content": {"google": {"thought_signature": "CiQB0e2Kb7"}}}]},
            "logprobs": null, "finish_reason": "tool_calls", "native_finish_reason": "STOP"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    vec![
        deepseek_completion(),
        search_completion(),
        audio_completion(),
        gemini,
    ]
}

#[test]
fn added_members_survive_a_round_trip_through_chunks() {
    for whole in completions_with_added_members() {
        let chunks = chunks_from_whole(Endpoint::Chat, &Bytes::from(whole.to_string())).unwrap();

        let again = parsed(&whole_from_chunks(Endpoint::Chat, &chunks).unwrap());

        assert_eq!(again, whole);
    }
}

#[test]
fn chunks_with_added_members_survive_a_round_trip_through_the_completion() {
    for stream in [deepseek_stream(), audio_stream()] {
        let whole = whole_from_chunks(Endpoint::Chat, &stored(&stream)).unwrap();
        let chunks = chunks_from_whole(Endpoint::Chat, &whole).unwrap();

        let again = chunks_from_whole(
            Endpoint::Chat,
            &whole_from_chunks(Endpoint::Chat, &chunks).unwrap(),
        )
        .unwrap();

        assert_eq!(
            again.iter().map(parsed).collect::<Vec<_>>(),
            chunks.iter().map(parsed).collect::<Vec<_>>()
        );
    }
}
