//! The device's life: obtain a token, connect, run a session, and decide what follows from how
//! it ended: reconnect (with backoff, with a fresh token when the old one expired), or stop.
//!
//! The server's Close message is obeyed: `allowReconnect: false` ends the process. Before it
//! does, the device tries its key once more, so that it can say precisely why: a 401 means the
//! device was removed or re-keyed, or its owner revoked (exit 3), anything else that the server does not want this
//! connection back (exit 1).

use crate::actuator::Actuator;
use crate::backoff::Backoff;
use crate::commands::{CommandHandler, Handled};
use crate::config::Config;
use crate::device::SimulatedDevice;
use crate::hub::{ConnectError, HubConnection};
use crate::session::{self, Outbox, SessionContext, SessionEnd};
use crate::token::{DeviceToken, TokenError, TokenSource};
use rand::rngs::StdRng;
use rand::SeedableRng;
use signet_protocol::envelope::EnvelopeLimits;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Timeout of each HTTP request (token exchange, negotiate, WebSocket upgrade).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnection delay (before jitter and growth).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// How the device ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by SIGINT or SIGTERM.
    Stopped,
    /// Cannot go on: the message says why.
    Fatal(String),
    /// The server answered the device-token exchange with 401.
    CredentialsRejected,
}

/// Runs the device until it is stopped or cannot go on.
pub async fn run(config: Config) -> Exit {
    let shutdown = CancellationToken::new();
    actix_rt::spawn(stop_on_signal(shutdown.clone()));
    let span = tracing::info_span!("device", id = %config.device_id);
    run_until(config, shutdown).instrument(span).await
}

