//! OpenAI's Responses API: creation (whole and streamed), the remembered
//! responses (retrieve, delete, cancel, input items), `previous_response_id`
//! and injected faults.

use std::net::SocketAddr;

use gatewayz_upstream::Config;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{call, faulty, named_events, spawn, with_fault};

async fn create(address: SocketAddr, request: &Value) -> Value {
    let answer = call(address, "POST", "/v1/responses", &request.to_string()).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body())
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    answer.json()
}

fn error_of(answer: &crate::helpers::Answer) -> Value {
    answer.json()["error"].clone()
}

#[tokio::test]
async fn creates_a_response_with_every_member_the_openai_sdk_requires() {
    let address = spawn(Config::default()).await;

    let response = create(address, &json!({"model": "gpt-4o-mini", "input": "hello there"})).await;

    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(response["object"], "response");
    assert!(response["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "gpt-4o-mini");
    assert_eq!(response["parallel_tool_calls"], true);
    assert_eq!(response["tool_choice"], "auto");
    assert_eq!(response["tools"], json!([]));
    assert_eq!(response["previous_response_id"], Value::Null);
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert!(output[0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(
        output[0]["content"],
        json!([{"type": "output_text", "text": "You said: hello there", "annotations": []}])
    );
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 2, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 6})
    );
}

#[tokio::test]
async fn echoes_the_last_user_text_of_input_items_and_the_request_settings() {
    let address = spawn(Config::default()).await;
    let request = json!({"model": "gpt-4o", "instructions": "be brief", "temperature": 0.5,
    "metadata": {"k": "v"}, "input": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second one"}]},
    ]});

    let response = create(address, &request).await;

    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "You said: second one"
    );
    assert_eq!(response["usage"]["input_tokens"], 1 + 1 + 2 + 2);
    assert_eq!(response["instructions"], "be brief");
    assert_eq!(response["temperature"], 0.5);
    assert_eq!(response["metadata"], json!({"k": "v"}));
}

#[tokio::test]
async fn streams_the_response_events_in_order_with_increasing_sequence_numbers() {
    let address = spawn(Config::default()).await;
    let request = json!({"model": "gpt-4o-mini", "input": "hello there", "stream": true});

    let answer = call(address, "POST", "/v1/responses", &request.to_string()).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert!(!String::from_utf8(answer.body()).unwrap().contains("[DONE]"));
    let events = named_events(&answer);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<&str> = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    .into_iter()
    .chain(["response.output_text.delta"; 4])
    .chain([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ])
    .collect();
    assert_eq!(names, expected);
    for (index, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], index);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["output"], json!([]));
    let item_id = events[2].1["item"]["id"].as_str().unwrap();
    let text: String = events[4..8]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["item_id"], item_id);
            data["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "You said: hello there");
    assert_eq!(events[8].1["text"], text);
    let completed = &events[11].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["usage"]["total_tokens"], 6);
    assert_eq!(completed["output"][0]["id"], item_id);
    let id = completed["id"].as_str().unwrap();
    let stored = call(address, "GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(&stored.json(), completed);
}

