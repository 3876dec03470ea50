//! What the cache reports: its metrics on the admin listener after some
//! traffic, a full in-process cache's evictions, and the access line's
//! cache fields.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use super::{CATALOG, Gateway, answer_text, ask, completion_bytes, portkey, portkey_after, vars};
use crate::binary;
use crate::helpers::{KEY, PolicyFile, eventually, sample};

fn requests(model: &str, result: &str) -> String {
    format!("gatewayz_cache_requests_total{{model=\"{model}\",result=\"{result}\"}}")
}

#[tokio::test]
async fn each_result_what_is_coalesced_and_what_is_stored_is_counted_by_model() {
    let gateway = Gateway::start("metrics", portkey_after(Duration::from_millis(300)).await, &[]).await;
    let first = ask("cached", "Hello there");
    let second = ask("cached", "Something else");
    let shared = ask("shared", "Hello there");

    assert_eq!(gateway.chat(&first).await.cache(), Some("miss"));
    assert_eq!(gateway.chat(&first).await.cache(), Some("hit"));
    assert_eq!(
        gateway.chat_with(&first, "no-cache").await.cache(),
        Some("refresh")
    );
    assert_eq!(
        gateway.chat_with(&first, "no-store").await.cache(),
        Some("bypass")
    );
    let together = join_all((0..3).map(|_| gateway.chat(&second))).await;
    let mut results: Vec<_> = together.iter().map(|answer| answer.cache().unwrap()).collect();
    results.sort_unstable();
    assert_eq!(results, ["hit", "hit", "miss"]);
    assert_eq!(gateway.chat(&shared).await.cache(), Some("miss"));
    assert_eq!(gateway.chat(&ask("uncached", "Hello there")).await.cache(), None);

    let expected = [
        (requests("cached", "miss"), 2.0),
        (requests("cached", "hit"), 3.0),
        (requests("cached", "refresh"), 1.0),
        (requests("cached", "bypass"), 1.0),
        (requests("shared", "miss"), 1.0),
        ("gatewayz_cache_coalesced_total{model=\"cached\"}".to_owned(), 2.0),
    ];
    eventually(5, "every request is counted", || async {
        let metrics = gateway.app.metrics().await;
        expected
            .iter()
            .all(|(line, value)| sample(&metrics, line) == Some(*value))
    })
    .await;
    let metrics = gateway.app.metrics().await;
    assert_eq!(sample(&metrics, &requests("shared", "hit")), None);
    assert!(
        !metrics.contains("gatewayz_cache_requests_total{model=\"uncached\""),
        "a model without a time to live is not counted"
    );
    assert_eq!(sample(&metrics, "gatewayz_cache_store_errors_total{"), None);
    // Upstream answers 1 (first), 2 (its refresh), 4 (second), 5 (shared) were stored.
    let size = |n: usize| completion_bytes(&answer_text(n)).len() as f64;
    assert_eq!(
        sample(&metrics, "gatewayz_cache_stored_bytes_total{model=\"cached\"}"),
        Some(size(1) + size(2) + size(4))
    );
    assert_eq!(
        sample(&metrics, "gatewayz_cache_stored_bytes_total{model=\"shared\"}"),
        Some(size(5))
    );
    assert_eq!(
        sample(&metrics, "gatewayz_cache_entries "),
        Some(3.0),
        "the refresh replaced the first"
    );
    let held = sample(&metrics, "gatewayz_cache_bytes ").unwrap();
    let bodies = size(2) + size(4) + size(5);
    assert!(
        held >= bodies && held < bodies + 3.0 * 1024.0,
        "{held} for {bodies}"
    );
    assert_eq!(sample(&metrics, "gatewayz_cache_evictions_total "), Some(0.0));
}

#[tokio::test]
async fn a_full_in_process_cache_evicts_and_stays_within_its_bytes() {
    let gateway = Gateway::start(
        "evictions",
        portkey().await,
        &[("GATEWAYZ_CACHE_MAX_BYTES", "2000")],
    )
    .await;

    for index in 0..30 {
        let answer = gateway.chat(&ask("cached", &format!("Question {index}"))).await;
        assert_eq!((answer.status, answer.cache()), (200, Some("miss")));
    }

    let metrics = gateway.app.metrics().await;
    let evictions = sample(&metrics, "gatewayz_cache_evictions_total ").unwrap();
    let entries = sample(&metrics, "gatewayz_cache_entries ").unwrap();
    let bytes = sample(&metrics, "gatewayz_cache_bytes ").unwrap();
    assert!(evictions > 0.0, "{metrics}");
    assert!(bytes <= 2000.0 && bytes > 0.0, "{bytes}");
    assert!(entries > 0.0 && entries < 30.0, "{entries}");
    assert!(evictions + entries <= 30.0, "{evictions} + {entries}");
}

/// The access line of the request whose `x-request-id` is `id`.
fn access_line(gateway: &binary::Gateway, id: &str) -> Value {
    let event = gateway.wait_for_event(10, "the access line", |event| {
        event["target"] == "gatewayz::access" && event["fields"]["request_id"] == id
    });
    event["fields"].clone()
}

#[tokio::test]
async fn the_access_line_says_what_the_cache_did() {
    let portkey = portkey_after(Duration::from_millis(300)).await;
    let catalog = PolicyFile::new("cache-access-log", CATALOG);
    let base = format!("{}/v1", portkey.uri());
    let mut all = vars(&base, &catalog);
    all.extend([("GATEWAYZ_BIND", "127.0.0.1:0"), ("GATEWAYZ_API_KEYS", KEY)]);
    let gateway = binary::start(&all);
    let client = reqwest::Client::new();
    let send = |body: Value| {
        let request = client
            .post(format!("{}/v1/chat/completions", gateway.address))
            .bearer_auth(KEY)
            .json(&body)
            .timeout(Duration::from_secs(10));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    let body = ask("cached", "Hello there");

    let miss = send(body.clone()).await;
    let hit = send(body.clone()).await;
    let together = join_all((0..2).map(|_| send(ask("cached", "Something else")))).await;

    let miss = access_line(&gateway, &miss);
    assert_eq!(miss["cache"], "miss", "{miss}");
    assert!(miss.get("cache_age_s").is_none(), "{miss}");
    assert!(miss.get("cache_coalesced").is_none(), "{miss}");
    let hit = access_line(&gateway, &hit);
    assert_eq!(hit["cache"], "hit", "{hit}");
    assert!(hit["cache_age_s"].is_u64(), "{hit}");
    assert_eq!(hit["attempts"], 0, "{hit}");
    assert!(hit.get("upstream_ms").is_none(), "{hit}");
    assert_eq!(hit["cost_usd"], json!(0.0), "{hit}");
    let lines: Vec<Value> = together.iter().map(|id| access_line(&gateway, id)).collect();
    let coalesced: Vec<&Value> = lines
        .iter()
        .filter(|line| line["cache_coalesced"] == true)
        .collect();
    assert_eq!(coalesced.len(), 1, "{lines:?}");
    assert_eq!(coalesced[0]["cache"], "hit");
    assert_eq!(coalesced[0]["cache_age_s"], 0);
    for line in [&miss, &hit].into_iter().chain(&lines) {
        assert!(line.get("cache_store_error").is_none(), "{line}");
    }
}
