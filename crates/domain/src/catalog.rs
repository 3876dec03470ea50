//! The model catalog: the public model ids clients use, where each one goes,
//! and what it costs.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;

use crate::model::Service;
use crate::model::Usage;
use crate::policy::{RoutingPolicy, Strategy};
use crate::portkey_routing::PortkeyRouting;
use crate::provider::{ProviderKind, UpstreamProvider};
use crate::route::Route;

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// The price of prompt tokens the provider served from its cache
    /// (`usage.prompt_tokens_details.cached_tokens`); without it they cost
    /// what other prompt tokens cost.
    pub cached_input_per_million: Option<f64>,
}

impl Pricing {
    /// Prompt and completion prices, without a cached-input price.
    pub const fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Self {
            input_per_million,
            output_per_million,
            cached_input_per_million: None,
        }
    }

    /// The cost of `usage` as providers bill it, rounded to 6 decimals (a
    /// millionth of a dollar): cached prompt tokens at their own price,
    /// reasoning tokens as the completion tokens they are counted in.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_prompt_tokens().min(usage.prompt_tokens);
        let cached_price = self.cached_input_per_million.unwrap_or(self.input_per_million);
        let cost = ((usage.prompt_tokens - cached) as f64 * self.input_per_million
            + cached as f64 * cached_price
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0;
        (cost * 1_000_000.0).round() / 1_000_000.0
    }
}

/// Where a catalog model is served.
#[derive(Debug, Clone)]
pub enum Target {
    Demo {
        model: String,
    },
    Portkey {
        provider: UpstreamProvider,
        model: String,
        /// A Portkey virtual key for this target, read at start.
        virtual_key: Option<SecretString>,
        /// A Portkey config sent with this target's calls.
        config: Option<PortkeyRouting>,
    },
    /// An OpenAI-compatible server called directly, by its catalog name.
    Direct {
        upstream: Arc<str>,
        model: String,
    },
}

impl Target {
    /// The model name sent upstream.
    pub fn upstream_model(&self) -> &str {
        match self {
            Self::Demo { model } | Self::Portkey { model, .. } | Self::Direct { model, .. } => model,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Demo { .. } => ProviderKind::Demo,
            Self::Portkey { .. } => ProviderKind::Portkey,
            Self::Direct { .. } => ProviderKind::Direct,
        }
    }

    /// Who serves the model, as `/v1/models` shows it in `owned_by`: the
    /// Portkey provider, or the direct upstream's name.
    pub fn owner(&self) -> &str {
        match self {
            Self::Demo { .. } => "demo",
            Self::Portkey { provider, .. } => provider.name(),
            Self::Direct { upstream, .. } => upstream,
        }
    }

    /// The route to this target, before a client's overrides.
    pub fn route(&self) -> Route {
        match self {
            Self::Demo { .. } => Route::Demo,
            Self::Portkey {
                provider,
                virtual_key,
                config,
                ..
            } => Route::Portkey {
                provider: *provider,
                virtual_key: virtual_key.clone(),
                config: config.clone(),
            },
            Self::Direct { upstream, .. } => Route::Direct {
                upstream: upstream.clone(),
            },
        }
    }

    /// The name a target gets when the catalog gives it none:
    /// `<portkey_provider>/<upstream_model>`, `<upstream>/<upstream_model>`
    /// for a direct one, or `demo/<model>`.
    pub fn default_name(&self) -> String {
        format!("{}/{}", self.owner(), self.upstream_model())
    }
}

/// One target of a model, as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Unique within its model: `x-gatewayz-target`, logs and metric labels
    /// use it.
    pub name: String,
    pub target: Target,
    /// Its share in a `loadbalance` group.
    pub weight: u32,
    /// Its own retries, instead of the policy's.
    pub retries: Option<u32>,
    pub pricing: Option<Pricing>,
}

/// A group of targets and the strategy that picks among them.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub strategy: Strategy,
    /// Its share when it is a member of a `loadbalance` group.
    pub weight: u32,
    pub members: Vec<Node>,
}

