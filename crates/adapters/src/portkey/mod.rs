//! The Portkey adapter: chat completions through Portkey's gateway over HTTP.

mod client;
mod errors;
mod headers;
mod secrets;
mod settings;
mod sse;
mod stream;

pub use client::{PortkeyClient, PortkeySetupError};
pub(crate) use headers::check_config;
pub use headers::{MAX_CONFIG_BYTES, PortkeyHeaderRules};
pub use settings::{DEFAULT_BASE_URL, PortkeySettings, Timeouts};
