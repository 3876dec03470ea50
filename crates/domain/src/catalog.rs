//! The model catalog: the public model ids clients use, where each one goes,
//! and what it costs.

use std::collections::HashMap;

use secrecy::SecretString;

use crate::model::Usage;
use crate::route::{PortkeyProvider, ProviderKind, Route};

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Pricing {
    /// The cost of `usage`, rounded to 6 decimals (a millionth of a dollar).
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cost = (usage.prompt_tokens as f64 * self.input_per_million
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
        provider: PortkeyProvider,
        model: String,
        /// A Portkey virtual key for this model, read at start.
        virtual_key: Option<SecretString>,
    },
}

impl Target {
    /// The model name sent upstream.
    pub fn upstream_model(&self) -> &str {
        match self {
            Self::Demo { model } | Self::Portkey { model, .. } => model,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Demo { .. } => ProviderKind::Demo,
            Self::Portkey { .. } => ProviderKind::Portkey,
        }
    }

    /// Who serves the model, as `/v1/models` shows it in `owned_by`.
    pub fn owner(&self) -> &'static str {
        match self {
            Self::Demo { .. } => "demo",
            Self::Portkey { provider, .. } => provider.name(),
        }
    }

    fn route(&self, virtual_key: Option<SecretString>) -> Route {
        match self {
            Self::Demo { .. } => Route::Demo,
            Self::Portkey {
                provider,
                virtual_key: own,
                ..
            } => Route::Portkey {
                provider: *provider,
                virtual_key: virtual_key.or_else(|| own.clone()),
            },
        }
    }
}

/// One model of the catalog.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The public id clients send as `model`.
    pub id: String,
    pub target: Target,
    pub pricing: Option<Pricing>,
    /// The `max_tokens` sent when the client sets no output limit.
    pub max_tokens: Option<u32>,
}

impl ModelEntry {
    /// The route to this model; a virtual key from the request overrides
    /// the entry's own.
    pub fn route(&self, virtual_key: Option<SecretString>) -> Route {
        self.target.route(virtual_key)
    }
}

/// The key prices are found by: what is actually called upstream.
type PriceKey = (ProviderKind, Option<PortkeyProvider>, String);

/// The catalog: models by public id, prices by upstream model.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<ModelEntry>,
    by_id: HashMap<String, usize>,
    prices: HashMap<PriceKey, Pricing>,
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
            if let Some(pricing) = entry.pricing {
                let route = entry.route(None);
                prices.insert(price_key(&route, entry.target.upstream_model()), pricing);
            }
        }
        Ok(Self {
            entries,
            by_id,
            prices,
        })
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.by_id.get(id).map(|index| &self.entries[*index])
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
    (route.kind(), route.portkey_provider(), upstream_model.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, target: Target, pricing: Option<Pricing>) -> ModelEntry {
        ModelEntry {
            id: id.into(),
            target,
            pricing,
            max_tokens: None,
        }
    }

    fn portkey(provider: PortkeyProvider, model: &str) -> Target {
        Target::Portkey {
            provider,
            model: model.into(),
            virtual_key: None,
        }
    }

    #[test]
    fn cost_is_prices_times_tokens_rounded_to_six_decimals() {
        let pricing = Pricing {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        assert_eq!(pricing.cost(&Usage::new(1_000, 500)), 0.00045);
        assert_eq!(pricing.cost(&Usage::new(7, 3)), 0.000003);
        assert_eq!(pricing.cost(&Usage::new(0, 0)), 0.0);
    }

    #[test]
    fn prices_are_found_by_the_upstream_model_whatever_the_public_id() {
        let pricing = Pricing {
            input_per_million: 1.0,
            output_per_million: 2.0,
        };
        let catalog = Catalog::new(vec![entry(
            "fast",
            portkey(PortkeyProvider::OpenAi, "gpt-4o-mini"),
            Some(pricing),
        )])
        .unwrap();
        let openai = Route::Portkey {
            provider: PortkeyProvider::OpenAi,
            virtual_key: None,
        };
        let groq = Route::Portkey {
            provider: PortkeyProvider::Groq,
            virtual_key: None,
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
