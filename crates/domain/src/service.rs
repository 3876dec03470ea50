//! The chat use case: validate, route, authenticate, call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{CacheDirectives, CacheStatus, Joined, KeyParts, ResponseCache, UpstreamPart};
use crate::catalog::{Catalog, ModelEntry, Pricing};
use crate::error::ChatError;
use crate::limits::{KeyPolicy, Limits, LimitsStore, Spend, Ticket, usd_to_micros};
use crate::model::{ChatRequest, ChatResponse, Endpoint, UpstreamEdits, Usage};
use crate::ports::{
    ChatProvider, ChatStream, Credentials, KeyResolver, NoEvents, ProviderCall, RequestContext,
    RoutingEvents, RoutingFieldRules,
};
use crate::ports::{ResponseAction, ResponseCall};
use crate::providers::Providers;
use crate::resolve::resolve;
use crate::responses::{ResponseCommand, ResponseMemory, ResponseTarget};
use crate::route::{Route, RoutingFields};
use crate::routing;
use crate::text::quote;
use crate::usage;
use cached::{CachePlan, Fill, Replay};
use futures::StreamExt;

/// One chat-completion request as the API received it.
#[derive(Debug)]
pub struct ChatCommand {
    pub request: ChatRequest,
    pub routing: RoutingFields,
    pub context: RequestContext,
    /// The policy of the gateway key that sent it, when keys have policies.
    pub key: Option<Arc<KeyPolicy>>,
    /// What the client's `Cache-Control` asks of the response cache.
    pub cache: CacheDirectives,
}

/// The answer to a [`ChatCommand`]: whole, or streamed when the request
/// asked for `"stream": true`.
pub enum ChatOutcome {
    Complete(ChatResponse),
    Stream(ChatStream),
}

impl std::fmt::Debug for ChatOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(response) => f.debug_tuple("Complete").field(response).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A client's model name, cut to a length fit for a log line.
fn bounded(mut model: String) -> String {
    const MAX: usize = 256;
    if model.len() > MAX {
        let end = (0..=MAX)
            .rev()
            .find(|end| model.is_char_boundary(*end))
            .unwrap_or(0);
        model.truncate(end);
    }
    model
}

/// The output token limit sent to providers that require one when the client
/// gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The chat-completion use case.
#[derive(Clone)]
pub struct ChatService {
    providers: Providers,
    keys: Arc<dyn KeyResolver>,
    catalog: Arc<Catalog>,
    default_route: Option<Route>,
    default_max_tokens: u32,
    events: Arc<dyn RoutingEvents>,
    /// Per catalog entry (same order), the stack that routes it over its
    /// targets: retries, fallbacks, breakers. Shared by clones, so circuit
    /// state is per process.
    routers: Arc<Vec<Arc<dyn ChatProvider>>>,
    /// The adapters as requests routed to them directly call them: under
    /// [`Self::with_request_timeout`]'s deadline.
    direct: Providers,
    request_timeout: Duration,
    /// What the adapters can send of a client's routing fields.
    field_rules: Option<Arc<dyn RoutingFieldRules>>,
    /// Where keys' limits are counted; without it, no limit applies.
    limits: Option<Limits>,
    /// Where Responses API responses were made, for their follow-ups.
    responses: Option<Arc<dyn ResponseMemory>>,
    /// Where answers are cached, for models and keys that cache them.
    cache: Option<ResponseCache>,
}

/// How long a request routed directly (not through a catalog model, whose
/// routing has its own deadline) may wait for its answer or its stream's
/// first chunk.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A call ready to be made, with what is needed to report on it.
struct Prepared {
    provider: Arc<dyn ChatProvider>,
    call: ProviderCall,
    pricing: Option<Pricing>,
    client_wants_usage: bool,
    /// What a key's limits reserve for it, when its key has limits.
    reservation: Option<Reservation>,
    /// Where to remember a Responses API answer's target.
    remember: Option<Remember>,
    /// Its key and rules, when its answer is cacheable.
    cache: Option<CachePlan>,
}

/// A Responses API answer's target, to remember under its id once known.
#[derive(Clone)]
struct Remember {
    memory: Arc<dyn ResponseMemory>,
    target: ResponseTarget,
}

impl Remember {
    /// Remembers `id` with the catalog target that served it (the record's).
    /// An id the gateway could not put in a path is not kept: a call by id
    /// of it is refused anyway.
    async fn note(&self, id: &str, record: &crate::record::CallRecord) {
        if !crate::model::is_response_id(id) {
            record.update(|facts| facts.unremembered = true);
            return;
        }
        let mut target = self.target.clone();
        target.target = record.read(|facts| facts.target.as_deref().map(str::to_owned));
        if self.memory.remember(id, &target).await.is_err() {
            record.update(|facts| facts.unremembered = true);
        }
    }
}

/// Where a remembered response's target is, found again from the catalog.
struct Located {
    route: Route,
    /// The model the upstream knows.
    model: String,
    max_tokens: Option<u32>,
    pricing: Option<Pricing>,
    target: Option<Arc<str>>,
}

/// What an admission reserves: tokens (the prompt's estimate and the
/// output limit) priced at the highest price that may apply.
struct Reservation {
    policy: Arc<KeyPolicy>,
    prompt_estimate: u64,
    output_limit: u64,
    pricing: Option<Pricing>,
}

impl Reservation {
    fn spend(&self) -> Spend {
        let usage = Usage::new(self.prompt_estimate, self.output_limit);
        Spend {
            tokens: self.prompt_estimate.saturating_add(self.output_limit),
            usd_micros: self
                .pricing
                .map_or(0, |pricing| usd_to_micros(pricing.cost(&usage))),
        }
        .bounded()
    }
}

