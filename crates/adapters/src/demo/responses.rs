//! OpenAI's Responses: the echo of the last user text as a `response`, or as
//! the events OpenAI streams; each response remembered with its input
//! ([`super::stored`]) unless the request says `store: false`.

mod answer;
mod events;

use std::sync::Mutex;

use gatewayz_domain::{ChatError, ChatResponse, Endpoint, ProviderCall};

use self::answer::Answer;
use self::events::Events;
use super::stored::ResponseStore;
use super::wire::refused;

/// The answer to a non-streaming request.
pub(super) fn create(call: &ProviderCall, memory: &Mutex<ResponseStore>) -> Result<ChatResponse, ChatError> {
    let json = Answer::for_call(call, memory)?.json;
    ChatResponse::parse(Endpoint::Responses, json).map_err(refused)
}

/// The events of a streaming request, made as they are read.
pub(super) fn stream(call: &ProviderCall, memory: &Mutex<ResponseStore>) -> Result<Events, ChatError> {
    Ok(Events::new(Answer::for_call(call, memory)?))
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::{ResponseAction, ResponseCall};

    use super::super::stored::{MAX_BYTES, respond_by_id};
    use super::super::testing::{call_to, value};
    use serde_json::{Value, json};

    use super::*;

    fn memory() -> Mutex<ResponseStore> {
        Mutex::new(ResponseStore::new(8, MAX_BYTES))
    }

    fn respond(memory: &Mutex<ResponseStore>, body: &Value) -> Result<ChatResponse, ChatError> {
        create(&call_to(Endpoint::Responses, body), memory)
    }

    fn by_id(memory: &Mutex<ResponseStore>, action: ResponseAction, id: &str) -> Result<Value, ChatError> {
        let call = ResponseCall {
            action,
            id: id.to_owned(),
            query: Some("order=asc".to_owned()),
            route: gatewayz_domain::Route::Demo,
            credentials: gatewayz_domain::Credentials::None,
            context: gatewayz_domain::RequestContext::new("req-2"),
        };
        respond_by_id(memory, &call).map(|json| value(&json))
    }

    pub(super) fn conversation() -> Value {
        json!({"model": "gpt-demo", "instructions": "be brief", "input": [
            {"role": "developer", "content": "answer in English"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first question"}]},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
                {"type": "input_text", "text": "there"}]}
        ]})
    }

    #[test]
    fn a_response_echoes_the_last_user_text_with_openai_usage() {
        let memory = memory();
        let answer = respond(&memory, &conversation()).unwrap();
        let response = value(&answer.json());

        let id = response["id"].as_str().unwrap();
        assert!(
            id.starts_with("resp_demo_") && gatewayz_domain::model::is_response_id(id),
            "{id}"
        );
        assert_eq!(answer.response_id(), Some(id));
        for (member, expected) in [
            ("object", json!("response")),
            ("status", json!("completed")),
            ("model", json!("gpt-demo")),
            ("instructions", json!("be brief")),
            ("previous_response_id", Value::Null),
            ("incomplete_details", Value::Null),
            ("error", Value::Null),
            ("parallel_tool_calls", json!(true)),
            ("tool_choice", json!("auto")),
            ("tools", json!([])),
            ("store", json!(true)),
            ("metadata", json!({})),
        ] {
            assert_eq!(response[member], expected, "{member}");
        }
        assert!(response["created_at"].as_u64().unwrap() > 0);
        let message = &response["output"][0];
        assert!(message["id"].as_str().unwrap().starts_with("msg_demo_"));
        assert_eq!(
            (&message["type"], &message["role"], &message["status"]),
            (&json!("message"), &json!("assistant"), &json!("completed"))
        );
        assert_eq!(
            message["content"],
            json!([{"type": "output_text", "text": "You said: hello there", "annotations": [], "logprobs": []}])
        );
        // instructions 2 + 4, messages (3 + 4) + (2 + 4) + (2 + 4) + (2 + 4)
        let input = 31;
        assert_eq!(
            response["usage"],
            json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input + 4})
        );
        let usage = answer.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (input, 4));
    }

    #[test]
    fn each_call_is_a_new_response_with_the_same_text() {
        let memory = memory();
        let body = json!({"model": "m", "input": "hi"});
        let first = value(&respond(&memory, &body).unwrap().json());
        let second = value(&respond(&memory, &body).unwrap().json());
        assert_ne!(first["id"], second["id"]);
        assert_ne!(first["output"][0]["id"], second["output"][0]["id"]);
        assert_eq!(first["output"][0]["content"], second["output"][0]["content"]);
        assert_eq!(first["usage"], second["usage"]);
    }

    #[test]
    fn max_output_tokens_leaves_the_response_incomplete() {
        let body = json!({"model": "m", "input": "a b c", "max_output_tokens": 2});
        let response = value(&respond(&memory(), &body).unwrap().json());
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(response["output"][0]["status"], "incomplete");
        assert_eq!(response["output"][0]["content"][0]["text"], "You said:");
        assert_eq!(response["max_output_tokens"], 2);
    }

    #[test]
    fn a_response_is_retrieved_listed_and_deleted_by_id() {
        let memory = memory();
        let created = value(&respond(&memory, &conversation()).unwrap().json());
        let id = created["id"].as_str().unwrap();

        assert_eq!(by_id(&memory, ResponseAction::Retrieve, id).unwrap(), created);
        let items = by_id(&memory, ResponseAction::InputItems, id).unwrap();
        let data = items["data"].as_array().unwrap();
        assert_eq!(data.len(), 4);
        for item in data {
            assert!(item["id"].as_str().unwrap().starts_with("msg_demo_"), "{item}");
            assert_eq!(
                (&item["type"], &item["status"]),
                (&json!("message"), &json!("completed"))
            );
        }
        assert_eq!(items["first_id"], data[0]["id"]);
        assert_eq!(items["last_id"], data[3]["id"]);
        assert_eq!(items["has_more"], false);
        assert_eq!(
            data[0]["content"],
            json!([{"type": "input_text", "text": "answer in English"}])
        );
        assert_eq!(
            data[2]["content"],
            json!([{"type": "output_text", "text": "an answer", "annotations": []}])
        );

        let deleted = by_id(&memory, ResponseAction::Delete, id).unwrap();
        assert_eq!(deleted, json!({"id": id, "object": "response", "deleted": true}));
        assert!(by_id(&memory, ResponseAction::Retrieve, id).is_err());
    }

    #[test]
    fn a_string_input_is_listed_as_one_user_message() {
        let memory = memory();
        let created = value(
            &respond(&memory, &json!({"model": "m", "input": "hi there"}))
                .unwrap()
                .json(),
        );
        let items = by_id(
            &memory,
            ResponseAction::InputItems,
            created["id"].as_str().unwrap(),
        )
        .unwrap();
        let item = &items["data"][0];
        assert_eq!(
            (&item["role"], &item["content"]),
            (
                &json!("user"),
                &json!([{"type": "input_text", "text": "hi there"}])
            )
        );
        assert_eq!(created["usage"]["input_tokens"], 6);
    }

    #[test]
    fn a_follow_up_carries_the_conversation_and_an_unknown_one_is_refused() {
        let memory = memory();
        let first = value(
            &respond(&memory, &json!({"model": "m", "input": "hi"}))
                .unwrap()
                .json(),
        );
        let id = first["id"].as_str().unwrap();
        let follow_up = json!({"model": "m", "input": "more", "previous_response_id": id});

        let second = value(&respond(&memory, &follow_up).unwrap().json());
        assert_eq!(second["previous_response_id"], id);
        // The first's 5 in and 3 out, then 1 + 4.
        assert_eq!(second["usage"]["input_tokens"], 13);

        by_id(&memory, ResponseAction::Delete, id).unwrap();
        let Err(ChatError::UpstreamRejected(error)) = respond(&memory, &follow_up) else {
            panic!("a follow-up of a deleted response is refused");
        };
        assert_eq!(error.status, Some(404));
        assert_eq!(error.code.as_deref(), Some("previous_response_not_found"));
        assert_eq!(error.param.as_deref(), Some("previous_response_id"));
    }

    #[test]
    fn a_response_not_to_store_is_not_remembered() {
        let memory = memory();
        let created = value(
            &respond(&memory, &json!({"model": "m", "input": "hi", "store": false}))
                .unwrap()
                .json(),
        );
        assert_eq!(created["store"], false);
        let Err(ChatError::UpstreamRejected(error)) =
            by_id(&memory, ResponseAction::Retrieve, created["id"].as_str().unwrap())
        else {
            panic!("not stored");
        };
        assert_eq!(error.status, Some(404));
    }

    #[test]
    fn an_input_item_that_is_no_object_is_refused() {
        let Err(ChatError::Invalid(error)) = respond(&memory(), &json!({"model": "m", "input": ["hi", 5]}))
        else {
            panic!("refused");
        };
        assert_eq!(error.param.as_deref(), Some("input[0]"));
    }
}
