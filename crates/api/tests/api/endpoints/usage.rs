//! Each request of a key with limits is charged once, with the usage its
//! upstream reported: whole and streamed messages and responses, embeddings,
//! and token counts (which charge no token), on the demo and on
//! `gatewayz-upstream` (playing Portkey).

use serde_json::{Value, json};

use super::{
    COUNT_TOKENS, EMBEDDINGS, MESSAGES, RESPONSES, assert_gateway_usage, count_request, faulty,
    local_upstream, message_request, post_as, priced, response_request, status_and_json, the_event,
    typed_events,
};
use crate::helpers::{PolicyFile, TestApp, entry, eventually, sample};

/// A dollar a thousand tokens, in and out, for every model.
const PRICE: f64 = 1000.0;

const CATALOG: &str = r#"
[[models]]
id = "priced-demo"
provider = "demo"
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "priced-demo-embedding"
provider = "demo"
endpoints = ["embeddings"]
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "priced-claude"
provider = "portkey"
portkey_provider = "anthropic"
upstream_model = "claude-x"
endpoints = ["messages"]
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "priced-gpt"
provider = "portkey"
portkey_provider = "openai"
upstream_model = "gpt-4o-mini"
endpoints = ["responses"]
input_usd_per_million = 1000
output_usd_per_million = 1000

[[models]]
id = "priced-embedding"
provider = "portkey"
portkey_provider = "openai"
upstream_model = "text-embedding-3-small"
endpoints = ["embeddings"]
input_usd_per_million = 1000
output_usd_per_million = 1000
"#;

const KEY: &str = "key-usage";

/// The models a run uses, one an API.
struct Models {
    messages: &'static str,
    responses: &'static str,
    embeddings: &'static str,
}

struct Setup {
    app: TestApp,
    key_id: &'static str,
    _keys: PolicyFile,
    _catalog: PolicyFile,
}

