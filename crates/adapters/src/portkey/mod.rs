//! The Portkey adapter: chat completions, embeddings, Anthropic's Messages API
//! and OpenAI's Responses API through Portkey's gateway over HTTP.

mod client;
mod errors;
mod headers;
mod secrets;
mod settings;
mod sse;
mod stream;

pub use client::{PortkeyClient, PortkeySetupError, serves};
pub(crate) use headers::check_config;
pub use headers::{MAX_CONFIG_BYTES, PortkeyHeaderRules};
pub use settings::{DEFAULT_BASE_URL, PortkeySettings, Timeouts};