/// [`run`] with the stop signal given by the caller (tests cancel it themselves).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> Exit {
    let client = awc::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // A redirect could carry the device key in a re-sent body to another host.
        .disable_redirects()
        .connector(awc::Connector::new().rustls_0_23(config.tls.clone()))
        .finish();
    let tokens = TokenSource::new(client.clone(), &config);
    let handler = CommandHandler::new(
        &config.hub_path,
        &config.device_id,
        EnvelopeLimits::default(),
    );
    let mut device = SimulatedDevice::default();
    let mut outbox = Outbox::new(config.result_timeout);
    let mut actuator = Actuator::new(config.actuation_time);
    let mut rng = StdRng::from_os_rng();
    let mut backoff = Backoff::new(BACKOFF_BASE, config.max_backoff);
    let mut token: Option<DeviceToken> = None;
    let mut delay: Option<Duration> = None;
    tracing::info!(server = %config.server, hub = %config.hub_path, name = %config.name, "starting");

    loop {
        if let Some(wait) = delay.take() {
            tracing::info!(retry_in = ?wait, "waiting before connecting again");
            tokio::select! {
                _ = shutdown.cancelled() => return Exit::Stopped,
                _ = offline(&mut actuator, &mut device, &mut outbox, tokio::time::sleep(wait)) => {}
            }
        }

        let mut current = match token.take() {
            Some(usable) if Instant::now() < usable.renew_at() => usable,
            _ => {
                let exchanged = tokio::select! {
                    _ = shutdown.cancelled() => return Exit::Stopped,
                    result = offline(&mut actuator, &mut device, &mut outbox, tokens.exchange()) => result,
                };
                match exchanged {
                    Ok(fresh) => {
                        tracing::info!(lifetime = ?fresh.lifetime(), "obtained an access token");
                        fresh
                    }
                    Err(TokenError::Rejected) => return Exit::CredentialsRejected,
                    Err(error) if error.is_transient() => {
                        let mut wait = backoff.next_delay(&mut rng);
                        if let TokenError::Throttled {
                            retry_after: Some(after),
                        } = &error
                        {
                            wait = wait.max(*after);
                        }
                        tracing::warn!(%error, "cannot obtain an access token");
                        delay = Some(wait);
                        continue;
                    }
                    Err(error) => return Exit::Fatal(error.to_string()),
                }
            }
        };

        let connected = tokio::select! {
            _ = shutdown.cancelled() => return Exit::Stopped,
            result = offline(&mut actuator, &mut device, &mut outbox, HubConnection::connect(
                &client,
                &config.server,
                &config.hub_path,
                current.expose_access_token(),
                config.skip_negotiation,
            )) => result,
        };
        let (connection_id, receiver, sender) = match connected {
            Ok(parts) => parts,
            Err(ConnectError::HandshakeRefused(error)) => {
                return Exit::Fatal(format!("the server refused the hub handshake: {error}"))
            }
            Err(ConnectError::Unauthorized) => {
                tracing::warn!("the server refused the access token; exchanging the key again");
                delay = Some(backoff.next_delay(&mut rng));
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot connect to the hub");
                token = Some(current);
                delay = Some(backoff.next_delay(&mut rng));
                continue;
            }
        };
        tracing::info!(
            connection_id = connection_id.as_deref().unwrap_or("-"),
            "connected to the hub; online"
        );

        let started = Instant::now();
        let mut ctx = SessionContext {
            config: &config,
            tokens: &tokens,
            handler: &handler,
            device: &mut device,
            outbox: &mut outbox,
            actuator: &mut actuator,
            rng: &mut rng,
            shutdown: &shutdown,
        };
        let end = session::run(&mut ctx, &mut current, receiver, sender).await;
        if started.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
        }
        match end {
            SessionEnd::Stopped => {
                tracing::info!("stopped");
                return Exit::Stopped;
            }
            SessionEnd::CredentialsRejected => return Exit::CredentialsRejected,
            SessionEnd::Fatal(message) => return Exit::Fatal(message),
            SessionEnd::Reconnect => token = Some(current),
            SessionEnd::Lost(reason) => {
                tracing::warn!(%reason, "connection lost");
                token = Some(current);
                delay = Some(backoff.next_delay(&mut rng));
            }
            SessionEnd::ServerClosed {
                error,
                allow_reconnect: true,
            } => {
                let error = error.unwrap_or_default();
                tracing::info!(%error, "the server closed the connection; reconnecting");
                // After an expiry the old token is useless: exchange the key again first.
                if !error.to_ascii_lowercase().contains("expired") {
                    token = Some(current);
                }
                delay = Some(backoff.next_delay(&mut rng));
            }
            SessionEnd::ServerClosed {
                error,
                allow_reconnect: false,
            } => {
                let error = error.unwrap_or_else(|| "no reason given".into());
                tracing::warn!(%error, "the server closed the connection and does not allow reconnecting");
                // A revocation may mean the device key is gone; find out, for a precise exit.
                return match tokens.exchange().await {
                    Err(TokenError::Rejected) => Exit::CredentialsRejected,
                    _ => Exit::Fatal(format!(
                        "the server closed the connection and does not allow reconnecting: {error}"
                    )),
                };
            }
        }
    }
}

/// Awaits `work` (a wait, a token exchange, a connection attempt) while the actuator goes on
/// with the commands it accepted: their results wait in the outbox for the next connection.
async fn offline<F: std::future::Future>(
    actuator: &mut Actuator,
    device: &mut SimulatedDevice,
    outbox: &mut Outbox,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    loop {
        let done = actuator.done_at();
        tokio::select! {
            output = &mut work => return output,
            _ = tokio::time::sleep_until(done.unwrap_or_else(Instant::now)), if done.is_some() => {
                if let Some((Handled::Executed { command, reply, .. }, received)) =
                    actuator.finish(device, Instant::now())
                {
                    tracing::info!(
                        command_id = %reply.command_id,
                        %command,
                        status = reply.status.as_str(),
                        "executed a verified command while offline; its result waits for the connection"
                    );
                    outbox.push(reply, received);
                }
            }
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = match signal(SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop requested; closing the connection");
    shutdown.cancel();
}
