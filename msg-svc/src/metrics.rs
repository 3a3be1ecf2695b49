//! Counters the node exposes at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use chatroom_cluster::registry::Members;

/// The node's counters; plain atomics, bumped on the paths they count.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Broadcast frames from room services (one per room per batch).
    pub(crate) broadcasts: AtomicU64,
    /// Messages those frames carried.
    pub(crate) broadcast_messages: AtomicU64,
}

impl Metrics {
    pub(crate) fn count_broadcast(&self, messages: usize) {
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
        self.broadcast_messages
            .fetch_add(messages as u64, Ordering::Relaxed);
    }

    /// The exposition, with the gauges the caller reads at scrape time and
    /// the member counts this node sees.
    pub(crate) fn render(&self, sessions: usize, rooms: usize, members: &Members) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "chatroom_broadcasts_received_total",
            "counter",
            "Broadcast frames received from room services.",
            self.broadcasts.load(Ordering::Relaxed),
        );
        metric(
            "chatroom_broadcast_messages_received_total",
            "counter",
            "Messages carried by the broadcast frames received.",
            self.broadcast_messages.load(Ordering::Relaxed),
        );
        metric(
            "chatroom_sessions",
            "gauge",
            "Open client sessions.",
            sessions as u64,
        );
        metric(
            "chatroom_rooms",
            "gauge",
            "Rooms this node holds.",
            rooms as u64,
        );
        out.push_str(&members.prometheus());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.count_broadcast(3);
        metrics.count_broadcast(2);
        let text = metrics.render(7, 1, &Members::default());
        assert!(text.contains("# TYPE chatroom_broadcasts_received_total counter\nchatroom_broadcasts_received_total 2\n"));
        assert!(text.contains("chatroom_broadcast_messages_received_total 5\n"));
        assert!(text.contains("chatroom_sessions 7\n"));
        assert!(text.contains("chatroom_rooms 1\n"));
        assert!(text.contains("chatroom_cluster_members{role=\"room-svc\"} 0\n"));
    }
}
