//! What the room service counts for `/metrics`: the workers' decisions on
//! sends and the broadcasts they fan out, the rooms and nodes it holds, and,
//! with Redis, what the store ran into.
//!
//! Workers count through handles cloned into them; a worker counts a
//! broadcast's messages once per drain of a room, never per message copy.

use std::sync::atomic::{AtomicU64, Ordering};

use chatroom_cluster::metrics::{Counter, ErrorCounters, Gauge, Labelled, Registry, Sampled};

use chatroom_cluster::reload::Reloaded;

use crate::hooks::{ModerationHook, Webhooks};
use crate::store::RoomStore;

/// The counters and gauges the workers and the service share.
#[derive(Debug, Clone)]
pub(crate) struct RoomMetrics {
    /// By lane: NORMAL, then PRIORITY.
    accepted: Labelled<Counter>,
    rejected: ErrorCounters,
    deduplicated: Counter,
    written_behind: Counter,
    broadcasts: Counter,
    broadcast_messages: Counter,
    rooms: Gauge,
    idle_rooms_dropped: Counter,
    pub(crate) nodes: Gauge,
}

impl Default for RoomMetrics {
    fn default() -> Self {
        Self {
            accepted: Labelled::new("lane", ["normal", "priority"]),
            rejected: ErrorCounters::default(),
            deduplicated: Counter::default(),
            written_behind: Counter::default(),
            broadcasts: Counter::default(),
            broadcast_messages: Counter::default(),
            rooms: Gauge::default(),
            idle_rooms_dropped: Counter::default(),
            nodes: Gauge::default(),
        }
    }
}

impl RoomMetrics {
    /// Messages accepted (sends and notices), per lane.
    pub(crate) fn accepted(&self, normal: u64, priority: u64) {
        for (lane, count) in [(0, normal), (1, priority)] {
            if count > 0 {
                self.accepted.series(lane).inc_by(count);
            }
        }
    }

    /// A send refused with `code`.
    pub(crate) fn rejected(&self, code: i32) {
        self.rejected.count(code);
    }

    /// A retried send answered with its original ack.
    pub(crate) fn deduplicated(&self) {
        self.deduplicated.inc();
    }

    /// A worker acked and broadcast what its store had not written yet
    /// (Redis was away or slow).
    pub(crate) fn written_behind(&self) {
        self.written_behind.inc();
    }

    /// `frames` Broadcast frames queued, carrying `messages` message copies
    /// in all.
    pub(crate) fn broadcast(&self, frames: u64, messages: u64) {
        if frames > 0 {
            self.broadcasts.inc_by(frames);
            self.broadcast_messages.inc_by(messages);
        }
    }

    /// Rooms dropped from memory after no node was subscribed for the idle
    /// TTL.
    pub(crate) fn idle_rooms_dropped(&self, rooms: u64) {
        self.idle_rooms_dropped.inc_by(rooms);
    }

    /// A worker's share of the rooms-held gauge.
    pub(crate) fn rooms_share(&self) -> RoomsShare {
        RoomsShare {
            gauge: self.rooms.clone(),
            reported: 0,
        }
    }

    /// Registers the room service's families, and with a store that keeps
    /// rooms in Redis, `chatroom_redis_*` read from its counters.
    pub(crate) fn register(&self, registry: &mut Registry, store: &RoomStore) {
        self.accepted.register(
            registry,
            "messages_accepted",
            "Messages accepted and stamped (sends and notices), by lane",
        );
        self.rejected.register(
            registry,
            "messages_rejected",
            "Sends refused, by error code (rate_limited, muted, overloaded while a room \
             loads or moves, ...)",
        );
        registry.register(
            "messages_deduplicated",
            "Retried sends answered with their original ack instead of being accepted again",
            self.deduplicated.clone(),
        );
        registry.register(
            "written_behind",
            "Worker rounds that acked and broadcast before Redis had their writes (Redis away \
             or slower than a request's timeout); otherwise what is acked is stored first",
            self.written_behind.clone(),
        );
        registry.register(
            "broadcasts_sent",
            "Broadcast frames sent to msg-svc nodes: one per subscribed node per drain of a room",
            self.broadcasts.clone(),
        );
        registry.register(
            "broadcast_messages_sent",
            "Message copies carried by the broadcast frames sent, summed over nodes",
            self.broadcast_messages.clone(),
        );
        registry.register(
            "rooms_owned",
            "Rooms in this room service's memory",
            self.rooms.clone(),
        );
        registry.register(
            "idle_rooms_dropped",
            "Rooms dropped from memory after no msg-svc was subscribed for the idle TTL \
             (loaded again from Redis on their next use)",
            self.idle_rooms_dropped.clone(),
        );
        registry.register(
            "nodes_attached",
            "msg-svc nodes attached (linked) to this room service",
            self.nodes.clone(),
        );
        if store.persists() {
            register_store(registry, store);
        }
    }
}

