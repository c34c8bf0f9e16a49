//! What the metrics read from the registry on each scrape: connections by hub, transport and
//! protocol, and the fullest outbound queue.

use super::ConnectionRegistry;
use crate::metrics::{Census, ConnectionCensus};

impl ConnectionCensus for ConnectionRegistry {
    fn census(&self) -> Census {
        let mut census = Census::default();
        for connection in self.all() {
            let key = (
                connection.hub.to_string(),
                connection.transport().map_or("none", |t| t.name()),
                connection.protocol().map_or("none", |p| p.name()),
            );
            *census.connections.entry(key).or_default() += 1;
            census.max_queue_depth = census.max_queue_depth.max(connection.queue_depth());
        }
        census
    }
}
