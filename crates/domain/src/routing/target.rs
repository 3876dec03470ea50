//! One target of a catalog model: it puts the target's route, upstream model,
//! output limit and credentials on the call, and notes in the call's record
//! which target is being tried.

use std::sync::Arc;

use super::answer::{Answer, decorator};
use crate::catalog::TargetSpec;
use crate::error::ChatError;
use crate::model::UpstreamEdits;
use crate::ports::{ChatProvider, KeyResolver, ProviderCall};
use crate::route::Route;

pub(crate) struct Bound {
    name: Arc<str>,
    spec: TargetSpec,
    route: Route,
    /// The model's own output limit, sent when the client set none.
    max_tokens: Option<u32>,
    /// The limit sent to providers that require one, when nothing else set it.
    default_max_tokens: u32,
    inner: Arc<dyn ChatProvider>,
    keys: Arc<dyn KeyResolver>,
}

impl Bound {
    pub(crate) fn new(
        name: Arc<str>,
        spec: TargetSpec,
        max_tokens: Option<u32>,
        default_max_tokens: u32,
        inner: Arc<dyn ChatProvider>,
        keys: Arc<dyn KeyResolver>,
    ) -> Self {
        Self {
            name,
            route: spec.target.route(),
            spec,
            max_tokens,
            default_max_tokens,
            inner,
            keys,
        }
    }

    async fn run<A: Answer>(&self, mut call: ProviderCall) -> Result<A, ChatError> {
        call.route = self.route.clone().overridden(&call.context.overrides);
        // Built once here, shared by this target's retries.
        call.body = call.request.upstream_body(UpstreamEdits {
            model: self.spec.target.upstream_model(),
            max_tokens: call
                .route
                .output_limit(&call.request, self.max_tokens, self.default_max_tokens),
            stream_usage: true,
        });
        let record = call.context.record.clone();
        let tried = record.read(Tried::of);
        record.update(|facts| {
            facts.routed(&call.route);
            facts.target = Some(self.name.clone());
            facts.pricing = self.spec.pricing;
            facts.passed_on.clear();
        });
        let answer = match self.keys.resolve(&call.route) {
            Ok(credentials) => {
                call.credentials = credentials;
                A::from(self.inner.as_ref(), call).await
            }
            Err(error) => Err(error.into()),
        };
        if let Err(ChatError::CircuitOpen { .. } | ChatError::Keys(_)) = &answer {
            // Skipped without a call: the record keeps naming the target
            // that was actually tried before.
            record.update(|facts| tried.restore(facts));
        }
        answer
    }
}

/// The facts a skipped target must not overwrite.
struct Tried {
    provider: Option<crate::provider::ProviderKind>,
    portkey_provider: Option<crate::provider::UpstreamProvider>,
    direct_upstream: Option<Arc<str>>,
    target: Option<Arc<str>>,
    pricing: Option<crate::catalog::Pricing>,
}

impl Tried {
    fn of(facts: &crate::record::CallFacts) -> Self {
        Self {
            provider: facts.provider,
            portkey_provider: facts.portkey_provider,
            direct_upstream: facts.direct_upstream.clone(),
            target: facts.target.clone(),
            pricing: facts.pricing,
        }
    }

    /// Puts the facts back, unless no target had been tried (then the
    /// skipped one is all there is to name).
    fn restore(self, facts: &mut crate::record::CallFacts) {
        if self.target.is_some() {
            facts.provider = self.provider;
            facts.portkey_provider = self.portkey_provider;
            facts.direct_upstream = self.direct_upstream;
            facts.target = self.target;
            facts.pricing = self.pricing;
        }
    }
}

decorator!(Bound);

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("target", &self.name)
            .finish_non_exhaustive()
    }
}