/// `chatroom_redis_*`, read from the store's counters when scraped.
fn register_store(registry: &mut Registry, store: &RoomStore) {
    let errors = store.clone();
    registry.register(
        "redis_errors",
        "Failed Redis requests, by operation: write batches (kept and retried) and \
         room loads that failed after their retries (the room started afresh)",
        Sampled::counters_by("op", move || {
            let counters = errors.counters();
            vec![
                ("write", counters.write_failures),
                ("load", counters.load_failures),
            ]
        }),
    );
    let written = store.clone();
    registry.register(
        "redis_write_batches",
        "Write batches stored in Redis",
        Sampled::counter(move || written.counters().batches_written),
    );
    let superseded = store.clone();
    registry.register(
        "redis_history_superseded",
        "Messages that fell out of a room's history window before they were written \
         (the stored history drops them too)",
        Sampled::counter(move || superseded.counters().history_superseded),
    );
    let dropped = store.clone();
    registry.register(
        "redis_moderation_dropped",
        "Moderation changes dropped at the per-room bound while Redis was away (still in \
         force in memory, missing from the store)",
        Sampled::counter(move || dropped.counters().moderation_dropped),
    );
    let fenced = store.clone();
    registry.register(
        "redis_fenced_writes",
        "Rooms' write batches Redis refused because a newer owner had taken the room \
         (this node's writes for it were stale)",
        Sampled::counter(move || fenced.counters().fenced_writes),
    );
}

/// `chatroom_moderation_hook_*`, read from the hook's counters when scraped.
pub(crate) fn register_hook(registry: &mut Registry, hook: &ModerationHook) {
    let verdicts = hook.clone();
    registry.register(
        "moderation_hook_verdicts",
        "Messages the moderation hook decided on or failed, by outcome: accepted, \
         rejected, replaced, or failed (timeout, unreachable, status, garbage, missing, \
         shutdown; the room's policy then applies)",
        Sampled::counters_by("outcome", move || {
            let c = verdicts.counters();
            let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            vec![
                ("accepted", read(&c.accepted)),
                ("rejected", read(&c.rejected)),
                ("replaced", read(&c.replaced)),
                ("timeout", read(&c.failed_timeout)),
                ("unreachable", read(&c.failed_unreachable)),
                ("status", read(&c.failed_status)),
                ("garbage", read(&c.failed_garbage)),
                ("missing", read(&c.failed_missing)),
                ("shutdown", read(&c.failed_shutdown)),
            ]
        }),
    );
    let overloaded = hook.clone();
    registry.register(
        "moderation_hook_overloaded",
        "Messages refused with OVERLOADED because the hook's queue was at its bound",
        Sampled::counter(move || overloaded.counters().overloaded.load(Ordering::Relaxed)),
    );
    let requests = hook.clone();
    registry.register(
        "moderation_hook_requests",
        "Requests sent to the moderation hook",
        Sampled::counter(move || requests.counters().requests.load(Ordering::Relaxed)),
    );
    let unknown = hook.clone();
    registry.register(
        "moderation_hook_unknown_verdicts",
        "Verdicts the hook gave for messages not in their request (ignored)",
        Sampled::counter(move || unknown.counters().unknown_verdicts.load(Ordering::Relaxed)),
    );
}

