//! The replays, through the public functions only: `chat`,
//! `chat_members` and `messages` for each API's, `fuzz` for bytes of any
//! shape.

mod chat;
mod chat_members;
mod fuzz;
mod messages;

use serde_json::Value;

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
