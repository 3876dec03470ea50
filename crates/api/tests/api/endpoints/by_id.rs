//! The Responses API's calls by id on the demo: a response is retrieved,
//! listed, cancelled and deleted where it was made, only by the key that
//! made it, and followed up (`previous_response_id`) at the same target.

use reqwest::Method;
use serde_json::{Value, json};

use super::{RESPONSES, call_as, post_as, response_request, status_and_json, the_event, typed_events};
use crate::helpers::{KEY, PolicyFile, TestApp, assert_openai_error, entry, eventually};

const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";

/// The production gateway with two keys of a policy file, `team-a` and
/// `team-b`, and `vars`.
async fn two_keys(test: &str, vars: &[(&str, &str)]) -> (TestApp, PolicyFile) {
    let keys = PolicyFile::new(
        &format!("endpoints-by-id-{test}"),
        &[entry("team-a", KEY_A, ""), entry("team-b", KEY_B, "")].concat(),
    );
    let mut all = vec![("GATEWAYZ_API_KEYS_FILE", keys.path())];
    all.extend_from_slice(vars);
    (TestApp::production(&all).await, keys)
}

/// Creates a response saying `text` with `key`, and returns it.
async fn create(app: &TestApp, key: &str, body: &Value) -> Value {
    let (status, response) = status_and_json(post_as(app, key, RESPONSES, body).await).await;
    assert_eq!(status, 200, "{response}");
    response
}

fn id_of(response: &Value) -> String {
    response["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {response}"))
        .to_owned()
}

/// Asserts the gateway answers `response_not_found` (404, OpenAI's shape).
async fn assert_not_found(response: reqwest::Response) {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_openai_error(&body)["code"], "response_not_found", "{body}");
}

#[tokio::test]
async fn a_response_is_retrieved_listed_and_deleted_by_id_and_then_is_gone() {
    let app = TestApp::production(&[]).await;
    let created = create(&app, KEY, &response_request("demo-1", "Hello there", false)).await;
    let id = id_of(&created);
    let path = format!("{RESPONSES}/{id}");

    let (status, retrieved) = status_and_json(call_as(&app, Method::GET, KEY, &path).await).await;
    assert_eq!(status, 200, "{retrieved}");
    assert_eq!(retrieved["id"], id);
    assert_eq!(retrieved["output"], created["output"]);
    assert_eq!(retrieved["usage"], created["usage"]);

    let items_path = format!("{path}/input_items");
    let (status, items) = status_and_json(call_as(&app, Method::GET, KEY, &items_path).await).await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["object"], "list");
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{items}");
    assert_eq!(
        (&data[0]["type"], &data[0]["role"]),
        (&json!("message"), &json!("user"))
    );
    assert_eq!(data[0]["content"][0]["text"], "Hello there");

    // Only a background response can be cancelled, as OpenAI says.
    let cancel = call_as(&app, Method::POST, KEY, &format!("{path}/cancel")).await;
    let (status, refused) = status_and_json(cancel).await;
    assert_eq!(status, 400, "{refused}");
    assert_openai_error(&refused);

    let (status, deleted) = status_and_json(call_as(&app, Method::DELETE, KEY, &path).await).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "object": "response", "deleted": true}));

    assert_not_found(call_as(&app, Method::GET, KEY, &path).await).await;
    assert_not_found(call_as(&app, Method::GET, KEY, &items_path).await).await;
    assert_not_found(call_as(&app, Method::DELETE, KEY, &path).await).await;
}

#[tokio::test]
async fn a_streamed_response_can_be_retrieved_by_the_id_its_first_event_gives() {
    let app = TestApp::production(&[]).await;

    let events =
        typed_events(post_as(&app, KEY, RESPONSES, &response_request("demo-1", "Hi", true)).await).await;

    let id = the_event(&events, "response.created")["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{RESPONSES}/{id}");
    let (status, retrieved) = status_and_json(call_as(&app, Method::GET, KEY, &path).await).await;
    assert_eq!(status, 200, "{retrieved}");
    assert_eq!(retrieved["status"], "completed");
    assert_eq!(
        retrieved["output"],
        the_event(&events, "response.completed")["response"]["output"]
    );
}

#[tokio::test]
async fn another_key_can_neither_reach_nor_follow_a_keys_response() {
    let (app, _keys) = two_keys("owner", &[]).await;
    let id = id_of(&create(&app, KEY_A, &response_request("demo-1", "Secret plans", false)).await);
    let path = format!("{RESPONSES}/{id}");

    assert_not_found(call_as(&app, Method::GET, KEY_B, &path).await).await;
    assert_not_found(call_as(&app, Method::GET, KEY_B, &format!("{path}/input_items")).await).await;
    assert_not_found(call_as(&app, Method::POST, KEY_B, &format!("{path}/cancel")).await).await;
    assert_not_found(call_as(&app, Method::DELETE, KEY_B, &path).await).await;
    let mut follow_up = response_request("demo-1", "And then?", false);
    follow_up["previous_response_id"] = json!(id);
    for stream in [false, true] {
        follow_up["stream"] = json!(stream);
        assert_not_found(post_as(&app, KEY_B, RESPONSES, &follow_up).await).await;
    }

    // Untouched for its own key.
    let (status, retrieved) = status_and_json(call_as(&app, Method::GET, KEY_A, &path).await).await;
    assert_eq!(status, 200, "{retrieved}");
    follow_up["stream"] = json!(false);
    let followed = create(&app, KEY_A, &follow_up).await;
    assert_eq!(followed["previous_response_id"], id);
}

