//! Telemetry fan-out: every report a device makes reaches the `StreamTelemetry` subscribers,
//! wherever they are connected. [`TelemetryFanout`] is the seam a backplane implements (a
//! publish to every node, each handing it to its local subscribers);
//! [`InProcessTelemetry`] serves one node with a bounded broadcast channel, and
//! [`RedisTelemetry`] wraps it for a cluster (`{prefix}:{hub}:telemetry`).

use crate::cluster::wire::{Frame, Origin};
use crate::cluster::{Cluster, Subscriber};
use crate::hub::BackplaneError;
use async_trait::async_trait;
use futures_util::stream::{self, BoxStream};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// One telemetry report, as data.
#[derive(Debug, Clone, PartialEq)]
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
}

#[async_trait]
impl TelemetryFanout for InProcessTelemetry {
    async fn publish(&self, event: TelemetryEvent) -> Result<(), BackplaneError> {
        // No subscriber is not an error: the event simply has nobody to reach.
        let _ = self.events.send(Arc::new(event));
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
/// other node's through Redis.
pub struct RedisTelemetry {
    local: Arc<InProcessTelemetry>,
    cluster: Arc<Cluster>,
    channel: String,
}

impl RedisTelemetry {
    /// Subscribes hub `hub`'s telemetry channel, relaying what other nodes publish to `local`.
    pub fn start(cluster: Arc<Cluster>, hub: &str, local: Arc<InProcessTelemetry>) -> Self {
        let channel = cluster.key(&format!("{hub}:telemetry"));
        cluster.subscribe(channel.clone(), Arc::new(Relay(local.clone())));
        Self {
            local,
            cluster,
            channel,
        }
    }
}

#[async_trait]
impl TelemetryFanout for RedisTelemetry {
    async fn publish(&self, event: TelemetryEvent) -> Result<(), BackplaneError> {
        let frame = Frame::Telemetry {
            owner: event.owner.clone(),
            payload: event.payload.to_string(),
        };
        self.local.publish(event).await?;
        self.cluster.send(self.channel.clone(), frame)
    }

    fn subscribe(&self) -> BoxStream<'static, Arc<TelemetryEvent>> {
        self.local.subscribe()
    }
}

/// Hands other nodes' telemetry to this node's subscribers.
struct Relay(Arc<InProcessTelemetry>);

#[async_trait]
impl Subscriber for Relay {
    async fn receive(&self, _channel: &str, _origin: Origin, frame: Frame) {
        let Frame::Telemetry { owner, payload } = frame else {
            return;
        };
        match serde_json::from_str(&payload) {
            Ok(payload) => {
                let _ = self.0.publish(TelemetryEvent { owner, payload }).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "ignoring unreadable telemetry from another node")
            }
        }
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