/// A model's targets: one, or a group (whose members may be groups of
/// targets, one level down).
#[derive(Debug, Clone)]
pub enum Node {
    Target(TargetSpec),
    Group(GroupSpec),
}

impl Node {
    pub const fn weight(&self) -> u32 {
        match self {
            Self::Target(spec) => spec.weight,
            Self::Group(group) => group.weight,
        }
    }

    /// Every target, in the order given.
    pub fn targets(&self) -> Vec<&TargetSpec> {
        match self {
            Self::Target(spec) => vec![spec],
            Self::Group(group) => group.members.iter().flat_map(Self::targets).collect(),
        }
    }
}

/// One model of the catalog.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The public id clients send as `model`.
    pub id: String,
    pub targets: Node,
    /// The `max_tokens` sent when the client sets no output limit.
    pub max_tokens: Option<u32>,
    pub policy: RoutingPolicy,
    /// The APIs it serves ([`Service::DEFAULT`] unless the catalog says).
    pub endpoints: Vec<Service>,
    /// How long its answers are cached (`cache_ttl_s`); `None`: not cached
    /// unless the key's policy says.
    pub cache_ttl: Option<std::time::Duration>,
    /// Its cached answers are shared by every key (`cache_scope =
    /// "shared"`), not kept per key.
    pub cache_shared: bool,
}

impl ModelEntry {
    /// A model served by one target, routed by the default policy.
    pub fn single(id: impl Into<String>, target: Target, pricing: Option<Pricing>) -> Self {
        let id = id.into();
        Self {
            targets: Node::Target(TargetSpec {
                name: target.default_name(),
                target,
                weight: 1,
                retries: None,
                pricing,
            }),
            id,
            max_tokens: None,
            policy: RoutingPolicy::default(),
            endpoints: Service::DEFAULT.to_vec(),
            cache_ttl: None,
            cache_shared: false,
        }
    }

    /// Whether it serves `service`.
    pub fn serves(&self, service: Service) -> bool {
        self.endpoints.contains(&service)
    }

    /// The highest prices any of its targets may charge (each price on its
    /// own): what a key's budget reserves before it is known which target
    /// serves.
    pub fn highest_pricing(&self) -> Option<Pricing> {
        self.targets
            .targets()
            .iter()
            .filter_map(|spec| spec.pricing)
            .reduce(|highest, pricing| {
                Pricing::new(
                    highest.input_per_million.max(pricing.input_per_million),
                    highest.output_per_million.max(pricing.output_per_million),
                )
            })
    }

    /// The first target: whose owner `/v1/models` shows, and whose route a
    /// request starts on.
    pub fn primary(&self) -> Option<&Target> {
        self.targets.targets().first().map(|spec| &spec.target)
    }
}

/// The key prices are found by: what is actually called upstream (the
/// adapter, the Portkey provider or direct upstream, the model).
type PriceKey = (ProviderKind, String, String);

/// The catalog: models by public id, prices by upstream model, and the
/// direct upstreams a client may name in `@<upstream>/<model>`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<ModelEntry>,
    by_id: HashMap<String, usize>,
    prices: HashMap<PriceKey, Pricing>,
    upstreams: Vec<Arc<str>>,
}

/// Two entries with the same id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model id `{0}` appears twice in the catalog")]
pub struct DuplicateModel(pub String);

