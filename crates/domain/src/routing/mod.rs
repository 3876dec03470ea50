//! Retries, fallbacks, weighted load balancing and circuit breaking: the
//! routing of a catalog model over its targets, built once at start as
//! decorators of the [`ChatProvider`] port.
//!
//! A catalog entry becomes this stack, outermost first:
//!
//! - [`Deadline`]: one overall deadline for every attempt of a request;
//! - a [`Group`] (`fallback` in order, or `loadbalance` by weight), whose
//!   members are targets or, one level down, groups of targets;
//! - per target, [`Bound`] (the target's route, model and credentials),
//!   [`Retry`] (backoff with full jitter, `Retry-After` honoured) and
//!   [`Breaker`] (a circuit breaker, per process) around the adapter.
//!
//! The rules: only [`ChatError::is_retryable`] failures are retried, and they
//! and the others of [`ChatError::falls_back`] move on to the next target;
//! nothing is retried once a stream has begun (a provider's `stream` returns
//! only after the first chunk, and a failure after it is an item of the
//! stream, which no layer here looks at).

mod breaker;
mod group;
mod retry;
mod target;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub(crate) use breaker::Breaker;
pub use breaker::BreakerState;
pub(crate) use group::Group;
pub(crate) use retry::Retry;
pub(crate) use target::Bound;

use crate::catalog::{ModelEntry, Node, TargetSpec};
use crate::error::{ChatError, UpstreamError};
use crate::model::ChatResponse;
use crate::ports::{ChatProvider, ChatStream, KeyResolver, ProviderCall, RoutingEvents};
use crate::route::ProviderKind;
use crate::service::Providers;

/// How a catalog model is routed over its targets. The catalog's `[routing]`
/// table sets these for every model; a model may set its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingPolicy {
    /// Retries of a target after its first attempt.
    pub retries: u32,
    /// The first backoff's ceiling; each retry doubles it, up to `backoff_max`.
    /// The wait is drawn uniformly below the ceiling (full jitter).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest upstream `Retry-After` the gateway waits out; a longer one
    /// moves on to the next target, or reaches the client.
    pub retry_after_max: Duration,
    /// The time all attempts of one request share, until the answer (or a
    /// stream's first chunk).
    pub deadline: Duration,
    /// Consecutive retryable failures that open a target's circuit; 0 never
    /// opens it.
    pub breaker_failures: u32,
    /// How long an open circuit skips its target before one probe is let
    /// through.
    pub breaker_cooldown: Duration,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            retry_after_max: Duration::from_secs(5),
            deadline: Duration::from_secs(300),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// How a group picks among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order given: the first, then the next when it fails.
    Fallback,
    /// A weighted random order: each member first with the chance of its
    /// weight, the others after it the same way.
    LoadBalance,
}

impl Strategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::LoadBalance => "loadbalance",
        }
    }
}

/// One of the port's two calls, so that each decorator is written once.
pub(crate) trait Answer: Sized + Send + 'static {
    fn from<'a>(provider: &'a dyn ChatProvider, call: ProviderCall)
    -> BoxFuture<'a, Result<Self, ChatError>>;
}

impl Answer for ChatResponse {
    fn from<'a>(
        provider: &'a dyn ChatProvider,
        call: ProviderCall,
    ) -> BoxFuture<'a, Result<Self, ChatError>> {
        provider.complete(call)
    }
}

impl Answer for ChatStream {
    fn from<'a>(
        provider: &'a dyn ChatProvider,
        call: ProviderCall,
    ) -> BoxFuture<'a, Result<Self, ChatError>> {
        provider.stream(call)
    }
}

/// Implements [`ChatProvider`] for a decorator with an
/// `async fn run<A: Answer>(&self, call: ProviderCall) -> Result<A, ChatError>`.
macro_rules! decorator {
    ($type:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::ChatProvider for $type {
            async fn complete(
                &self,
                call: $crate::ports::ProviderCall,
            ) -> Result<$crate::model::ChatResponse, $crate::error::ChatError> {
                self.run(call).await
            }

            async fn stream(
                &self,
                call: $crate::ports::ProviderCall,
            ) -> Result<$crate::ports::ChatStream, $crate::error::ChatError> {
                self.run(call).await
            }
        }
    };
}
pub(crate) use decorator;

/// What building a model's stack needs.
pub(crate) struct Wiring<'a> {
    pub providers: &'a Providers,
    pub keys: &'a Arc<dyn KeyResolver>,
    pub events: &'a Arc<dyn RoutingEvents>,
    pub default_max_tokens: u32,
}

