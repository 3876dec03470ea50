//! The Portkey adapter: chat completions, embeddings, Anthropic's Messages API
//! and OpenAI's Responses API through Portkey's gateway over HTTP. The calls
//! themselves, the error table and the stream reader are shared with the
//! direct adapter ([`crate::http`]); this module is Portkey's wire.

mod client;
mod headers;
mod settings;

pub use client::{PortkeyClient, PortkeySetupError, PortkeyWire, serves};
pub(crate) use headers::check_config;
pub use headers::{MAX_CONFIG_BYTES, PortkeyHeaderRules};
pub use settings::{DEFAULT_BASE_URL, PortkeySettings};
