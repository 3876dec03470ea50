//! The use case with a response cache: which requests are cached and under
//! which key, what a stored answer too old or a failing store does, and
//! what a follower does when the request it waited on fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::cache::{CacheKey, CacheStore, CachedAnswer, CachedBody, ResponseCache};
use crate::catalog::{Catalog, ModelEntry, Target};
use crate::limits::StoreError;
use crate::model::Endpoint;
use crate::ports::{ChatStream, MockKeyResolver};
use crate::provider::ProviderKind;

/// Answers each call with a completion numbered by the calls so far,
/// after `delay`; fails the first `failures` calls.
#[derive(Default)]
struct Upstream {
    calls: AtomicUsize,
    failures: usize,
    delay: Duration,
}

#[async_trait]
impl ChatProvider for Upstream {
    async fn complete(&self, _: ProviderCall) -> Result<ChatResponse, ChatError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        if call <= self.failures {
            return Err(ChatError::UpstreamFailed(crate::error::UpstreamError::new(
                crate::error::ErrorSource::Provider,
                // Not retried by the model's routing.
                Some(400),
                "refused",
            )));
        }
        let answer = json!({"id": format!("c{call}"), "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer {call}")},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
        Ok(ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap())
    }

    async fn stream(&self, _: ProviderCall) -> Result<ChatStream, ChatError> {
        unreachable!("no test streams")
    }
}

/// A store in a map, which can be made to fail.
#[derive(Default)]
struct Store {
    answers: Mutex<HashMap<CacheKey, CachedAnswer>>,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CacheStore for Store {
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError("down".into()));
        }
        Ok(self.answers.lock().unwrap().get(key).cloned())
    }

    async fn put(&self, key: &CacheKey, answer: &CachedAnswer, _: Duration) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError("down".into()));
        }
        self.answers.lock().unwrap().insert(*key, answer.clone());
        Ok(())
    }
}

/// `cached` caches for a minute, `plain` does not.
fn service(upstream: Arc<Upstream>, store: Arc<Store>) -> ChatService {
    let catalog = Catalog::new(vec![
        ModelEntry {
            cache_ttl: Some(Duration::from_secs(60)),
            ..ModelEntry::single(
                "cached",
                Target::Demo {
                    model: "cached".into(),
                },
                None,
            )
        },
        ModelEntry::single(
            "plain",
            Target::Demo {
                model: "plain".into(),
            },
            None,
        ),
    ])
    .unwrap();
    let mut keys = MockKeyResolver::new();
    keys.expect_resolve().returning(|_| Ok(Credentials::None));
    ChatService::new(
        Providers::default().with(ProviderKind::Demo, upstream),
        Arc::new(keys),
    )
    .with_catalog(Arc::new(catalog))
    .with_cache(ResponseCache::new(store, 1024 * 1024))
}

fn command(model: &str, key: Option<KeyPolicy>, cache: CacheDirectives) -> ChatCommand {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    ChatCommand {
        request: ChatRequest::parse_for(Endpoint::Chat, body.to_string().into()).unwrap(),
        routing: RoutingFields::default(),
        context: RequestContext::default(),
        key: Some(Arc::new(key.unwrap_or_else(|| KeyPolicy::unlimited("k")))),
        cache,
    }
}

/// The answer's content and what the cache did.
async fn ask(service: &ChatService, command: ChatCommand) -> (String, Option<CacheStatus>) {
    let record = command.context.record.clone();
    let ChatOutcome::Complete(answer) = service.execute(command).await.unwrap() else {
        panic!("a whole answer")
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer.json()).unwrap();
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    (content, record.snapshot().cache)
}

#[tokio::test]
async fn only_models_or_keys_with_a_time_to_live_are_cached_and_a_keys_zero_turns_it_off() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let plain = || command("plain", None, CacheDirectives::default());
    assert_eq!(ask(&service, plain()).await, ("answer 1".into(), None));
    assert_eq!(ask(&service, plain()).await, ("answer 2".into(), None));

    let caching_key = || KeyPolicy {
        cache_ttl: Some(Duration::from_secs(5)),
        ..KeyPolicy::unlimited("caching")
    };
    let by_key = || command("plain", Some(caching_key()), CacheDirectives::default());
    assert_eq!(
        ask(&service, by_key()).await,
        ("answer 3".into(), Some(CacheStatus::Miss))
    );
    assert_eq!(
        ask(&service, by_key()).await,
        ("answer 3".into(), Some(CacheStatus::Hit))
    );

    let off = || KeyPolicy {
        cache_ttl: Some(Duration::ZERO),
        ..KeyPolicy::unlimited("off")
    };
    let cached_off = || command("cached", Some(off()), CacheDirectives::default());
    assert_eq!(ask(&service, cached_off()).await, ("answer 4".into(), None));
    assert_eq!(ask(&service, cached_off()).await, ("answer 5".into(), None));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_answer_older_than_max_age_is_a_miss_and_is_replaced() {
    let upstream = Arc::new(Upstream::default());
    let store = Arc::new(Store::default());
    let service = service(upstream.clone(), store.clone());
    let plain = || command("cached", None, CacheDirectives::default());
    assert_eq!(ask(&service, plain()).await.0, "answer 1");
    // Made ten seconds older.
    for answer in store.answers.lock().unwrap().values_mut() {
        answer.stored_at -= 10;
    }
    let within = |seconds| {
        command(
            "cached",
            None,
            CacheDirectives {
                max_age: Some(Duration::from_secs(seconds)),
                ..CacheDirectives::default()
            },
        )
    };
    assert_eq!(
        ask(&service, within(60)).await,
        ("answer 1".into(), Some(CacheStatus::Hit))
    );
    assert_eq!(
        ask(&service, within(5)).await,
        ("answer 2".into(), Some(CacheStatus::Miss))
    );
    assert_eq!(
        ask(&service, plain()).await,
        ("answer 2".into(), Some(CacheStatus::Hit))
    );
}

