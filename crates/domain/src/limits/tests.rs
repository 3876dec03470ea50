//! The use case with key limits: refusals before any upstream call, and
//! settlement exactly once however a request ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;

use super::*;
use crate::ports::{ChatProvider, ChatStream, Credentials, MockKeyResolver, ProviderCall, RequestContext};
use crate::provider::ProviderKind;
use crate::route::RoutingFields;
use crate::{
    ChatChunk, ChatCommand, ChatError, ChatOutcome, ChatRequest, ChatResponse, ChatService, Providers,
};

/// A store that admits or refuses as told and keeps every settlement.
#[derive(Default)]
struct Ledger {
    refuse: Option<LimitKind>,
    admitted: Mutex<Vec<Admission>>,
    settled: Mutex<Vec<Settlement>>,
}

#[async_trait]
impl LimitsStore for Ledger {
    async fn admit(&self, admission: &Admission) -> Result<Decision, StoreError> {
        if let Some(limit) = self.refuse {
            return Ok(Decision::Refused {
                limit,
                retry_after: Duration::from_secs(2),
                standing: Standing::default(),
            });
        }
        self.admitted.lock().unwrap().push(admission.clone());
        Ok(Decision::Admitted(Standing::default()))
    }

    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        self.settled.lock().unwrap().push(settlement.clone());
        Ok(())
    }

    async fn standing(&self, _: &KeyPolicy, _: u64) -> Result<Standing, StoreError> {
        Ok(Standing::default())
    }
}

/// Answers with usage, or streams `chunks` content chunks (then usage when
/// `usage` is set), or fails.
struct Upstream {
    chunks: usize,
    usage: bool,
    fail: bool,
}

fn chunk(content: bool, usage: bool) -> ChatChunk {
    let mut value = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]});
    if !content {
        value["choices"] = json!([]);
    }
    if usage {
        value["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 5});
    }
    ChatChunk::from_json(serde_json::to_vec(&value).unwrap().into()).unwrap()
}

#[async_trait]
impl ChatProvider for Upstream {
    async fn complete(&self, _: ProviderCall) -> Result<ChatResponse, ChatError> {
        if self.fail {
            return Err(ChatError::Unavailable(crate::UpstreamError::new(
                crate::ErrorSource::Provider,
                Some(503),
                "down",
            )));
        }
        let mut answer = json!({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]});
        if self.usage {
            answer["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 5});
        }
        Ok(ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap())
    }

    async fn stream(&self, _: ProviderCall) -> Result<ChatStream, ChatError> {
        let mut chunks: Vec<Result<ChatChunk, ChatError>> =
            (0..self.chunks).map(|_| Ok(chunk(true, false))).collect();
        if self.usage {
            chunks.push(Ok(chunk(false, true)));
        }
        Ok(futures::stream::iter(chunks)
            .chain(futures::stream::pending())
            .boxed())
    }
}

fn service(upstream: Upstream, ledger: &Arc<Ledger>) -> ChatService {
    let mut keys = MockKeyResolver::new();
    keys.expect_resolve().returning(|_| Ok(Credentials::None));
    ChatService::new(
        Providers::default().with(ProviderKind::Demo, Arc::new(upstream)),
        Arc::new(keys),
    )
    .with_limits(Arc::clone(ledger) as Arc<dyn LimitsStore>)
}

fn policy() -> Arc<KeyPolicy> {
    Arc::new(KeyPolicy {
        rpm: Some(10),
        tpm: Some(100_000),
        ..KeyPolicy::unlimited("team-a")
    })
}

fn command(stream: bool, key: Arc<KeyPolicy>) -> ChatCommand {
    let body = json!({"model": "demo-1", "stream": stream, "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello there"}]});
    ChatCommand {
        request: ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap(),
        routing: RoutingFields {
            provider: Some("demo".into()),
            ..RoutingFields::default()
        },
        context: RequestContext::new("req-1"),
        key: Some(key),
        cache: Default::default(),
    }
}

async fn settled(service: &ChatService, ledger: &Ledger) -> Vec<Settlement> {
    assert!(service.limits().unwrap().flush(Duration::from_secs(5)).await);
    ledger.settled.lock().unwrap().clone()
}