/// `chatroom_{what}_reload_failures`: rereads of a settings file that were
/// refused (the version in force stays).
pub fn register_reloads<T: Send + Sync + 'static>(
    registry: &mut Registry,
    what: &str,
    file: &Reloaded<T>,
) {
    let file = file.clone();
    registry.register(
        format!("{what}_reload_failures"),
        format!("Rereads of the {what} file refused (the version in force stays)"),
        Sampled::counter(move || file.failures()),
    );
}

/// `chatroom_webhook_*`, read from the webhook's counters when scraped.
pub(crate) fn register_webhooks(registry: &mut Registry, webhooks: &Webhooks) {
    let events = webhooks.clone();
    registry.register(
        "webhook_events",
        "Webhook events by fate: emitted, delivered (a 2xx answered their batch), or \
         dropped because the queue was at its bound",
        Sampled::counters_by("fate", move || {
            let c = events.counters();
            vec![
                ("emitted", c.emitted.load(Ordering::Relaxed)),
                ("delivered", c.delivered.load(Ordering::Relaxed)),
                ("dropped", c.dropped.load(Ordering::Relaxed)),
            ]
        }),
    );
    let failures = webhooks.clone();
    registry.register(
        "webhook_request_failures",
        "Webhook requests that failed (and were retried), by cause",
        Sampled::counters_by("cause", move || {
            let c = failures.counters();
            vec![
                ("connect", c.failed_connect.load(Ordering::Relaxed)),
                ("timeout", c.failed_timeout.load(Ordering::Relaxed)),
                ("status", c.failed_status.load(Ordering::Relaxed)),
            ]
        }),
    );
    let queued = webhooks.clone();
    registry.register(
        "webhook_queued",
        "Webhook events waiting or in the batch out",
        Sampled::gauge(move || queued.counters().queued.load(Ordering::Relaxed)),
    );
}

/// One worker's part of the rooms-held gauge: the worker reports how many
/// rooms it holds and the gauge moves by the difference, so workers need
/// not share a count. A stopped worker takes its part back.
#[derive(Debug)]
pub(crate) struct RoomsShare {
    gauge: Gauge,
    reported: i64,
}

impl RoomsShare {
    /// The worker holds `rooms` rooms now.
    pub(crate) fn report(&mut self, rooms: usize) {
        let rooms = i64::try_from(rooms).unwrap_or(i64::MAX);
        if rooms != self.reported {
            self.gauge.inc_by(rooms - self.reported);
            self.reported = rooms;
        }
    }
}

impl Drop for RoomsShare {
    fn drop(&mut self) {
        self.gauge.dec_by(self.reported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_cluster::metrics::{registry, render};

    #[test]
    fn workers_shares_add_up_and_leave_with_them() {
        let metrics = RoomMetrics::default();
        let mut first = metrics.rooms_share();
        let mut second = metrics.rooms_share();
        first.report(3);
        second.report(2);
        first.report(1);
        assert_eq!(metrics.rooms.get(), 3);
        drop(second);
        assert_eq!(metrics.rooms.get(), 1);
    }

    #[test]
    fn accepted_count_by_lane_and_broadcasts_by_frame_and_copy() {
        let metrics = RoomMetrics::default();
        let mut registry = registry();
        metrics.register(&mut registry, &RoomStore::memory());
        metrics.accepted(2, 0);
        metrics.accepted(1, 1);
        metrics.broadcast(3, 6);
        metrics.broadcast(0, 0);
        let text = render(&registry);
        for expected in [
            "chatroom_messages_accepted_total{lane=\"normal\"} 3\n",
            "chatroom_messages_accepted_total{lane=\"priority\"} 1\n",
            "chatroom_broadcasts_sent_total 3\n",
            "chatroom_broadcast_messages_sent_total 6\n",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(
            !text.contains("chatroom_redis"),
            "no redis families without redis"
        );
    }
}
