//! The APIs' models (OpenAI chat completions, embeddings and Responses;
//! Anthropic Messages), as the gateway sees them: the bytes a
//! client or an upstream sent, and the few fields the gateway reads of them.
//! Nothing else is parsed into structs and written out again: a field the
//! gateway does not know passes through as it came.

mod chunk;
mod endpoint;
mod members;
mod other_apis;
pub mod replay;
mod request;
mod response;
mod role;
mod tokens;
pub mod translate;

pub use chunk::{ChatChunk, ChunkHead};
pub use endpoint::{Endpoint, Service};
pub use other_apis::is_response_id;
pub use request::{ChatRequest, ContentFacts, MessageFacts, ROUTING_FIELDS, RequestFields, UpstreamEdits};
pub use response::{ChatResponse, Usage};
pub use role::Role;