#[tokio::test]
async fn an_expired_key_and_a_model_off_its_list_are_refused_before_admission() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 0,
            usage: true,
            fail: false,
        },
        &ledger,
    );
    let expired = Arc::new(KeyPolicy {
        expires_at: Some(1),
        ..(*policy()).clone()
    });
    let error = service.execute(command(false, expired)).await.unwrap_err();
    assert!(
        matches!(error, ChatError::KeyExpired(ref id) if id == "team-a"),
        "{error}"
    );
    let listed = Arc::new(KeyPolicy {
        models: Some(vec![ModelPattern::new("gpt-*")]),
        ..(*policy()).clone()
    });
    let error = service.execute(command(false, listed)).await.unwrap_err();
    assert!(matches!(error, ChatError::ModelNotAllowed { .. }), "{error}");
    assert!(ledger.admitted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_upstream() {
    let ledger = Arc::new(Ledger {
        refuse: Some(LimitKind::Tokens),
        ..Ledger::default()
    });
    let service = service(
        Upstream {
            chunks: 0,
            usage: true,
            fail: true,
        },
        &ledger,
    );
    let error = service.execute(command(false, policy())).await.unwrap_err();
    assert!(
        matches!(error, ChatError::LimitExceeded { limit: LimitKind::Tokens, retry_after, .. } if retry_after == Duration::from_secs(2)),
        "{error}"
    );
    assert!(error.to_string().contains("tokens per min"), "{error}");
}

#[tokio::test]
async fn an_answer_is_settled_once_with_its_usage_and_a_failure_with_nothing() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 0,
            usage: true,
            fail: false,
        },
        &ledger,
    );
    service.execute(command(false, policy())).await.unwrap();
    let settlements = settled(&service, &ledger).await;
    assert_eq!(settlements.len(), 1);
    let admitted = ledger.admitted.lock().unwrap()[0].clone();
    assert!(admitted.lease.starts_with("req-1:"), "{}", admitted.lease);
    // The prompt's estimate (its messages' size / 4) and the output limit.
    assert!(
        admitted.reserve.tokens > 100 && admitted.reserve.tokens < 130,
        "{:?}",
        admitted.reserve
    );
    assert_eq!(settlements[0].reserved, admitted.reserve);
    assert_eq!(settlements[0].used.tokens, 15);
    assert!(!settlements[0].estimated);

    let failing = Arc::new(Ledger::default());
    let service = self::service(
        Upstream {
            chunks: 0,
            usage: true,
            fail: true,
        },
        &failing,
    );
    service.execute(command(false, policy())).await.unwrap_err();
    let settlements = settled(&service, &failing).await;
    assert_eq!(settlements.len(), 1);
    assert_eq!(settlements[0].used, Spend::default());
}

#[tokio::test]
async fn a_stream_is_settled_once_with_its_usage_at_its_end() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 3,
            usage: true,
            fail: false,
        },
        &ledger,
    );
    let Ok(ChatOutcome::Stream(mut chunks)) = service.execute(command(true, policy())).await else {
        panic!("a stream");
    };
    for _ in 0..4 {
        chunks.next().await.unwrap().unwrap();
    }
    drop(chunks);
    let settlements = settled(&service, &ledger).await;
    assert_eq!(settlements.len(), 1);
    assert_eq!(settlements[0].used.tokens, 15);
    assert!(!settlements[0].estimated);
}

#[tokio::test]
async fn a_stream_left_midway_is_settled_once_with_an_estimate() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 5,
            usage: false,
            fail: false,
        },
        &ledger,
    );
    let context = RequestContext::new("req-2");
    let record = context.record.clone();
    let mut command = command(true, policy());
    command.context = context;
    let Ok(ChatOutcome::Stream(mut chunks)) = service.execute(command).await else {
        panic!("a stream");
    };
    for _ in 0..3 {
        chunks.next().await.unwrap().unwrap();
    }
    // The client leaves: the stream is dropped.
    drop(chunks);
    let settlements = settled(&service, &ledger).await;
    assert_eq!(settlements.len(), 1, "exactly once");
    let admitted = ledger.admitted.lock().unwrap()[0].clone();
    let prompt_estimate = admitted.reserve.tokens - 100;
    assert_eq!(
        settlements[0].used.tokens,
        prompt_estimate + 3,
        "the prompt and a token per chunk relayed"
    );
    assert!(settlements[0].estimated);
    assert!(record.read(|facts| facts.usage_estimated));
}

