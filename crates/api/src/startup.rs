//! Building and running the service: wiring ports to adapters, binding the
//! listener, starting the server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use gatewayz_adapters::cache::{InProcessCache, RedisCache};
use gatewayz_adapters::catalog::{self, CatalogError};
use gatewayz_adapters::cgroup;
use gatewayz_adapters::direct::DirectClient;
use gatewayz_adapters::http::{HttpClient, HttpSetupError};
use gatewayz_adapters::limits::{
    DegradingLimits, InProcessLimits, RedisLimits, RedisSettings, RedisUrlError,
};
use gatewayz_adapters::metrics::Metrics;
use gatewayz_adapters::portkey::{PortkeyHeaderRules, PortkeySetupError};
use gatewayz_adapters::responses::{InProcessResponses, RedisResponses};
use gatewayz_adapters::{DemoProvider, EnvKeyResolver, PortkeyClient};
use gatewayz_domain::limits::Limits;
use gatewayz_domain::{
    CacheStore, ChatService, KeyResolver, LimitsStore, MemoryBudget, ProviderKind, Providers, ResponseCache,
    ResponseMemory, RoutingEvents, ValidationError,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::auth::{GatewayKeys, KeySetupError, LOCAL_DEV_KEY};
use crate::config::{Config, OverloadSetupError};
use crate::http_refusals;
use crate::middleware::track;
use crate::overload::{Overload, admit};
use crate::probe::ClientProbe;
use crate::routes::admin::Readiness;
use crate::routes::{self, chat::ChatState};
use crate::send_deadline::SendTimeout;
use crate::settings::Settings;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Keys(#[from] KeySetupError),
    #[error(transparent)]
    Portkey(#[from] PortkeySetupError),
    #[error(transparent)]
    Upstreams(#[from] HttpSetupError),
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
    Overload(#[from] OverloadSetupError),
    #[error("GATEWAYZ_REDIS_URL: {0}")]
    Redis(#[from] RedisUrlError),
    #[error("GATEWAYZ_REDIS_CA_FILE: cannot read {path}: {error}")]
    RedisCa { path: String, error: std::io::Error },
    #[error("cannot set up the metrics: {0}")]
    Metrics(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The chat use case wired to the production adapters: the demo provider,
/// Portkey, the keys, and the model catalog (whose virtual keys are looked
/// up in the environment as it was read).
///
/// # Errors
/// When the Portkey adapter, the catalog, the default route or the limits
/// store cannot be built from their settings.
pub async fn chat_service(settings: &Settings) -> Result<ChatService, StartupError> {
    let Settings {
        gateway: config,
        portkey,
        upstreams: waits,
        keys,
        environment,
    } = settings;
    let catalog::Loaded {
        catalog,
        upstreams: direct,
    } = catalog::load(config.catalog.as_deref(), |name| environment.get(name))?;
    tracing::info!(
        models = catalog.models().len(),
        direct_upstreams = direct.len(),
        file = %config.catalog.as_ref().map_or(catalog::DEFAULT_CATALOG_NAME.into(), |path| path.display().to_string()),
        "model catalog loaded"
    );
    let default_route = config.default_route().map_err(StartupError::DefaultRoute)?;
    if !keys.has_portkey_key() {
        tracing::warn!("PORTKEY_API_KEY is unset: requests routed to Portkey will fail until it is set");
    }
    // One HTTP client, one pool per thread, for Portkey and every direct
    // upstream.
    let http = HttpClient::from_settings(waits)?;
    let providers = Providers::default()
        .with(ProviderKind::Demo, Arc::new(DemoProvider))
        .with(
            ProviderKind::Portkey,
            Arc::new(PortkeyClient::new(portkey, http.clone())?),
        )
        .with(ProviderKind::Direct, Arc::new(DirectClient::new(http, direct)));
    let keys: Arc<dyn KeyResolver> = Arc::new(EnvKeyResolver::new(keys.clone()));
    let Stores {
        limits,
        responses,
        cache,
    } = stores(config).await?;
    Ok(ChatService::new(providers, keys)
        .with_limits(limits)
        .with_response_memory(responses)
        .with_cache(ResponseCache::new(cache, config.cache_max_entry_bytes))
        .with_catalog(Arc::new(catalog))
        .with_default_route(default_route)
        .with_default_max_tokens(config.default_max_tokens)
        .with_request_timeout(Duration::from_millis(config.request_timeout_ms.max(1)))
        .with_routing_field_rules(Arc::new(PortkeyHeaderRules)))
}

/// The stores of the state the gateway keeps.
struct Stores {
    limits: Arc<dyn LimitsStore>,
    responses: Arc<dyn ResponseMemory>,
    cache: Arc<dyn CacheStore>,
}

/// Where keys' limits are counted, where Responses API responses were made
/// is remembered, and where answers are cached: in this process, or in
/// Redis (shared by every replica) when `GATEWAYZ_REDIS_URL` is set, the
/// limits falling back as `GATEWAYZ_LIMITS_ON_STORE_ERROR` says while it
/// cannot answer (and the cache missing). The cache has connections of its
/// own, to `GATEWAYZ_CACHE_REDIS_URL` when set: its failures never reset
/// the limits' connections.
async fn stores(config: &Config) -> Result<Stores, StartupError> {
    let ttl = Duration::from_secs(config.response_ttl_secs.max(1));
    let settings = RedisSettings {
        ca_pem: match &config.redis_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|error| StartupError::RedisCa {
                path: path.display().to_string(),
                error,
            })?),
            None => None,
        },
        ..RedisSettings::default()
    };
    let cache: Arc<dyn CacheStore> = match config.cache_redis_url.as_ref().or(config.redis_url.as_ref()) {
        Some(url) => {
            let redis = RedisLimits::connect(url, settings.clone()).await?;
            tracing::info!(url = redis.shown_url(), "responses cached in Redis");
            Arc::new(RedisCache::new(Arc::new(redis)))
        }
        None => {
            let cache_bytes = config.cache_max_bytes(cgroup::memory_limit());
            tracing::info!(max_bytes = cache_bytes, "responses cached in this process");
            Arc::new(InProcessCache::new(cache_bytes))
        }
    };
    let Some(url) = &config.redis_url else {
        return Ok(Stores {
            limits: Arc::new(InProcessLimits::new()),
            responses: Arc::new(InProcessResponses::new(ttl)),
            cache,
        });
    };
    let redis = Arc::new(RedisLimits::connect(url, settings).await?);
    tracing::info!(
        url = redis.shown_url(),
        on_store_error = config.limits_on_store_error.as_str(),
        "key limits counted, and responses' targets remembered, in Redis"
    );
    Ok(Stores {
        responses: Arc::new(RedisResponses::new(redis.clone(), ttl)),
        cache,
        limits: Arc::new(DegradingLimits::new(redis, config.limits_on_store_error)),
    })
}

/// A bound, ready-to-run gateway: the public listener and the admin one.
pub struct Application {
    address: SocketAddr,
    admin_address: SocketAddr,
    server: Server,
    admin: Server,
    readiness: Readiness,
    keys: GatewayKeys,
    metrics: web::Data<Metrics>,
    reload_interval: Duration,
    /// Settlements still on their way to the limits store at shutdown.
    limits: Option<Limits>,
}

/// How long a shutdown waits for the last settlements to reach the store.
const SETTLEMENT_FLUSH: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .field("admin_address", &self.admin_address)
            .finish_non_exhaustive()
    }
}

fn bind(address: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address).map_err(|source| StartupError::Bind { address, source })
}

impl Application {
    /// Binds both listeners and builds the servers around `service`.
    ///
    /// # Errors
    /// When a listener cannot be bound, the metrics cannot be set up, or the
    /// gateway keys are unusable for the bind address.
    pub fn build(config: &Config, service: ChatService) -> Result<Self, StartupError> {
        let keys = GatewayKeys::from_config(
            config.api_keys.as_ref(),
            config.api_keys_file.as_deref(),
            config.bind,
        )?;
        let listener = bind(config.bind)?;
        let admin_listener = bind(config.admin_bind)?;
        let address = listener.local_addr()?;
        let admin_address = admin_listener.local_addr()?;
        if keys.is_local_dev() {
            tracing::warn!(
                %address,
                "GATEWAYZ_API_KEYS is unset: accepting only the public local development key \
                 `{LOCAL_DEV_KEY}`, on this loopback address only. Set GATEWAYZ_API_KEYS before \
                 exposing the gateway."
            );
        }

        let limits = config.overload_limits(cgroup::memory_limit())?;
        let budget = MemoryBudget::new(limits.memory_budget_bytes);
        tracing::info!(
            memory_budget_bytes = budget.bytes(),
            from = limits.budget_from,
            max_in_flight = limits.max_in_flight,
            "overload limits set"
        );
        let mut metrics = Metrics::new()
            .map_err(|error| StartupError::Metrics(error.to_string()))?
            .with_overload_limits(budget.clone(), limits.max_in_flight);
        let settlements = service.limits().cloned();
        let limits_store = service.limits().map(|limits| Arc::clone(limits.store()));
        if let Some(store) = &limits_store {
            let store = Arc::clone(store);
            metrics = metrics.with_limits_degraded(Arc::new(move || store.is_degraded()));
        }
        if let Some(cache) = service.cache() {
            metrics = metrics.with_cache(cache.clone());
        }
        if let Some(dropped) = gatewayz_adapters::traces::dropped_spans() {
            metrics = metrics.with_trace_drops(dropped);
        }
        // The overload state counts its refusals in a copy of the metrics
        // (clones share their counters), and the metrics read its state.
        let overload = web::Data::new(Overload::new(
            &limits,
            budget.clone(),
            Some(web::Data::new(metrics.clone())),
        ));
        let readiness = Readiness::default();
        let metrics = web::Data::new(metrics.with_readiness({
            let readiness = readiness.clone();
            let overload = Overload::clone(&overload);
            Arc::new(move || readiness.check(Some(&overload)).is_ok())
        }));
        let keys_data = web::Data::new(keys.clone());
        let events: Arc<dyn RoutingEvents> = Arc::new(Metrics::clone(&metrics));
        let chat = web::Data::new(ChatState {
            service: service.with_routing_events(events),
            max_body_bytes: config.max_body_bytes,
            budget,
            body_timeout: Duration::from_millis(config.body_timeout_ms.max(1)),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
        });
        let public_metrics = metrics.clone();
        let admin_metrics = metrics.clone();
        let public_overload = overload.clone();
        let send_timeout = SendTimeout(Duration::from_millis(config.send_timeout_ms.max(1)));
        let server = http_refusals::serve(
            listener,
            config.shutdown_timeout,
            Duration::from_millis(config.request_head_timeout_ms.max(1)),
            metrics.clone(),
            ClientProbe::attach,
            move || {
                App::new()
                    // Tracked first: a refused request is logged and counted too.
                    .wrap(from_fn(admit))
                    .wrap(from_fn(track))
                    .app_data(public_overload.clone())
                    .app_data(public_metrics.clone())
                    .app_data(keys_data.clone())
                    .app_data(chat.clone())
                    .app_data(send_timeout)
                    .configure(routes::configure)
            },
        )?;
        let admin_readiness = web::Data::new(readiness.clone());
        let admin_keys = web::Data::new(keys.clone());
        let admin_limits = limits_store.map(web::Data::new);
        let admin = HttpServer::new(move || {
            let app = App::new()
                .app_data(admin_metrics.clone())
                .app_data(admin_readiness.clone())
                .app_data(admin_keys.clone())
                .app_data(overload.clone());
            let app = match &admin_limits {
                Some(store) => app.app_data(store.clone()),
                None => app,
            };
            app.configure(routes::admin::configure)
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(admin_listener)?
        .run();
        Ok(Self {
            address,
            admin_address,
            server,
            admin,
            readiness,
            keys,
            metrics,
            reload_interval: Duration::from_millis(config.api_keys_reload_ms.max(10)),
            limits: settlements,
        })
    }

    /// The public listener's address (with the real port when the
    /// configuration asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The admin listener's address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: `/readyz`
    /// answers 503 at once, the public listener stops accepting, in-flight
    /// requests and streams get up to `GATEWAYZ_SHUTDOWN_TIMEOUT` to finish,
    /// then the admin listener stops too.
    ///
    /// # Errors
    /// When a server fails while running, or the signal handlers cannot be
    /// installed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            admin,
            readiness,
            keys,
            metrics,
            reload_interval,
            limits,
            ..
        } = self;
        let public = server.handle();
        let admin_handle = admin.handle();
        // Each server runs as its own task: dropping a server's future would
        // stop it, and the admin listener must outlive the public one.
        let mut public_task = tokio::spawn(server);
        let mut admin_task = tokio::spawn(admin);
        let watcher = keys
            .watch(reload_interval, move |taken| metrics.key_reload(taken))
            .map(tokio::spawn);
        // Handlers first: a SIGTERM right after readiness must drain, not kill.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        readiness.set(true);
        let ended = tokio::select! {
            result = &mut public_task => Some(result),
            result = &mut admin_task => Some(result),
            _ = terminate.recv() => None,
            _ = interrupt.recv() => None,
        };
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        readiness.set(false);
        if let Some(result) = ended {
            public.stop(false).await;
            admin_handle.stop(false).await;
            return result.map_err(std::io::Error::other)?;
        }
        tracing::info!("shutting down: not ready, finishing in-flight requests");
        public.stop(true).await;
        let _ = public_task.await;
        // Every request has ended and settled; the last settlements reach
        // the store before the process ends.
        if let Some(limits) = limits
            && !limits.flush(SETTLEMENT_FLUSH).await
        {
            tracing::warn!("some key limit settlements did not reach the store before shutdown");
        }
        admin_handle.stop(true).await;
        let _ = admin_task.await;
        tracing::info!("stopped");
        Ok(())
    }
}
