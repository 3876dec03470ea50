//! The Gatewayz domain: what a chat completion is, what the gateway needs from
//! the outside world (the ports), what can go wrong, and the use case that ties
//! them together.
//!
//! This crate is pure: no HTTP framework, no HTTP client, no environment
//! reading. Adapters implement the ports; the API crate wires them.

pub mod catalog;
pub mod error;
pub mod model;
pub mod ports;
pub mod record;
mod resolve;
pub mod route;
pub mod service;
pub mod usage;
pub mod validation;

pub use catalog::{Catalog, ModelEntry, Pricing, Target};
pub use error::{ChatError, ErrorSource, KeyError, UpstreamError, ValidationError};
pub use model::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, Message, MessageContent, Role,
    StreamOptions, Usage,
};
pub use ports::{
    ChatProvider, ChatStream, Credentials, KeyResolver, ProviderCall, RequestContext, UpstreamAuth,
};
pub use record::{CallFacts, CallRecord};
pub use route::{PortkeyProvider, ProviderKind, Route, RoutingFields};
pub use service::{ChatCommand, ChatOutcome, ChatService, Providers};

#[cfg(any(test, feature = "mocks"))]
pub use ports::{MockChatProvider, MockKeyResolver};
