//! `GET /healthz` (liveness: 200 once the server accepts connections) and `GET /readyz`
//! (readiness: 200 when the server accepts work and its dependencies answer, 503 naming the
//! failing ones).

use crate::auth::RevocationStore;
use crate::cluster::Cluster;
use crate::store::Store;
use actix_web::http::header::{HeaderValue, CACHE_CONTROL, RETRY_AFTER};
use actix_web::{get, web, HttpResponse};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What `/readyz` asks: the store, whether revocations recorded by other nodes reach this one,
/// Redis for a cluster node, and whether shutdown has begun.
#[derive(Clone)]
pub struct Readiness {
    pub store: Arc<dyn Store>,
    pub revocations: Arc<dyn RevocationStore>,
    /// With `[cluster] redis_url`: Redis must answer and the node's subscriptions be confirmed.
    pub cluster: Option<Arc<Cluster>>,
    /// How long each dependency may take to answer (`server.readiness_timeout_secs`).
    pub timeout: Duration,
    /// Cancelled once at shutdown: from then on the server is not ready.
    pub shutdown: CancellationToken,
}

#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "status": "ok" }))
}

/// Each dependency is asked under `server.readiness_timeout_secs`. The body names each check's
/// result (`ok`, `error`, `timeout`); the cause goes to the log only, since anyone may ask.
#[get("/readyz")]
pub async fn readyz(state: web::Data<Readiness>) -> HttpResponse {
    let timeout = state.timeout;
    let store = match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: the store does not answer");
            "error"
        }
        Err(_) => {
            tracing::warn!(?timeout, "readiness: the store did not answer in time");
            "timeout"
        }
    };
    let mut failing = Vec::new();
    if state.shutdown.is_cancelled() {
        failing.push("server");
    }
    if store != "ok" {
        failing.push("store");
    }
    let mut checks = json!({ "store": store });
    // Only named when lost (a shared store's feed), when every token is refused.
    if !state.revocations.in_sync() {
        failing.push("revocations");
        checks["revocations"] = json!("lost");
    }
    if let Some(cluster) = &state.cluster {
        let redis = match tokio::time::timeout(timeout, cluster.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness: Redis does not answer");
                "error"
            }
            Err(_) => {
                tracing::warn!(?timeout, "readiness: Redis did not answer in time");
                "timeout"
            }
        };
        if redis != "ok" {
            failing.push("redis");
        }
        checks["redis"] = json!(redis);
    }
    let response = if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "failing": failing,
            "checks": checks,
        }))
    };
    let mut response = response;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !failing.is_empty() {
        // Every 503 says when to retry; the node retries the store and Redis itself.
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
