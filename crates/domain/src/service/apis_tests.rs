//! The use case on the APIs beside chat: which catalog models serve which
//! API, Responses follow-ups pinned to the target that made the response,
//! and calls by id kept to the key that made it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::catalog::{Catalog, GroupSpec, ModelEntry, Node, Target, TargetSpec};
use crate::limits::StoreError;
use crate::model::{Endpoint, Service};
use crate::policy::{RoutingPolicy, Strategy};
use crate::ports::{ChatStream, MockKeyResolver, ResponseAction, ResponseCall};
use crate::provider::{ProviderKind, UpstreamProvider};
use crate::responses::{ResponseCommand, ResponseMemory, ResponseTarget};

/// Answers every call with a Responses API answer naming the model it was
/// sent, and notes each call's upstream model.
#[derive(Default)]
struct Upstream {
    models: Mutex<Vec<String>>,
    by_id: Mutex<Vec<(ResponseAction, String)>>,
}

#[async_trait]
impl ChatProvider for Upstream {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        let model = body["model"].as_str().unwrap().to_owned();
        self.models.lock().unwrap().push(model.clone());
        let count = self.models.lock().unwrap().len();
        let answer = json!({"id": format!("resp_{count}"), "object": "response", "model": model,
            "usage": {"input_tokens": 3, "output_tokens": 4}});
        Ok(ChatResponse::parse(
            call.request.endpoint(),
            serde_json::to_vec(&answer).unwrap().into(),
        )
        .unwrap())
    }

    async fn stream(&self, _: ProviderCall) -> Result<ChatStream, ChatError> {
        unreachable!("no test streams")
    }

    async fn respond_by_id(&self, call: ResponseCall) -> Result<Bytes, ChatError> {
        self.by_id.lock().unwrap().push((call.action, call.id.clone()));
        Ok(Bytes::from(json!({"id": call.id}).to_string()))
    }
}

#[derive(Default)]
struct Memory(Mutex<HashMap<String, ResponseTarget>>);

#[async_trait]
impl ResponseMemory for Memory {
    async fn remember(&self, id: &str, target: &ResponseTarget) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(id.to_owned(), target.clone());
        Ok(())
    }

    async fn recall(&self, id: &str) -> Result<Option<ResponseTarget>, StoreError> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }

    async fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

fn target(name: &str, model: &str) -> Node {
    Node::Target(TargetSpec {
        name: name.into(),
        target: Target::Portkey {
            provider: UpstreamProvider::OpenAi,
            model: model.into(),
            virtual_key: None,
            config: None,
        },
        weight: 1,
        retries: None,
        pricing: None,
    })
}

/// `m`: two OpenAI targets, `first` (model `one`) tried before `second`
/// (model `two`); `e`: an embeddings model.
fn service(upstream: Arc<Upstream>, memory: Arc<Memory>) -> ChatService {
    let fallback = Node::Group(GroupSpec {
        strategy: Strategy::Fallback,
        weight: 1,
        members: vec![target("first", "one"), target("second", "two")],
    });
    let catalog = Catalog::new(vec![
        ModelEntry {
            id: "m".into(),
            targets: fallback,
            max_tokens: None,
            policy: RoutingPolicy::default(),
            endpoints: Service::DEFAULT.to_vec(),
            cache_ttl: None,
            cache_shared: false,
        },
        ModelEntry {
            endpoints: vec![Service::Embeddings],
            ..ModelEntry::single("e", Target::Demo { model: "e".into() }, None)
        },
    ])
    .unwrap();
    let mut keys = MockKeyResolver::new();
    keys.expect_resolve().returning(|_| Ok(Credentials::None));
    ChatService::new(
        Providers::default()
            .with(ProviderKind::Portkey, upstream)
            .with(ProviderKind::Demo, Arc::new(Upstream::default())),
        Arc::new(keys),
    )
    .with_catalog(Arc::new(catalog))
    .with_response_memory(memory)
}

fn key(id: &str) -> Option<Arc<KeyPolicy>> {
    Some(Arc::new(KeyPolicy::unlimited(id)))
}

fn command(endpoint: Endpoint, body: serde_json::Value, key: Option<Arc<KeyPolicy>>) -> ChatCommand {
    ChatCommand {
        request: ChatRequest::parse_for(endpoint, body.to_string().into()).unwrap(),
        routing: RoutingFields::default(),
        context: RequestContext::default(),
        key,
        cache: Default::default(),
    }
}

/// Makes a response with the key `owner`: its id.
async fn made_by(service: &ChatService, owner: &str) -> String {
    let made = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "hi"}),
        key(owner),
    );
    let ChatOutcome::Complete(answer) = service.execute(made).await.unwrap() else {
        panic!("not a whole answer");
    };
    answer.response_id().unwrap().to_owned()
}

fn by_id(action: ResponseAction, id: &str, owner: &str) -> ResponseCommand {
    let owner = key(owner);
    ResponseCommand {
        action,
        id: id.into(),
        query: None,
        context: RequestContext::default(),
        key: owner,
    }
}

