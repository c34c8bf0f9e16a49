//! The applications' hubs: what the server hands an application's hub setup
//! ([`HubContext`]), the catalog of every registered hub with the methods `[[upstream]]`
//! forwards added to the hub it names, and the built-in home hub (`signet serve`).

pub mod home;

use crate::cluster::{Cluster, RedisLifetimeManager};
use crate::hub::{
    HubBuilder, HubCatalog, HubLifetimeManager, HubServices, InProcessLifetimeManager,
};
use crate::settings::{Secret, Settings};
use crate::store::Store;
use crate::upstream::{self, UpstreamError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a hub's setup may use besides its [`HubBuilder`]: the server's settings (an
/// application's own section can live in its own file or environment; these are Signet's).
///
/// The built-in home hub also reaches the server's store, cluster and services through the
/// hidden accessors; those are not stable API.
pub struct HubContext<'a> {
    settings: &'a Settings,
    services: &'a HubServices,
    store: &'a Arc<dyn Store>,
    cluster: Option<&'a Arc<Cluster>>,
}

impl HubContext<'_> {
    /// The server's validated settings.
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    #[doc(hidden)]
    pub fn services(&self) -> &HubServices {
        self.services
    }

    #[doc(hidden)]
    pub fn store(&self) -> &Arc<dyn Store> {
        self.store
    }

    #[doc(hidden)]
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster
    }
}

/// An application's setup of one hub: declares its methods on the builder the server made.
pub type HubSetup = Box<dyn FnOnce(HubBuilder, &HubContext<'_>) -> HubBuilder + Send>;

/// Why a hub could not be registered: the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum HubRegistrationError {
    /// Hub names are one path segment (`/hubs/{name}`) and a label of metrics and keys.
    #[error("hub name `{0}`: use 1 to 64 ASCII letters, digits, `-` or `_`")]
    InvalidName(String),
    /// Two hubs of one server have this name.
    #[error("hub `{0}` is registered twice")]
    Duplicate(String),
    /// An `[[upstream]]` names no registered hub, or a method its hub already has.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
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
    let context = HubContext {
        settings,
        services,
        store: &store,
        cluster,
    };
    let mut catalog = HubCatalog::default();
    for (name, setup) in hubs {
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
