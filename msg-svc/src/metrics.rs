//! What a message service counts for `/metrics`: connections, the sends it
//! forwards and their outcomes, the broadcasts it receives, what its
//! notifier rounds do, pulls, ring evictions and slow consumers.
//!
//! The fan-out shards add each round's [`RoundStats`] once per round, never
//! per member; everything else is counted where it happens, through handles
//! taken when the node starts. Sessions and rooms are read when scraped
//! (see `MsgNode::register_metrics`).

use chatroom_cluster::metrics::{Counter, ErrorCounters, Gauge, Labelled, Registry};
use chatroom_proto::cluster::v1::send_result::Outcome;
use chatroom_proto::v1::ErrorCode;

use crate::notifier::RoundStats;
use crate::room::Evicted;

/// The node's counters and gauges; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    /// By transport: WebSocket, then QUIC.
    connections: Labelled<Gauge>,
    sends_forwarded: Counter,
    sends_accepted: Counter,
    sends_rejected: ErrorCounters,
    broadcasts: Counter,
    broadcast_messages: Counter,
    stale_frames: Counter,
    pulls: Counter,
    /// By lane: NORMAL, then PRIORITY.
    ring_evictions: Labelled<Counter>,
    /// By cause: unanswered notifies, then a full outbound queue.
    slow_consumer_kicks: Labelled<Counter>,
    /// By reason, in [`ConnectRefusal`] order.
    connections_refused: Labelled<Counter>,
    sends_rate_limited: Counter,
    /// Tokens refused at Connect or Refresh, by reason (made on first use).
    tokens_refused: Labelled<Counter>,
    tokens_refreshed: Counter,
    sessions_expired: Counter,
    /// What the shards count.
    pub(crate) rounds: RoundMetrics,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let slow_consumer_kicks: Labelled<Counter> =
            Labelled::new("cause", ["unanswered_notifies", "outbound_queue_full"]);
        Self {
            connections: Labelled::new("transport", ["ws", "quic"]),
            sends_forwarded: Counter::default(),
            sends_accepted: Counter::default(),
            sends_rejected: ErrorCounters::default(),
            broadcasts: Counter::default(),
            broadcast_messages: Counter::default(),
            stale_frames: Counter::default(),
            pulls: Counter::default(),
            ring_evictions: Labelled::new("lane", ["normal", "priority"]),
            connections_refused: Labelled::new(
                "reason",
                ["node_limit", "address_count", "address_rate", "origin"],
            ),
            sends_rate_limited: Counter::default(),
            tokens_refused: Labelled::new("reason", [] as [&str; 0]),
            tokens_refreshed: Counter::default(),
            sessions_expired: Counter::default(),
            rounds: RoundMetrics {
                notifies_sent: Counter::default(),
                notifies_suppressed: Counter::default(),
                notifies_coalesced: Counter::default(),
                deltas_delivered: Counter::default(),
                pushes_refused: Counter::default(),
                kicks: slow_consumer_kicks.series(0).clone(),
            },
            slow_consumer_kicks,
        }
    }
}

impl NodeMetrics {
    /// Open WebSocket connections, handshakes included.
    pub(crate) fn ws_connections(&self) -> &Gauge {
        self.connections.series(0)
    }

    /// Open QUIC connections, handshakes included.
    pub(crate) fn quic_connections(&self) -> &Gauge {
        self.connections.series(1)
    }

    /// The counter of sessions closed because their outbound queue
    /// overflowed; each session holds a handle.
    pub(crate) fn outbound_overflows(&self) -> Counter {
        self.slow_consumer_kicks.series(1).clone()
    }

    /// A send went to its room's owner.
    pub(crate) fn send_forwarded(&self) {
        self.sends_forwarded.inc();
    }

    /// A room owner answered a send.
    pub(crate) fn send_result(&self, outcome: Option<&Outcome>) {
        match outcome {
            Some(Outcome::Ack(_)) => {
                self.sends_accepted.inc();
            }
            Some(Outcome::Error(error)) => self.sends_rejected.count(error.code),
            None => self.sends_rejected.count(ErrorCode::Internal as i32),
        }
    }

    /// A Broadcast frame carrying `messages` arrived.
    pub(crate) fn broadcast(&self, messages: usize) {
        self.broadcasts.inc();
        self.broadcast_messages.inc_by(messages as u64);
    }

    /// A frame from an owner that lost its room was ignored.
    pub(crate) fn stale_frame(&self) {
        self.stale_frames.inc();
    }

