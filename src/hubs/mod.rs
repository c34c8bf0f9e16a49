//! The application's hubs. Each file declares one hub's methods with their access rules.

pub mod home;

use crate::cluster::{Cluster, RedisLifetimeManager};
use crate::hub::{HubCatalog, HubLifetimeManager, HubServices, InProcessLifetimeManager};
use crate::settings::Settings;
use crate::store::Store;
use home::telemetry::{InProcessTelemetry, RedisTelemetry, TelemetryFanout};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every hub Signet serves, each with its own lifetime manager (and the home hub's telemetry
/// fan-out): in-process on a single node, over Redis (wrapping the in-process one) when
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
    let local_telemetry = Arc::new(InProcessTelemetry::new(settings.home.telemetry_buffer));
    let telemetry: Arc<dyn TelemetryFanout> = match cluster {
        Some(cluster) => Arc::new(RedisTelemetry::start(
            cluster.clone(),
            "home",
            local_telemetry,
        )),
        None => local_telemetry,
    };
    HubCatalog::default().with(home::hub(
        lifetime("home"),
        telemetry,
        services,
        store,
        settings,
    ))
}
