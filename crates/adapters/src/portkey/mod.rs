//! The Portkey adapter: chat completions through Portkey's gateway over HTTP.

mod client;
mod config;
mod errors;
mod secrets;
mod sse;
mod stream;

pub use client::{PortkeyProvider, PortkeySetupError};
pub use config::{DEFAULT_BASE_URL, PortkeyConfig, Timeouts};