    /// A connection was refused before it became a session.
    pub(crate) fn refused(&self, reason: ConnectRefusal) {
        self.connections_refused.series(reason as usize).inc();
    }

    /// A send was refused by its session's own send rate.
    pub(crate) fn send_rate_limited(&self) {
        self.sends_rate_limited.inc();
    }

    /// A token was refused for `reason` (see `AuthError::reason`).
    pub(crate) fn token_refused(&self, reason: &'static str) {
        self.tokens_refused.get("reason", reason).inc();
    }

    /// A session took a newer token.
    pub(crate) fn token_refreshed(&self) {
        self.tokens_refreshed.inc();
    }

    /// A session was closed because its token expired.
    pub(crate) fn token_expired(&self) {
        self.sessions_expired.inc();
    }

    /// A Pull was answered.
    pub(crate) fn pulled(&self) {
        self.pulls.inc();
    }

    /// A ring dropped its oldest entries.
    pub(crate) fn evicted(&self, evicted: Evicted) {
        for (lane, count) in [(0, evicted.normal), (1, evicted.priority)] {
            if count > 0 {
                self.ring_evictions.series(lane).inc_by(count);
            }
        }
    }

    /// Registers the node's families (sessions and rooms are the node's to
    /// register: they are read from it).
    pub(crate) fn register(&self, registry: &mut Registry) {
        self.connections.register(
            registry,
            "connections",
            "Open client connections, handshakes included, by transport",
        );
        registry.register(
            "sends_forwarded",
            "Sends forwarded to their room's owner",
            self.sends_forwarded.clone(),
        );
        registry.register(
            "sends_accepted",
            "Forwarded sends the room's owner accepted (retries answered with their \
             original ack included)",
            self.sends_accepted.clone(),
        );
        self.sends_rejected.register(
            registry,
            "sends_rejected",
            "Forwarded sends the room's owner refused, by error code",
        );
        registry.register(
            "broadcasts_received",
            "Broadcast frames received from room services",
            self.broadcasts.clone(),
        );
        registry.register(
            "broadcast_messages_received",
            "Messages carried by the broadcast frames received",
            self.broadcast_messages.clone(),
        );
        registry.register(
            "stale_owner_frames",
            "Acks, broadcasts and send results ignored because they came from a room \
             service that had lost the room to a newer owner",
            self.stale_frames.clone(),
        );
        registry.register("pulls", "Pulls answered", self.pulls.clone());
        self.ring_evictions.register(
            registry,
            "ring_evictions",
            "Messages dropped from a room's ring to make room (oldest first), by lane",
        );
        self.slow_consumer_kicks.register(
            registry,
            "slow_consumer_kicks",
            "Sessions closed as slow consumers, by cause: notifies left unanswered too \
             long, or replies queued past the outbound bound",
        );
        self.connections_refused.register(
            registry,
            "connections_refused",
            "Client connections refused before their session, both transports, by \
             reason: the node's limit, the source address's count or rate, or a \
             browser origin not allowed",
        );
        registry.register(
            "sends_rate_limited",
            "Sends refused with RATE_LIMITED by the session's own send rate, before \
             reaching the room",
            self.sends_rate_limited.clone(),
        );
        self.tokens_refused.register(
            registry,
            "tokens_refused",
            "Client tokens refused at Connect or Refresh, by reason",
        );
        registry.register(
            "tokens_refreshed",
            "Sessions that took a newer token in-band (Refresh)",
            self.tokens_refreshed.clone(),
        );
        registry.register(
            "sessions_token_expired",
            "Sessions closed because their token expired without a Refresh",
            self.sessions_expired.clone(),
        );
        self.rounds.register(registry);
    }
}

/// Why a connection was refused, as `connections_refused` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectRefusal {
    NodeLimit = 0,
    AddressCount = 1,
    AddressRate = 2,
    Origin = 3,
}

impl From<crate::admission::Refused> for ConnectRefusal {
    fn from(refused: crate::admission::Refused) -> Self {
        match refused {
            crate::admission::Refused::TooMany => Self::AddressCount,
            crate::admission::Refused::TooFast => Self::AddressRate,
        }
    }
}

/// Counts a connection in its transport's gauge while it lives.
#[derive(Debug)]
pub(crate) struct Open<'a>(&'a Gauge);

