//! The applications' hubs: what the server hands an application's hub setup
//! ([`HubContext`]: settings, the device registry, envelope sealing, the cluster's backplane,
//! metrics), the catalog of every registered hub with the methods `[[upstream]]` forwards
//! added to the hub it names, and the built-in home hub (`signet serve`), which is built on
//! that public API alone like any application (`scripts/import-graph.py` checks it).

mod devices;
pub mod home;
mod metrics;
mod sealer;

pub use devices::{DeviceInfo, Devices};
pub use metrics::HubMetrics;
pub use sealer::EnvelopeSealer;

use crate::cluster::{Backplane, Cluster, RedisLifetimeManager};
use crate::hub::{
    HubBuilder, HubCatalog, HubLifetimeManager, HubServices, InProcessLifetimeManager,
};
use crate::settings::{Secret, Settings};
use crate::store::Store;
use crate::upstream::{self, UpstreamError};
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a hub's setup may use besides its [`HubBuilder`]: the server's settings (an
/// application's own section can live in its own file or environment; these are Signet's),
/// and the server's services a hub with devices builds on: the device registry
/// ([`Devices`]), envelope sealing ([`EnvelopeSealer`]), the cluster's shared state
/// ([`Backplane`]) and metrics ([`HubMetrics`]). Each is a cheap handle to clone into the
/// hub's methods.
///
/// ```no_run
/// use signet::{HubBuilder, HubContext, Server};
///
/// fn setup(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
///     let _devices = context.devices();
///     let _sealer = context.sealer();
///     let _shared = context.backplane(); // `None` on a single node
///     let _metrics = context.metrics();
///     tracing::info!(hub = context.hub(), "declaring methods");
///     hub
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = signet::settings::load(None, std::env::vars())?;
/// Server::new(settings).hub_with_context("devices", setup).run()?;
/// # Ok(())
/// # }
/// ```
pub struct HubContext<'a> {
    hub: &'a str,
    settings: &'a Settings,
    services: &'a HubServices,
    store: &'a Arc<dyn Store>,
    cluster: Option<&'a Arc<Cluster>>,
}

impl fmt::Debug for HubContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubContext")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl HubContext<'_> {
    /// The server's validated settings.
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    /// The name of the hub being set up (served at `/hubs/{name}`).
    pub fn hub(&self) -> &str {
        self.hub
    }

    /// The server's registered devices, read-only.
    pub fn devices(&self) -> Devices {
        Devices::new(self.store.clone())
    }

    /// Seals what this hub sends to devices, with envelopes living
    /// `envelope.forward_lifetime_secs`.
    pub fn sealer(&self) -> EnvelopeSealer {
        EnvelopeSealer::new(
            self.services.envelopes.clone(),
            self.hub,
            Duration::from_secs(self.settings.envelope.forward_lifetime_secs),
        )
    }

    /// This hub's shared state in the cluster (`[cluster]`), or `None` on a single node, where
    /// the hub keeps its state in process.
    pub fn backplane(&self) -> Option<Backplane> {
        self.cluster
            .map(|cluster| Backplane::new(cluster.clone(), self.hub))
    }

    /// The server's metrics, for the hub's own refusals.
    pub fn metrics(&self) -> HubMetrics {
        HubMetrics::new(self.services.metrics.clone())
    }
}

/// An application's setup of one hub: declares its methods on the builder the server made.
pub type HubSetup = Box<dyn FnOnce(HubBuilder, &HubContext<'_>) -> HubBuilder + Send>;

/// Why a hub could not be registered: the server does not start. New reasons may be added
/// in any release (the enum is non-exhaustive).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubRegistrationError {
    /// Hub names are one path segment (`/hubs/{name}`) and a label of metrics and keys.
    #[error("hub name `{0}`: use 1 to 64 ASCII letters, digits, `-` or `_`")]
    InvalidName(String),
    /// Two hubs of one server have this name.
    #[error("hub `{0}` is registered twice")]
    Duplicate(String),
    /// With `[cluster]`: the name is the first segment of Signet's own Redis channels or keys
    /// (`forward`, `owner`, `owner-token`, `revocations`, `revoked`, `nonce`, `nonces`), which
    /// the hub's would share.
    #[error(
        "hub name `{0}`: with [cluster] a hub may not be named {names}, since Signet's own \
         Redis channels and keys begin with these names",
        names = crate::cluster::RESERVED_NAMES.map(|n| format!("`{n}`")).join(", ")
    )]
    Reserved(String),
    /// An `[[upstream]]` names no registered hub, or a method its hub already has, or its
    /// client could not be set up.
    #[error(transparent)]
    Upstream(OpaqueError),
}

