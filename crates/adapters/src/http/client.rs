//! [`HttpClient`]: one pooled HTTP client per thread, shared by every
//! adapter that calls an upstream, with the gateway's upstream timeouts.

use std::sync::Arc;
use std::time::Duration;

use gatewayz_domain::{ChatError, ErrorSource, UpstreamError};
use reqwest::Client;
use thread_local::ThreadLocal;

use super::settings::{HttpSetupError, Timeouts, UpstreamSettings};

/// The upstreams' HTTP client: cheap to clone, one pool per thread that
/// calls it. A pooled connection's task runs on the thread that opened it,
/// so a request served by one actix worker never waits on another worker's
/// thread.
#[derive(Debug, Clone)]
pub struct HttpClient {
    clients: Arc<ThreadLocal<Client>>,
    timeouts: Timeouts,
}

impl HttpClient {
    /// The client `settings` (`GATEWAYZ_UPSTREAM_*`) describe.
    ///
    /// # Errors
    /// A timeout out of range, or why no client can be built.
    pub fn from_settings(settings: &UpstreamSettings) -> Result<Self, HttpSetupError> {
        Self::new(settings.timeouts()?)
    }

    /// Builds the first pool, which proves the settings.
    ///
    /// # Errors
    /// [`HttpSetupError::Client`]: why no client can be built (no trust
    /// store, say).
    pub fn new(timeouts: Timeouts) -> Result<Self, HttpSetupError> {
        let client = build(timeouts).map_err(HttpSetupError::Client)?;
        let clients = Arc::new(ThreadLocal::new());
        clients.get_or(|| client);
        Ok(Self { clients, timeouts })
    }

    pub const fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// This thread's client.
    pub(crate) fn client(&self) -> Result<&Client, ChatError> {
        self.clients
            .get_or_try(|| build(self.timeouts))
            .map_err(|error| ChatError::Unavailable(UpstreamError::new(ErrorSource::Gateway, None, error)))
    }
}

/// A pooled client with the gateway's timeouts.
fn build(timeouts: Timeouts) -> Result<Client, String> {
    Client::builder()
        .user_agent(concat!("gatewayz/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        // A redirect would carry the upstream's keys to another host: a 3xx
        // is answered as the upstream failure it is.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        // Enough idle connections for steady traffic; the rest of a burst's
        // connections are closed when they come back, not kept 90 s.
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|error| {
            // reqwest says only "builder error"; the cause (no trust store,
            // say) is in the chain.
            let mut message = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                message = format!("{message}: {inner}");
                cause = inner.source();
            }
            message
        })
}
