//! Key policy files (`GATEWAYZ_API_KEYS_FILE` named `*.toml`): their keys
//! authenticate under their ids, reloads take effect or are refused whole,
//! and the admin listener shows the policies, never a digest.

use serde_json::{Value, json};

use crate::binary;
use crate::helpers::{KEY, PolicyFile, TestApp, chat_body, entry, eventually, sample, sha256_hex};

/// The production gateway reading `file` every 50 ms.
async fn gateway(file: &PolicyFile) -> TestApp {
    TestApp::production(&[
        ("GATEWAYZ_API_KEYS_FILE", file.path()),
        ("GATEWAYZ_API_KEYS_RELOAD_MS", "50"),
    ])
    .await
}

async fn status(app: &TestApp, key: &str) -> u16 {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn reloads(app: &TestApp, result: &str) -> f64 {
    let line = format!("gatewayz_api_key_reloads_total{{result=\"{result}\"}}");
    sample(&app.metrics().await, &line).unwrap_or(0.0)
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.admin))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_policy_file_key_is_accepted_and_named_by_its_id_in_the_access_log() {
    let file = PolicyFile::new(
        "access-log",
        &[
            entry("team-a", "key-a", "rpm = 600"),
            entry("team-b", "key-b", ""),
        ]
        .concat(),
    );
    let gateway = binary::start(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", "env-key"),
        ("GATEWAYZ_API_KEYS_FILE", file.path()),
    ]);
    let client = reqwest::Client::new();
    let send = |key: &'static str| {
        client
            .post(format!("{}/v1/chat/completions", gateway.address))
            .bearer_auth(key)
            .json(&chat_body())
            .send()
    };

    let response = send("key-a").await.unwrap();

    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let access = gateway.wait_for_event(10, "the access line of key-a's request", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["request_id"] == request_id.as_str()
    });
    assert_eq!(access["fields"]["key_id"], "team-a", "{access}");

    assert_eq!(
        send("env-key").await.unwrap().status(),
        200,
        "the environment's keys still count"
    );
    let refused = send("key-c").await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let env_id = &sha256_hex("env-key")[..8];
    gateway.wait_for_event(10, "the access line of env-key's request", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["key_id"] == env_id
    });
    let logs = gateway.lines().join("\n");
    for secret in ["key-a", "key-b", &sha256_hex("key-a"), &sha256_hex("key-b")] {
        assert!(!logs.contains(secret), "`{secret}` is in the log:\n{logs}");
    }
}

#[tokio::test]
async fn a_key_removed_from_the_policy_file_is_refused_on_the_next_request_after_reload() {
    let file = PolicyFile::new(
        "removed",
        &[entry("team-a", "key-a", ""), entry("team-b", "key-b", "")].concat(),
    );
    let app = gateway(&file).await;
    assert_eq!(status(&app, "key-a").await, 200);
    assert_eq!(status(&app, "key-b").await, 200);

    file.write(&[entry("team-a", "key-a", ""), entry("team-c", "key-c", "")].concat());
    eventually(5, "the new policies are taken", || async {
        reloads(&app, "ok").await == 1.0
    })
    .await;

    assert_eq!(
        status(&app, "key-b").await,
        401,
        "a removed key is refused at once"
    );
    assert_eq!(
        status(&app, "key-c").await,
        200,
        "an added key is accepted at once"
    );
    assert_eq!(status(&app, "key-a").await, 200);
    assert_eq!(status(&app, KEY).await, 200, "the environment's key stays");
}

#[tokio::test]
async fn a_bad_policy_file_is_refused_whole_and_the_last_good_policies_stay() {
    let file = PolicyFile::new("bad-reload", &entry("team-a", "key-a", "rpm = 600"));
    let app = gateway(&file).await;

    // A valid first entry does not get through beside an invalid second one.
    file.write(
        &[
            entry("team-a", "key-a", "rpm = 5"),
            entry("team-b", "key-b", "tpm = 0"),
        ]
        .concat(),
    );
    eventually(5, "the bad file is rejected", || async {
        reloads(&app, "error").await == 1.0
    })
    .await;

    assert_eq!(status(&app, "key-a").await, 200);
    assert_eq!(
        status(&app, "key-b").await,
        401,
        "nothing of the bad file is taken"
    );
    let (_, team_a) = admin_get(&app, "/admin/keys/team-a").await;
    assert_eq!(team_a["rpm"], 600, "the last good policy stays: {team_a}");
}

#[test]
fn a_bad_policy_file_stops_the_start_with_its_file_line_and_field() {
    let file = PolicyFile::new(
        "bad-start",
        &[
            entry("team-a", "key-a", ""),
            entry("team-b", "key-b", "budget_usd = 5"),
        ]
        .concat(),
    );

    let output = binary::command(&[
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS_FILE", file.path()),
    ])
    .output()
    .unwrap();

    assert!(!output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:9: keys[1].budget_period: required with budget_usd",
        file.path()
    );
    assert!(printed.contains(&expected), "{expected} not in:\n{printed}");
}

#[tokio::test]
async fn the_admin_api_shows_each_key_policy_without_its_digest() {
    let file = PolicyFile::new(
        "admin",
        &[
            entry(
                "team-a",
                "key-a",
                "models = [\"demo-*\", \"@openai/*\"]\nrpm = 600\ntpm = 100000\nmax_parallel = 4\n\
                 budget_usd = 10.0\nbudget_period = \"day\"\nexpires_at = \"2099-01-01T00:00:00Z\"\n\
                 labels = { team = \"search\" }",
            ),
            entry("team-b", "key-b", ""),
        ]
        .concat(),
    );
    let app = gateway(&file).await;

    let (status, body) = admin_get(&app, "/admin/keys").await;

    assert_eq!(status, 200, "{body}");
    let keys = body["keys"].as_array().unwrap();
    let ids: Vec<&str> = keys.iter().map(|key| key["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&sha256_hex(KEY)[..8], "team-a", "team-b"]);
    let team_a = &keys[1];
    let policy: Value = [
        "id",
        "models",
        "rpm",
        "tpm",
        "max_parallel",
        "budget_usd",
        "budget_period",
        "expires_at",
    ]
    .into_iter()
    .map(|field| (field.to_owned(), team_a[field].clone()))
    .collect::<serde_json::Map<_, _>>()
    .into();
    assert_eq!(
        policy,
        json!({"id": "team-a", "models": ["demo-*", "@openai/*"], "rpm": 600, "tpm": 100000,
               "max_parallel": 4, "budget_usd": 10.0, "budget_period": "day",
               "expires_at": "2099-01-01T00:00:00Z"})
    );
    assert_eq!(team_a["labels"], json!({"team": "search"}));
    assert_eq!(team_a["expired"], false);
    let text = body.to_string();
    for secret in ["key-a", &sha256_hex("key-a"), &sha256_hex("key-b"), KEY] {
        assert!(!text.contains(secret), "`{secret}` in {text}");
    }

    let (status, team_b) = admin_get(&app, "/admin/keys/team-b").await;
    assert_eq!(status, 200);
    assert_eq!((&team_b["id"], &team_b["rpm"]), (&json!("team-b"), &Value::Null));
    let (status, unknown) = admin_get(&app, "/admin/keys/team-z").await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["message"], "Unknown key id `team-z`");
    let public = app.client.get(app.url("/admin/keys")).send().await.unwrap();
    assert_eq!(public.status(), 404, "never on the public listener");
}