#[tokio::test]
async fn a_huge_output_limit_reserves_a_bounded_spend_and_never_overflows() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 0,
            usage: true,
            fail: true,
        },
        &ledger,
    );
    let body = json!({"model": "demo-1", "max_tokens": i64::MAX, "n": 3,
        "messages": [{"role": "user", "content": "hello"}]});
    let mut command = command(false, policy());
    command.request = ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap();
    service.execute(command).await.unwrap_err();
    let admitted = ledger.admitted.lock().unwrap()[0].clone();
    assert!(admitted.reserve.tokens <= Spend::MAX, "{:?}", admitted.reserve);
    assert!(
        admitted.reserve.tokens >= 3 << 24,
        "three choices of the largest limit counted"
    );
    assert_eq!(settled(&service, &ledger).await[0].used, Spend::default());
}

#[tokio::test]
async fn an_answer_without_usage_is_charged_its_prompt_and_its_size_as_an_estimate() {
    let ledger = Arc::new(Ledger::default());
    let service = service(
        Upstream {
            chunks: 0,
            usage: false,
            fail: false,
        },
        &ledger,
    );
    let response = match service.execute(command(false, policy())).await.unwrap() {
        ChatOutcome::Complete(response) => response,
        ChatOutcome::Stream(_) => panic!("a whole answer"),
    };
    let settlements = settled(&service, &ledger).await;
    let admitted = ledger.admitted.lock().unwrap()[0].clone();
    let prompt_estimate = admitted.reserve.tokens - 100;
    assert!(settlements[0].estimated);
    let completion = (response.len().saturating_sub(200) / 4) as u64;
    assert_eq!(settlements[0].used.tokens, prompt_estimate + completion);
}

/// Fails its stream before the first chunk.
struct FailsFirst;

#[async_trait]
impl ChatProvider for FailsFirst {
    async fn complete(&self, _: ProviderCall) -> Result<ChatResponse, ChatError> {
        unreachable!("streams only")
    }

    async fn stream(&self, _: ProviderCall) -> Result<ChatStream, ChatError> {
        let error = ChatError::Timeout(crate::UpstreamError::new(
            crate::ErrorSource::Portkey,
            None,
            "slow",
        ));
        Ok(futures::stream::iter([Err(error)]).boxed())
    }
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_is_charged_nothing() {
    let ledger = Arc::new(Ledger::default());
    let mut keys = MockKeyResolver::new();
    keys.expect_resolve().returning(|_| Ok(Credentials::None));
    let service = ChatService::new(
        Providers::default().with(ProviderKind::Demo, Arc::new(FailsFirst)),
        Arc::new(keys),
    )
    .with_limits(Arc::clone(&ledger) as Arc<dyn LimitsStore>);
    let Ok(ChatOutcome::Stream(mut chunks)) = service.execute(command(true, policy())).await else {
        panic!("a stream");
    };
    assert!(chunks.next().await.unwrap().is_err());
    drop(chunks);
    let settlements = settled(&service, &ledger).await;
    assert_eq!(settlements.len(), 1);
    assert_eq!(
        (settlements[0].used, settlements[0].estimated),
        (Spend::default(), false)
    );
}

#[tokio::test]
async fn a_reservation_past_the_whole_tpm_is_refused_without_a_retry() {
    let policy = Arc::new(KeyPolicy {
        tpm: Some(50),
        ..KeyPolicy::unlimited("small")
    });
    let error = ChatError::refused_by(
        LimitKind::Tokens,
        Duration::from_micros(1),
        &policy,
        Spend {
            tokens: 120,
            usd_micros: 0,
        },
    );
    assert_eq!(error.retry_after(), Some(Duration::ZERO));
    assert!(error.to_string().starts_with("Request too large"), "{error}");
}

#[test]
fn a_settlement_whose_runtime_ends_first_is_sent_by_the_worker_once() {
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let limits = main.block_on(async { Limits::new(Arc::clone(&ledger) as Arc<dyn LimitsStore>) });
    let record = crate::CallRecord::default();
    let ticket = main
        .block_on(limits.admit(&policy(), "lease-1".into(), Spend::default(), &record))
        .unwrap();
    // A server worker's runtime: the settlement's task is spawned there,
    // and the runtime ends before running it.
    let worker = tokio::runtime::Builder::new_current_thread().build().unwrap();
    worker.block_on(async move {
        ticket.settle(Spend {
            tokens: 7,
            usd_micros: 0,
        })
    });
    drop(worker);
    assert!(main.block_on(limits.flush(Duration::from_secs(5))));
    let settled = ledger.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 1, "exactly once");
    assert_eq!(settled[0].used.tokens, 7);
    assert_eq!(
        record.read(|facts| facts.charged.map(|charged| charged.tokens)),
        Some(7)
    );
}
