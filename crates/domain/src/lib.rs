//! The Gatewayz domain: what a chat completion is, what the gateway needs from
//! the outside world (the ports), what can go wrong, and the use case that ties
//! them together.
//!
//! This crate is pure: no HTTP framework, no HTTP client, no environment
//! reading. Adapters implement the ports; the API crate wires them.

pub mod budget;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod json;
pub mod limits;
pub mod model;
pub mod policy;
pub mod portkey_routing;
pub mod ports;
pub mod provider;
pub mod providers;
pub mod record;
mod resolve;
pub mod responses;
pub mod route;
pub mod routing;
pub mod service;
pub mod text;
pub mod usage;
pub mod validation;

pub use budget::{BudgetedBuffer, Lease, MemoryBudget, OverBudget};
pub use cache::{CacheDirectives, CacheStatus, CacheStore, ResponseCache};
pub use catalog::{Catalog, GroupSpec, ModelEntry, Node, Pricing, Target, TargetSpec};
pub use error::{ChatError, ErrorSource, KeyError, UpstreamError, ValidationError};
pub use json::ShapeError;
pub use limits::{KeyPolicy, LimitsStore};
pub use model::{ChatChunk, ChatRequest, ChatResponse, Endpoint, Role, Service, UpstreamEdits, Usage};
pub use policy::{RoutingPolicy, Strategy};
pub use portkey_routing::PortkeyRouting;
pub use ports::{
    BreakerState, ChatProvider, ChatStream, Credentials, KeyResolver, NoEvents, ProviderCall, RequestContext,
    ResponseAction, ResponseCall, RoutingEvents, RoutingFieldRules, UpstreamAuth,
};
pub use provider::{ProviderKind, UpstreamProvider};
pub use providers::Providers;
pub use record::{CallFacts, CallRecord};
pub use responses::{ResponseCommand, ResponseMemory, ResponseTarget};
pub use route::{Overrides, Route, RoutingFields};
pub use service::{ChatCommand, ChatOutcome, ChatService};

#[cfg(any(test, feature = "mocks"))]
pub use limits::MockLimitsStore;
#[cfg(any(test, feature = "mocks"))]
pub use ports::{MockChatProvider, MockKeyResolver, MockRoutingEvents, MockRoutingFieldRules};
#[cfg(any(test, feature = "mocks"))]
pub use responses::MockResponseMemory;