/// Builds the provider that serves a catalog entry.
pub(crate) fn build(entry: &ModelEntry, wiring: &Wiring<'_>) -> Arc<dyn ChatProvider> {
    let model: Arc<str> = entry.id.as_str().into();
    let root = node(&entry.targets, entry, &model, wiring);
    Arc::new(Deadline {
        inner: root,
        deadline: entry.policy.deadline,
        name: "the model's deadline",
    })
}

/// `provider` with one deadline, named `name` in its error, for the answer or
/// a stream's first chunk: the net under a request routed to an adapter
/// directly, which has no catalog deadline.
pub(crate) fn with_deadline(
    provider: Arc<dyn ChatProvider>,
    deadline: Duration,
    name: &'static str,
) -> Arc<dyn ChatProvider> {
    Arc::new(Deadline {
        inner: provider,
        deadline,
        name,
    })
}

fn node(node: &Node, entry: &ModelEntry, model: &Arc<str>, wiring: &Wiring<'_>) -> Arc<dyn ChatProvider> {
    match node {
        Node::Target(spec) => target(spec, entry, model, wiring),
        Node::Group(group) => Arc::new(Group::new(
            model.clone(),
            group.strategy,
            group
                .members
                .iter()
                .map(|member| {
                    (
                        member.weight(),
                        node_name(member),
                        self::node(member, entry, model, wiring),
                    )
                })
                .collect(),
            wiring.events.clone(),
        )),
    }
}

fn node_name(node: &Node) -> Arc<str> {
    match node {
        Node::Target(spec) => spec.name.as_str().into(),
        Node::Group(group) => format!(
            "{}({})",
            group.strategy.as_str(),
            group
                .members
                .iter()
                .map(|member| node_name(member).to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
        .into(),
    }
}

fn target(
    spec: &TargetSpec,
    entry: &ModelEntry,
    model: &Arc<str>,
    wiring: &Wiring<'_>,
) -> Arc<dyn ChatProvider> {
    let name: Arc<str> = spec.name.as_str().into();
    let policy = entry.policy;
    let breaker = Breaker::new(
        model.clone(),
        name.clone(),
        wiring
            .providers
            .get(spec.target.kind())
            .cloned()
            .unwrap_or_else(|| Arc::new(Disabled(spec.target.kind()))),
        policy,
        wiring.events.clone(),
    );
    let retry = Retry::new(
        model.clone(),
        name.clone(),
        Arc::new(breaker),
        spec.retries.unwrap_or(policy.retries),
        policy,
        wiring.events.clone(),
    );
    Arc::new(Bound::new(
        name,
        spec.clone(),
        entry.max_tokens,
        wiring.default_max_tokens,
        Arc::new(retry),
        wiring.keys.clone(),
    ))
}

/// The outermost layer: every attempt of a request, and every wait between
/// them, fit in one deadline.
struct Deadline {
    inner: Arc<dyn ChatProvider>,
    deadline: Duration,
    /// What the deadline is called in its error.
    name: &'static str,
}

impl Deadline {
    async fn run<A: Answer>(&self, mut call: ProviderCall) -> Result<A, ChatError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        call.context.deadline = Some(
            call.context
                .deadline
                .map_or(deadline, |outer| outer.min(deadline)),
        );
        let record = call.context.record.clone();
        // The attempts stop themselves at the deadline; this is the net.
        let answer = tokio::time::timeout_at(deadline, A::from(self.inner.as_ref(), call))
            .await
            .unwrap_or_else(|_| Err(deadline_passed()));
        match answer {
            Err(error) if tokio::time::Instant::now() >= deadline => {
                let last = match &error {
                    ChatError::Timeout(upstream) if upstream.source == crate::error::ErrorSource::Gateway => {
                        String::new()
                    }
                    other => format!("; the last said: {other}"),
                };
                Err(ChatError::Timeout(UpstreamError::new(
                    crate::error::ErrorSource::Gateway,
                    None,
                    format!(
                        "no target answered within {} of {} ms ({} attempts){last}",
                        self.name,
                        self.deadline.as_millis(),
                        record.read(|facts| facts.attempts)
                    ),
                )))
            }
            answer => answer,
        }
    }
}

/// An attempt stopped by the request's deadline.
fn deadline_passed() -> ChatError {
    ChatError::Timeout(UpstreamError::new(
        crate::error::ErrorSource::Gateway,
        None,
        "the deadline passed",
    ))
}

decorator!(Deadline);

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Stands in for an adapter this gateway was started without.
#[derive(Debug)]
struct Disabled(ProviderKind);

impl Disabled {
    #[allow(clippy::unused_async)]
    async fn run<A: Answer>(&self, _: ProviderCall) -> Result<A, ChatError> {
        Err(ChatError::ProviderDisabled(self.0))
    }
}

decorator!(Disabled);

#[cfg(test)]
mod tests;