#[tokio::test]
async fn a_failing_store_makes_misses_and_is_noted_never_a_failure() {
    let upstream = Arc::new(Upstream::default());
    let store = Arc::new(Store::default());
    store.failing.store(true, Ordering::SeqCst);
    let service = service(upstream.clone(), store);
    let command = command("cached", None, CacheDirectives::default());
    let record = command.context.record.clone();
    let ChatOutcome::Complete(_) = service.execute(command).await.unwrap() else {
        panic!("a whole answer")
    };
    let facts = record.snapshot();
    assert_eq!(facts.cache, Some(CacheStatus::Miss));
    assert!(facts.cache_store_error);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn waiters_on_a_request_that_fails_make_their_own_calls() {
    let upstream = Arc::new(Upstream {
        failures: 1,
        delay: Duration::from_millis(50),
        ..Upstream::default()
    });
    let service = service(upstream.clone(), Arc::default());
    let asks = (0..3).map(|_| service.execute(command("cached", None, CacheDirectives::default())));
    let outcomes = futures::future::join_all(asks).await;
    // The first failed; each waiter then made its own call.
    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_err()).count(), 1);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn identical_requests_in_flight_make_one_call() {
    let upstream = Arc::new(Upstream {
        delay: Duration::from_millis(50),
        ..Upstream::default()
    });
    let service = service(upstream.clone(), Arc::default());
    let asks = (0..10).map(|_| ask(&service, command("cached", None, CacheDirectives::default())));
    let answers = futures::future::join_all(asks).await;
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|(content, _)| content == "answer 1"));
    let hits = answers
        .iter()
        .filter(|(_, status)| *status == Some(CacheStatus::Hit))
        .count();
    assert_eq!(hits, 9);
}

#[tokio::test]
async fn no_store_bypasses_and_no_cache_refreshes() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let with = |directives| command("cached", None, directives);
    let no_store = CacheDirectives {
        no_store: true,
        ..CacheDirectives::default()
    };
    let no_cache = CacheDirectives {
        no_cache: true,
        ..CacheDirectives::default()
    };
    assert_eq!(
        ask(&service, with(no_store)).await,
        ("answer 1".into(), Some(CacheStatus::Bypass))
    );
    assert_eq!(
        ask(&service, with(CacheDirectives::default())).await.1,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        ask(&service, with(no_cache)).await,
        ("answer 3".into(), Some(CacheStatus::Refresh))
    );
    assert_eq!(
        ask(&service, with(CacheDirectives::default())).await,
        ("answer 3".into(), Some(CacheStatus::Hit))
    );
}

#[test]
fn a_stored_answer_in_either_form_is_what_the_store_gave() {
    // CachedBody's size counts its bytes in either form.
    assert_eq!(CachedBody::Chunks(vec!["ab".into(), "c".into()]).len(), 3);
}

#[tokio::test]
async fn a_hit_is_held_in_the_memory_budget_and_refused_when_it_cannot_be() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let plain = || command("cached", None, CacheDirectives::default());
    assert_eq!(ask(&service, plain()).await.1, Some(CacheStatus::Miss));

    // A budget with room for the answer: the hit's copy holds it until
    // the answer is dropped.
    let budget = crate::budget::MemoryBudget::new(64 * 1024);
    let mut roomy = plain();
    roomy.context.budget = budget.clone();
    let ChatOutcome::Complete(answer) = service.execute(roomy).await.unwrap() else {
        panic!("a whole answer")
    };
    assert!(budget.in_use() > 0);
    drop(answer);
    assert_eq!(budget.in_use(), 0);

    // A budget already spent: the hit is refused as overloaded, not served
    // outside it.
    let full = crate::budget::MemoryBudget::new(1024);
    let mut taken = full.lease();
    taken.cover(1024).unwrap();
    let mut tight = plain();
    tight.context.budget = full;
    assert!(matches!(
        service.execute(tight).await,
        Err(ChatError::Overloaded(_))
    ));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}
