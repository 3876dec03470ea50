//! The routing rules, on a scripted provider and paused time: each test
//! drives a catalog model through `ChatService`, as the API does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::catalog::{Catalog, GroupSpec, Pricing, Target};
use crate::error::{ErrorSource, KeyError, UpstreamError};
use crate::model::{ChatChunk, ChatRequest, ChatResponse};
use crate::policy::{RoutingPolicy, Strategy};
use crate::portkey_routing::PortkeyRouting;
use crate::ports::{BreakerState, ChatStream};
use crate::ports::{Credentials, RequestContext};
use crate::provider::{ProviderKind, UpstreamProvider};
use crate::record::CallRecord;
use crate::route::{Route, RoutingFields};
use crate::service::{ChatCommand, ChatOutcome, ChatService};

/// What the scripted upstream does for one call.
#[derive(Clone)]
enum Step {
    Answer,
    Fail(fn() -> ChatError),
    /// Fails after a while.
    FailAfter(Duration, fn() -> ChatError),
    /// Never answers.
    Hang,
}

/// An upstream answering each upstream model by its script (then
/// successfully), and noting the models it was called with.
#[derive(Default)]
struct Scripted {
    scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<(String, Option<String>)>>,
}

impl Scripted {
    fn script(self, model: &str, steps: impl IntoIterator<Item = Step>) -> Self {
        self.scripts
            .lock()
            .unwrap()
            .insert(model.to_owned(), steps.into_iter().collect());
        self
    }

    /// The upstream models called, in order.
    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(model, _)| model.clone())
            .collect()
    }

    async fn step(&self, call: &ProviderCall) -> Result<(), ChatError> {
        let model = upstream_model(call);
        let config = call
            .route
            .portkey_config()
            .map(|config| config.as_str().to_owned());
        self.calls.lock().unwrap().push((model.clone(), config));
        let step = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&model)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::Answer);
        match step {
            Step::Answer => Ok(()),
            Step::Fail(error) => Err(error()),
            Step::FailAfter(wait, error) => {
                tokio::time::sleep(wait).await;
                Err(error())
            }
            Step::Hang => std::future::pending().await,
        }
    }
}

#[async_trait]
impl ChatProvider for Scripted {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        self.step(&call).await?;
        let answer = json!({"id": "x", "object": "chat.completion", "created": 0, "model": upstream_model(&call),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}});
        Ok(ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap())
    }

    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError> {
        self.step(&call).await?;
        let chunk = json!({
            "id": "x", "object": "chat.completion.chunk", "created": 0, "model": upstream_model(&call),
            "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]
        });
        let chunk = ChatChunk::from_json(serde_json::to_vec(&chunk).unwrap().into()).unwrap();
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    }
}

/// The model the upstream was sent.
fn upstream_model(call: &ProviderCall) -> String {
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    body["model"].as_str().unwrap().to_owned()
}

/// Keys for every provider but the ones listed.
struct KeysBut(Vec<UpstreamProvider>);

impl KeyResolver for KeysBut {
    fn resolve(&self, route: &Route) -> Result<Credentials, KeyError> {
        match route.portkey_provider() {
            Some(provider) if self.0.contains(&provider) => Err(KeyError::ProviderKeyMissing {
                provider,
                env_var: "PROVIDER_KEY",
            }),
            _ => Ok(Credentials::None),
        }
    }
}

/// Counts what routing tells.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl RoutingEvents for Told {
    fn retrying(&self, model: &str, target: &str, error: &ChatError, wait: Duration) {
        self.0.lock().unwrap().push(format!(
            "retry {model} {target} {} {}ms",
            error.kind(),
            wait.as_millis()
        ));
    }
    fn falling_back(&self, model: &str, from: &str, error: &ChatError) {
        self.0
            .lock()
            .unwrap()
            .push(format!("fallback {model} {from} {}", error.kind()));
    }
    fn breaker_changed(&self, model: &str, target: &str, state: BreakerState) {
        self.0
            .lock()
            .unwrap()
            .push(format!("breaker {model} {target} {}", state.as_str()));
    }
}