#[tokio::test]
async fn a_catalog_model_on_an_api_it_does_not_serve_is_refused_naming_both() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let cases = [
        (
            Endpoint::Messages,
            json!({"model": "e", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (Endpoint::Embeddings, json!({"model": "m", "input": "x"})),
    ];

    for (endpoint, body) in cases {
        let Err(ChatError::Invalid(error)) = service.execute(command(endpoint, body, None)).await else {
            panic!("{endpoint} was not refused");
        };
        assert_eq!(error.code.as_deref(), Some("model_not_supported"));
        assert_eq!(error.param.as_deref(), Some("model"));
        assert!(
            error.message.contains(endpoint.service().path()),
            "{}",
            error.message
        );
    }
    assert!(upstream.models.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_follow_up_goes_to_the_target_that_made_the_response_not_the_first() {
    let upstream = Arc::new(Upstream::default());
    let memory = Arc::new(Memory::default());
    let service = service(upstream.clone(), memory.clone());
    // As if `second` had made it (the first target was down then).
    memory
        .remember(
            "resp_earlier",
            &ResponseTarget {
                model: "m".into(),
                provider: None,
                portkey_provider: None,
                target: Some("second".into()),
                owner: "team-a".into(),
                client_credentials: false,
            },
        )
        .await
        .unwrap();

    let fresh = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "hi"}),
        key("team-a"),
    );
    let ChatOutcome::Complete(answer) = service.execute(fresh).await.unwrap() else {
        panic!("not a whole answer");
    };
    let follow_up = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "and?", "previous_response_id": "resp_earlier"}),
        key("team-a"),
    );
    service.execute(follow_up).await.unwrap();

    assert_eq!(*upstream.models.lock().unwrap(), ["one", "two"]);
    // What the fresh one made is remembered with the target that served it.
    let remembered = memory
        .recall(answer.response_id().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (remembered.target.as_deref(), remembered.owner.as_str()),
        (Some("first"), "team-a")
    );
    let pinned = memory.recall("resp_2").await.unwrap().unwrap();
    assert_eq!(pinned.target.as_deref(), Some("second"));
}

#[tokio::test]
async fn another_keys_response_is_not_found_by_id_or_as_a_follow_up() {
    let upstream = Arc::new(Upstream::default());
    let memory = Arc::new(Memory::default());
    let service = service(upstream.clone(), memory);
    let id = made_by(&service, "team-a").await;

    let by_other = service
        .respond_by_id(by_id(ResponseAction::Retrieve, &id, "team-b"))
        .await;
    let follow_up = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "x", "previous_response_id": id}),
        key("team-b"),
    );
    let followed_by_other = service.execute(follow_up).await;

    assert!(
        matches!(by_other, Err(ChatError::ResponseNotFound { .. })),
        "{by_other:?}"
    );
    assert!(
        matches!(followed_by_other, Err(ChatError::ResponseNotFound { .. })),
        "{followed_by_other:?}"
    );
    assert!(upstream.by_id.lock().unwrap().is_empty());
    assert_eq!(upstream.models.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_response_is_forgotten_and_an_unknown_one_never_reaches_a_provider() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let id = made_by(&service, "team-a").await;

    for action in [
        ResponseAction::Retrieve,
        ResponseAction::InputItems,
        ResponseAction::Delete,
    ] {
        service.respond_by_id(by_id(action, &id, "team-a")).await.unwrap();
    }
    let after = service
        .respond_by_id(by_id(ResponseAction::Retrieve, &id, "team-a"))
        .await;
    let unknown = service
        .respond_by_id(by_id(ResponseAction::Retrieve, "resp_never", "team-a"))
        .await;

    assert_eq!(upstream.by_id.lock().unwrap().len(), 3);
    assert!(
        matches!(after, Err(ChatError::ResponseNotFound { .. })),
        "{after:?}"
    );
    assert!(
        matches!(unknown, Err(ChatError::ResponseNotFound { .. })),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn no_secret_of_the_request_is_remembered_with_its_response() {
    let upstream = Arc::new(Upstream::default());
    let memory = Arc::new(Memory::default());
    let service = service(upstream, memory.clone());
    let mut made = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "hi"}),
        key("team-a"),
    );
    made.routing.portkey_virtual_key = Some("vk-very-secret".into());
    made.routing.portkey_config = Some(
        crate::portkey_routing::PortkeyRouting::from_value(
            "portkey_config",
            json!({"targets": [{"provider": "openai", "api_key": "sk-config-secret"}]}),
        )
        .unwrap(),
    );

    service.execute(made).await.unwrap();

    let remembered = memory.0.lock().unwrap().values().cloned().collect::<Vec<_>>();
    assert_eq!(remembered.len(), 1);
    let stored = serde_json::to_string(&remembered[0]).unwrap();
    assert!(
        !stored.contains("vk-very-secret") && !stored.contains("sk-config-secret"),
        "{stored}"
    );
    assert!(
        !format!("{:?}", remembered[0]).contains("secret"),
        "{:?}",
        remembered[0]
    );
    // Without them, it cannot be called by id: said plainly, not a 404 from another account.
    let id = memory.0.lock().unwrap().keys().next().unwrap().clone();
    let by_id = service
        .respond_by_id(by_id(ResponseAction::Retrieve, &id, "team-a"))
        .await;
    assert!(
        matches!(&by_id, Err(ChatError::Invalid(error)) if error.code.as_deref() == Some("response_credentials_not_kept")),
        "{by_id:?}"
    );
}

#[tokio::test]
async fn a_follow_up_of_a_response_the_gateway_does_not_know_is_not_sent_upstream() {
    let upstream = Arc::new(Upstream::default());
    let service = service(upstream.clone(), Arc::default());
    let follow_up = command(
        Endpoint::Responses,
        json!({"model": "m", "input": "x", "previous_response_id": "resp_forgotten"}),
        key("team-a"),
    );

    let outcome = service.execute(follow_up).await;

    assert!(
        matches!(outcome, Err(ChatError::ResponseNotFound { .. })),
        "{outcome:?}"
    );
    assert!(upstream.models.lock().unwrap().is_empty());
}