/// The production gateway with a key `key_id` that has limits (so that
/// every request is charged), the priced catalog, and Portkey at a
/// `gatewayz-upstream` when `upstream`.
async fn gateway(key_id: &'static str, upstream: bool) -> Setup {
    let keys = PolicyFile::new(
        &format!("endpoints-usage-{key_id}"),
        &entry(
            key_id,
            KEY,
            "tpm = 10000000\nbudget_usd = 1000\nbudget_period = \"month\"",
        ),
    );
    let catalog = PolicyFile::new(&format!("endpoints-usage-catalog-{key_id}"), CATALOG);
    let upstream = match upstream {
        true => Some(local_upstream(gatewayz_upstream::Config::default()).await),
        false => None,
    };
    let mut vars = vec![
        ("GATEWAYZ_API_KEYS_FILE", keys.path()),
        ("GATEWAYZ_CATALOG", catalog.path()),
        ("PORTKEY_API_KEY", "pk-usage"),
        ("PROVIDER_OPENAI_API_KEY", "sk-usage"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-usage"),
    ];
    if let Some(upstream) = &upstream {
        vars.push(("PORTKEY_BASE_URL", upstream));
    }
    Setup {
        app: TestApp::production(&vars).await,
        key_id,
        _keys: keys,
        _catalog: catalog,
    }
}

impl Setup {
    fn tokens_line(&self, estimated: bool) -> String {
        format!(
            "gatewayz_key_tokens_total{{estimated=\"{estimated}\",key=\"{}\"}}",
            self.key_id
        )
    }

    async fn charged_tokens(&self) -> f64 {
        sample(&self.app.metrics().await, &self.tokens_line(false)).unwrap_or(0.0)
    }

    /// Waits until the key's charged tokens are `total`: a request charged
    /// twice passes it, and is never waited out.
    async fn expect_charged(&self, total: u64, what: &str) {
        eventually(5, &format!("{total} tokens charged after {what}"), || async {
            let seen = self.charged_tokens().await;
            assert!(
                seen <= total as f64,
                "{seen} tokens charged after {what}, not {total}"
            );
            seen == total as f64
        })
        .await;
    }

    async fn send(&self, path: &str, body: &Value) -> reqwest::Response {
        post_as(&self.app, KEY, path, body).await
    }

    /// A whole answer, and the tokens its usage reports (`prompt + output`)
    /// with its cost checked.
    async fn whole(&self, path: &str, body: &Value, usage: impl Fn(&Value) -> (u64, u64)) -> u64 {
        let (status, answer) = status_and_json(self.send(path, body).await).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let (prompt, output) = usage(&answer);
        assert_gateway_usage(&answer, Some(priced(prompt + output, PRICE)));
        prompt + output
    }
}

fn tokens(value: &Value, member: &str) -> u64 {
    value[member]
        .as_u64()
        .unwrap_or_else(|| panic!("no `{member}` in {value}"))
}

/// Runs a request of each kind with `models`, checking after each that the
/// key was charged exactly what the answer reported, once.
async fn each_request_is_charged_its_reported_usage_once(setup: &Setup, models: &Models) {
    let mut total = 0;

    total += setup
        .whole(
            MESSAGES,
            &message_request(models.messages, "Hello there", false),
            |message| {
                (
                    tokens(&message["usage"], "input_tokens"),
                    tokens(&message["usage"], "output_tokens"),
                )
            },
        )
        .await;
    setup.expect_charged(total, "a message").await;

    let events = typed_events(
        setup
            .send(MESSAGES, &message_request(models.messages, "Hello again", true))
            .await,
    )
    .await;
    let input = tokens(
        &the_event(&events, "message_start")["message"]["usage"],
        "input_tokens",
    );
    let delta = the_event(&events, "message_delta");
    let output = tokens(&delta["usage"], "output_tokens");
    assert_gateway_usage(delta, Some(priced(input + output, PRICE)));
    total += input + output;
    setup.expect_charged(total, "a streamed message").await;

    // A count generates nothing: it is charged no token (the next request's
    // check would see one).
    let (status, count) = status_and_json(
        setup
            .send(COUNT_TOKENS, &count_request(models.messages, "Hello there"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{count}");

    total += setup
        .whole(
            RESPONSES,
            &response_request(models.responses, "Hello there", false),
            |response| {
                (
                    tokens(&response["usage"], "input_tokens"),
                    tokens(&response["usage"], "output_tokens"),
                )
            },
        )
        .await;
    setup.expect_charged(total, "a response").await;

    let events = typed_events(
        setup
            .send(
                RESPONSES,
                &response_request(models.responses, "Hello again", true),
            )
            .await,
    )
    .await;
    let completed = the_event(&events, "response.completed");
    let usage = &completed["response"]["usage"];
    let (input, output) = (tokens(usage, "input_tokens"), tokens(usage, "output_tokens"));
    assert_gateway_usage(completed, Some(priced(input + output, PRICE)));
    total += input + output;
    setup.expect_charged(total, "a streamed response").await;

    let embedding = json!({"model": models.embeddings, "input": ["one two three", "four"]});
    total += setup
        .whole(EMBEDDINGS, &embedding, |answer| {
            (tokens(&answer["usage"], "prompt_tokens"), 0)
        })
        .await;
    setup.expect_charged(total, "embeddings").await;

    let metrics = setup.app.metrics().await;
    assert_eq!(
        sample(&metrics, &setup.tokens_line(true)),
        None,
        "nothing estimated"
    );
    let spend_line = format!(
        "gatewayz_key_spend_usd_total{{estimated=\"false\",key=\"{}\"}}",
        setup.key_id
    );
    let spent = sample(&metrics, &spend_line).unwrap();
    assert!(
        (spent - priced(total, PRICE)).abs() < 1e-9,
        "{spent} charged for {total} tokens"
    );
    let standing: Value = setup
        .app
        .client
        .get(format!("{}/admin/keys/{}", setup.app.admin, setup.key_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = standing["standing"]["spent_usd"].as_f64().unwrap();
    assert!(
        (stored - spent).abs() < 1e-9,
        "the store and the metric agree: {standing}"
    );
}

#[tokio::test]
async fn each_demo_request_is_charged_its_reported_usage_once() {
    let setup = gateway("usage-demo", false).await;

    let models = Models {
        messages: "priced-demo",
        responses: "priced-demo",
        embeddings: "priced-demo-embedding",
    };
    each_request_is_charged_its_reported_usage_once(&setup, &models).await;
}

#[tokio::test]
async fn each_upstream_request_is_charged_its_reported_usage_once() {
    let setup = gateway("usage-upstream", true).await;

    let models = Models {
        messages: "priced-claude",
        responses: "priced-gpt",
        embeddings: "priced-embedding",
    };
    each_request_is_charged_its_reported_usage_once(&setup, &models).await;
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_is_charged_once_from_an_estimate_and_frees_its_slot() {
    let upstream = local_upstream(faulty()).await;
    let keys = PolicyFile::new(
        "endpoints-usage-cut",
        &entry(
            "usage-cut",
            KEY,
            "max_parallel = 1\nbudget_usd = 1000\nbudget_period = \"month\"",
        ),
    );
    let catalog = PolicyFile::new("endpoints-usage-catalog-cut", CATALOG);
    let app = TestApp::production(&[
        ("GATEWAYZ_API_KEYS_FILE", keys.path()),
        ("GATEWAYZ_CATALOG", catalog.path()),
        ("PORTKEY_BASE_URL", &upstream),
        ("PORTKEY_API_KEY", "pk-usage"),
        ("PROVIDER_OPENAI_API_KEY", "sk-usage"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-usage"),
    ])
    .await;
    let estimated = "gatewayz_key_tokens_total{estimated=\"true\",key=\"usage-cut\"}";
    let mut charged = 0.0;

    for (path, mut body) in [
        (MESSAGES, message_request("priced-claude", "Hello there", true)),
        (RESPONSES, response_request("priced-gpt", "Hello there", true)),
    ] {
        body["upstream_fault"] = json!("cut");
        let events = typed_events(post_as(&app, KEY, path, &body).await).await;
        assert_eq!(
            events.last().map(|event| event.name.as_str()),
            Some("error"),
            "{path}"
        );

        eventually(5, &format!("the cut stream of {path} is charged"), || async {
            sample(&app.metrics().await, estimated).is_some_and(|tokens| tokens > charged)
        })
        .await;
        charged = sample(&app.metrics().await, estimated).unwrap();
        // Its one parallel slot came back: the next request is admitted.
        let whole = if path == MESSAGES {
            message_request("priced-claude", "hi", false)
        } else {
            response_request("priced-gpt", "hi", false)
        };
        let (status, answer) = status_and_json(post_as(&app, KEY, path, &whole).await).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let tokens_line = "gatewayz_key_tokens_total{estimated=\"false\",key=\"usage-cut\"}";
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, estimated),
        Some(charged),
        "each cut stream charged once"
    );
    assert!(sample(&metrics, tokens_line).is_some_and(|tokens| tokens > 0.0));
}