fn upstream(status: u16) -> UpstreamError {
    UpstreamError::new(ErrorSource::Provider, Some(status), "scripted")
}

fn unavailable() -> ChatError {
    ChatError::Unavailable(UpstreamError::new(ErrorSource::Portkey, None, "refused"))
}

fn failed_503() -> ChatError {
    ChatError::UpstreamFailed(upstream(503))
}

fn rejected_400() -> ChatError {
    ChatError::UpstreamRejected(upstream(400))
}

fn auth_401() -> ChatError {
    ChatError::UpstreamAuth(upstream(401))
}

fn rate_limited_after_1s() -> ChatError {
    ChatError::RateLimited {
        error: upstream(429),
        retry_after: Some(Duration::from_secs(1)),
    }
}

fn rate_limited_after_60s() -> ChatError {
    ChatError::RateLimited {
        error: upstream(429),
        retry_after: Some(Duration::from_secs(60)),
    }
}

fn target(name: &str, provider: UpstreamProvider, model: &str) -> Node {
    Node::Target(TargetSpec {
        name: name.into(),
        target: Target::Portkey {
            provider,
            model: model.into(),
            virtual_key: None,
            config: None,
        },
        weight: 1,
        retries: None,
        pricing: None,
    })
}

fn group(strategy: Strategy, members: Vec<Node>) -> Node {
    Node::Group(GroupSpec {
        strategy,
        weight: 1,
        members,
    })
}

fn policy() -> RoutingPolicy {
    RoutingPolicy {
        retries: 2,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        retry_after_max: Duration::from_secs(5),
        deadline: Duration::from_secs(30),
        breaker_failures: 0,
        breaker_cooldown: Duration::from_secs(10),
    }
}

struct Setup {
    service: ChatService,
    upstream: Arc<Scripted>,
    told: Arc<Told>,
}

fn setup(targets: Node, policy: RoutingPolicy, upstream: Scripted, keys: KeysBut) -> Setup {
    let upstream = Arc::new(upstream);
    let told = Arc::new(Told::default());
    let catalog = Catalog::new(vec![crate::catalog::ModelEntry {
        id: "m".into(),
        targets,
        max_tokens: None,
        policy,
        endpoints: crate::model::Service::DEFAULT.to_vec(),
        cache_ttl: None,
        cache_shared: false,
    }])
    .unwrap();
    let service = ChatService::new(
        crate::providers::Providers::default().with(ProviderKind::Portkey, upstream.clone()),
        Arc::new(keys),
    )
    .with_catalog(Arc::new(catalog))
    .with_routing_events(told.clone());
    Setup {
        service,
        upstream,
        told,
    }
}

impl Setup {
    async fn ask(&self, stream: bool) -> (Result<ChatOutcome, ChatError>, CallRecord) {
        self.ask_with(stream, RoutingFields::default()).await
    }

    async fn ask_with(
        &self,
        stream: bool,
        routing: RoutingFields,
    ) -> (Result<ChatOutcome, ChatError>, CallRecord) {
        let context = RequestContext::default();
        let record = context.record.clone();
        let command = ChatCommand {
            request: ChatRequest::parse(
                serde_json::to_vec(
                    &json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
                )
                .unwrap()
                .into(),
            )
            .unwrap(),
            routing,
            context,
            key: None,
            cache: Default::default(),
        };
        (self.service.execute(command).await, record)
    }

    fn told(&self) -> Vec<String> {
        self.told.0.lock().unwrap().clone()
    }
}

