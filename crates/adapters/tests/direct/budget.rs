//! The memory budget: what a direct upstream sends is held within the
//! request's budget, and what does not fit is [`ChatError::Overloaded`],
//! with everything given back.

use futures::StreamExt;
use gatewayz_domain::{ChatError, ChatProvider, Endpoint, MemoryBudget};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{
    call, chat_call, chunk_json, client, completion_json, direct, server_answering, spec, sse, sse_response,
    stream_call,
};
use crate::raw::{LAST_CHUNK, RawServer, Then, chunk, chunked_head};

const KIB: usize = 1024;

/// A chat completion whose text is `size` bytes.
fn completion_of(size: usize) -> String {
    let mut answer = completion_json();
    answer["choices"][0]["message"]["content"] = json!("x".repeat(size));
    answer.to_string()
}

#[tokio::test]
async fn an_answer_larger_than_the_budget_is_overloaded_and_the_budget_given_back() {
    let server = server_answering(
        ResponseTemplate::new(200).set_body_raw(completion_of(64 * KIB), "application/json"),
    )
    .await;
    let budget = MemoryBudget::new(16 * KIB);
    let mut call = chat_call();
    call.context.budget = budget.clone();

    let error = direct(&server).complete(call).await.unwrap_err();

    assert!(matches!(error, ChatError::Overloaded(_)), "{error:?}");
    assert_eq!(budget.in_use(), 0);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_answer_of_undeclared_length_that_outgrows_the_budget_is_overloaded() {
    let body = completion_of(64 * KIB);
    let parts: Vec<Vec<u8>> = body.as_bytes().chunks(4 * KIB).map(chunk).collect();
    let server = RawServer::start(
        [
            chunked_head("application/json"),
            parts.concat(),
            LAST_CHUNK.to_vec(),
        ]
        .concat(),
        Then::Hold,
    );
    let budget = MemoryBudget::new(16 * KIB);
    let mut call = chat_call();
    call.context.budget = budget.clone();

    let error = client(spec(&server.base())).complete(call).await.unwrap_err();

    assert!(matches!(error, ChatError::Overloaded(_)), "{error:?}");
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn an_answer_within_the_budget_is_read_and_its_room_given_back_once_dropped() {
    let server =
        server_answering(ResponseTemplate::new(200).set_body_raw(completion_of(4 * KIB), "application/json"))
            .await;
    let budget = MemoryBudget::new(64 * KIB);
    let mut call = chat_call();
    call.context.budget = budget.clone();

    let response = direct(&server).complete(call).await.unwrap();

    assert!(response.json().len() > 4 * KIB);
    drop(response);
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn a_first_stream_event_larger_than_the_budget_is_a_plain_overloaded_error() {
    let server = server_answering(sse_response(sse(&[
        chunk_json(&"x".repeat(64 * KIB), Some("stop")).to_string(),
        "[DONE]".into(),
    ])))
    .await;
    let budget = MemoryBudget::new(16 * KIB);
    let mut call = stream_call();
    call.context.budget = budget.clone();

    let error = direct(&server).stream(call).await.err().unwrap();

    assert!(matches!(error, ChatError::Overloaded(_)), "{error:?}");
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn a_later_stream_event_larger_than_the_budget_ends_the_stream_overloaded() {
    let small = format!("data: {}\n\n", chunk_json("a", None));
    let large = format!("data: {}\n\n", chunk_json(&"x".repeat(64 * KIB), None));
    let server = RawServer::start(
        [
            chunked_head("text/event-stream"),
            chunk(small.as_bytes()),
            chunk(large.as_bytes()),
            LAST_CHUNK.to_vec(),
        ]
        .concat(),
        Then::Hold,
    );
    let budget = MemoryBudget::new(16 * KIB);
    let mut call = stream_call();
    call.context.budget = budget.clone();

    let items: Vec<_> = client(spec(&server.base()))
        .stream(call)
        .await
        .unwrap()
        .collect()
        .await;

    assert!(
        matches!(&items[..], [Ok(_), Err(ChatError::Overloaded(_))]),
        "{items:?}"
    );
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn a_messages_request_whose_translation_the_budget_cannot_hold_is_refused_before_any_call() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion_json())).await;
    let many = vec![json!({"type": "text", "text": "a"}); 20_000];
    let mut call = call(
        Endpoint::Messages,
        &json!({"model": "llama-3-8b", "max_tokens": 10, "messages": [{"role": "user", "content": many}]}),
    );
    // Well above the body's size, well below what its 20 000 blocks cost as a tree.
    call.context.budget = MemoryBudget::new(4 * call.body.len());

    let refused = direct(&server).complete(call).await;

    assert!(matches!(refused, Err(ChatError::Overloaded(_))), "{refused:?}");
    crate::helpers::assert_no_request(&server).await;
}