/// The largest output limit a reservation counts, per choice: past any
/// model's (a client's `max_tokens` may say anything).
const MAX_OUTPUT_RESERVED: u64 = 1 << 24;
/// The most choices (`n`) a reservation counts, as OpenAI allows.
const MAX_CHOICES_RESERVED: u64 = 128;

/// A token is about four bytes of English text: the prompt's estimate is
/// a quarter of the size of its messages and tools as sent (settled with
/// the real count when the upstream reports it).
fn prompt_estimate(request: &ChatRequest) -> u64 {
    // Counting a prompt's tokens spends none.
    if request.endpoint() == Endpoint::CountTokens {
        return 0;
    }
    let size = request
        .prompt_members()
        .iter()
        .filter_map(|name| request.member(name))
        .map(<[u8]>::len)
        .sum::<usize>();
    size.div_ceil(4) as u64
}

/// What `usage` spends at `pricing`.
fn spent(usage: Option<&Usage>, cost_usd: Option<f64>) -> Option<Spend> {
    usage.map(|usage| {
        Spend {
            tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
            usd_micros: cost_usd.map_or(0, usd_to_micros),
        }
        .bounded()
    })
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    pub fn new(providers: Providers, keys: Arc<dyn KeyResolver>) -> Self {
        Self {
            providers,
            keys,
            catalog: Arc::new(Catalog::default()),
            default_route: None,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            events: Arc::new(NoEvents),
            routers: Arc::default(),
            direct: Providers::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            field_rules: None,
            limits: None,
            responses: None,
            cache: None,
        }
        .rebuild()
    }

    /// The deadline of a request routed directly to an adapter: its answer,
    /// or its stream's first chunk, within `timeout` (a stream's later gaps
    /// are the adapter's idle timeout's to bound).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self.rebuild()
    }

    /// Routes model ids through `catalog` and prices what it prices.
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = catalog;
        self.rebuild()
    }

    /// Refuses, before anything else of a request, routing fields that the
    /// adapters cannot send (see [`RoutingFieldRules`]).
    #[must_use]
    pub fn with_routing_field_rules(mut self, rules: Arc<dyn RoutingFieldRules>) -> Self {
        self.field_rules = Some(rules);
        self
    }

    /// Where retries, fallbacks and breaker changes are told.
    #[must_use]
    pub fn with_routing_events(mut self, events: Arc<dyn RoutingEvents>) -> Self {
        self.events = events;
        self.rebuild()
    }

    /// Builds the catalog's routers from the current settings (which each
    /// builder method may have changed). Circuit state starts closed.
    fn rebuild(mut self) -> Self {
        let wiring = routing::Wiring {
            providers: &self.providers,
            keys: &self.keys,
            events: &self.events,
            default_max_tokens: self.default_max_tokens,
        };
        self.routers = Arc::new(
            self.catalog
                .models()
                .iter()
                .map(|entry| routing::build(entry, &wiring))
                .collect(),
        );
        let mut direct = Providers::default();
        for kind in self.providers.enabled() {
            if let Some(provider) = self.providers.get(kind) {
                direct = direct.with(
                    kind,
                    routing::with_deadline(provider.clone(), self.request_timeout, "the request deadline"),
                );
            }
        }
        self.direct = direct;
        self
    }

    /// Counts keys' limits in `store`: a request of a key whose policy has
    /// limits is admitted there before any upstream call, and settled when
    /// its answer or stream ends.
    #[must_use]
    pub fn with_limits(mut self, store: Arc<dyn LimitsStore>) -> Self {
        self.limits = Some(Limits::new(store));
        self
    }

    /// Remembers where Responses API responses were made, so that their
    /// follow-ups and by-id calls reach the same target.
    #[must_use]
    pub fn with_response_memory(mut self, memory: Arc<dyn ResponseMemory>) -> Self {
        self.responses = Some(memory);
        self
    }

    /// Caches the answers of models and keys that give a time to live
    /// (`cache_ttl_s`) in `cache`.
    #[must_use]
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The response cache, when one is set.
    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    /// The limits store and its pending settlements, when limits apply.
    pub fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }

    /// The route of a model that nothing else routes.
    #[must_use]
    pub fn with_default_route(mut self, route: Option<Route>) -> Self {
        self.default_route = route;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Sets the output token limit sent to providers that require one (see
    /// [`crate::UpstreamProvider::requires_max_tokens`]) when the client set
    /// neither `max_tokens` nor `max_completion_tokens`.
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.default_max_tokens = max_tokens;
        self.rebuild()
    }

    /// Checks the routing fields against the adapters' rules, validates the
    /// command, resolves its route and credentials, and calls
    /// the provider, streaming when the request asked to. Every successful
    /// answer carries `gateway_usage` (timings, and cost when the catalog
    /// prices the model and the upstream reported usage).
    ///
    /// # Errors
    /// - [`ChatError::Invalid`] for a request that breaks the contract, names
    ///   an unknown provider, or carries a routing field the adapters cannot
    ///   send;
    /// - [`ChatError::ModelNotFound`] when nothing routes the model;
    /// - [`ChatError::ProviderDisabled`] when the route's adapter is not
    ///   enabled on this gateway;
    /// - [`ChatError::Keys`] when credentials are missing;
    /// - [`ChatError::KeyExpired`], [`ChatError::ModelNotAllowed`],
    ///   [`ChatError::LimitExceeded`], [`ChatError::BudgetExceeded`] when the
    ///   key's policy refuses it, [`ChatError::LimitsUnavailable`] when its
    ///   limits cannot be checked;
    /// - whatever the provider returns.
    pub async fn execute(&self, command: ChatCommand) -> Result<ChatOutcome, ChatError> {
        let record = command.context.record.clone();
        let outcome = self.run(command).await;
        if let Err(error) = &outcome {
            record.failed(error);
        }
        outcome
    }

    async fn run(&self, command: ChatCommand) -> Result<ChatOutcome, ChatError> {
        self.check(&command)?;
        let pinned = match command.request.previous_response_id() {
            Some(id) if command.request.endpoint() == Endpoint::Responses => self
                .recall(id, &owner(command.key.as_ref()))
                .await
                .map_err(|error| match error {
                    ChatError::ResponseNotFound { id, .. } => {
                        ChatError::ResponseNotFound { id, follow_up: true }
                    }
                    other => other,
                })?,
            _ => None,
        };
        let mut prepared = self.prepare(command, pinned)?;
        match prepared.cache.take() {
            Some(plan) => self.through_cache(prepared, plan).await,
            None => self.call(prepared, None).await,
        }
    }

    /// Calls the upstream for `prepared`, filling the cache as its answer
    /// arrives when `fill` says where.
    async fn call(&self, prepared: Prepared, fill: Option<Fill>) -> Result<ChatOutcome, ChatError> {
        let Prepared {
            provider,
            call,
            pricing,
            client_wants_usage,
            reservation,
            remember,
            cache: _,
        } = prepared;
        let received = call.context.received;
        let record = call.context.record.clone();
        let endpoint = call.request.endpoint();
        let ticket = match reservation {
            Some(reservation) => self.admit(reservation, &call.context).await?,
            None => None,
        };
        let started = Instant::now();
        // A catalog model's price is the price of the target that served.
        let priced =
            |record: &crate::record::CallRecord| pricing.or_else(|| record.read(|facts| facts.pricing));
        if call.request.is_stream() {
            let chunks = provider.stream(call).await;
            record.update(|facts| facts.upstream = Some(started.elapsed()));
            let chunks = match chunks {
                Ok(chunks) => chunks,
                Err(error) => {
                    if let Some(ticket) = ticket {
                        ticket.release();
                    }
                    return Err(error);
                }
            };
            let pricing = priced(&record);
            let chunks = match fill {
                Some(fill) => cached::filling(chunks, fill),
                None => chunks,
            };
            let chunks = match remember {
                Some(remember) => remembering(chunks, remember, record.clone()),
                None => chunks,
            };
            Ok(ChatOutcome::Stream(usage::meter(
                chunks,
                usage::Meter::new(received, started, pricing, client_wants_usage, record).with_ticket(ticket),
            )))
        } else {
            let response = provider.complete(call).await;
            let upstream = started.elapsed();
            record.update(|facts| facts.upstream = Some(upstream));
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    // An answer the gateway could not hold was produced, and
                    // billed: estimated. Any other failure used nothing.
                    if let Some(ticket) = ticket.filter(|_| !matches!(error, ChatError::Overloaded(_))) {
                        ticket.release();
                    }
                    return Err(error);
                }
            };
            if let Some(fill) = fill {
                fill.whole(response.json()).await;
            }
            if let (Some(remember), Some(id)) = (&remember, response.response_id()) {
                remember.note(id, &record).await;
            }
            let (response, reported) = usage::annotate(response, received, upstream, priced(&record));
            record.update(|facts| {
                facts.prompt_tokens = response.usage().map(|usage| usage.prompt_tokens);
                facts.completion_tokens = response.usage().map(|usage| usage.completion_tokens);
                facts.cost_usd = reported.cost_usd;
            });
            if let Some(mut ticket) = ticket {
                match spent(response.usage(), reported.cost_usd) {
                    Some(used) => ticket.settle(used),
                    // A count of tokens generates none: the request counts, no token does.
                    None if endpoint == Endpoint::CountTokens => ticket.settle(Spend::default()),
                    // No usage: estimated, the completion from the answer's
                    // size (a token is ~4 bytes; ~200 bytes are its frame).
                    // An embedding generates no tokens: its vectors are not text.
                    None if endpoint == Endpoint::Embeddings => drop(ticket),
                    None => {
                        ticket.completion_estimate = (response.len().saturating_sub(200) / 4) as u64;
                        drop(ticket);
                    }
                }
            }
            Ok(ChatOutcome::Complete(response))
        }
    }

    /// Admits a request of a key with limits: its ticket, to settle when it
    /// ends (`None` without a limits store).
    async fn admit(
        &self,
        reservation: Reservation,
        context: &RequestContext,
    ) -> Result<Option<Ticket>, ChatError> {
        let Some(limits) = &self.limits else {
            return Ok(None);
        };
        // Unique per admission: a client may send one request id twice.
        let lease = format!("{}:{:016x}", context.request_id, fastrand::u64(..));
        let mut ticket = limits
            .admit(&reservation.policy, lease, reservation.spend(), &context.record)
            .await?;
        ticket.prompt_estimate = reservation.prompt_estimate;
        ticket.price = reservation.pricing.map(|pricing| {
            (
                pricing.input_per_million / 1_000_000.0,
                pricing.output_per_million / 1_000_000.0,
            )
        });
        Ok(Some(ticket))
    }

    /// What is refused before anything else: an expired key, routing fields
    /// the adapters cannot send, an invalid request.
    fn check(&self, command: &ChatCommand) -> Result<(), ChatError> {
        if let Some(key) = &command.key
            && key.expired(crate::limits::now_unix())
        {
            return Err(ChatError::KeyExpired(key.id.clone()));
        }
        if let Some(rules) = &self.field_rules {
            rules.check(&command.routing)?;
        }
        let request = &command.request;
        command.context.record.update(|facts| {
            facts.stream = request.is_stream();
            facts.endpoint = request.endpoint().as_str();
            facts.key_id = command.key.as_ref().map(|key| key.id.clone());
        });
        request.validate()?;
        Ok(())
    }

    fn prepare(&self, command: ChatCommand, pinned: Option<ResponseTarget>) -> Result<Prepared, ChatError> {
        let ChatCommand {
            request,
            routing,
            mut context,
            key,
            cache: directives,
        } = command;
        let endpoint = request.endpoint();
        if let Some(key) = key.as_ref().filter(|key| !key.allows_model(request.model())) {
            return Err(ChatError::ModelNotAllowed {
                model: crate::text::quote(request.model()).into_owned(),
                key: key.id.clone(),
            });
        }
        let remember = self
            .responses
            .as_ref()
            .filter(|_| endpoint == Endpoint::Responses)
            .map(|memory| Remember {
                memory: memory.clone(),
                target: ResponseTarget {
                    model: bounded(request.model().to_owned()),
                    provider: routing.provider.clone(),
                    portkey_provider: routing.portkey_provider.clone(),
                    target: None,
                    owner: owner(key.as_ref()),
                    client_credentials: routing.portkey_virtual_key.is_some()
                        || routing.portkey_config.is_some(),
                },
            });
        let resolved = resolve(
            request.model(),
            routing,
            &self.catalog,
            self.default_route.as_ref(),
        )?;
        let entry = resolved.entry.and_then(|index| self.catalog.models().get(index));
        if let Some(entry) = entry {
            served(entry, endpoint)?;
        }
        let cache = match pinned {
            None => self.cache_plan(&request, &resolved, entry, key.as_ref(), directives, &context),
            Some(_) => None,
        };
        let limited = key.filter(|key| key.has_limits() && self.limits.is_some());
        let output_limit = |catalog_limit: Option<u32>| {
            if matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens) {
                return 0;
            }
            let limit = request
                .output_token_limit()
                .and_then(|limit| u64::try_from(limit).ok())
                .or(catalog_limit.map(u64::from))
                .unwrap_or(u64::from(self.default_max_tokens))
                .min(MAX_OUTPUT_RESERVED);
            let choices = request
                .fields()
                .n
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(1);
            limit.saturating_mul(choices.clamp(1, MAX_CHOICES_RESERVED))
        };
        context.record.update(|facts| {
            facts.routed(&resolved.route);
            facts.model = Some(bounded(request.model().to_owned()));
            facts.catalog_model = resolved.from_catalog;
        });
        let client_wants_usage = request.wants_stream_usage();
        // A follow-up goes where the response it follows lives, and only there.
        let located = match pinned {
            Some(stored) => Some(self.follow(&stored, &request, &resolved)?),
            None => None,
        };
        if located.is_none()
            && let Some(router) = resolved.entry.and_then(|index| self.routers.get(index))
        {
            let reservation = limited.map(|policy| Reservation {
                policy,
                prompt_estimate: prompt_estimate(&request),
                output_limit: output_limit(entry.and_then(|entry| entry.max_tokens)),
                pricing: entry.and_then(ModelEntry::highest_pricing),
            });
            // The router puts each target's route, model, limit and
            // credentials on the call as it tries it.
            context.overrides = resolved.overrides;
            return Ok(Prepared {
                reservation,
                provider: router.clone(),
                call: ProviderCall {
                    request,
                    // Each target builds its own.
                    body: bytes::Bytes::new(),
                    route: resolved.route,
                    credentials: Credentials::None,
                    context,
                },
                pricing: None,
                client_wants_usage,
                remember,
                cache,
            });
        }
        let (route, model, max_tokens, pricing, remember) = match located {
            Some(located) => {
                context.record.update(|facts| {
                    facts.routed(&located.route);
                    facts.target.clone_from(&located.target);
                    facts.pricing = located.pricing;
                });
                let route = located.route.overridden(&resolved.overrides);
                (
                    route,
                    located.model,
                    located.max_tokens,
                    located.pricing,
                    remember,
                )
            }
            None => {
                let pricing = self.catalog.pricing(&resolved.route, &resolved.model);
                (
                    resolved.route,
                    resolved.model,
                    resolved.max_tokens,
                    pricing,
                    remember,
                )
            }
        };
        // Always ask a stream's usage, so that its cost can be known.
        let body = request.upstream_body(UpstreamEdits {
            model: &model,
            max_tokens: route.output_limit(&request, max_tokens, self.default_max_tokens),
            stream_usage: true,
        });
        let provider = self
            .direct
            .get(route.kind())
            .ok_or(ChatError::ProviderDisabled(route.kind()))?
            .clone();
        let credentials = self.keys.resolve(&route)?;
        context.record.update(|facts| facts.attempts = 1);
        let reservation = limited.map(|policy| Reservation {
            policy,
            prompt_estimate: prompt_estimate(&request),
            output_limit: output_limit(max_tokens),
            pricing,
        });
        Ok(Prepared {
            reservation,
            provider,
            call: ProviderCall {
                request,
                body,
                route,
                credentials,
                context,
            },
            pricing,
            client_wants_usage,
            remember,
            cache,
        })
    }

    /// The cache key and rules of a request, when its answer is cacheable:
    /// a cache is set, the API is one whose answers are kept (chat,
    /// embeddings, messages), and the key's policy or the catalog model
    /// gives a time to live (the key's first), which the client's
    /// `no-store` did not turn down.
    fn cache_plan(
        &self,
        request: &ChatRequest,
        resolved: &crate::resolve::Resolved,
        entry: Option<&ModelEntry>,
        key: Option<&Arc<KeyPolicy>>,
        directives: CacheDirectives,
        context: &RequestContext,
    ) -> Option<CachePlan> {
        let cache = self.cache.as_ref()?;
        if !matches!(
            request.endpoint(),
            Endpoint::Chat | Endpoint::Embeddings | Endpoint::Messages
        ) {
            return None;
        }
        let ttl = key
            .and_then(|key| key.cache_ttl)
            .or_else(|| entry.and_then(|entry| entry.cache_ttl))
            .filter(|ttl| !ttl.is_zero())?;
        if directives.no_store {
            context
                .record
                .update(|facts| facts.cache = Some(CacheStatus::Bypass));
            return None;
        }
        // Every upstream that may answer, as the call would reach it.
        let routes: Vec<(Route, &str, Option<i64>)> = match entry {
            Some(entry) => entry
                .targets
                .targets()
                .into_iter()
                .map(|spec| {
                    let route = spec.target.route().overridden(&resolved.overrides);
                    let limit = route.output_limit(request, entry.max_tokens, self.default_max_tokens);
                    (route, spec.target.upstream_model(), limit)
                })
                .collect(),
            None => vec![(
                resolved.route.clone(),
                resolved.model.as_str(),
                resolved
                    .route
                    .output_limit(request, resolved.max_tokens, self.default_max_tokens),
            )],
        };
        let upstreams: Vec<UpstreamPart<'_>> = routes
            .iter()
            .map(|(route, model, limit)| UpstreamPart {
                route,
                model,
                default_max_tokens: *limit,
            })
            .collect();
        let owner = owner(key);
        let shared = entry.is_some_and(|entry| entry.cache_shared);
        let key = KeyParts {
            request,
            catalog_model: entry.map(|entry| entry.id.as_str()),
            upstreams: &upstreams,
            scope: (!shared).then_some(owner.as_str()),
            headers: &context.passed_headers,
        }
        .key();
        Some(CachePlan {
            cache: cache.clone(),
            key,
            ttl,
            no_cache: directives.no_cache,
            max_age: directives.max_age,
        })
    }

    /// Serves a cacheable request: from an identical request in flight,
    /// from the store, or from the upstream (whose answer is then shared
    /// with the identical requests that arrive meanwhile, and stored).
    async fn through_cache(&self, prepared: Prepared, plan: CachePlan) -> Result<ChatOutcome, ChatError> {
        let record = prepared.call.context.record.clone();
        let endpoint = prepared.call.request.endpoint();
        let stream = prepared.call.request.is_stream();
        if plan.no_cache {
            record.update(|facts| facts.cache = Some(CacheStatus::Refresh));
            let fill = Fill::new(&plan, None, &prepared.call.context);
            return self.call(prepared, Some(fill)).await;
        }
        let leader = match plan.cache.join(plan.key) {
            Joined::Follow(mut follower) => {
                let shared = if stream {
                    cached::followed(endpoint, follower).await
                } else {
                    match follower.answer().await {
                        Some(body) => {
                            let stored_at = follower.stored_at();
                            Replay::of(endpoint, false, body).map(|replay| (replay, stored_at))
                        }
                        None => None,
                    }
                };
                // An answer the leader found in the store is judged by this
                // request's own max-age.
                let fresh = shared.and_then(|(replay, stored_at)| match stored_at {
                    Some(stored_at) => plan.fresh_at(stored_at).map(|age| (replay, age)),
                    None => Some((replay, 0)),
                });
                if let Some((replay, age)) = fresh {
                    // It counts as a request of its key, once its answer is
                    // there; it spends nothing.
                    let ticket = self.admit_free(&prepared).await?;
                    record.update(|facts| {
                        facts.cache_coalesced = true;
                        facts.cache_age = Some(age);
                    });
                    return self.replayed(&prepared, replay, ticket);
                }
                // Its leader failed (or its answer is too old for this
                // request): it makes its own call.
                None
            }
            Joined::Lead(leader) => match plan.cache.get(&plan.key).await {
                Ok(Some(answer)) => match plan.fresh(&answer) {
                    Some(age) => match Replay::of(endpoint, stream, answer.body.clone()) {
                        Some(replay) => {
                            // Its flight's followers get the stored answer too.
                            leader.stored(&answer);
                            let ticket = self.admit_free(&prepared).await?;
                            record.update(|facts| facts.cache_age = Some(age));
                            return self.replayed(&prepared, replay, ticket);
                        }
                        // Stored, but unreadable as asked: a miss.
                        None => Some(leader),
                    },
                    None => Some(leader),
                },
                Ok(None) => Some(leader),
                Err(_) => {
                    record.update(|facts| facts.cache_store_error = true);
                    Some(leader)
                }
            },
        };
        record.update(|facts| facts.cache = Some(CacheStatus::Miss));
        let fill = Fill::new(&plan, leader, &prepared.call.context);
        self.call(prepared, Some(fill)).await
    }

    /// Admits a request answered without the upstream: one request of its
    /// key, no tokens, no spend.
    async fn admit_free(&self, prepared: &Prepared) -> Result<Option<Ticket>, ChatError> {
        match &prepared.reservation {
            Some(reservation) => {
                let free = Reservation {
                    policy: reservation.policy.clone(),
                    prompt_estimate: 0,
                    output_limit: 0,
                    pricing: None,
                };
                self.admit(free, &prepared.call.context).await
            }
            None => Ok(None),
        }
    }

    /// The answer of a request served from the cache (a hit): its
    /// `gateway_usage` says `cached`, costs nothing, and its key is charged
    /// one request and nothing else.
    ///
    /// What it sends is held in the memory budget while it is sent, like
    /// any answer: a whole answer as a budgeted copy, a stored stream's
    /// chunks by a lease (a stream shared as it comes is the leader's,
    /// held already).
    ///
    /// # Errors
    /// [`ChatError::Overloaded`] when the budget cannot hold it.
    fn replayed(
        &self,
        prepared: &Prepared,
        replay: Replay,
        ticket: Option<Ticket>,
    ) -> Result<ChatOutcome, ChatError> {
        let context = &prepared.call.context;
        let refused = |over, ticket: Option<Ticket>| {
            if let Some(ticket) = ticket {
                ticket.release();
            }
            ChatError::Overloaded(over)
        };
        let mut lease = context.budget.lease();
        let replay = match replay {
            Replay::Whole(response) => {
                let json = response.json();
                let held = crate::budget::BudgetedBuffer::with_capacity(&context.budget, json.len())
                    .and_then(|mut copy| copy.extend_from_slice(&json).map(|()| copy));
                let copy = match held {
                    Ok(copy) => copy.freeze(),
                    Err(over) => return Err(refused(over, ticket)),
                };
                // The same bytes, read before: they read again.
                Replay::Whole(ChatResponse::parse(prepared.call.request.endpoint(), copy).unwrap_or(response))
            }
            Replay::Chunks(chunks) => {
                let bytes = chunks.iter().map(|chunk| chunk.json().len()).sum();
                if let Err(over) = lease.cover(bytes) {
                    return Err(refused(over, ticket));
                }
                Replay::Chunks(chunks)
            }
            stream @ Replay::Stream(_) => stream,
        };
        context.record.update(|facts| {
            facts.cache = Some(CacheStatus::Hit);
            facts.cost_usd = Some(0.0);
            facts.attempts = 0;
        });
        Ok(match replay {
            Replay::Whole(response) => {
                if let Some(ticket) = ticket {
                    ticket.settle(Spend::default());
                }
                ChatOutcome::Complete(usage::annotate_cached(response, context.received))
            }
            replay => {
                let chunks = replay
                    .into_stream()
                    .unwrap_or_else(|| futures::stream::empty().boxed())
                    // The lease is given back when the stream ends.
                    .map(move |chunk| {
                        let _held = &lease;
                        chunk
                    })
                    .boxed();
                let meter = usage::Meter::new(
                    context.received,
                    Instant::now(),
                    None,
                    prepared.client_wants_usage,
                    context.record.clone(),
                )
                .cached()
                .with_ticket(ticket);
                ChatOutcome::Stream(usage::meter(chunks, meter))
            }
        })
    }

    /// Where a follow-up of the response `stored` made goes: to its target,
    /// with the model the client names now when that model routes to the
    /// same provider.
    fn follow(
        &self,
        stored: &ResponseTarget,
        request: &ChatRequest,
        resolved: &crate::resolve::Resolved,
    ) -> Result<Located, ChatError> {
        let located = self.locate(stored)?;
        if stored.model == request.model() {
            return Ok(located);
        }
        let same_place = resolved.route.kind() == located.route.kind()
            && resolved.route.upstream_name() == located.route.upstream_name();
        if !same_place {
            return Err(ChatError::Invalid(crate::error::ValidationError::new(
                "previous_response_id",
                format!(
                    "The previous response was made by model `{}`, whose provider keeps it; model `{}` routes \
                     to another provider",
                    quote(&stored.model),
                    quote(request.model())
                ),
            )));
        }
        Ok(Located {
            model: resolved.model.clone(),
            pricing: self.catalog.pricing(&located.route, &resolved.model),
            ..located
        })
    }

    /// The target `stored` names, found again as the catalog and the
    /// gateway's routes are now.
    fn locate(&self, stored: &ResponseTarget) -> Result<Located, ChatError> {
        let fields = RoutingFields {
            provider: stored.provider.clone(),
            portkey_provider: stored.portkey_provider.clone(),
            ..RoutingFields::default()
        };
        let resolved = resolve(&stored.model, fields, &self.catalog, self.default_route.as_ref())?;
        let entry = resolved.entry.and_then(|index| self.catalog.models().get(index));
        if let Some(entry) = entry {
            let targets = entry.targets.targets();
            let spec = match &stored.target {
                Some(name) => targets.iter().find(|spec| spec.name == *name),
                None => targets.first(),
            }
            .ok_or_else(|| {
                ChatError::Invalid(crate::error::ValidationError::new(
                    "previous_response_id",
                    format!(
                        "The target that made this response is no longer in the catalog's model `{}`",
                        quote(&stored.model)
                    ),
                ))
            })?;
            return Ok(Located {
                route: spec.target.route(),
                model: spec.target.upstream_model().to_owned(),
                max_tokens: entry.max_tokens,
                pricing: spec.pricing,
                target: Some(spec.name.as_str().into()),
            });
        }
        let pricing = self.catalog.pricing(&resolved.route, &resolved.model);
        Ok(Located {
            route: resolved.route,
            model: resolved.model,
            max_tokens: resolved.max_tokens,
            pricing,
            target: None,
        })
    }

    /// Where `id` was made, when this key made it and it is remembered
    /// (`None` without a memory: then nothing is checked or pinned).
    async fn recall(&self, id: &str, owner: &str) -> Result<Option<ResponseTarget>, ChatError> {
        let Some(memory) = &self.responses else {
            return Ok(None);
        };
        match memory.recall(id).await.map_err(ChatError::ResponsesUnavailable)? {
            Some(target) if target.owner == owner => Ok(Some(target)),
            // Another key's response is as good as unknown to this one; and
            // one the gateway does not know may be another key's (forgotten,
            // or made before a restart): the upstream would serve it to
            // whoever holds its id, so the gateway does not ask.
            _ => Err(ChatError::ResponseNotFound {
                id: quote(id).into_owned(),
                follow_up: false,
            }),
        }
    }

    /// Makes a Responses API call by id at the target that made the
    /// response, and returns the upstream's JSON answer.
    ///
    /// # Errors
    /// [`ChatError::ResponseNotFound`] when the gateway does not remember
    /// the id for this key; [`ChatError::ResponsesUnavailable`] when its
    /// memory cannot answer; whatever the provider returns.
    pub async fn respond_by_id(&self, command: ResponseCommand) -> Result<bytes::Bytes, ChatError> {
        let record = command.context.record.clone();
        record.update(|facts| facts.endpoint = command.action.as_str());
        let outcome = self.by_id(command).await;
        if let Err(error) = &outcome {
            record.failed(error);
        }
        outcome
    }

    async fn by_id(&self, command: ResponseCommand) -> Result<bytes::Bytes, ChatError> {
        let ResponseCommand {
            action,
            id,
            query,
            context,
            key,
        } = command;
        // The key's policy as it is now: its rate of requests first (a call
        // by id spends no tokens), then its model list.
        let reservation = key
            .clone()
            .filter(|key| key.has_limits() && self.limits.is_some())
            .map(|policy| Reservation {
                policy,
                prompt_estimate: 0,
                output_limit: 0,
                pricing: None,
            });
        let ticket = match reservation {
            Some(reservation) => self.admit(reservation, &context).await?,
            None => None,
        };
        let stored =
            self.recall(&id, &owner(key.as_ref()))
                .await?
                .ok_or_else(|| ChatError::ResponseNotFound {
                    id: quote(&id).into_owned(),
                    follow_up: false,
                })?;
        if let Some(key) = key.as_ref().filter(|key| !key.allows_model(&stored.model)) {
            return Err(ChatError::ModelNotAllowed {
                model: quote(&stored.model).into_owned(),
                key: key.id.clone(),
            });
        }
        if stored.client_credentials {
            return Err(ChatError::Invalid(
                crate::error::ValidationError::new(
                    "response_id",
                    "This response was made with the request's own `portkey_virtual_key` or `portkey_config`, \
                     which the gateway does not keep: it cannot be called by id through the gateway",
                )
                .with_code("response_credentials_not_kept"),
            ));
        }
        let located = self.locate(&stored)?;
        let record = context.record.clone();
        record.update(|facts| {
            facts.routed(&located.route);
            facts.model = Some(bounded(stored.model.clone()));
            facts.catalog_model = self.catalog.get(&stored.model).is_some();
            facts.target.clone_from(&located.target);
            facts.attempts = 1;
        });
        let provider = self
            .providers
            .get(located.route.kind())
            .ok_or(ChatError::ProviderDisabled(located.route.kind()))?
            .clone();
        let credentials = self.keys.resolve(&located.route)?;
        let call = ResponseCall {
            action,
            id: id.clone(),
            query,
            route: located.route,
            credentials,
            context,
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(self.request_timeout, provider.respond_by_id(call)).await;
        record.update(|facts| facts.upstream = Some(started.elapsed()));
        if let Some(ticket) = ticket {
            ticket.settle(Spend::default());
        }
        let answer = answer.map_err(|_| {
            ChatError::Timeout(crate::error::UpstreamError::new(
                crate::error::ErrorSource::Gateway,
                None,
                format!(
                    "no answer within the request deadline of {} ms",
                    self.request_timeout.as_millis()
                ),
            ))
        })??;
        if action == ResponseAction::Delete
            && let Some(memory) = &self.responses
        {
            // Deleted upstream: a later call is a 404 whether or not this
            // forgetting is written.
            let _ = memory.forget(&id).await;
        }
        Ok(answer)
    }
}