fn served(record: &CallRecord) -> (Option<String>, u32) {
    record.read(|facts| (facts.target.as_deref().map(str::to_owned), facts.attempts))
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_retried_after_a_jittered_backoff() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        policy(),
        Scripted::default().script("model-a", [Step::Fail(failed_503), Step::Fail(unavailable)]),
        KeysBut(vec![]),
    );

    let (outcome, record) = setup.ask(false).await;

    assert!(matches!(outcome, Ok(ChatOutcome::Complete(_))));
    assert_eq!(setup.upstream.calls(), ["model-a"; 3]);
    assert_eq!(served(&record), (Some("a".into()), 3));
    let told = setup.told();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[0].starts_with("retry m a upstream_failed "), "{told:?}");
    assert!(told[1].starts_with("retry m a unavailable "), "{told:?}");
    // Full jitter: below 100 ms, then below 200 ms.
    let waits: Vec<u128> = told
        .iter()
        .map(|line| {
            line.rsplit(' ')
                .next()
                .unwrap()
                .trim_end_matches("ms")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(waits[0] <= 100 && waits[1] <= 200, "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn refusals_are_neither_retried_nor_passed_to_another_target() {
    for refusal in [rejected_400 as fn() -> ChatError, auth_401] {
        let setup = setup(
            group(
                Strategy::Fallback,
                vec![
                    target("a", UpstreamProvider::OpenAi, "model-a"),
                    target("b", UpstreamProvider::Groq, "model-b"),
                ],
            ),
            policy(),
            Scripted::default().script("model-a", [Step::Fail(refusal)]),
            KeysBut(vec![]),
        );

        let (outcome, _) = setup.ask(false).await;

        assert_eq!(outcome.unwrap_err().kind(), refusal().kind());
        assert_eq!(setup.upstream.calls(), ["model-a"]);
        assert!(setup.told().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_is_waited_out_and_a_long_one_moves_on() {
    let short = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        policy(),
        Scripted::default().script("model-a", [Step::Fail(rate_limited_after_1s)]),
        KeysBut(vec![]),
    );
    let started = Instant::now();
    let (outcome, _) = short.ask(false).await;
    assert!(outcome.is_ok());
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    let long = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        policy(),
        Scripted::default().script("model-a", [Step::Fail(rate_limited_after_60s)]),
        KeysBut(vec![]),
    );
    let started = Instant::now();
    let (outcome, record) = long.ask(false).await;
    assert!(outcome.is_ok());
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(long.upstream.calls(), ["model-a", "model-b"]);
    assert_eq!(served(&record), (Some("b".into()), 2));
    assert_eq!(long.told(), ["fallback m a rate_limited"]);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_on_the_last_target_reaches_the_client() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        policy(),
        Scripted::default().script("model-a", [Step::Fail(rate_limited_after_60s)]),
        KeysBut(vec![]),
    );
    let (outcome, _) = setup.ask(false).await;
    assert_eq!(outcome.unwrap_err().retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(setup.upstream.calls(), ["model-a"]);
}

#[tokio::test(start_paused = true)]
async fn fallback_goes_in_order_and_the_serving_target_is_recorded_and_priced() {
    let pricing = Pricing::new(2.0, 0.0);
    let Node::Target(mut priced) = target("c", UpstreamProvider::Groq, "model-c") else {
        unreachable!("a target")
    };
    priced.pricing = Some(pricing);
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Anthropic, "model-b"),
                Node::Target(priced),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            ..policy()
        },
        Scripted::default().script("model-a", [Step::Fail(failed_503)]),
        KeysBut(vec![UpstreamProvider::Anthropic]),
    );

    let (outcome, record) = setup.ask(false).await;

    let Ok(ChatOutcome::Complete(response)) = outcome else {
        panic!("an answer")
    };
    // b had no key: skipped without a call.
    assert_eq!(setup.upstream.calls(), ["model-a", "model-c"]);
    assert_eq!(served(&record), (Some("c".into()), 2));
    let body: serde_json::Value = serde_json::from_slice(&response.json()).unwrap();
    assert_eq!(body["gateway_usage"]["cost_usd"], 2.0);
    record.read(|facts| assert_eq!(facts.portkey_provider, Some(UpstreamProvider::Groq)));
    assert_eq!(
        setup.told(),
        ["fallback m a upstream_failed", "fallback m b credentials"]
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_target_fails_the_client_hears_what_an_upstream_said() {
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Anthropic, "model-b"),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            ..policy()
        },
        Scripted::default().script("model-a", [Step::Fail(failed_503)]),
        KeysBut(vec![UpstreamProvider::Anthropic]),
    );
    let (outcome, record) = setup.ask(false).await;
    assert_eq!(outcome.unwrap_err().kind(), "upstream_failed");
    // b was skipped without a call: the record names a, which failed.
    record.read(|facts| {
        assert_eq!(facts.target.as_deref(), Some("a"));
        assert_eq!(facts.portkey_provider, Some(UpstreamProvider::OpenAi));
    });
}

