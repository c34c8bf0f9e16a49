//! What the hub endpoints need, and nothing else: `startup` builds one [`HubEndpoints`] from its
//! shared services and registers it as app data, so the transports never see the rest.

use crate::auth::Authenticator;
use crate::cluster::Forwarder;
use crate::connection::{CloseStats, ConnectionRegistry};
use crate::hub::{HubCatalog, SessionLimits};
use crate::metrics::Metrics;
use crate::settings::Settings;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The state behind negotiate, the transports and in-band refresh. Cheap to clone.
#[derive(Clone)]
pub struct HubEndpoints {
    /// Read for `server` (origins), `hub` (limits, timeouts), `transports` and `jwt` (leeway).
    pub settings: Arc<Settings>,
    /// Verifies every hub request's token, revocation included.
    pub auth: Authenticator,
    pub hubs: Arc<HubCatalog>,
    pub connections: Arc<ConnectionRegistry>,
    /// Where each hub session's close reason is counted and logged.
    pub close_stats: Arc<CloseStats>,
    pub metrics: Metrics,
    pub limits: SessionLimits,
    /// Cancelled once at shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// On a cluster node: requests on connections other nodes hold go there.
    pub forwarder: Option<Arc<Forwarder>>,
}
