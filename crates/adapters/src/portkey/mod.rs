//! The Portkey adapter: chat completions through Portkey's gateway over HTTP.

mod client;
mod settings;
mod errors;
mod secrets;
mod sse;
mod stream;

pub use client::{PortkeyClient, PortkeySetupError};
pub use settings::{DEFAULT_BASE_URL, PortkeySettings, Timeouts};
