//! Where the gateway remembers responses: a follow-up is pinned to the
//! catalog target that made the response it follows, and replicas sharing
//! Redis serve each other's responses, to their own key only.

use reqwest::Method;
use serde_json::{Value, json};

use super::{RESPONSES, call_as, local_upstream, post_as, response_request, status_and_json};
use crate::helpers::{KEY, PolicyFile, TestApp, assert_openai_error, entry};
use crate::redis_server::RedisServer;

/// One model balanced over two OpenAI targets, told apart by the model the
/// upstream is sent (and echoes).
const BALANCED_CATALOG: &str = r#"
[[models]]
id = "balanced"
strategy = "loadbalance"
endpoints = ["responses"]
[[models.targets]]
portkey_provider = "openai"
upstream_model = "gpt-left"
[[models.targets]]
portkey_provider = "openai"
upstream_model = "gpt-right"
"#;

async fn create(app: &TestApp, key: &str, body: &Value) -> Value {
    let (status, response) = status_and_json(post_as(app, key, RESPONSES, body).await).await;
    assert_eq!(status, 200, "{response}");
    response
}

#[tokio::test]
async fn follow_ups_of_a_balanced_model_reach_the_target_that_made_the_response() {
    let upstream = local_upstream(gatewayz_upstream::Config::default()).await;
    let catalog = PolicyFile::new("endpoints-memory-balanced", BALANCED_CATALOG);
    let app = TestApp::production(&[
        ("GATEWAYZ_CATALOG", catalog.path()),
        ("PORTKEY_BASE_URL", &upstream),
        ("PORTKEY_API_KEY", "pk-memory"),
        ("PROVIDER_OPENAI_API_KEY", "sk-memory"),
    ])
    .await;
    let mut served = std::collections::BTreeSet::new();

    // Enough first responses that both targets make some (2^-11 that one never does).
    for _ in 0..12 {
        let first = create(&app, KEY, &response_request("balanced", "Hello", false)).await;
        let made_by = first["model"].as_str().unwrap().to_owned();
        served.insert(made_by.clone());
        let mut follow_up = response_request("balanced", "And then?", false);
        follow_up["previous_response_id"] = first["id"].clone();
        for _ in 0..3 {
            let next = create(&app, KEY, &follow_up).await;
            assert_eq!(
                next["model"],
                made_by.as_str(),
                "pinned to the target of {}",
                first["id"]
            );
            assert_eq!(next["previous_response_id"], first["id"]);
        }
    }
    assert_eq!(served.len(), 2, "both targets made responses: {served:?}");
}

#[tokio::test]
async fn replicas_sharing_redis_serve_each_others_responses_to_their_key_only() {
    let Some(redis) = RedisServer::start("responses remembered in Redis") else {
        return;
    };
    let keys = PolicyFile::new(
        "endpoints-memory-redis",
        &[entry("team-a", "key-a", ""), entry("team-b", "key-b", "")].concat(),
    );
    let url = redis.url();
    let vars = [
        ("GATEWAYZ_API_KEYS_FILE", keys.path()),
        ("GATEWAYZ_REDIS_URL", url.as_str()),
    ];
    let one = TestApp::production(&vars).await;
    let other = TestApp::production(&vars).await;

    let first = create(&one, "key-a", &response_request("demo-1", "Hello", false)).await;
    let id = first["id"].as_str().unwrap();
    let path = format!("{RESPONSES}/{id}");

    let (status, retrieved) = status_and_json(call_as(&other, Method::GET, "key-a", &path).await).await;
    assert_eq!(status, 200, "{retrieved}");
    assert_eq!(retrieved["id"], id);
    let mut follow_up = response_request("demo-1", "And then?", false);
    follow_up["previous_response_id"] = json!(id);
    let followed = create(&other, "key-a", &follow_up).await;
    assert_eq!(followed["previous_response_id"], id);

    let (status, refused) = status_and_json(call_as(&other, Method::GET, "key-b", &path).await).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(assert_openai_error(&refused)["code"], "response_not_found");
    let (status, refused) = status_and_json(post_as(&other, "key-b", RESPONSES, &follow_up).await).await;
    assert_eq!(status, 404, "{refused}");

    let (status, _) = status_and_json(call_as(&other, Method::DELETE, "key-a", &path).await).await;
    assert_eq!(status, 200);
    let (status, gone) = status_and_json(call_as(&one, Method::GET, "key-a", &path).await).await;
    assert_eq!(status, 404, "deleted on one replica, gone on the other: {gone}");
}