#[tokio::test]
async fn a_follow_up_carries_the_conversation_and_stays_with_its_provider() {
    let (app, _keys) = two_keys("follow-up", &[]).await;
    let first = create(&app, KEY_A, &response_request("demo-1", "My name is Ada", false)).await;
    let id = id_of(&first);
    let mut follow_up = response_request("demo-1", "What is my name?", false);
    follow_up["previous_response_id"] = json!(id);

    let second = create(&app, KEY_A, &follow_up).await;

    assert_eq!(second["previous_response_id"], id);
    assert_ne!(id_of(&second), id);
    assert_eq!(
        second["output"][0]["content"][0]["text"],
        "You said: What is my name?"
    );
    let before = first["usage"]["total_tokens"].as_u64().unwrap();
    let prompt = second["usage"]["input_tokens"].as_u64().unwrap();
    assert!(
        prompt > before,
        "the prompt carries the first exchange: {prompt} <= {before}"
    );

    follow_up["stream"] = json!(true);
    let events = typed_events(post_as(&app, KEY_A, RESPONSES, &follow_up).await).await;
    let completed = the_event(&events, "response.completed");
    assert_eq!(completed["response"]["previous_response_id"], id);

    // gpt-4o-mini is OpenAI's, through Portkey: not where the demo's response lives.
    follow_up["model"] = json!("gpt-4o-mini");
    follow_up["stream"] = json!(false);
    let (status, body) = status_and_json(post_as(&app, KEY_A, RESPONSES, &follow_up).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_openai_error(&body)["param"], "previous_response_id");
}

#[tokio::test]
async fn a_response_is_forgotten_by_the_gateway_after_its_time_to_live() {
    let app = TestApp::production(&[("GATEWAYZ_RESPONSE_TTL_SECS", "1")]).await;
    let id = id_of(&create(&app, KEY, &response_request("demo-1", "Hello", false)).await);
    let path = format!("{RESPONSES}/{id}");
    assert_eq!(call_as(&app, Method::GET, KEY, &path).await.status(), 200);

    eventually(10, "the gateway forgets the response", || async {
        call_as(&app, Method::GET, KEY, &path).await.status() == 404
    })
    .await;

    assert_not_found(call_as(&app, Method::GET, KEY, &path).await).await;
}

#[tokio::test]
async fn ids_and_queries_that_cannot_be_passed_on_are_refused_before_any_lookup() {
    let app = TestApp::production(&[]).await;
    let created = create(&app, KEY, &response_request("demo-1", "Hello there", false)).await;
    let id = id_of(&created);

    for (path, param) in [
        (format!("{RESPONSES}/{id}?stream=true"), "stream"),
        (format!("{RESPONSES}/resp%2F..%2Fx"), "response_id"),
        (format!("{RESPONSES}/{}", "r".repeat(300)), "response_id"),
    ] {
        let (status, body) = status_and_json(call_as(&app, Method::GET, KEY, &path).await).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(assert_openai_error(&body)["param"], param, "{path}: {body}");
    }
    // The same response is still there, whole.
    let (status, _) =
        status_and_json(call_as(&app, Method::GET, KEY, &format!("{RESPONSES}/{id}")).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn calls_by_id_count_against_the_keys_request_rate_and_model_list() {
    let keys = PolicyFile::new(
        "endpoints-by-id-rate",
        &entry("team-a", KEY_A, "rpm = 3\nmodels = [\"demo-*\"]"),
    );
    let app = TestApp::production(&[("GATEWAYZ_API_KEYS_FILE", keys.path())]).await;
    let created = create(&app, KEY_A, &response_request("demo-1", "Hello there", false)).await;
    let path = format!("{RESPONSES}/{}", id_of(&created));

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call_as(&app, Method::GET, KEY_A, &path).await.status().as_u16());
    }

    // One create and two calls by id fill the minute; the third is refused.
    assert_eq!(statuses, [200, 200, 429]);

    // A model the key may no longer use is refused by id as on create.
    keys.write(&entry("team-a", KEY_A, "models = [\"other-*\"]"));
    eventually(10, "the key file is reloaded", || {
        let app = &app;
        let path = &path;
        async move {
            let (status, body) = status_and_json(call_as(app, Method::GET, KEY_A, path).await).await;
            status == 403 && body["error"]["code"] == "model_not_allowed"
        }
    })
    .await;
}
