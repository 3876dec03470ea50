//! Hits and misses: an identical request served from the cache, each field
//! that decides the answer making another key, keys' own answers or shared
//! ones, and what the client's `Cache-Control` asks.

use serde_json::json;

use super::{CHAT, Gateway, answer_text, ask, assert_cached_usage, completion_bytes, portkey, post, with};
use crate::helpers::{assert_openai_error, eventually};

#[tokio::test]
async fn an_identical_request_is_answered_from_the_cache_as_the_upstream_wrote_it() {
    let gateway = Gateway::start("identical", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");

    let first = gateway.chat(&body).await;
    let second = gateway.chat(&body).await;

    assert_eq!(
        (first.status, first.cache()),
        (200, Some("miss")),
        "{}",
        first.text
    );
    assert_eq!(first.age, None, "a miss has no age");
    assert_eq!(
        (second.status, second.cache()),
        (200, Some("hit")),
        "{}",
        second.text
    );
    assert!(second.age.is_some_and(|age| age <= 5), "{:?}", second.age);
    assert_eq!(gateway.calls(CHAT).await, 1);
    let (miss_text, miss_usage) = first.without_gateway_usage();
    let (hit_text, hit_usage) = second.without_gateway_usage();
    let upstream = String::from_utf8(completion_bytes(&answer_text(1))).unwrap();
    assert_eq!(miss_text, upstream, "the miss is the upstream's answer");
    assert_eq!(hit_text, upstream, "the hit is the stored answer, byte for byte");
    // 15 tokens at a dollar a thousand.
    let cost = miss_usage["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.015).abs() < 1e-9, "{miss_usage}");
    assert!(miss_usage.get("cached").is_none(), "{miss_usage}");
    assert_cached_usage(&hit_usage);
}

#[tokio::test]
async fn a_model_without_a_time_to_live_is_not_cached_and_has_no_cache_header() {
    let gateway = Gateway::start("uncached", portkey().await, &[]).await;
    let body = ask("uncached", "Hello there");

    let first = gateway.chat(&body).await;
    let second = gateway.chat(&body).await;

    for answer in [&first, &second] {
        assert_eq!((answer.status, answer.cache()), (200, None), "{}", answer.text);
        assert_eq!(answer.age, None);
    }
    assert_eq!(
        (first.content(), second.content()),
        (answer_text(1), answer_text(2))
    );
    assert_eq!(gateway.calls(CHAT).await, 2);
}

#[tokio::test]
async fn a_change_to_any_field_that_decides_the_answer_is_a_miss() {
    let gateway = Gateway::start("fields", portkey().await, &[]).await;
    let base = ask("cached", "Hello there");
    let tool =
        json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let variants = [
        base.clone(),
        with(base.clone(), json!({"temperature": 0.5})),
        with(base.clone(), json!({"temperature": 0.7})),
        with(base.clone(), json!({"tools": tool})),
        ask("cached", "Hello there!"),
        ask("cached-other", "Hello there"),
    ];

    for (index, body) in variants.iter().enumerate() {
        let answer = gateway.chat(body).await;
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("miss")),
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.content(), answer_text(index + 1), "{body}");
        assert_eq!(gateway.calls(CHAT).await, index + 1, "{body}");
    }
    // Each was stored under its own key.
    for (index, body) in variants.iter().enumerate() {
        let answer = gateway.chat(body).await;
        assert_eq!(answer.cache(), Some("hit"), "{body}");
        assert_eq!(answer.content(), answer_text(index + 1), "{body}");
    }
    assert_eq!(gateway.calls(CHAT).await, variants.len());
}

#[tokio::test]
async fn how_the_answer_is_delivered_and_the_end_user_do_not_change_the_key() {
    let gateway = Gateway::start("delivery", portkey().await, &[]).await;
    let base = ask("cached", "Hello there");
    assert_eq!(gateway.chat(&base).await.cache(), Some("miss"));

    let other_user = gateway
        .chat(&with(base.clone(), json!({"user": "end-user-2"})))
        .await;
    let streamed = gateway.chat(&with(base.clone(), json!({"stream": true}))).await;
    let with_usage = gateway
        .chat(&with(
            base.clone(),
            json!({"stream": true, "stream_options": {"include_usage": true}, "user": "end-user-3"}),
        ))
        .await;

    for answer in [&other_user, &streamed, &with_usage] {
        assert_eq!(
            (answer.status, answer.cache()),
            (200, Some("hit")),
            "{}",
            answer.text
        );
    }
    assert_eq!(other_user.content(), answer_text(1));
    assert_eq!(streamed.streamed_text(), answer_text(1));
    assert_eq!(with_usage.streamed_text(), answer_text(1));
    assert_eq!(gateway.calls(CHAT).await, 1);
}