#[tokio::test(start_paused = true)]
async fn retries_that_open_the_circuit_answer_with_what_the_upstream_said() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        RoutingPolicy {
            breaker_failures: 2,
            ..policy()
        },
        Scripted::default().script("model-a", (0..5).map(|_| Step::Fail(failed_503))),
        KeysBut(vec![]),
    );
    let (outcome, _) = setup.ask(false).await;
    assert_eq!(outcome.unwrap_err().kind(), "upstream_failed");
    assert_eq!(setup.upstream.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_target_left_only_a_sliver_of_the_deadline_is_not_blamed_for_missing_it() {
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            deadline: Duration::from_secs(10),
            breaker_failures: 1,
            ..policy()
        },
        Scripted::default()
            .script(
                "model-a",
                [Step::FailAfter(Duration::from_secs(7), failed_503), Step::Hang],
            )
            .script("model-b", [Step::Hang]),
        KeysBut(vec![]),
    );
    let (outcome, _) = setup.ask(false).await;
    assert_eq!(outcome.unwrap_err().kind(), "timeout");
    let opened: Vec<_> = setup
        .told()
        .into_iter()
        .filter(|line| line.ends_with("open"))
        .collect();
    assert_eq!(opened, ["breaker m a open"], "b had 3 s of 10: not its failure");
    // a's circuit is open (its failure counted); b, still closed, serves.
    let (_, record) = setup.ask(false).await;
    assert_eq!(served(&record), (Some("b".into()), 1));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_chunk_falls_back() {
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            ..policy()
        },
        Scripted::default().script("model-a", [Step::Fail(failed_503)]),
        KeysBut(vec![]),
    );
    let (outcome, record) = setup.ask(true).await;
    let Ok(ChatOutcome::Stream(stream)) = outcome else {
        panic!("a stream")
    };
    let chunks: Vec<_> = stream.collect().await;
    assert!(chunks.iter().all(Result::is_ok));
    assert_eq!(served(&record), (Some("b".into()), 2));
}