/// The owner of a key's responses: its id.
fn owner(key: Option<&Arc<KeyPolicy>>) -> String {
    key.map_or_else(String::new, |key| key.id.clone())
}

/// Refuses a catalog model on an API it does not serve.
fn served(entry: &ModelEntry, endpoint: Endpoint) -> Result<(), ChatError> {
    let service = endpoint.service();
    if entry.serves(service) {
        return Ok(());
    }
    let serves = entry
        .endpoints
        .iter()
        .map(|service| service.path())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ChatError::Invalid(
        crate::error::ValidationError::new(
            "model",
            format!(
                "The model `{}` does not serve {}; it serves {serves}",
                quote(&entry.id),
                service.path()
            ),
        )
        .with_code("model_not_supported"),
    ))
}

/// `chunks`, remembering the response's target at the first event that
/// names its id, before that event reaches the client (who may follow up
/// as soon as it has the id).
fn remembering(chunks: ChatStream, remember: Remember, record: crate::record::CallRecord) -> ChatStream {
    use futures::StreamExt;
    let mut remember = Some(remember);
    chunks
        .then(move |item| {
            let pending = match &item {
                Ok(chunk) => chunk
                    .response_id()
                    .and_then(|id| remember.take().map(|remember| (remember, id.to_owned()))),
                Err(_) => None,
            };
            let record = record.clone();
            async move {
                if let Some((remember, id)) = pending {
                    remember.note(&id, &record).await;
                }
                item
            }
        })
        .boxed()
}