#[tokio::test]
async fn each_gateway_key_has_its_own_answers_unless_the_model_shares_them() {
    let gateway = Gateway::start(
        "scopes",
        portkey().await,
        &[("GATEWAYZ_API_KEYS", "key-one,key-two")],
    )
    .await;
    let app = &gateway.app;
    let own = ask("cached", "Hello there");
    let shared = ask("shared", "Hello there");

    let one = post(app, "key-one", CHAT, &own, None).await;
    let two = post(app, "key-two", CHAT, &own, None).await;
    let one_again = post(app, "key-one", CHAT, &own, None).await;
    assert_eq!(
        [one.cache(), two.cache(), one_again.cache()],
        [Some("miss"), Some("miss"), Some("hit")]
    );
    assert_eq!(
        two.content(),
        answer_text(2),
        "key-two never saw key-one's answer"
    );
    assert_eq!(one_again.content(), answer_text(1));
    assert_eq!(gateway.calls(CHAT).await, 2);

    let one = post(app, "key-one", CHAT, &shared, None).await;
    let two = post(app, "key-two", CHAT, &shared, None).await;
    assert_eq!([one.cache(), two.cache()], [Some("miss"), Some("hit")]);
    assert_eq!(two.content(), answer_text(3));
    assert_eq!(gateway.calls(CHAT).await, 3);
}

#[tokio::test]
async fn no_store_neither_uses_nor_stores_an_answer() {
    let gateway = Gateway::start("no-store", portkey().await, &[]).await;
    let stored = ask("cached", "Hello there");
    let never_stored = ask("cached", "Something else");
    assert_eq!(gateway.chat(&stored).await.cache(), Some("miss"));

    let bypassed = gateway.chat_with(&stored, "no-store").await;
    let after = gateway.chat(&stored).await;
    let first_bypass = gateway.chat_with(&never_stored, "no-store").await;
    let then = gateway.chat(&never_stored).await;

    assert_eq!((bypassed.status, bypassed.cache()), (200, Some("bypass")));
    assert_eq!(bypassed.age, None);
    assert_eq!(bypassed.content(), answer_text(2), "not the stored answer");
    assert_eq!(after.cache(), Some("hit"));
    assert_eq!(after.content(), answer_text(1), "the bypass did not replace it");
    assert_eq!(first_bypass.cache(), Some("bypass"));
    assert_eq!(then.cache(), Some("miss"), "the bypass stored nothing");
    assert_eq!(then.content(), answer_text(4));
    assert_eq!(gateway.calls(CHAT).await, 4);
}

#[tokio::test]
async fn no_cache_calls_the_upstream_and_stores_the_fresh_answer() {
    let gateway = Gateway::start("no-cache", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");
    assert_eq!(gateway.chat(&body).await.cache(), Some("miss"));

    let refreshed = gateway.chat_with(&body, "no-cache").await;
    let after = gateway.chat(&body).await;

    assert_eq!((refreshed.status, refreshed.cache()), (200, Some("refresh")));
    assert_eq!(refreshed.content(), answer_text(2));
    assert_eq!(gateway.calls(CHAT).await, 2);
    assert_eq!(after.cache(), Some("hit"));
    assert_eq!(
        after.content(),
        answer_text(2),
        "the refreshed answer replaced the first"
    );
}

#[tokio::test]
async fn max_age_refuses_a_stored_answer_older_than_it_allows() {
    let gateway = Gateway::start("max-age", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");
    assert_eq!(gateway.chat(&body).await.cache(), Some("miss"));
    // Hits (which change nothing) until the stored answer is a second old.
    eventually(5, "the stored answer is a second old", || async {
        let hit = gateway.chat(&body).await;
        assert_eq!(hit.cache(), Some("hit"));
        hit.age.is_some_and(|age| age >= 1)
    })
    .await;

    let young_enough = gateway.chat_with(&body, "max-age=600").await;
    let too_old = gateway.chat_with(&body, "max-age=0").await;
    let replaced = gateway.chat(&body).await;

    assert_eq!(young_enough.cache(), Some("hit"));
    assert_eq!(young_enough.content(), answer_text(1));
    assert_eq!((too_old.status, too_old.cache()), (200, Some("miss")));
    assert_eq!(too_old.content(), answer_text(2));
    assert_eq!(gateway.calls(CHAT).await, 2);
    assert_eq!(replaced.cache(), Some("hit"));
    assert_eq!(replaced.content(), answer_text(2), "the miss stored its answer");
}

#[tokio::test]
async fn a_malformed_max_age_is_a_400_naming_cache_control() {
    let gateway = Gateway::start("bad-max-age", portkey().await, &[]).await;
    let body = ask("cached", "Hello there");

    for header in [
        "max-age=abc",
        "max-age=",
        "max-age",
        "max-age=-1",
        "max-age=1.5",
        "no-cache, max-age=1s",
    ] {
        let answer = gateway.chat_with(&body, header).await;
        assert_eq!(answer.status, 400, "{header}: {}", answer.text);
        let body = answer.json();
        assert_eq!(
            assert_openai_error(&body)["param"],
            "Cache-Control",
            "{header}: {body}"
        );
    }
    assert_eq!(gateway.calls(CHAT).await, 0);
}