impl<'a> Open<'a> {
    /// Counts one more connection in `gauge`; returns the guard and how many
    /// were open before it.
    pub(crate) fn count(gauge: &'a Gauge) -> (Self, usize) {
        let before = gauge.inc();
        (Self(gauge), usize::try_from(before).unwrap_or(0))
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the notifier rounds of the fan-out shards count.
#[derive(Debug, Clone)]
pub(crate) struct RoundMetrics {
    notifies_sent: Counter,
    notifies_suppressed: Counter,
    notifies_coalesced: Counter,
    deltas_delivered: Counter,
    pushes_refused: Counter,
    /// The unanswered-notifies series of the slow-consumer kicks.
    kicks: Counter,
}

impl RoundMetrics {
    /// Adds one round's stats.
    pub(crate) fn count(&self, stats: &RoundStats) {
        let counts = [
            (&self.notifies_sent, u64::from(stats.notified)),
            (&self.notifies_suppressed, u64::from(stats.suppressed)),
            (&self.notifies_coalesced, stats.coalesced),
            (&self.deltas_delivered, u64::from(stats.delivered)),
            (&self.pushes_refused, u64::from(stats.refused)),
            (&self.kicks, u64::from(stats.kicked)),
        ];
        for (counter, count) in counts {
            if count > 0 {
                counter.inc_by(count);
            }
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifies_sent",
            "Plain notifies sent (the member then pulls), first or repeated",
            self.notifies_sent.clone(),
        );
        registry.register(
            "notifies_suppressed",
            "Notifies not sent because the member was still pulling (notified, not \
             pulled yet, within the pull timeout); counted per member per round",
            self.notifies_suppressed.clone(),
        );
        registry.register(
            "notifies_coalesced",
            "Messages that reached a member without a frame of their own because a round \
             bundled them with another: for each member handed a delta or its first \
             notify, the messages it was behind by, less one",
            self.notifies_coalesced.clone(),
        );
        registry.register(
            "deltas_delivered",
            "Inline deltas (notifies carrying the messages) handed to sessions",
            self.deltas_delivered.clone(),
        );
        registry.register(
            "push_frames_refused",
            "Deltas and notifies refused by a backed-up socket (counted as unanswered \
             notifies)",
            self.pushes_refused.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_cluster::metrics::{registry, render};
    use chatroom_proto::v1::SendAck;

    fn rendered(metrics: &NodeMetrics) -> String {
        let mut registry = registry();
        metrics.register(&mut registry);
        render(&registry)
    }

    #[test]
    fn a_round_is_added_field_by_field() {
        let metrics = NodeMetrics::default();
        let round = RoundStats {
            delivered: 3,
            notified: 2,
            suppressed: 4,
            refused: 1,
            kicked: 1,
            frames_built: 5,
            coalesced: 7,
        };
        metrics.rounds.count(&round);
        metrics.rounds.count(&round);
        let text = rendered(&metrics);
        for expected in [
            "chatroom_deltas_delivered_total 6\n",
            "chatroom_notifies_sent_total 4\n",
            "chatroom_notifies_suppressed_total 8\n",
            "chatroom_notifies_coalesced_total 14\n",
            "chatroom_push_frames_refused_total 2\n",
            "chatroom_slow_consumer_kicks_total{cause=\"unanswered_notifies\"} 2\n",
            "chatroom_slow_consumer_kicks_total{cause=\"outbound_queue_full\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn send_results_split_into_accepted_and_rejected_by_code() {
        let metrics = NodeMetrics::default();
        let refused = chatroom_proto::v1::Error::new(ErrorCode::RateLimited, "slow down");
        metrics.send_result(Some(&Outcome::Ack(SendAck::default())));
        metrics.send_result(Some(&Outcome::Error(refused)));
        metrics.send_result(None);
        let text = rendered(&metrics);
        for expected in [
            "chatroom_sends_accepted_total 1\n",
            "chatroom_sends_rejected_total{code=\"rate_limited\"} 1\n",
            "chatroom_sends_rejected_total{code=\"internal\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn evictions_and_connections_are_kept_apart_by_label() {
        let metrics = NodeMetrics::default();
        metrics.evicted(Evicted {
            normal: 3,
            priority: 0,
        });
        metrics.ws_connections().inc();
        metrics.ws_connections().inc();
        metrics.quic_connections().inc();
        metrics.ws_connections().dec();
        let text = rendered(&metrics);
        for expected in [
            "chatroom_ring_evictions_total{lane=\"normal\"} 3\n",
            "chatroom_ring_evictions_total{lane=\"priority\"} 0\n",
            "chatroom_connections{transport=\"ws\"} 1\n",
            "chatroom_connections{transport=\"quic\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
