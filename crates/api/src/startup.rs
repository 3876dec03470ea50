//! Building and running the service: wiring ports to adapters, binding the
//! listener, starting the server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use gatewayz_adapters::catalog::{self, CatalogError};
use gatewayz_adapters::portkey::PortkeySetupError;
use gatewayz_adapters::{DemoProvider, EnvKeyResolver, PortkeyConfig, PortkeyProvider};
use gatewayz_domain::{ChatService, KeyResolver, ProviderKind, Providers, ValidationError};

use crate::auth::{GatewayKeys, KeySetupError, LOCAL_DEV_KEY};
use crate::config::Config;
use crate::middleware::request_context;
use crate::routes::{self, chat::ChatState};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Keys(#[from] KeySetupError),
    #[error(transparent)]
    Portkey(#[from] PortkeySetupError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    DefaultRoute(ValidationError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The chat use case wired to the production adapters: the demo provider,
/// Portkey, keys from the environment, and the model catalog (whose virtual
/// keys `env` looks up).
///
/// # Errors
/// When the Portkey adapter, the catalog or the default route cannot be
/// built from their settings.
pub fn chat_service(
    config: &Config,
    portkey: &PortkeyConfig,
    keys: EnvKeyResolver,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ChatService, StartupError> {
    let catalog = catalog::load(config.catalog.as_deref(), env)?;
    tracing::info!(
        models = catalog.models().len(),
        file = %config.catalog.as_ref().map_or(catalog::DEFAULT_CATALOG_NAME.into(), |path| path.display().to_string()),
        "model catalog loaded"
    );
    let default_route = config.default_route().map_err(StartupError::DefaultRoute)?;
    if !keys.has_portkey_key() {
        tracing::warn!("PORTKEY_API_KEY is unset: requests routed to Portkey will fail until it is set");
    }
    let providers = Providers::default()
        .with(ProviderKind::Demo, Arc::new(DemoProvider))
        .with(ProviderKind::Portkey, Arc::new(PortkeyProvider::new(portkey)?));
    Ok(
        ChatService::new(providers, Arc::new(keys) as Arc<dyn KeyResolver>)
            .with_catalog(Arc::new(catalog))
            .with_default_route(default_route)
            .with_default_max_tokens(config.default_max_tokens),
    )
}

/// A bound, ready-to-run gateway.
pub struct Application {
    address: SocketAddr,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and builds the server around `service`.
    ///
    /// # Errors
    /// When the listener cannot be bound, or the gateway keys are unusable for
    /// the bind address.
    pub fn build(config: &Config, service: ChatService) -> Result<Self, StartupError> {
        let keys = GatewayKeys::from_config(config.api_keys.as_ref(), config.bind)?;
        let listener = TcpListener::bind(config.bind).map_err(|source| StartupError::Bind {
            address: config.bind,
            source,
        })?;
        let address = listener.local_addr()?;
        if keys.is_local_dev() {
            tracing::warn!(
                %address,
                "GATEWAYZ_API_KEYS is unset: accepting only the public local development key \
                 `{LOCAL_DEV_KEY}`, on this loopback address only. Set GATEWAYZ_API_KEYS before \
                 exposing the gateway."
            );
        }

        let keys = web::Data::new(keys);
        let chat = web::Data::new(ChatState {
            service,
            max_body_bytes: config.max_body_bytes,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_context))
                .app_data(keys.clone())
                .app_data(chat.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self { address, server })
    }

    /// The address the listener is bound to (with the real port when the
    /// configuration asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until the server is stopped (SIGINT, SIGTERM).
    ///
    /// # Errors
    /// When the server fails while running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