#[tokio::test(start_paused = true)]
async fn the_circuit_opens_skips_its_target_and_one_probe_closes_it() {
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(10),
            ..policy()
        },
        Scripted::default().script(
            "model-a",
            [
                Step::Fail(failed_503),
                Step::Fail(unavailable),
                Step::Fail(failed_503),
            ],
        ),
        KeysBut(vec![]),
    );

    for _ in 0..2 {
        assert!(setup.ask(false).await.0.is_ok());
    }
    assert!(setup.told().contains(&"breaker m a open".to_owned()));
    // Open: a is skipped without a call.
    let (outcome, record) = setup.ask(false).await;
    assert!(outcome.is_ok());
    assert_eq!(served(&record), (Some("b".into()), 1));
    assert_eq!(
        setup
            .upstream
            .calls()
            .iter()
            .filter(|model| *model == "model-a")
            .count(),
        2
    );

    // After the cool-down one probe goes through; it fails: open again.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(setup.ask(false).await.0.is_ok());
    assert_eq!(
        setup
            .upstream
            .calls()
            .iter()
            .filter(|model| *model == "model-a")
            .count(),
        3
    );
    let (_, record) = setup.ask(false).await;
    assert_eq!(
        served(&record),
        (Some("b".into()), 1),
        "open again after a failed probe"
    );

    // The next probe succeeds: closed, and a serves again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let (_, record) = setup.ask(false).await;
    assert_eq!(served(&record), (Some("a".into()), 1));
    let (_, record) = setup.ask(false).await;
    assert_eq!(served(&record), (Some("a".into()), 1));
    let breaker: Vec<_> = setup
        .told()
        .into_iter()
        .filter(|line| line.starts_with("breaker"))
        .collect();
    assert_eq!(
        breaker,
        [
            "breaker m a open",
            "breaker m a half_open",
            "breaker m a open",
            "breaker m a half_open",
            "breaker m a closed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_with_nowhere_else_to_go_says_when_to_come_back() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        RoutingPolicy {
            retries: 0,
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(10),
            ..policy()
        },
        Scripted::default().script("model-a", [Step::Fail(failed_503)]),
        KeysBut(vec![]),
    );
    assert!(setup.ask(false).await.0.is_err());
    tokio::time::advance(Duration::from_secs(4)).await;
    let error = setup.ask(false).await.0.unwrap_err();
    assert!(
        matches!(&error, ChatError::CircuitOpen { target, retry_in } if target == "a" && *retry_in == Duration::from_secs(6)),
        "{error:?}"
    );
    assert_eq!(setup.upstream.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_fits_in_one_deadline() {
    let setup = setup(
        group(
            Strategy::Fallback,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        RoutingPolicy {
            deadline: Duration::from_secs(3),
            ..policy()
        },
        Scripted::default()
            .script("model-a", [Step::Fail(failed_503), Step::Hang])
            .script("model-b", [Step::Hang]),
        KeysBut(vec![]),
    );
    let started = Instant::now();
    let error = setup.ask(false).await.0.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(
        matches!(&error, ChatError::Timeout(upstream) if upstream.source == ErrorSource::Gateway),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("deadline of 3000 ms (2 attempts)"),
        "{error}"
    );
    // Past the deadline, the next target is neither called nor blamed.
    assert_eq!(setup.upstream.calls(), ["model-a", "model-a"]);
    assert_eq!(
        setup
            .told()
            .iter()
            .filter(|line| line.starts_with("fallback"))
            .count(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_would_end_past_the_deadline_is_not_waited() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        RoutingPolicy {
            deadline: Duration::from_millis(500),
            ..policy()
        },
        Scripted::default().script("model-a", [Step::Fail(rate_limited_after_1s)]),
        KeysBut(vec![]),
    );
    let started = Instant::now();
    let error = setup.ask(false).await.0.unwrap_err();
    assert_eq!(error.kind(), "rate_limited");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_portkey_config_that_retries_leaves_retrying_to_portkey() {
    let setup = setup(
        target("a", UpstreamProvider::OpenAi, "model-a"),
        policy(),
        Scripted::default().script("model-a", [Step::Fail(failed_503)]),
        KeysBut(vec![]),
    );
    let routing = RoutingFields {
        portkey_config: Some(
            PortkeyRouting::from_value("portkey_config", json!({"retry": {"attempts": 3}})).unwrap(),
        ),
        ..RoutingFields::default()
    };
    let (outcome, _) = setup.ask_with(false, routing).await;
    assert_eq!(outcome.unwrap_err().kind(), "upstream_failed");
    assert_eq!(
        *setup.upstream.calls.lock().unwrap(),
        [(
            "model-a".to_owned(),
            Some(r#"{"retry":{"attempts":3}}"#.to_owned())
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_loadbalance_pool_tries_its_other_member_when_the_first_fails() {
    let setup = setup(
        group(
            Strategy::LoadBalance,
            vec![
                target("a", UpstreamProvider::OpenAi, "model-a"),
                target("b", UpstreamProvider::Groq, "model-b"),
            ],
        ),
        RoutingPolicy {
            retries: 0,
            ..policy()
        },
        Scripted::default()
            .script("model-a", (0..20).map(|_| Step::Fail(failed_503)))
            .script("model-b", (0..20).map(|_| Step::Fail(failed_503))),
        KeysBut(vec![]),
    );
    for _ in 0..10 {
        let (outcome, record) = setup.ask(false).await;
        assert_eq!(outcome.unwrap_err().kind(), "upstream_failed");
        assert_eq!(record.read(|facts| facts.attempts), 2);
    }
    assert_eq!(setup.upstream.calls().len(), 20);
}

#[test]
fn routes_of_targets_carry_their_config_and_the_clients_overrides_win() {
    let own = PortkeyRouting::from_value("c", json!("pc-own")).unwrap();
    let client = PortkeyRouting::from_value("c", json!("pc-client")).unwrap();
    let route = Target::Portkey {
        provider: UpstreamProvider::OpenAi,
        model: "m".into(),
        virtual_key: None,
        config: Some(own),
    }
    .route();
    assert_eq!(route.portkey_config().map(PortkeyRouting::as_str), Some("pc-own"));
    let overridden = route.overridden(&crate::route::Overrides {
        virtual_key: None,
        config: Some(client),
    });
    assert_eq!(
        overridden.portkey_config().map(PortkeyRouting::as_str),
        Some("pc-client")
    );
}

/// A scripted upstream behind each adapter: which one a call reached.
struct ByKind {
    portkey: Arc<Scripted>,
    direct: Arc<Scripted>,
}

fn mixed(targets: Node, portkey: Scripted, direct: Scripted) -> (ChatService, ByKind) {
    let (portkey, direct) = (Arc::new(portkey), Arc::new(direct));
    let catalog = Catalog::new(vec![crate::catalog::ModelEntry {
        id: "m".into(),
        targets,
        max_tokens: None,
        policy: RoutingPolicy {
            retries: 0,
            ..policy()
        },
        endpoints: crate::model::Service::DEFAULT.to_vec(),
        cache_ttl: None,
        cache_shared: false,
    }])
    .unwrap();
    let service = ChatService::new(
        crate::providers::Providers::default()
            .with(ProviderKind::Portkey, portkey.clone())
            .with(ProviderKind::Direct, direct.clone()),
        Arc::new(KeysBut(vec![])),
    )
    .with_catalog(Arc::new(catalog));
    (service, ByKind { portkey, direct })
}

fn direct_target(name: &str, upstream: &str, model: &str) -> Node {
    Node::Target(TargetSpec {
        name: name.into(),
        target: Target::Direct {
            upstream: upstream.into(),
            model: model.into(),
        },
        weight: 1,
        retries: None,
        pricing: Some(Pricing::new(2.0, 0.0)),
    })
}

#[tokio::test(start_paused = true)]
async fn a_model_falls_back_from_portkey_to_a_direct_upstream_and_back() {
    for (first_direct, stream) in [(false, false), (false, true), (true, false), (true, true)] {
        let (portkey_first, direct_first) = (!first_direct, first_direct);
        let members = if first_direct {
            vec![
                direct_target("vllm", "vllm", "llama"),
                target("openai", UpstreamProvider::OpenAi, "gpt"),
            ]
        } else {
            vec![
                target("openai", UpstreamProvider::OpenAi, "gpt"),
                direct_target("vllm", "vllm", "llama"),
            ]
        };
        let (service, by_kind) = mixed(
            group(Strategy::Fallback, members),
            Scripted::default().script("gpt", portkey_first.then_some(Step::Fail(failed_503))),
            Scripted::default().script("llama", direct_first.then_some(Step::Fail(unavailable))),
        );
        let setup = Setup {
            service,
            upstream: by_kind.portkey.clone(),
            told: Arc::default(),
        };
        let (outcome, record) = setup.ask(stream).await;
        assert!(outcome.is_ok(), "{first_direct} {stream}");
        // Each adapter was called with its own target's model, once.
        assert_eq!(by_kind.portkey.calls(), ["gpt"]);
        assert_eq!(by_kind.direct.calls(), ["llama"]);
        let (served_by, attempts) = served(&record);
        let expected = if first_direct { "openai" } else { "vllm" };
        assert_eq!((served_by.as_deref(), attempts), (Some(expected), 2));
        record.read(|facts| {
            if first_direct {
                assert_eq!(facts.provider, Some(ProviderKind::Portkey));
                assert_eq!(facts.upstream_name(), Some("openai"));
                assert_eq!(facts.direct_upstream, None);
            } else {
                assert_eq!(facts.provider, Some(ProviderKind::Direct));
                assert_eq!(facts.upstream_name(), Some("vllm"));
                assert_eq!(facts.portkey_provider, None);
                // Priced at the direct target's price.
                assert_eq!(facts.pricing.map(|p| p.input_per_million), Some(2.0));
            }
        });
    }
}