mod cached;

#[cfg(test)]
mod apis_tests;
#[cfg(test)]
mod cache_tests;

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::error::KeyError;
    use crate::ports::{Credentials, MockChatProvider, MockKeyResolver};
    use crate::provider::{ProviderKind, UpstreamProvider};

    fn command(body: serde_json::Value, provider: Option<&str>) -> ChatCommand {
        ChatCommand {
            request: ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap(),
            routing: RoutingFields {
                provider: provider.map(str::to_owned),
                ..RoutingFields::default()
            },
            context: RequestContext::default(),
            key: None,
            cache: Default::default(),
        }
    }

    fn valid(stream: bool) -> serde_json::Value {
        json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    }

    fn keys_never_called() -> Arc<MockKeyResolver> {
        let mut keys = MockKeyResolver::new();
        keys.expect_resolve().never();
        Arc::new(keys)
    }

    fn response() -> ChatResponse {
        let answer = json!({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]});
        ChatResponse::from_json(serde_json::to_vec(&answer).unwrap().into()).unwrap()
    }

    #[tokio::test]
    async fn an_invalid_request_never_reaches_keys_or_provider() {
        let mut provider = MockChatProvider::new();
        provider.expect_complete().never();
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Demo, Arc::new(provider)),
            keys_never_called(),
        );

        let result = service
            .execute(command(json!({"model": "m", "messages": []}), Some("demo")))
            .await;

        assert!(
            matches!(result, Err(ChatError::Invalid(error)) if error.param.as_deref() == Some("messages"))
        );
    }

    /// Refuses every virtual key, as an adapter might refuse what it cannot send.
    struct NoVirtualKeys;

    impl RoutingFieldRules for NoVirtualKeys {
        fn check(&self, fields: &RoutingFields) -> Result<(), crate::error::ValidationError> {
            match fields.portkey_virtual_key {
                Some(_) => Err(crate::error::ValidationError::new(
                    "portkey_virtual_key",
                    "cannot be sent",
                )),
                None => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn routing_fields_the_adapters_cannot_send_are_refused_before_anything_else() {
        let mut provider = MockChatProvider::new();
        provider.expect_complete().never();
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Demo, Arc::new(provider)),
            keys_never_called(),
        )
        .with_routing_field_rules(Arc::new(NoVirtualKeys));
        let mut command = command(json!({"model": "m", "messages": []}), Some("demo"));
        command.routing.portkey_virtual_key = Some("vk".into());

        let result = service.execute(command).await;

        assert!(
            matches!(result, Err(ChatError::Invalid(error)) if error.param.as_deref() == Some("portkey_virtual_key"))
        );
    }

    /// An upstream that never answers.
    struct Silent;

    #[async_trait::async_trait]
    impl ChatProvider for Silent {
        async fn complete(&self, _: ProviderCall) -> Result<ChatResponse, ChatError> {
            std::future::pending().await
        }

        async fn stream(&self, _: ProviderCall) -> Result<ChatStream, ChatError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_directly_routed_request_without_an_answer_ends_at_the_request_deadline() {
        let mut keys = MockKeyResolver::new();
        keys.expect_resolve().returning(|_| Ok(Credentials::None));
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Demo, Arc::new(Silent)),
            Arc::new(keys),
        )
        .with_request_timeout(Duration::from_secs(7));

        for stream in [false, true] {
            let started = tokio::time::Instant::now();
            let result = service.execute(command(valid(stream), Some("demo"))).await;

            assert_eq!(started.elapsed(), Duration::from_secs(7));
            let Err(ChatError::Timeout(error)) = result else {
                panic!("not a timeout");
            };
            assert_eq!(error.source, crate::error::ErrorSource::Gateway);
            assert!(
                error.message.contains("the request deadline of 7000 ms"),
                "{}",
                error.message
            );
        }
    }

    #[tokio::test]
    async fn a_route_whose_adapter_is_not_enabled_is_refused() {
        let service = ChatService::new(Providers::default(), keys_never_called());

        let result = service.execute(command(valid(false), Some("demo"))).await;

        assert!(matches!(
            result,
            Err(ChatError::ProviderDisabled(ProviderKind::Demo))
        ));
    }

    #[tokio::test]
    async fn missing_credentials_stop_the_call() {
        let mut provider = MockChatProvider::new();
        provider.expect_complete().never();
        let mut keys = MockKeyResolver::new();
        keys.expect_resolve()
            .times(1)
            .returning(|_| Err(KeyError::PortkeyKeyMissing));
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Portkey, Arc::new(provider)),
            Arc::new(keys),
        );
        let mut command = command(valid(false), Some("portkey"));
        command.routing.portkey_provider = Some("openai".into());

        let result = service.execute(command).await;

        assert!(matches!(
            result,
            Err(ChatError::Keys(KeyError::PortkeyKeyMissing))
        ));
    }

    #[tokio::test]
    async fn the_provider_gets_the_route_and_credentials_and_stream_decides_the_call() {
        let mut provider = MockChatProvider::new();
        provider
            .expect_complete()
            .withf(|call| {
                call.route.portkey_provider() == Some(UpstreamProvider::Anthropic)
                    && matches!(call.credentials, Credentials::None)
            })
            .times(1)
            .returning(|_| Ok(response()));
        provider
            .expect_stream()
            .times(1)
            .returning(|_| Ok(futures::stream::empty().boxed()));
        let mut keys = MockKeyResolver::new();
        keys.expect_resolve()
            .times(2)
            .returning(|_| Ok(Credentials::None));
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Portkey, Arc::new(provider)),
            Arc::new(keys),
        );

        for stream in [false, true] {
            let mut command = command(valid(stream), Some("portkey"));
            command.routing.portkey_provider = Some("anthropic".into());
            let outcome = service.execute(command).await.unwrap();
            assert_eq!(matches!(outcome, ChatOutcome::Stream(_)), stream);
        }
    }

    fn recording_provider(seen: Arc<std::sync::Mutex<Vec<Option<i64>>>>) -> MockChatProvider {
        let mut provider = MockChatProvider::new();
        provider.expect_complete().returning(move |call| {
            let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
            seen.lock().unwrap().push(body["max_tokens"].as_i64());
            Ok(response())
        });
        provider
    }

    #[tokio::test]
    async fn anthropic_gets_the_default_max_tokens_only_when_the_client_set_no_limit() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut keys = MockKeyResolver::new();
        keys.expect_resolve().returning(|_| Ok(Credentials::None));
        let service = ChatService::new(
            Providers::default().with(ProviderKind::Portkey, Arc::new(recording_provider(seen.clone()))),
            Arc::new(keys),
        )
        .with_default_max_tokens(1234);
        let cases = [
            ("anthropic", json!({}), Some(1234)),
            ("anthropic", json!({"max_tokens": 10}), Some(10)),
            ("anthropic", json!({"max_completion_tokens": 20}), None),
            ("openai", json!({}), None),
        ];

        for (provider, patch, _) in &cases {
            let mut body = valid(false);
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            let mut command = command(body, Some("portkey"));
            command.routing.portkey_provider = Some((*provider).to_owned());
            service.execute(command).await.unwrap();
        }

        let expected: Vec<_> = cases.iter().map(|(_, _, max_tokens)| *max_tokens).collect();
        assert_eq!(*seen.lock().unwrap(), expected);
    }
}
