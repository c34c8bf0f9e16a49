//! The application's hubs. Each file declares one hub's methods with their access rules.

pub mod home;

use crate::cluster::{Cluster, RedisLifetimeManager};
use crate::hub::{HubCatalog, HubLifetimeManager, HubServices, InProcessLifetimeManager};
use crate::settings::{Secret, Settings};
use crate::store::Store;
use crate::upstream::{self, UpstreamError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every hub Signet serves, each with its own lifetime manager (and the home hub's pending
/// commands and telemetry fan-out): in-process on a single node, over Redis (wrapping the in-process one) when
/// `cluster` is given; with the methods `[[upstream]]` forwards (`upstream_secrets` are their
/// keys, in order).
pub fn catalog(
    settings: &Settings,
    services: &HubServices,
    store: Arc<dyn Store>,
    cluster: Option<&Arc<Cluster>>,
    shutdown: &CancellationToken,
    upstream_secrets: &[Secret],
) -> Result<HubCatalog, UpstreamError> {
    upstream::check_hubs(&settings.upstream, &["home"])?;
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
    let home = home::hub(
        lifetime("home"),
        home::HomeShared::new(settings, cluster),
        services,
        store,
        settings,
    );
    let home = upstream::register(
        home,
        "home",
        &settings.upstream,
        upstream_secrets,
        &services.metrics,
    )?;
    Ok(HubCatalog::default().with(home.build()))
}
