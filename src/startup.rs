//! Building and running the server: `Application::build(settings)` resolves secrets, builds the
//! shared state, binds the listener (port 0 allowed) and reports the bound address. `main` and
//! the integration tests both start Signet this way.

use crate::auth::FeedSource;
use crate::auth::{Authenticator, InProcessRevocations, KeyRing, KeyRingError, RevocationStore};
use crate::cluster::{Cluster, Forwarder, RedisNonceStore, RedisRevocations};
use crate::connection::{CloseReason, CloseStats, ConnectionRegistry};
use crate::envelope::{EnvelopeLimits, EnvelopeService, InMemoryNonceStore, NonceStore};
use crate::http::health::Readiness;
use crate::http::{self, ApiError, JsonLimit};
use crate::hub::{HubBuilder, HubCatalog, HubServices, OpenUploads, SessionLimits};
use crate::hubs::{CatalogParts, HubContext, HubSetup, OpaqueError};
use crate::identity::{IdentityError, IdentityService, Passwords, UserAdmin};
use crate::metrics::{MeteredStore, Metrics, StatsSeries};
use crate::settings::{ResolvedSecrets, Settings, SettingsError};
use crate::store::{RevocationFeed, Store, StoreError};
use crate::transport::HubEndpoints;
use crate::transport::WebSocketUpgrade;
use actix_http::body::BoxBody;
use actix_http::{HttpServiceBuilder, KeepAlive, Request, Response};
use actix_server::GracefulShutdownSignal;
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Extensions, Server as HttpServerTask, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::any::Any;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server did not start (or stopped serving): each names the setting or resource at
/// fault. Causes whose types are not public API are carried as an [`OpaqueError`], with their
/// message and chain of causes as they were. New reasons may be added in any release (the
/// enum is non-exhaustive).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A JWT verification key could not be loaded.
    #[error(transparent)]
    KeyRing(OpaqueError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[source] OpaqueError),
    /// The identity service could not be set up.
    #[error("identity: {0}")]
    Identity(#[source] OpaqueError),
    /// The data directory could not be made private.
    #[error("cannot make the data directory {path} private (mode 0700): {source}")]
    DataDir {
        /// `[server] data_dir`.
        path: std::path::PathBuf,
        /// What the file system answered.
        source: std::io::Error,
    },
    /// The certificate or key of `[tls]` could not be loaded.
    #[error("tls: {0}")]
    Tls(#[source] OpaqueError),
    /// The cluster (`[cluster]`) could not be joined.
    #[error(transparent)]
    Cluster(OpaqueError),
    /// A hub could not be registered (its name, or an `[[upstream]]` naming it).
    #[error(transparent)]
    Hubs(#[from] crate::hubs::HubRegistrationError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the operating system answered.
        source: std::io::Error,
    },
    /// Serving failed after start-up.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// The causes whose types are internal: each becomes its variant's [`OpaqueError`], so `?`
/// works on them as before.
macro_rules! opaque_causes {
    ($($cause:ty => $variant:ident),* $(,)?) => {$(
        impl From<$cause> for StartupError {
            fn from(err: $cause) -> Self {
                Self::$variant(OpaqueError::new(err))
            }
        }
    )*};
}

opaque_causes!(
    KeyRingError => KeyRing,
    StoreError => Store,
    IdentityError => Identity,
    crate::tls::TlsError => Tls,
    crate::cluster::ClusterError => Cluster,
);

/// Cheap-to-clone handles to every shared service, built once outside the worker closure.
#[doc(hidden)]
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Token verification with revocation: every route and hub connection goes through it.
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    pub identity: IdentityService,
    pub hubs: Arc<HubCatalog>,
    pub connections: Arc<ConnectionRegistry>,
    pub close_stats: Arc<CloseStats>,
    pub metrics: Metrics,
    /// The recent history the admin console charts.
    pub stats: StatsSeries,
    /// Client-to-server streams open across hub sessions (`/metrics`).
    pub open_uploads: Arc<OpenUploads>,
    pub limits: SessionLimits,
    /// Cancelled once at shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// This node's place in the cluster, with `[cluster] redis_url`.
    pub cluster: Option<Arc<Cluster>>,
    /// With a cluster: requests on connections other nodes hold are forwarded to them.
    pub forwarder: Option<Arc<Forwarder>>,
}

/// With `[cluster] redis_url`: gives the node an id when the configuration names none, and
/// logs which cluster it joins.
fn name_this_node(settings: &mut Settings) {
    let Some(url) = &settings.cluster.redis_url else {
        return;
    };
    if settings.cluster.node_id.is_empty() {
        // Base64url is letters, digits, `-` and `_`: a valid node id.
        settings.cluster.node_id = crate::auth::issue::random_id();
    }
    tracing::info!(
        node_id = %settings.cluster.node_id,
        redis = %url.masked(),
        channel_prefix = %settings.cluster.channel_prefix,
        "joining the cluster"
    );
}

/// The revocation records in force, and the feeds of other nodes' revocations followed until
/// `shutdown`: a shared store's, and the cluster's (which also gets this node's records).
async fn load_revocations(
    settings: &Settings,
    store: Arc<dyn Store>,
    feed: Option<RevocationFeed>,
    cluster: Option<&Arc<Cluster>>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Arc<InProcessRevocations>, StartupError> {
    let revocations = Arc::new(
        InProcessRevocations::load(
            store,
            settings.jwt.leeway_secs,
            settings.identity.revocation_event_capacity,
        )
        .await?,
    );
    if feed.is_some() || cluster.is_some() {
        let lost = revocations.clone();
        metrics.watch_gauge(
            "signet_revocation_feed_lost",
            "1 while a revocation feed (shared store, cluster) is lost (every token refused).",
            move || i64::from(!lost.in_sync()),
        );
    }
    if let Some(cluster) = cluster {
        // Every node's revocations over Redis, failing closed until subscribed and reloaded
        // (README "[cluster]", revocation). Set up before the server starts.
        RedisRevocations::start(cluster.clone(), revocations.clone(), shutdown.clone());
        if feed.is_some() {
            // Every node writes its records to the shared store first, whose feed fails
            // closed on its own: Redis only makes them arrive sooner.
            revocations.redundant_feed(FeedSource::Cluster);
        }
    }
    if let Some(feed) = feed {
        // Other nodes' revocations, in force here within a second; while the feed is lost
        // every token is refused (README "Several nodes"). Listening starts before the
        // server does, so no revocation recorded after start-up is missed.
        let applied = revocations.clone();
        let follow = feed
            .follow(
                move |event| applied.follow_feed(FeedSource::Store, event),
                shutdown.clone(),
            )
            .await?;
        tokio::spawn(follow);
    }
    Ok(revocations)
}

/// Envelope verification with its nonce store: shared over Redis on a cluster node (refusing
/// signed calls while Redis is unreachable), in memory otherwise.
fn envelope_service(
    settings: &Settings,
    secrets: &ResolvedSecrets,
    cluster: Option<&Arc<Cluster>>,
) -> Arc<EnvelopeService> {
    let envelope = &settings.envelope;
    let limits = EnvelopeLimits {
        max_lifetime: Duration::from_secs(envelope.max_lifetime_secs),
        clock_skew: Duration::from_secs(envelope.clock_skew_secs),
        max_message_bytes: envelope.max_message_bytes,
    };
    let nonces: Arc<dyn NonceStore> = match cluster {
        Some(cluster) => Arc::new(RedisNonceStore::new(
            cluster.clone(),
            envelope.max_nonces_per_session,
        )),
        None => Arc::new(
            InMemoryNonceStore::new(envelope.nonce_capacity)
                .with_scope_quota(envelope.max_nonces_per_session),
        ),
    };
    Arc::new(EnvelopeService::new(
        limits,
        nonces,
        secrets.envelope.clone(),
    ))
}

/// On a first start (no users), creates `admin` and says where its password is.
async fn bootstrap_admin(
    settings: &Settings,
    store: Arc<dyn Store>,
    passwords: Passwords,
) -> Result<(), StartupError> {
    if let Some(path) = UserAdmin::new(store, passwords)
        .bootstrap_admin(&settings.server.data_dir)
        .await?
    {
        tracing::warn!(
            path = %path.display(),
            "first start: created user `admin`; its password is in this file (mode 0600). \
             Change it with `signet user passwd admin --password-stdin`, then delete the file"
        );
    }
    Ok(())
}

impl AppState {
    /// Opens the store (applying migrations), loads revocations, and wires the services.
    pub async fn build(
        mut settings: Settings,
        secrets: &ResolvedSecrets,
        hubs: Vec<(String, HubSetup)>,
    ) -> Result<Self, StartupError> {
        name_this_node(&mut settings);
        let keyring = KeyRing::new(&settings.jwt, secrets)?;
        let metrics = Metrics::new();
        let connections = Arc::new(ConnectionRegistry::new(
            settings.hub.max_connections,
            settings.hub.max_connections_per_user,
        ));
        metrics.watch_connections(connections.clone());
        let opened = crate::store::open(&settings).await?;
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(opened.store, metrics.clone()));
        let shutdown = CancellationToken::new();
        let cluster = match &settings.cluster.redis_url {
            Some(url) => Some(Cluster::start(
                &settings.cluster,
                url.expose(),
                settings.cluster.node_id.clone(),
                &metrics,
                shutdown.clone(),
            )?),
            None => None,
        };
        let revocations = load_revocations(
            &settings,
            store.clone(),
            opened.revocation_feed,
            cluster.as_ref(),
            &metrics,
            &shutdown,
        )
        .await?;
        let forwarder = cluster
            .as_ref()
            .map(|c| Forwarder::start(c.clone(), metrics.clone(), shutdown.clone()));
        let auth = Authenticator::new(Arc::new(keyring), revocations).with_metrics(metrics.clone());
        let envelopes = envelope_service(&settings, secrets, cluster.as_ref());
        let services = HubServices {
            auth: auth.clone(),
            connections: connections.clone(),
            envelopes: envelopes.clone(),
            metrics: metrics.clone(),
            open_uploads: Arc::new(OpenUploads::default()),
        };
        let open_uploads = services.open_uploads.clone();
        let uploads = open_uploads.clone();
        metrics.watch_gauge(
            "signet_upload_streams",
            "Client-to-server streams open now.",
            move || i64::try_from(uploads.get()).unwrap_or(i64::MAX),
        );

        let passwords = Passwords::new(&settings.identity)
            .await
            .map_err(IdentityError::from)?;
        let identity = IdentityService::new(
            &settings,
            store.clone(),
            auth.clone(),
            envelopes,
            passwords.clone(),
        );
        bootstrap_admin(&settings, store.clone(), passwords).await?;
        Ok(Self {
            hubs: Arc::new(crate::hubs::catalog(
                CatalogParts {
                    settings: &settings,
                    services: &services,
                    store: store.clone(),
                    cluster: cluster.as_ref(),
                    shutdown: &shutdown,
                    upstream_secrets: &secrets.upstream,
                },
                hubs,
            )?),
            connections,
            close_stats: Arc::new(CloseStats::new(metrics.clone())),
            stats: StatsSeries::new(
                Duration::from_secs(settings.metrics.chart_interval_secs),
                Duration::from_secs(settings.metrics.chart_window_secs),
            ),
            metrics,
            open_uploads,
            limits: SessionLimits::from_settings(&settings),
            settings: Arc::new(settings),
            auth,
            store,
            identity,
            shutdown,
            tasks: TaskTracker::new(),
            cluster,
            forwarder,
        })
    }

    /// The narrow state of negotiate and the transports.
    fn hub_endpoints(&self) -> HubEndpoints {
        HubEndpoints {
            settings: self.settings.clone(),
            auth: self.auth.clone(),
            hubs: self.hubs.clone(),
            connections: self.connections.clone(),
            close_stats: self.close_stats.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            forwarder: self.forwarder.clone(),
        }
    }

    /// What `/readyz` asks.
    fn readiness(&self) -> Readiness {
        Readiness {
            store: self.store.clone(),
            revocations: self.auth.revocations().clone(),
            cluster: self.cluster.clone(),
            timeout: Duration::from_secs(self.settings.server.readiness_timeout_secs),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// A bound, not yet running server: [`Server::build`] (or [`Application::build`], the server
/// of `signet serve`) makes it, [`Application::run_until_stopped`] serves.
pub struct Application {
    address: SocketAddr,
    /// The `[metrics] listen` listener: its bound address and server.
    metrics: Option<(SocketAddr, HttpServerTask)>,
    server: HttpServerTask,
    state: AppState,
    trigger: CancellationToken,
}

/// The signing secrets, generated into the data directory (made private first) when the
/// configuration names none; logged by source and key id, never by value.
fn resolve_secrets(settings: &Settings) -> Result<ResolvedSecrets, StartupError> {
    let data_dir = &settings.server.data_dir;
    crate::store::ensure_private_dir(data_dir).map_err(|source| StartupError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let secrets = ResolvedSecrets::resolve(settings)?;
    tracing::info!(source = %secrets.jwt_source, kid = %crate::auth::hmac_kid(&secrets.jwt), "jwt signing secret");
    tracing::info!(source = %secrets.envelope_source, "envelope master key");
    Ok(secrets)
}

impl AppState {
    /// Revocation enforcement on live connections and the console's chart sampling, both until
    /// shutdown.
    fn spawn_background_tasks(&self) {
        actix_web::rt::spawn(crate::connection::enforce_revocations(
            self.auth.clone(),
            self.connections.clone(),
            self.shutdown.clone(),
        ));
        actix_web::rt::spawn(
            self.stats
                .clone()
                .run(self.metrics.clone(), self.shutdown.clone()),
        );
    }
}

/// A server being put together: its settings and the hubs an application registers. The
/// server makes each hub's lifetime manager (in-process, or over Redis with `[cluster]`) and
/// services, hands the application a [`HubBuilder`] to declare the methods on, adds the
/// `[[upstream]]` methods of that hub, and serves them beside the identity API, the console
/// and the publish API.
///
/// ```no_run
/// use signet::{bind, MethodResult, MethodSpec, Param, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = signet::settings::load(None, std::env::vars())?;
/// let app = Server::new(settings)
///     .hub("greeter", |hub| {
///         hub.method(
///             MethodSpec::new("Hello", &[Param::String]),
///             |call, args| async move {
///                 let (name,): (String,) = bind(args)?;
///                 Ok(Some(format!("hello {name}, from {}", call.principal.sub).into()))
///             },
///         )
///     })
///     .build()
///     .await?;
/// app.run_until_stopped().await?;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    settings: Settings,
    hubs: Vec<(String, HubSetup)>,
}

impl Server {
    /// A server with no hub yet; `settings` come from [`crate::settings::load`] (or
    /// [`crate::settings::load_from_str`]), already valid.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            hubs: Vec::new(),
        }
    }

    /// Registers hub `name`, served at `/hubs/{name}`: `setup` declares its methods on the
    /// builder the server made. Names are 1 to 64 ASCII letters, digits, `-` or `_`, each
    /// registered once ([`Server::build`] refuses others).
    pub fn hub<F>(self, name: &str, setup: F) -> Self
    where
        F: FnOnce(HubBuilder) -> HubBuilder + Send + 'static,
    {
        self.hub_with_context(name, move |hub, _| setup(hub))
    }

    /// As [`Server::hub`], with the [`HubContext`] (the server's settings) beside the builder.
    pub fn hub_with_context<F>(mut self, name: &str, setup: F) -> Self
    where
        F: FnOnce(HubBuilder, &HubContext<'_>) -> HubBuilder + Send + 'static,
    {
        self.hubs.push((name.to_string(), Box::new(setup)));
        self
    }

    /// Resolves the secrets, opens the store, builds the services and the hubs and binds the
    /// listener (port 0 allowed: [`Application::address`] is the bound one). Nothing is
    /// served until [`Application::run_until_stopped`].
    ///
    /// Call it inside an actix runtime (`#[actix_web::main]`, `actix_web::rt::System`):
    /// connections run on its tasks. [`Server::run`] makes one.
    pub async fn build(self) -> Result<Application, StartupError> {
        Application::start(self.settings, self.hubs).await
    }

    /// Builds the server on an actix runtime of its own and serves until SIGTERM or SIGINT,
    /// then shuts down gracefully ([`Application::run_until_stopped`]); blocks the calling
    /// thread. What an application's `main` calls.
    pub fn run(self) -> Result<(), StartupError> {
        actix_web::rt::System::new().block_on(async move {
            let app = self.build().await?;
            app.run_until_stopped().await.map_err(StartupError::Serve)
        })
    }
}

impl Application {
    /// The server `signet serve` runs: the built-in home hub (with its `[[upstream]]`
    /// methods). Validates nothing itself: `settings` come from [`crate::settings::load`],
    /// already valid.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Server::new(settings)
            .hub_with_context("home", crate::hubs::home::setup)
            .build()
            .await
    }

    async fn start(
        settings: Settings,
        hubs: Vec<(String, HubSetup)>,
    ) -> Result<Self, StartupError> {
        let secrets = resolve_secrets(&settings)?;
        let state = AppState::build(settings, &secrets, hubs).await?;
        let settings = state.settings.clone();
        state.spawn_background_tasks();
        let metrics_server = match settings.metrics.listen {
            Some(addr) => Some(metrics_server(addr, state.metrics.clone())?),
            None => None,
        };

        // Loaded before binding, so a bad certificate fails start-up rather than every handshake.
        let tls = crate::tls::ServerTls::load(&settings.tls)?;
        let tls_config = tls.as_ref().map(|tls| tls.server_config()).transpose()?;
        let addr = settings.server.listen;
        let listener = bind(addr, settings.server.backlog)
            .map_err(|source| StartupError::Bind { addr, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;

        // Each layer gets the narrow handle it needs; none of them sees `AppState`.
        let auth = web::Data::new(state.auth.clone());
        let identity = web::Data::new(state.identity.clone());
        let stats = web::Data::new(state.stats.clone());
        let metrics = web::Data::new(state.metrics.clone());
        let client_addresses = web::Data::new(http::ClientAddresses::new(&settings.server));
        let json_limit = web::Data::new(JsonLimit(settings.server.max_request_body_bytes));
        let readiness = web::Data::new(state.readiness());
        let hub_endpoints = web::Data::new(state.hub_endpoints());
        let publish = web::Data::new(crate::api::PublishApi {
            hubs: state.hubs.clone(),
            metrics: state.metrics.clone(),
        });
        if let Some(forwarder) = &state.forwarder {
            let handler = crate::transport::ForwardedRequests::new(state.hub_endpoints());
            forwarder.set_handler(Some(Arc::new(handler)));
        }
        let json_settings = settings.clone();
        let app = move || {
            App::new()
                .app_data(auth.clone())
                .app_data(identity.clone())
                .app_data(stats.clone())
                .app_data(metrics.clone())
                .app_data(client_addresses.clone())
                .app_data(json_limit.clone())
                .app_data(readiness.clone())
                .app_data(hub_endpoints.clone())
                .app_data(publish.clone())
                .app_data(json_config(&json_settings))
                .wrap(from_fn(http::request_log::log_requests))
                .service(http::health::healthz)
                .service(http::health::readyz)
                .service(http::metrics::admin_metrics)
                .configure(crate::api::configure)
                .configure(crate::transport::configure)
                .configure(crate::console::configure)
        };
        let on_connect: Arc<OnConnect> = Arc::new(crate::transport::drop_stalled_peers(
            Duration::from_secs(settings.hub.client_timeout_secs),
        ));
        let builder = actix_server::Server::build()
            .disable_signals()
            .workers(settings.server.workers)
            .shutdown_timeout(settings.server.shutdown_timeout_secs);
        let signal = builder.graceful_shutdown_signal();
        let secure = tls_config.is_some();
        // The application serves every request; the upgrade service gets the WebSocket
        // upgrades (it runs them through the application too) and owns their sockets after
        // the 101 (src/transport/websocket/upgrade.rs).
        let app_config =
            move |_: ()| AppConfig::__priv_test_new(secure, address.to_string(), address);
        let builder = match tls_config {
            Some(config) => builder.listen("signet", listener, move || {
                http_service(&on_connect, &signal, address)
                    .upgrade(WebSocketUpgrade::new(map_config(app(), app_config)))
                    .finish(map_config(app(), app_config))
                    .rustls_0_23(config.clone())
            }),
            None => builder.listen("signet", listener, move || {
                http_service(&on_connect, &signal, address)
                    .upgrade(WebSocketUpgrade::new(map_config(app(), app_config)))
                    .finish(map_config(app(), app_config))
                    .tcp()
            }),
        }
        .map_err(|source| StartupError::Bind { addr, source })?;
        let server = builder.run();
        if let Some(tls) = tls {
            actix_web::rt::spawn(crate::tls::watch(
                tls,
                Duration::from_secs(settings.tls.reload_interval_secs),
                state.shutdown.clone(),
            ));
        }
        let scheme = if settings.tls.enabled() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%address, scheme, "signet listening");
        Ok(Self {
            address,
            metrics: metrics_server,
            server,
            state,
            trigger: CancellationToken::new(),
        })
    }

    /// The address actually bound (the port is real even when 0 was configured).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The metrics listener's bound address, when `[metrics] listen` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(address, _)| *address)
    }

    /// The shared services: internal, not stable API.
    #[doc(hidden)]
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// actix's handle on the HTTP server (pause, resume, stop without the graceful close of
    /// [`Application::run_until_stopped`]).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// A token that, when cancelled, shuts the server down as SIGTERM does.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.trigger.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown trigger, then shuts down gracefully: stop
    /// accepting, send every connection a Close with `allowReconnect: true`, wait for the
    /// connections to end (at most `server.shutdown_timeout_secs`), stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            state,
            trigger,
            metrics,
            ..
        } = self;
        let metrics = metrics.map(|(_, server)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => return result,
            _ = shutdown_signal() => tracing::info!("shutdown signal received"),
            _ = trigger.cancelled() => tracing::info!("shutdown requested"),
        }
        let timeout = Duration::from_secs(state.settings.server.shutdown_timeout_secs);
        // Stop accepting. Commands are processed while `server` is polled below, which is
        // also what lets the workers finish; awaiting their futures alone would hang. The
        // workers are stopped only once the connections have ended: a WebSocket is served by
        // a task of its own on its worker (src/transport/websocket/upgrade.rs), which a
        // stopped worker would drop before its Close frame went out.
        drop(handle.pause());
        if let Some(metrics) = &metrics {
            drop(metrics.stop(false));
        }
        for connection in state.connections.all() {
            connection.close(CloseReason::Shutdown);
        }
        state.shutdown.cancel();
        state.tasks.close();
        let drain = async {
            if tokio::time::timeout(timeout, state.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("connections did not end within the shutdown timeout");
            }
            // What remains is ordinary HTTP requests in flight: actix's graceful stop waits
            // for them, at most the same timeout again.
            drop(handle.stop(true));
        };
        let (result, ()) = futures_util::future::join(server, drain).await;
        tracing::info!("signet stopped");
        result
    }
}