impl Catalog {
    /// Builds the catalog.
    ///
    /// # Errors
    /// [`DuplicateModel`] when two entries share an id.
    pub fn new(entries: Vec<ModelEntry>) -> Result<Self, DuplicateModel> {
        let mut by_id = HashMap::with_capacity(entries.len());
        let mut prices = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            if by_id.insert(entry.id.clone(), index).is_some() {
                return Err(DuplicateModel(entry.id.clone()));
            }
            for spec in entry.targets.targets() {
                if let Some(pricing) = spec.pricing {
                    prices.insert(
                        price_key(&spec.target.route(), spec.target.upstream_model()),
                        pricing,
                    );
                }
            }
        }
        Ok(Self {
            entries,
            by_id,
            prices,
            upstreams: Vec::new(),
        })
    }

    /// This catalog with the direct upstreams clients may route to by name
    /// (`@<upstream>/<model>`).
    #[must_use]
    pub fn with_upstreams(mut self, names: impl IntoIterator<Item = Arc<str>>) -> Self {
        self.upstreams = names.into_iter().collect();
        self
    }

    /// The direct upstream named `name`, if clients may route to it.
    pub fn upstream(&self, name: &str) -> Option<&Arc<str>> {
        self.upstreams.iter().find(|upstream| &***upstream == name)
    }

    /// The direct upstreams clients may route to, in catalog order.
    pub fn upstreams(&self) -> &[Arc<str>] {
        &self.upstreams
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.index_of(id).map(|index| &self.entries[index])
    }

    /// The position of `id` in [`Self::models`].
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Every model, in catalog order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The price of `upstream_model` on `route`, whichever way the request
    /// was routed there.
    pub fn pricing(&self, route: &Route, upstream_model: &str) -> Option<Pricing> {
        self.prices.get(&price_key(route, upstream_model)).copied()
    }
}

fn price_key(route: &Route, upstream_model: &str) -> PriceKey {
    (
        route.kind(),
        route.upstream_name().unwrap_or_default().to_owned(),
        upstream_model.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, target: Target, pricing: Option<Pricing>) -> ModelEntry {
        ModelEntry::single(id, target, pricing)
    }

    fn portkey(provider: UpstreamProvider, model: &str) -> Target {
        Target::Portkey {
            provider,
            model: model.into(),
            virtual_key: None,
            config: None,
        }
    }

    #[test]
    fn cost_is_prices_times_tokens_rounded_to_six_decimals() {
        let pricing = Pricing::new(0.15, 0.6);
        assert_eq!(pricing.cost(&Usage::new(1_000, 500)), 0.00045);
        assert_eq!(pricing.cost(&Usage::new(7, 3)), 0.000003);
        assert_eq!(pricing.cost(&Usage::new(0, 0)), 0.0);
    }

    #[test]
    fn cached_prompt_tokens_cost_their_own_price() {
        let usage: Usage = serde_json::from_value(serde_json::json!({"prompt_tokens": 1_000,
            "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 800},
            "completion_tokens_details": {"reasoning_tokens": 60}}))
        .unwrap();
        let pricing = Pricing {
            cached_input_per_million: Some(0.25),
            ..Pricing::new(1.0, 4.0)
        };
        // 200 at 1.0, 800 at 0.25, 100 (reasoning included) at 4.0.
        assert_eq!(pricing.cost(&usage), 0.0008);
        assert_eq!(Pricing::new(1.0, 4.0).cost(&usage), 0.0014);
    }

    #[test]
    fn prices_are_found_by_the_upstream_model_whatever_the_public_id() {
        let pricing = Pricing::new(1.0, 2.0);
        let catalog = Catalog::new(vec![entry(
            "fast",
            portkey(UpstreamProvider::OpenAi, "gpt-4o-mini"),
            Some(pricing),
        )])
        .unwrap();
        let openai = Route::Portkey {
            provider: UpstreamProvider::OpenAi,
            virtual_key: None,
            config: None,
        };
        let groq = Route::Portkey {
            provider: UpstreamProvider::Groq,
            virtual_key: None,
            config: None,
        };
        assert_eq!(catalog.pricing(&openai, "gpt-4o-mini"), Some(pricing));
        assert_eq!(catalog.pricing(&groq, "gpt-4o-mini"), None);
        assert_eq!(catalog.pricing(&openai, "fast"), None);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let twice = vec![
            entry("a", Target::Demo { model: "a".into() }, None),
            entry("a", Target::Demo { model: "b".into() }, None),
        ];
        assert_eq!(Catalog::new(twice).unwrap_err(), DuplicateModel("a".into()));
    }
}