impl From<UpstreamError> for HubRegistrationError {
    fn from(err: UpstreamError) -> Self {
        Self::Upstream(OpaqueError::new(err))
    }
}

/// An error whose type is not public API: its message and its chain of causes
/// ([`Error::source`]), for a log line or an exit message, as the underlying error has them.
///
/// ```
/// use std::error::Error;
///
/// fn report(err: &signet::OpaqueError) -> String {
///     let mut text = err.to_string();
///     let mut cause = err.source();
///     while let Some(inner) = cause {
///         text.push_str(&format!(": {inner}"));
///         cause = inner.source();
///     }
///     text
/// }
/// # let _ = report;
/// ```
pub struct OpaqueError(Box<dyn Error + Send + Sync>);

impl OpaqueError {
    pub(crate) fn new(err: impl Error + Send + Sync + 'static) -> Self {
        Self(Box::new(err))
    }
}

impl fmt::Display for OpaqueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for OpaqueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Error for OpaqueError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Refuses a hub name that is not one safe path segment.
pub(crate) fn check_name(name: &str) -> Result<(), HubRegistrationError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(HubRegistrationError::InvalidName(name.to_string()))
    }
}

/// The shared parts of start-up the catalog is built from.
pub(crate) struct CatalogParts<'a> {
    pub settings: &'a Settings,
    pub services: &'a HubServices,
    pub store: Arc<dyn Store>,
    pub cluster: Option<&'a Arc<Cluster>>,
    pub shutdown: &'a CancellationToken,
    /// The `[[upstream]]` keys, in the order of `settings.upstream`.
    pub upstream_secrets: &'a [Secret],
}

/// Every registered hub, each with its own lifetime manager: in-process on a single node,
/// over Redis (wrapping the in-process one) with a cluster; with the methods `[[upstream]]`
/// forwards added to the hub each names.
pub(crate) fn catalog(
    parts: CatalogParts<'_>,
    hubs: Vec<(String, HubSetup)>,
) -> Result<HubCatalog, HubRegistrationError> {
    let CatalogParts {
        settings,
        services,
        store,
        cluster,
        shutdown,
        upstream_secrets,
    } = parts;
    let names: Vec<&str> = hubs.iter().map(|(name, _)| name.as_str()).collect();
    for (i, name) in names.iter().enumerate() {
        check_name(name)?;
        // A single node has no shared names: the hub keeps working there.
        if cluster.is_some() && crate::cluster::RESERVED_NAMES.contains(name) {
            return Err(HubRegistrationError::Reserved(name.to_string()));
        }
        if names[..i].contains(name) {
            return Err(HubRegistrationError::Duplicate(name.to_string()));
        }
    }
    upstream::check_hubs(&settings.upstream, &names)?;
    let lifetime = |hub: &str| -> Arc<dyn HubLifetimeManager> {
        let local = Arc::new(InProcessLifetimeManager::new(
            settings.hub.max_groups_per_connection,
            services.connections.clone(),
        ));
        match cluster {
            Some(cluster) => Arc::new(RedisLifetimeManager::start(
                cluster.clone(),
                hub,
                local,
                shutdown.clone(),
            )),
            None => local,
        }
    };
    let mut catalog = HubCatalog::default();
    for (name, setup) in hubs {
        let context = HubContext {
            hub: &name,
            settings,
            services,
            store: &store,
            cluster,
        };
        let builder = setup(HubBuilder::new(&name, lifetime(&name), services), &context);
        let builder = upstream::register(
            builder,
            &name,
            &settings.upstream,
            upstream_secrets,
            &services.metrics,
        )?;
        catalog = catalog.with(builder.build());
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_opaque_error_keeps_the_message_and_the_causes() {
        let opaque = OpaqueError::new(Outer(std::io::Error::other("inner")));
        assert_eq!(opaque.to_string(), "outer");
        let cause = opaque.source().map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("inner"));
        let err = HubRegistrationError::from(UpstreamError::UnknownHub {
            index: 2,
            hub: "nope".into(),
        });
        assert_eq!(
            err.to_string(),
            "configuration key `upstream[2].hub`: no hub is named `nope`"
        );
    }
}
