//! The ports: what the chat use case needs from the outside world.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;

use crate::budget::MemoryBudget;
use crate::error::{ChatError, KeyError, ValidationError};
use crate::model::{ChatChunk, ChatRequest, ChatResponse};
use crate::record::CallRecord;
use crate::route::{Overrides, Route, RoutingFields};

/// A streamed completion: chunks in order, owned, ending when the upstream
/// ends. An `Err` item is a failure after the stream began; the stream yields
/// nothing after it.
pub type ChatStream = BoxStream<'static, Result<ChatChunk, ChatError>>;

/// Facts about the incoming request that a provider may pass on.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The gateway's request id (taken from `x-request-id` or generated).
    pub request_id: String,
    /// The client's W3C `traceparent` and `tracestate`, forwarded so traces
    /// join up; the API passes on only values in the W3C format.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// When the gateway received the request: `gateway_usage.request_ms`
    /// counts from here.
    pub received: Instant,
    /// Where the use case and the adapters note what happened.
    pub record: CallRecord,
    /// The client's virtual key and Portkey config, for whichever Portkey
    /// target serves it.
    pub overrides: Overrides,
    /// When every attempt of this request must have ended, if a deadline
    /// applies (set by a catalog model's routing).
    pub deadline: Option<tokio::time::Instant>,
    /// What the provider's buffers (a whole answer, a stream's events) are
    /// taken from: past it, [`ChatError::Overloaded`].
    pub budget: MemoryBudget,
    /// Headers of the client's request that the API passes on upstream as
    /// they came (Anthropic's `anthropic-version` and `anthropic-beta`).
    pub passed_headers: Vec<(&'static str, String)>,
}

impl RequestContext {
    pub fn new(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            traceparent: None,
            tracestate: None,
            received: Instant::now(),
            record: CallRecord::default(),
            overrides: Overrides::default(),
            deadline: None,
            budget: MemoryBudget::default(),
            passed_headers: Vec::new(),
        }
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new(String::new())
    }
}

/// What a provider needs to authenticate upstream.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The route needs no credentials (the in-process demo provider).
    None,
    /// Portkey's own key plus how to authenticate with the upstream provider.
    Portkey {
        api_key: SecretString,
        upstream: UpstreamAuth,
    },
}

/// How Portkey authenticates with the upstream provider.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    /// The provider's own key, sent as a bearer token.
    ProviderKey(SecretString),
    /// A Portkey virtual key: the provider key lives in Portkey's vault.
    VirtualKey(SecretString),
}

/// Everything a provider needs for one call.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    /// The client's request, as the gateway read it.
    pub request: ChatRequest,
    /// What the upstream is sent: the client's body with the gateway's few
    /// changes (model, output limit, stream usage, no routing fields), built
    /// once per target and shared by its retries.
    pub body: Bytes,
    pub route: Route,
    pub credentials: Credentials,
    pub context: RequestContext,
}

/// A by-id call of the Responses API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// `GET /v1/responses/{id}`.
    Retrieve,
    /// `DELETE /v1/responses/{id}`.
    Delete,
    /// `POST /v1/responses/{id}/cancel`.
    Cancel,
    /// `GET /v1/responses/{id}/input_items`.
    InputItems,
}

impl ResponseAction {
    /// The call's name in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Retrieve => "responses_retrieve",
            Self::Delete => "responses_delete",
            Self::Cancel => "responses_cancel",
            Self::InputItems => "responses_input_items",
        }
    }
}

/// Everything a provider needs for a by-id call.
#[derive(Debug, Clone)]
pub struct ResponseCall {
    pub action: ResponseAction,
    pub id: String,
    pub query: Option<String>,
    pub route: Route,
    pub credentials: Credentials,
    pub context: RequestContext,
}

/// Something that answers chat completions.
///
/// Implementations must be cheap to share (`Arc<dyn ChatProvider>`) and must
/// not block the async runtime.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// Answers a non-streaming request with a whole `chat.completion`.
    ///
    /// # Errors
    /// A [`ChatError`] saying who failed and how; each variant maps to one
    /// HTTP status (see the variant docs).
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError>;

    /// Starts a streamed completion.
    ///
    /// # Errors
    /// A failure before the first chunk is returned here, as a plain
    /// [`ChatError`], so the client gets a real HTTP status; a failure after it
    /// is an `Err` item of the returned [`ChatStream`].
    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError>;

    /// Makes a Responses API call by id (retrieve, delete, cancel, input
    /// items) and returns the upstream's JSON answer.
    ///
    /// # Errors
    /// A [`ChatError`] as for [`Self::complete`]; by default, a 400 saying
    /// that this provider keeps no responses.
    async fn respond_by_id(&self, call: ResponseCall) -> Result<Bytes, ChatError> {
        let _ = call;
        Err(ChatError::Invalid(ValidationError::new(
            "response_id",
            "This provider keeps no responses to call by id",
        )))
    }
}

/// Finds the credentials a route needs.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait KeyResolver: Send + Sync {
    /// The credentials to call `route` with.
    ///
    /// # Errors
    /// - [`KeyError::PortkeyKeyMissing`] when the route goes through Portkey
    ///   and the gateway has no Portkey key (an operator's mistake).
    /// - [`KeyError::ProviderKeyMissing`] when the route needs a provider key,
    ///   the gateway has none for that provider, and the route carries no
    ///   virtual key.
    fn resolve(&self, route: &Route) -> Result<Credentials, KeyError>;
}

/// What the adapters can send of a request's routing fields: a virtual key
/// or a Portkey config travels in the adapter's own wire format, whose limits
/// (sizes, characters) the domain does not know. The use case asks before
/// anything else of the request, so a client learns at once that what it
/// sent cannot be sent, whichever route the request would take.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait RoutingFieldRules: Send + Sync {
    /// Checks the fields a client sent.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the field that cannot be sent (a 400).
    fn check(&self, fields: &RoutingFields) -> Result<(), ValidationError>;
}

/// The state of a target's circuit, as metrics and logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is allowed; its outcome decides.
    HalfOpen,
}

impl BreakerState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Where routing tells what it does: retries, fallbacks and circuit breaker
/// changes, for metrics and logs. `model` is a catalog id and `target` a
/// target's name, both from the catalog.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait RoutingEvents: Send + Sync {
    /// A target failed with `error` and is tried again after `wait`.
    fn retrying(&self, model: &str, target: &str, error: &ChatError, wait: Duration);
    /// A target failed with `error`; the request moves to the next one.
    fn falling_back(&self, model: &str, from: &str, error: &ChatError);
    /// A target's circuit changed state.
    fn breaker_changed(&self, model: &str, target: &str, state: BreakerState);
}

/// Tells no one: for gateways and tests without metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl RoutingEvents for NoEvents {
    fn retrying(&self, _: &str, _: &str, _: &ChatError, _: Duration) {}
    fn falling_back(&self, _: &str, _: &str, _: &ChatError) {}
    fn breaker_changed(&self, _: &str, _: &str, _: BreakerState) {}
}
