//! The application's hubs. Each file declares one hub's methods with their access rules.

pub mod home;

use crate::hub::{HubCatalog, HubServices, InProcessLifetimeManager};
use crate::settings::Settings;
use crate::store::Store;
use std::sync::Arc;

/// Every hub Signet serves, each with its own in-process lifetime manager.
pub fn catalog(settings: &Settings, services: &HubServices, store: Arc<dyn Store>) -> HubCatalog {
    let lifetime = Arc::new(InProcessLifetimeManager::new(
        settings.hub.max_groups_per_connection,
        services.connections.clone(),
    ));
    HubCatalog::default().with(home::hub(lifetime, services, store, settings))
}
