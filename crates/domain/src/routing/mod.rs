//! Retries, fallbacks, weighted load balancing and circuit breaking: the
//! routing of a catalog model over its targets, built once at start as
//! decorators of the [`ChatProvider`] port.
//!
//! A catalog entry becomes this stack, outermost first:
//!
//! - [`Deadline`](deadline): one overall deadline for every attempt of a request;
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

mod answer;
mod breaker;
mod deadline;
mod group;
mod retry;
mod target;

use std::sync::Arc;

use answer::{Answer, decorator};
use breaker::Breaker;
pub(crate) use deadline::with_deadline;
use group::Group;
use retry::Retry;
use target::Bound;

use crate::catalog::{ModelEntry, Node, TargetSpec};
use crate::error::ChatError;
use crate::ports::{ChatProvider, KeyResolver, ProviderCall, RoutingEvents};
use crate::provider::ProviderKind;
use crate::providers::Providers;

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
    with_deadline(root, entry.policy.deadline, "the model's deadline")
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
