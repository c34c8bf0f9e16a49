//! Telemetry fan-out: every report a device makes reaches the `StreamTelemetry` subscribers,
//! wherever they are connected. [`TelemetryFanout`] is the seam a backplane implements (a
//! publish to every node, each handing it to its local subscribers);
//! [`InProcessTelemetry`] serves one node with a bounded broadcast channel, and
//! [`RedisTelemetry`] wraps it for a cluster (the hub's backplane channel `telemetry`:
//! `{prefix}:{hub}:app:telemetry`, each event as JSON).

use crate::{Backplane, BackplaneError};
use async_trait::async_trait;
use futures_util::stream::{self, BoxStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The hub's backplane channel of telemetry.
const CHANNEL: &str = "telemetry";

/// One telemetry report, as data (and as JSON between nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    /// The reporting device's owner (who may see it besides admins).
    pub owner: String,
    /// `{deviceId, kind, data, at}` as subscribers receive it.
    pub payload: Value,
}

#[async_trait]
pub trait TelemetryFanout: Send + Sync {
    /// Hands `event` to every subscriber; having none is not an error.
    async fn publish(&self, event: TelemetryEvent) -> Result<(), BackplaneError>;
    /// Every event published from now on. A subscriber that falls behind skips what it
    /// missed rather than hold the others back.
    fn subscribe(&self) -> BoxStream<'static, Arc<TelemetryEvent>>;
}

/// The single-node fan-out: a broadcast channel of `home.telemetry_buffer` events.
#[derive(Debug)]
pub struct InProcessTelemetry {
    events: broadcast::Sender<Arc<TelemetryEvent>>,
}

impl InProcessTelemetry {
    pub fn new(buffer: usize) -> Self {
        let (events, _) = broadcast::channel(buffer.max(1));
        Self { events }
    }

    /// Hands `event` to this node's subscribers.
    fn send(&self, event: TelemetryEvent) {
        // No subscriber is not an error: the event simply has nobody to reach.
        let _ = self.events.send(Arc::new(event));
    }
}

#[async_trait]
impl TelemetryFanout for InProcessTelemetry {
    async fn publish(&self, event: TelemetryEvent) -> Result<(), BackplaneError> {
        self.send(event);
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, Arc<TelemetryEvent>> {
        Box::pin(stream::unfold(
            self.events.subscribe(),
            |mut receiver| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => return Some((event, receiver)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// The fan-out of a cluster node: events reach this node's subscribers at once and every
/// other node's through the hub's backplane.
pub struct RedisTelemetry {
    local: Arc<InProcessTelemetry>,
    backplane: Backplane,
}

impl RedisTelemetry {
    /// Subscribes the hub's telemetry channel, relaying what other nodes publish to `local`.
    pub fn start(backplane: Backplane, local: Arc<InProcessTelemetry>) -> Self {
        let relay = local.clone();
        backplane.subscribe(CHANNEL, move |message| {
            match serde_json::from_slice::<TelemetryEvent>(message) {
                Ok(event) => relay.send(event),
                Err(err) => {
                    tracing::warn!(error = %err, "ignoring unreadable telemetry from another node")
                }
            }
        });
        Self { local, backplane }
    }
}

#[async_trait]
impl TelemetryFanout for RedisTelemetry {
    async fn publish(&self, event: TelemetryEvent) -> Result<(), BackplaneError> {
        let message = serde_json::to_vec(&event).map_err(|e| BackplaneError(e.to_string()))?;
        self.local.send(event);
        self.backplane.publish(CHANNEL, message)
    }

    fn subscribe(&self) -> BoxStream<'static, Arc<TelemetryEvent>> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use serde_json::json;

    fn event(n: u64) -> TelemetryEvent {
        TelemetryEvent {
            owner: "alice".into(),
            payload: json!(n),
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_what_is_published_after_it_subscribed() {
        let fanout = InProcessTelemetry::new(8);
        fanout.publish(event(0)).await.unwrap();
        let mut first = fanout.subscribe();
        let mut second = fanout.subscribe();
        fanout.publish(event(1)).await.unwrap();
        assert_eq!(first.next().await.unwrap().payload, json!(1));
        assert_eq!(second.next().await.unwrap().payload, json!(1));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_skips_to_what_is_still_buffered() {
        let fanout = InProcessTelemetry::new(2);
        let mut slow = fanout.subscribe();
        for n in 0..5 {
            fanout.publish(event(n)).await.unwrap();
        }
        assert_eq!(slow.next().await.unwrap().payload, json!(3));
        assert_eq!(slow.next().await.unwrap().payload, json!(4));
    }
}
