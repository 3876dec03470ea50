//! Gatewayz adapters: implementations of the domain ports.
//!
//! - [`cache`]: the response caches: in process (bounded in bytes) and in Redis.
//! - [`catalog`]: the model catalog, read from TOML at start.
//! - [`cgroup`]: the container's memory limit, which sizes the memory budget.
//! - [`demo::DemoProvider`]: a deterministic in-process provider for demos and tests.
//! - [`metrics::Metrics`]: Prometheus metrics of every request.
//! - [`http`]: what the adapters that call an upstream over HTTP share: one
//!   pooled client, the calls, one error table, the stream reader.
//! - [`portkey::PortkeyClient`]: chat completions through Portkey over HTTP.
//! - [`direct::DirectClient`]: OpenAI-compatible servers (vLLM, Ollama,
//!   OpenAI, Azure OpenAI) called directly.
//! - [`limits`]: the per-key limits stores: in process, in Redis, and Redis with a local fallback.
//! - [`env_keys::EnvKeyResolver`]: Portkey and provider keys ([`KeySettings`]) read once from the environment.
//! - [`env`](mod@env): settings read from environment variables with envy, and the names of those variables.
//! - [`traces`]: OpenTelemetry traces over OTLP, and each upstream attempt's client span.
//! - [`mock`] (feature `mocks`): mockall mocks of the ports.

pub mod cache;
pub mod catalog;
pub mod cgroup;
pub mod demo;
pub mod direct;
pub mod env;
pub mod env_keys;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod portkey;
pub mod responses;
pub mod traces;

#[cfg(feature = "mocks")]
pub mod mock {
    //! mockall mocks of the domain ports, for tests of the layers above.
    pub use gatewayz_domain::{MockChatProvider, MockKeyResolver};
}

pub use demo::DemoProvider;
pub use env_keys::{EnvKeyResolver, KeySettings, UnsendableKey};
pub use portkey::{PortkeyClient, PortkeySettings};