/// What runs on every accepted connection (with its stream, plain or TLS, as `&dyn Any`).
type OnConnect = dyn Fn(&dyn Any, &mut Extensions) + Send + Sync;

/// The HTTP service's settings for every connection, as `HttpServer` sets them (keep-alive,
/// request and disconnect timeouts, graceful shutdown of idle keep-alive connections), with
/// `TCP_NODELAY` and `on_connect` on every accepted connection.
fn http_service<T, S>(
    on_connect: &Arc<OnConnect>,
    signal: &GracefulShutdownSignal,
    address: SocketAddr,
) -> HttpServiceBuilder<T, S>
where
    T: 'static,
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: std::fmt::Debug,
    <S::Service as Service<Request>>::Future: 'static,
{
    let on_connect = on_connect.clone();
    let signal = signal.clone();
    HttpServiceBuilder::default()
        .keep_alive(KeepAlive::default())
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(1))
        // Hub messages are small and often written back to back (a completion, then a call):
        // with Nagle's algorithm the second waits for the peer's delayed ACK, up to 40 ms.
        .tcp_nodelay(true)
        .local_addr(address)
        .graceful_shutdown_signal(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        })
        .on_connect_ext(move |io: &T, extensions| on_connect(io, extensions))
}

/// A listening socket on `addr` with a listen queue of `backlog` connections (the standard
/// library's `TcpListener::bind` always asks for 128). Address reuse as the standard library
/// sets it on Unix, so a restart binds at once over connections in `TIME_WAIT`.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // Validated at start-up to fit; the kernel caps it further (net.core.somaxconn).
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// The `[metrics] listen` server: `/metrics` without authentication, and nothing else.
fn metrics_server(
    addr: SocketAddr,
    metrics: Metrics,
) -> Result<(SocketAddr, HttpServerTask), StartupError> {
    let bind_err = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let address = listener.local_addr().map_err(bind_err)?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(metrics.clone()))
            .service(http::metrics::scrape)
    })
    .disable_signals()
    .workers(1)
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(bind_err)?
    .run();
    tracing::info!(%address, "metrics listening (/metrics, no authentication)");
    Ok((address, server))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// For any route using actix's `web::Json`: size-limited, errors as JSON bodies. The API's own
/// routes use [`crate::http::Json`], whose parse errors also name the offending field.
fn json_config(settings: &Settings) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(settings.server.max_request_body_bytes)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the server accepts",
                ),
                E::ContentType => ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be application/json",
                ),
                E::Deserialize(e) => ApiError::bad_request("invalid_json", e.to_string()),
                other => ApiError::bad_request("invalid_json", other.to_string()),
            };
            api.into()
        })
}
