//! The OpenAI chat-completions wire model, as the gateway sees it.
//!
//! Every struct names only the fields the gateway reads or validates and keeps
//! everything else in a flattened `extra` map, so a field a client or an
//! upstream sends that Gatewayz does not know survives the trip unchanged.

mod chunk;
mod extra;
mod message;
mod request;
mod response;

pub use chunk::{ChatChunk, ChunkChoice, Delta};
pub use extra::Extra;
pub use message::{Message, MessageContent, Role};
pub use request::{ChatRequest, StreamOptions};
pub use response::{ChatResponse, Choice, Usage};
