//! Building and running the server: `Application::build(settings)` resolves secrets, builds the
//! shared state, binds the listener (port 0 allowed) and reports the bound address. `main` and
//! the integration tests both start Signet this way.

use crate::auth::{Authenticator, KeyRing, KeyRingError};
use crate::http::{self, ApiError};
use crate::settings::{ResolvedSecrets, Settings, SettingsError};
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
    pub auth: Authenticator,
}

impl AppState {
    pub fn new(settings: Settings, secrets: &ResolvedSecrets) -> Result<Self, StartupError> {
        let keyring = KeyRing::new(&settings.jwt, secrets)?;
        Ok(Self {
            settings: Arc::new(settings),
            auth: Authenticator::new(Arc::new(keyring)),
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
        let state = AppState::new(settings, &secrets)?;
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

/// JSON bodies: size-limited, and a parse error names what is wrong as a JSON error body.
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
