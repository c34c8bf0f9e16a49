//! Building and running the server: `Application::build(settings)` resolves secrets, builds the
//! shared state, binds the listener (port 0 allowed) and reports the bound address. `main` and
//! the integration tests both start Signet this way.

use crate::auth::{Authenticator, InProcessRevocations, KeyRing, KeyRingError};
use crate::http::{self, ApiError, JsonLimit};
use crate::identity::{IdentityError, IdentityService, Passwords, UserAdmin};
use crate::settings::{ResolvedSecrets, Settings, SettingsError};
use crate::store::{SqliteStore, Store, StoreError};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    KeyRing(#[from] KeyRingError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Cheap-to-clone handles to every shared service, built once outside the worker closure.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Token verification with revocation: every route and hub connection goes through it.
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    pub identity: IdentityService,
}

impl AppState {
    /// Opens the store (applying migrations), loads revocations, and wires the services.
    pub async fn build(
        settings: Settings,
        secrets: &ResolvedSecrets,
    ) -> Result<Self, StartupError> {
        let keyring = KeyRing::new(&settings.jwt, secrets)?;
        let sqlite = Arc::new(SqliteStore::open(&settings.server.data_dir).await?);
        let revocations = InProcessRevocations::load(
            sqlite.clone(),
            settings.jwt.leeway_secs,
            settings.identity.revocation_event_capacity,
        )
        .await?;
        let auth = Authenticator::new(
            Arc::new(keyring),
            Arc::new(revocations),
            secrets.envelope.clone(),
        );
        let store: Arc<dyn Store> = sqlite;
        let passwords = Passwords::new(&settings.identity)
            .await
            .map_err(IdentityError::from)?;
        let identity =
            IdentityService::new(&settings, store.clone(), auth.clone(), passwords.clone());
        if let Some(path) = UserAdmin::new(store.clone(), passwords)
            .bootstrap_admin(&settings.server.data_dir)
            .await?
        {
            tracing::warn!(
                path = %path.display(),
                "first start: created user `admin`; its password is in this file (mode 0600). \
                 Change it with `signet user passwd admin --password-stdin`, then delete the file"
            );
        }
        Ok(Self {
            settings: Arc::new(settings),
            auth,
            store,
            identity,
        })
    }
}

/// A bound, not yet running server.
pub struct Application {
    address: SocketAddr,
    server: Server,
    state: AppState,
}

impl Application {
    /// Validates nothing itself: `settings` come from [`crate::settings::load`], already valid.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let secrets = ResolvedSecrets::resolve(&settings)?;
        tracing::info!(source = %secrets.jwt_source, kid = %crate::auth::hmac_kid(&secrets.jwt), "jwt signing secret");
        tracing::info!(source = %secrets.envelope_source, "envelope master key");
        let state = AppState::build(settings, &secrets).await?;
        let settings = state.settings.clone();

        let addr = settings.server.listen;
        let listener =
            TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;

        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let state = app_state.clone();
            App::new()
                .app_data(web::Data::new(state.auth.clone()))
                .app_data(web::Data::new(state.identity.clone()))
                .app_data(web::Data::new(JsonLimit(
                    state.settings.server.max_request_body_bytes,
                )))
                .app_data(web::Data::new(state.clone()))
                .app_data(json_config(&state.settings))
                .wrap(from_fn(http::request_log::log_requests))
                .service(http::health::healthz)
                .configure(crate::api::configure)
        })
        .workers(settings.server.workers)
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .listen(listener)
        .map_err(|source| StartupError::Bind { addr, source })?
        .run();
        tracing::info!(%address, "signet listening");
        Ok(Self {
            address,
            server,
            state,
        })
    }

    /// The address actually bound (the port is real even when 0 was configured).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (signal or handle).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
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
