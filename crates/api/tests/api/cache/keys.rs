//! Key policies and the cache: a key's `cache_ttl_s` over the catalog's
//! (0 turning it off), and a hit counted as a request of its key but
//! charging it nothing.

use serde_json::{Value, json};

use super::{CHAT, Gateway, answer_text, ask, portkey, post, with};
use crate::helpers::{entry, eventually};

#[tokio::test]
async fn a_keys_time_to_live_caches_a_model_the_catalog_does_not() {
    let policies = [
        entry("caching", "key-caching", "cache_ttl_s = 60"),
        entry("plain", "key-plain", ""),
    ]
    .concat();
    let gateway = Gateway::with_policies("key-ttl", portkey().await, Some(&policies), &[]).await;
    let app = &gateway.app;
    let body = ask("uncached", "Hello there");

    let caching = [
        post(app, "key-caching", CHAT, &body, None).await,
        post(app, "key-caching", CHAT, &body, None).await,
    ];
    let plain = [
        post(app, "key-plain", CHAT, &body, None).await,
        post(app, "key-plain", CHAT, &body, None).await,
    ];

    assert_eq!(
        [caching[0].cache(), caching[1].cache()],
        [Some("miss"), Some("hit")]
    );
    assert_eq!(caching[1].content(), answer_text(1));
    assert_eq!([plain[0].cache(), plain[1].cache()], [None, None]);
    assert_eq!(
        [plain[0].content(), plain[1].content()],
        [answer_text(2), answer_text(3)]
    );
    assert_eq!(gateway.calls(CHAT).await, 3);
}

#[tokio::test]
async fn a_key_with_a_time_to_live_of_0_is_not_cached_on_a_cached_model() {
    let policies = [
        entry("off", "key-off", "cache_ttl_s = 0"),
        entry("plain", "key-plain", ""),
    ]
    .concat();
    let gateway = Gateway::with_policies("key-ttl-0", portkey().await, Some(&policies), &[]).await;
    let app = &gateway.app;
    let body = ask("cached", "Hello there");

    let off = [
        post(app, "key-off", CHAT, &body, None).await,
        post(app, "key-off", CHAT, &body, None).await,
    ];
    let plain = [
        post(app, "key-plain", CHAT, &body, None).await,
        post(app, "key-plain", CHAT, &body, None).await,
    ];

    assert_eq!([off[0].cache(), off[1].cache()], [None, None]);
    assert_eq!(
        [off[0].content(), off[1].content()],
        [answer_text(1), answer_text(2)]
    );
    assert_eq!([plain[0].cache(), plain[1].cache()], [Some("miss"), Some("hit")]);
    assert_eq!(gateway.calls(CHAT).await, 3);
}

#[tokio::test]
async fn a_hit_counts_as_a_request_against_the_keys_rpm() {
    let policies = entry("team", "key-team", "rpm = 2");
    let gateway = Gateway::with_policies("key-rpm", portkey().await, Some(&policies), &[]).await;
    let body = ask("cached", "Hello there");

    let miss = post(&gateway.app, "key-team", CHAT, &body, None).await;
    let hit = post(&gateway.app, "key-team", CHAT, &body, None).await;
    let refused = post(&gateway.app, "key-team", CHAT, &body, None).await;

    assert_eq!((miss.status, miss.cache()), (200, Some("miss")));
    assert_eq!((hit.status, hit.cache()), (200, Some("hit")));
    assert_eq!(refused.status, 429, "{}", refused.text);
    let error = &refused.json()["error"];
    assert_eq!(
        (&error["type"], &error["code"]),
        (&Value::from("requests"), &Value::from("rate_limit_exceeded")),
        "{error}"
    );
    assert_eq!(gateway.calls(CHAT).await, 1);
}

async fn spent_usd(gateway: &Gateway, id: &str) -> f64 {
    let key: Value = gateway
        .app
        .client
        .get(format!("{}/admin/keys/{id}", gateway.app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["standing"]["spent_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no spent_usd in {key}"))
}

/// Whether key `team` was charged `tokens` tokens and `usd` dollars, in
/// the metrics and in the limits store.
async fn charged(gateway: &Gateway, tokens: f64, usd: f64) -> bool {
    let close = |value: f64| (value - usd).abs() < 1e-9;
    gateway
        .metric("gatewayz_key_tokens_total{estimated=\"false\",key=\"team\"}")
        .await
        == tokens
        && close(
            gateway
                .metric("gatewayz_key_spend_usd_total{estimated=\"false\",key=\"team\"}")
                .await,
        )
        && close(spent_usd(gateway, "team").await)
}

#[tokio::test]
async fn a_hit_whole_or_streamed_charges_its_key_no_tokens_and_no_money() {
    let policies = entry(
        "team",
        "key-team",
        "tpm = 100000\nbudget_usd = 100\nbudget_period = \"month\"",
    );
    let gateway = Gateway::with_policies("key-charge", portkey().await, Some(&policies), &[]).await;
    let app = &gateway.app;
    let send = |text: &'static str| {
        let body = ask("cached", text);
        async move { post(app, "key-team", CHAT, &body, None).await }
    };
    let completion_tokens = "gatewayz_tokens_total{kind=\"completion\",model=\"cached\"";

    assert_eq!(send("Hello there").await.cache(), Some("miss"));
    // 15 tokens at a dollar a thousand.
    eventually(5, "the miss is charged", || charged(&gateway, 15.0, 0.015)).await;
    assert_eq!(send("Hello there").await.cache(), Some("hit"));
    let streamed = with(ask("cached", "Hello there"), json!({"stream": true}));
    let streamed_hit = post(app, "key-team", CHAT, &streamed, None).await;
    assert_eq!(streamed_hit.cache(), Some("hit"));
    assert_eq!(streamed_hit.streamed_text(), answer_text(1));
    assert_eq!(send("Something else").await.cache(), Some("miss"));

    // Settled after the hits: had a hit been charged, never exactly two misses.
    eventually(5, "two misses are charged, and the hit nothing", || {
        charged(&gateway, 30.0, 0.030)
    })
    .await;
    assert_eq!(gateway.metric(completion_tokens).await, 10.0);
    let cost = gateway.metric("gatewayz_cost_usd_total{model=\"cached\"").await;
    assert!((cost - 0.030).abs() < 1e-9, "{cost}");
    assert_eq!(gateway.calls(CHAT).await, 2);
}
