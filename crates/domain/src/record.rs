//! What happened in one request, filled in by the use case and the adapters
//! as it happens, and read by the API when the request ends (for a stream,
//! when its body ends): the access log line and the metrics come from it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::catalog::Pricing;
use crate::error::{ChatError, ErrorSource};
use crate::limits::store::{Spend, Standing};
use crate::provider::{ProviderKind, UpstreamProvider};

/// Facts about one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFacts {
    pub provider: Option<ProviderKind>,
    pub portkey_provider: Option<UpstreamProvider>,
    /// The direct upstream's catalog name, on a direct route.
    pub direct_upstream: Option<Arc<str>>,
    /// The model id the client asked for.
    pub model: Option<String>,
    /// Whether that id is in the catalog (only those are metric labels).
    pub catalog_model: bool,
    pub stream: bool,
    /// Time spent waiting on the upstream (for a stream: until it ended).
    pub upstream: Option<Duration>,
    /// From the request's arrival to its first streamed chunk.
    pub first_token: Option<Duration>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// Who failed and how, when the request failed.
    pub error: Option<(ErrorSource, &'static str)>,
    /// What the adapter chose to pass on to the client from the upstream's
    /// answer: `(name, value)` pairs, which the API sends as they are (as
    /// response headers). Only the adapter knows what they mean.
    pub passed_on: Vec<(&'static str, String)>,
    /// The client went away before its answer was complete.
    pub client_gone: bool,
    /// The catalog target tried last: the one that served, when it did.
    pub target: Option<Arc<str>>,
    /// The price of that target, when the catalog gives one.
    pub pricing: Option<Pricing>,
    /// Upstream calls made (retries and fallbacks included).
    pub attempts: u32,
    /// The gateway key's standing against its limits, when it has some.
    pub limits: Option<Standing>,
    /// The tokens and cost charged to the key were estimated: the upstream
    /// reported no usage (the client left first).
    pub usage_estimated: bool,
    /// What was charged to the key's limits at settlement.
    pub charged: Option<Spend>,
    /// The key limit that refused the request (`requests`, `tokens`,
    /// `parallel`, `budget`).
    pub limit_refusal: Option<&'static str>,
    /// The id of the gateway key that sent it.
    pub key_id: Option<String>,
    /// The API the request was made on (`chat` until the API says).
    pub endpoint: &'static str,
    /// A Responses API response whose target could not be remembered: its
    /// follow-ups will not find it.
    pub unremembered: bool,
    /// What the response cache did, when the request was cacheable.
    pub cache: Option<crate::cache::status::CacheStatus>,
    /// A hit's age, in seconds.
    pub cache_age: Option<u64>,
    /// It waited on an identical request in flight instead of calling the
    /// upstream (its answer is then a hit).
    pub cache_coalesced: bool,
    /// The cache's store failed it (the request went on as a miss).
    pub cache_store_error: bool,
    /// The bytes of its answer stored in the cache.
    pub cache_stored_bytes: Option<u64>,
}

impl CallFacts {
    /// Notes who serves: the route's adapter, and its Portkey provider or
    /// direct upstream.
    pub fn routed(&mut self, route: &crate::route::Route) {
        self.provider = Some(route.kind());
        self.portkey_provider = route.portkey_provider();
        self.direct_upstream = route.direct_upstream().cloned();
    }

    /// Who answered behind the adapter, by the name metrics and logs use:
    /// the Portkey provider's, or the direct upstream's.
    pub fn upstream_name(&self) -> Option<&str> {
        self.portkey_provider
            .map(UpstreamProvider::name)
            .or(self.direct_upstream.as_deref())
    }
}

/// A shared, fill-as-you-go [`CallFacts`].
#[derive(Debug, Clone, Default)]
pub struct CallRecord(Arc<Mutex<CallFacts>>);

impl CallRecord {
    pub fn update(&self, change: impl FnOnce(&mut CallFacts)) {
        // A panic elsewhere while the lock was held leaves facts that are
        // still worth reporting.
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Reads the facts in place, without copying them.
    pub fn read<T>(&self, look: impl FnOnce(&CallFacts) -> T) -> T {
        look(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn snapshot(&self) -> CallFacts {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Notes a failure's source and kind.
    pub fn failed(&self, error: &ChatError) {
        self.update(|facts| facts.error = Some((error.source(), error.kind())));
    }
}
