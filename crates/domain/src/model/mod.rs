//! The OpenAI chat-completions model, as the gateway sees it: the bytes a
//! client or an upstream sent, and the few fields the gateway reads of them.
//! Nothing else is parsed into structs and written out again: a field the
//! gateway does not know passes through as it came.

mod chunk;
mod request;
mod response;
mod role;

pub use chunk::{ChatChunk, ChunkHead};
pub use request::{ChatRequest, ContentFacts, MessageFacts, ROUTING_FIELDS, RequestFields, UpstreamEdits};
pub use response::{ChatResponse, Usage};
pub use role::Role;
