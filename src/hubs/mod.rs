//! The application's hubs. Each file declares one hub's methods with their access rules.

pub mod home;

use crate::cluster::{Cluster, RedisLifetimeManager};
use crate::hub::{HubCatalog, HubLifetimeManager, HubServices, InProcessLifetimeManager};
use crate::settings::Settings;
use crate::store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every hub Signet serves, each with its own lifetime manager (and the home hub's pending
/// commands and telemetry fan-out): in-process on a single node, over Redis (wrapping the in-process one) when
/// `cluster` is given.
pub fn catalog(
    settings: &Settings,
    services: &HubServices,
    store: Arc<dyn Store>,
    cluster: Option<&Arc<Cluster>>,
    shutdown: &CancellationToken,
) -> HubCatalog {
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
    HubCatalog::default().with(home::hub(
        lifetime("home"),
        home::HomeShared::new(settings, cluster),
        services,
        store,
        settings,
    ))
}