#[tokio::test]
async fn retrieves_then_deletes_a_response_which_is_then_unknown() {
    let address = spawn(Config::default()).await;
    let created = create(address, &json!({"model": "m", "input": "keep me"})).await;
    let path = format!("/v1/responses/{}", created["id"].as_str().unwrap());

    let retrieved = call(address, "GET", &path, "").await;
    let bare = call(address, "GET", path.strip_prefix("/v1").unwrap(), "").await;
    let deleted = call(address, "DELETE", &path, "").await;
    let after = call(address, "GET", &path, "").await;
    let deleted_again = call(address, "DELETE", &path, "").await;

    assert_eq!(retrieved.status, StatusCode::OK);
    assert_eq!(retrieved.json(), created);
    assert_eq!(bare.json(), created);
    assert_eq!(
        deleted.json(),
        json!({"id": created["id"], "object": "response", "deleted": true})
    );
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&after)["type"], "invalid_request_error");
    assert!(
        error_of(&after)["message"]
            .as_str()
            .unwrap()
            .contains(created["id"].as_str().unwrap())
    );
    assert_eq!(deleted_again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_the_input_items_with_ids_newest_first_by_default() {
    let address = spawn(Config::default()).await;
    let request = json!({"model": "m", "input": [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
    ]});
    let id = create(address, &request).await["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/responses/{id}/input_items");

    let newest_first = call(address, "GET", &path, "").await.json();
    let oldest_first = call(address, "GET", &format!("{path}?order=asc"), "")
        .await
        .json();
    let first_page = call(address, "GET", &format!("{path}?order=asc&limit=2"), "")
        .await
        .json();
    let after = first_page["last_id"].as_str().unwrap();
    let second_page = call(
        address,
        "GET",
        &format!("{path}?order=asc&limit=2&after={after}"),
        "",
    )
    .await
    .json();

    assert_eq!(newest_first["object"], "list");
    assert_eq!(newest_first["has_more"], false);
    let data = oldest_first["data"].as_array().unwrap();
    let texts: Vec<&str> = data
        .iter()
        .map(|item| {
            assert_eq!(item["type"], "message");
            assert!(item["id"].as_str().unwrap().starts_with("msg_"));
            item["content"][0]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(data[0]["content"][0]["type"], "input_text");
    assert_eq!(data[1]["content"][0]["type"], "output_text");
    assert_eq!(oldest_first["first_id"], data[0]["id"]);
    assert_eq!(oldest_first["last_id"], data[2]["id"]);
    let reversed: Vec<Value> = data.iter().rev().cloned().collect();
    assert_eq!(newest_first["data"], json!(reversed));
    assert_eq!(first_page["has_more"], true);
    assert_eq!(first_page["data"].as_array().unwrap().len(), 2);
    assert_eq!(second_page["data"], json!([data[2]]));
    assert_eq!(second_page["has_more"], false);
}

#[tokio::test]
async fn chains_on_a_known_previous_response_and_refuses_an_unknown_one_with_404() {
    let address = spawn(Config::default()).await;
    let first = create(address, &json!({"model": "m", "input": "first"})).await;

    let second = create(
        address,
        &json!({"model": "m", "input": "second", "previous_response_id": first["id"]}),
    )
    .await;
    let unknown = call(
        address,
        "POST",
        "/v1/responses",
        &json!({"model": "m", "input": "x", "previous_response_id": "resp_unknown"}).to_string(),
    )
    .await;

    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let error = error_of(&unknown);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "previous_response_id");
    assert_eq!(error["code"], "previous_response_not_found");
    assert!(error["message"].as_str().unwrap().contains("resp_unknown"));
}

#[tokio::test]
async fn cancels_only_a_background_response() {
    let address = spawn(Config::default()).await;
    let foreground = create(address, &json!({"model": "m", "input": "x"})).await;
    let background = create(address, &json!({"model": "m", "input": "x", "background": true})).await;
    let cancel = |response: &Value| format!("/v1/responses/{}/cancel", response["id"].as_str().unwrap());

    let refused = call(address, "POST", &cancel(&foreground), "").await;
    let cancelled = call(address, "POST", &cancel(&background), "").await;

    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&refused)["message"],
        "Only responses created with background=true can be cancelled"
    );
    assert_eq!(error_of(&refused)["type"], "invalid_request_error");
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json(), background);
    assert_eq!(background["background"], true);
}

#[tokio::test]
async fn an_unknown_or_unstored_response_is_404_everywhere() {
    let address = spawn(Config::default()).await;
    let unstored = create(address, &json!({"model": "m", "input": "x", "store": false})).await;
    let unstored = unstored["id"].as_str().unwrap();

    for id in ["resp_nope", unstored] {
        for (method, path) in [
            ("GET", format!("/v1/responses/{id}")),
            ("DELETE", format!("/v1/responses/{id}")),
            ("POST", format!("/v1/responses/{id}/cancel")),
            ("GET", format!("/v1/responses/{id}/input_items")),
        ] {
            let answer = call(address, method, &path, "").await;

            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert!(error_of(&answer)["message"].is_string());
        }
    }
}

#[tokio::test]
async fn refuses_bad_requests_and_wrong_methods() {
    let address = spawn(Config::default()).await;

    let no_model = call(address, "POST", "/v1/responses", r#"{"input":"x"}"#).await;
    let no_input = call(address, "POST", "/v1/responses", r#"{"model":"m"}"#).await;
    let bad_input = call(address, "POST", "/responses", r#"{"model":"m","input":7}"#).await;
    let list = call(address, "GET", "/v1/responses", "").await;
    let put = call(address, "PUT", "/v1/responses/resp_x", "").await;
    let elsewhere = call(address, "GET", "/v1/responses/resp_x/other", "").await;

    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&no_model)["param"], "model");
    assert_eq!(no_input.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&no_input)["param"], "input");
    assert_eq!(bad_input.status, StatusCode::BAD_REQUEST);
    assert_eq!(list.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn answers_an_injected_status_and_cuts_a_stream_after_its_first_delta() {
    let address = spawn(faulty(2)).await;
    let request = json!({"model": "m", "input": "hello there"}).to_string();
    let stream = json!({"model": "m", "input": "hello there", "stream": true}).to_string();

    let failed = call(address, "POST", "/v1/responses", &with_fault(&request, "502")).await;
    let limited = call(address, "POST", "/v1/responses", &with_fault(&stream, "429")).await;
    let cut = call(address, "POST", "/v1/responses", &with_fault(&stream, "cut")).await;
    let whole_cut = call(address, "POST", "/v1/responses", &with_fault(&request, "cut")).await;

    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&failed)["type"], "server_error");
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert_eq!(cut.status, StatusCode::OK);
    assert!(cut.broke, "the body ended cleanly");
    let names: Vec<String> = named_events(&cut).into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("response.output_text.delta")
    );
    assert_eq!(names.len(), 5);
    assert_eq!(whole_cut.status, StatusCode::BAD_REQUEST);
}
