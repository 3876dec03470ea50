//! The OpenAI chat-completions wire model, as the gateway sees it.
//!
//! Every struct names only the fields the gateway reads or validates and keeps
//! everything else in a flattened `extra` map, so a field a client or an
//! upstream sends that Gatewayz does not know survives the trip unchanged.

mod chunk;
mod message;
mod request;
mod response;

pub use chunk::{ChatChunk, ChunkChoice, Delta};
pub use message::{Message, MessageContent, Role};
pub use request::{ChatRequest, StreamOptions};
pub use response::{ChatResponse, Choice, Usage};

/// Fields a struct does not name, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
