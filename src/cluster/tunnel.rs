//! WebSocket tunnels: a stateful-reconnect WebSocket that reaches another node than the one
//! holding its connection stays on the node it reached (the edge), and its frames travel over
//! Redis to the connection's node (the owner), where a remote transport is attached to the
//! connection as a local socket would be. Both ends publish [`Frame::Tunnel`] events on the
//! other's forwarding channel; each end reads its events from a bounded queue, and a full queue
//! ends the tunnel (as a slow client's socket is cut).

use super::wire::Frame;
use super::Cluster;
use bytes::{Buf, Bytes};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Tunnel events an end holds for its reader, at most; one more ends the tunnel.
const TUNNEL_QUEUE: usize = 256;
/// Tunnels a node keeps open at once, at most, both ends counted.
const MAX_TUNNELS: usize = 4_096;

/// What travels through a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// A text (JSON) frame, either way.
    Text(Bytes),
    /// A binary (MessagePack) frame, either way.
    Binary(Bytes),
    /// Edge to owner: the client sent a close frame. Owner to edge: the connection closed;
    /// the socket is to be closed with this WebSocket close code.
    Closed(u16),
    /// The other end went away without a close (socket dropped, attachment replaced).
    Lost,
}

impl TunnelEvent {
    fn encode(self) -> (u8, Bytes) {
        match self {
            Self::Text(body) => (1, body),
            Self::Binary(body) => (2, body),
            Self::Closed(code) => (3, Bytes::copy_from_slice(&code.to_be_bytes())),
            Self::Lost => (4, Bytes::new()),
        }
    }

    fn decode(event: u8, mut body: Bytes) -> Option<Self> {
        match event {
            1 => Some(Self::Text(body)),
            2 => Some(Self::Binary(body)),
            3 if body.len() == 2 => Some(Self::Closed(body.get_u16())),
            4 => Some(Self::Lost),
            _ => None,
        }
    }
}

type Key = (String, u64, bool);

/// This node's tunnel ends, by (other node, tunnel id, whether this end is the owner).
pub struct Tunnels {
    cluster: Arc<Cluster>,
    next_id: AtomicU64,
    ends: DashMap<Key, mpsc::Sender<TunnelEvent>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many WebSocket tunnels are open on this node")]
pub struct TooManyTunnels;

impl Tunnels {
    pub(super) fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            next_id: AtomicU64::new(1),
            ends: DashMap::new(),
        })
    }

    /// Opens the edge end of a new tunnel to `owner`.
    pub fn open_edge(self: &Arc<Self>, owner: &str) -> Result<TunnelEnd, TooManyTunnels> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open((owner.to_string(), id, false))
    }

    /// Opens the owner end of tunnel `id`, which node `edge` opened.
    pub fn open_owner(self: &Arc<Self>, edge: &str, id: u64) -> Result<TunnelEnd, TooManyTunnels> {
        self.open((edge.to_string(), id, true))
    }

    fn open(self: &Arc<Self>, key: Key) -> Result<TunnelEnd, TooManyTunnels> {
        if self.ends.len() >= MAX_TUNNELS || self.ends.contains_key(&key) {
            return Err(TooManyTunnels);
        }
        let (tx, events) = mpsc::channel(TUNNEL_QUEUE);
        self.ends.insert(key.clone(), tx);
        Ok(TunnelEnd {
            sender: TunnelSender {
                tunnels: self.clone(),
                key,
            },
            events,
        })
    }

    /// An event `from` published for one of this node's ends. A full queue ends the tunnel:
    /// its reader then sees the queue close.
    pub(super) fn deliver(
        &self,
        from: String,
        tunnel: u64,
        to_owner: bool,
        event: u8,
        body: Bytes,
    ) {
        let key = (from, tunnel, to_owner);
        let Some(event) = TunnelEvent::decode(event, body) else {
            tracing::warn!(node = %key.0, "ignoring an unreadable tunnel event");
            return;
        };
        let full = match self.ends.get(&key) {
            Some(end) => end.try_send(event).is_err(),
            None => false,
        };
        if full {
            tracing::debug!(node = %key.0, tunnel, "a WebSocket tunnel's queue is full; closing it");
            self.ends.remove(&key);
        }
    }
}

/// One end of a tunnel: reads what the other end sends, publishes to it. Dropping it forgets
/// the tunnel here (the other end is told by [`TunnelSender::send`] of `Lost` or `Closed`).
pub struct TunnelEnd {
    sender: TunnelSender,
    events: mpsc::Receiver<TunnelEvent>,
}

/// Publishes to the other end of a tunnel.
#[derive(Clone)]
pub struct TunnelSender {
    tunnels: Arc<Tunnels>,
    key: Key,
}

impl TunnelEnd {
    /// The tunnel's id, which the edge gives the owner in its request.
    pub fn id(&self) -> u64 {
        self.sender.key.1
    }

    pub fn sender(&self) -> TunnelSender {
        self.sender.clone()
    }

    /// The next event from the other end; `None` once the tunnel is over here.
    pub async fn recv(&mut self) -> Option<TunnelEvent> {
        self.events.recv().await
    }
}

impl TunnelSender {
    /// Publishes `event` to the other end; false if the backplane refused it.
    pub fn send(&self, event: TunnelEvent) -> bool {
        let (node, tunnel, owner) = &self.key;
        let (event, body) = event.encode();
        let frame = Frame::Tunnel {
            tunnel: *tunnel,
            to_owner: !owner,
            event,
            body,
        };
        let channel = self.tunnels.cluster.key(&format!("forward:{node}"));
        self.tunnels.cluster.send(channel, frame).is_ok()
    }
}

impl Drop for TunnelEnd {
    fn drop(&mut self) {
        self.sender.tunnels.ends.remove(&self.sender.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_and_unreadable_ones_are_refused() {
        let events = [
            TunnelEvent::Text(Bytes::from_static(b"{}\x1e")),
            TunnelEvent::Binary(Bytes::from_static(b"\x01\x02")),
            TunnelEvent::Closed(1009),
            TunnelEvent::Lost,
        ];
        for event in events {
            let (code, body) = event.clone().encode();
            assert_eq!(TunnelEvent::decode(code, body), Some(event));
        }
        assert_eq!(TunnelEvent::decode(3, Bytes::from_static(b"\x03")), None);
        assert_eq!(TunnelEvent::decode(0, Bytes::new()), None);
        assert_eq!(TunnelEvent::decode(5, Bytes::new()), None);
    }
}
