//! One stored answer serves both forms: a stream the upstream sent is
//! replayed whole to a JSON request, a whole answer as chunks to a stream
//! request.

use serde_json::json;

use super::{
    CHAT, COMPLETION_TOKENS, Gateway, PROMPT_TOKENS, answer_text, ask, assert_cached_usage, portkey, with,
};

#[tokio::test]
async fn a_streamed_fill_is_replayed_whole_to_a_json_request() {
    let gateway = Gateway::start("stream-to-json", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");

    let streamed = gateway.chat(&with(body.clone(), json!({"stream": true}))).await;
    let whole = gateway.chat(&body).await;

    assert_eq!(streamed.cache(), Some("miss"));
    let text = streamed.streamed_text();
    assert_eq!(text, answer_text(1));
    assert_eq!(
        (whole.status, whole.cache()),
        (200, Some("hit")),
        "{}",
        whole.text
    );
    assert!(whole.age.is_some());
    assert_eq!(gateway.calls(CHAT).await, 1);
    let answer = whole.json();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["id"], "chatcmpl-cache", "{answer}");
    assert_eq!(answer["model"], "gpt-4o-mini", "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant", "{answer}");
    assert_eq!(choice["message"]["content"], text.as_str(), "{answer}");
    assert_eq!(choice["finish_reason"], "stop", "{answer}");
    assert_eq!(answer["choices"].as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens"], PROMPT_TOKENS, "{answer}");
    assert_eq!(
        answer["usage"]["completion_tokens"], COMPLETION_TOKENS,
        "{answer}"
    );
    assert_cached_usage(&answer["gateway_usage"]);
}

#[tokio::test]
async fn a_json_fill_is_replayed_as_chunks_to_a_stream_request() {
    let gateway = Gateway::start("json-to-stream", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");
    let first = gateway.chat(&body).await;
    assert_eq!(first.cache(), Some("miss"));

    let plain = gateway.chat(&with(body.clone(), json!({"stream": true}))).await;
    let with_usage = gateway
        .chat(&with(
            body.clone(),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .await;

    for replay in [&plain, &with_usage] {
        assert_eq!(
            (replay.status, replay.cache()),
            (200, Some("hit")),
            "{}",
            replay.text
        );
        assert!(replay.age.is_some());
        let chunks = replay.chunks();
        assert!(
            chunks.iter().all(|chunk| chunk["id"] == "chatcmpl-cache"),
            "{}",
            replay.text
        );
        assert_eq!(replay.streamed_text(), first.content());
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "{}",
            replay.text
        );
        let finishes: Vec<_> = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finishes, ["stop"], "{}", replay.text);
        assert_cached_usage(&replay.streamed_gateway_usage());
    }
    let usage = |answer: &super::Answer| {
        answer
            .chunks()
            .iter()
            .find_map(|chunk| chunk.get("usage").filter(|usage| !usage.is_null()).cloned())
    };
    assert_eq!(usage(&plain), None, "usage only when the client asked for it");
    let reported = usage(&with_usage).expect("the usage asked for");
    assert_eq!(
        (&reported["prompt_tokens"], &reported["completion_tokens"]),
        (&json!(PROMPT_TOKENS), &json!(COMPLETION_TOKENS))
    );
    assert_eq!(gateway.calls(CHAT).await, 1);
}
