//! A room as one msg-svc sees it: the ring its broadcasts fill, the room's
//! settings as its owner sent them, and which local users are present.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use chatroom_proto::cluster::v1::{RoomConfig, RoomReport};
use chatroom_proto::v1::{ChatMessage, Cursor, Lane, RoomLimits};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::ring::{RoomRing, Selection};

/// Where the node stands with the room's owner.
#[derive(Debug)]
pub(crate) enum Subscription {
    /// Waiting for the owner's first SubscribeAck; joiners wait with it.
    Pending(Vec<oneshot::Sender<()>>),
    /// Broadcasts flow; the ring is live.
    Active,
    /// The room was closed; joiners are refused.
    Closed,
}

/// Entries a change to a ring evicted from each lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) normal: u64,
    pub(crate) priority: u64,
}

impl Evicted {
    /// What `ring` has evicted in its life.
    fn so_far(ring: &RoomRing) -> Self {
        Self {
            normal: ring.evicted(Lane::Normal),
            priority: ring.evicted(Lane::Priority),
        }
    }

    /// What `ring` has evicted since it had evicted `before`.
    fn since(before: Self, ring: &RoomRing) -> Self {
        let now = Self::so_far(ring);
        Self {
            normal: now.normal - before.normal,
            priority: now.priority - before.priority,
        }
    }
}

/// Mutable facts about the room, behind one short lock.
#[derive(Debug)]
pub(crate) struct RoomState {
    pub(crate) subscription: Subscription,
    /// The room service this node last subscribed at, by node id; `None`
    /// until a Subscribe went out, and again when that owner forgot us
    /// (link lost, placement moved, NotOwner).
    pub(crate) owner: Option<String>,
    pub(crate) config: RoomConfig,
    /// Room-wide distinct users, as the owner last reported.
    pub(crate) member_count: u64,
    /// Local sessions joined or joining; the room is reaped at 0.
    pub(crate) sessions: usize,
    /// Local sessions per user, for presence reports.
    pub(crate) presence: HashMap<Arc<str>, u32>,
    /// Since when (monotonic ms) no local session is in the room.
    pub(crate) empty_since: Option<u64>,
}

/// What happened downstream of the room on this node since the last report
/// to its owner (for operators' room stats). Bumped once per round or pull,
/// taken about once a second.
#[derive(Debug, Default)]
pub(crate) struct Downstream {
    delivered: AtomicU64,
    skipped_normal: AtomicU64,
    skipped_priority: AtomicU64,
    evicted_normal: AtomicU64,
    evicted_priority: AtomicU64,
    slow_consumer_kicks: AtomicU64,
}

impl Downstream {
    /// `members` members each got `taken`: messages, and gaps they were told of.
    pub(crate) fn handed(&self, taken: Taken, members: u64) {
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n * members, Ordering::Relaxed);
            }
        };
        add(&self.delivered, taken.messages);
        add(&self.skipped_normal, taken.skipped_normal);
        add(&self.skipped_priority, taken.skipped_priority);
    }

    /// The ring evicted these.
    pub(crate) fn evicted(&self, evicted: Evicted) {
        for (counter, n) in [
            (&self.evicted_normal, evicted.normal),
            (&self.evicted_priority, evicted.priority),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// `n` members were kicked as slow consumers.
    pub(crate) fn kicked(&self, n: u64) {
        self.slow_consumer_kicks.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes the counts as a report for `room_id`; `None` when nothing
    /// happened.
    pub(crate) fn take(&self, room_id: &str) -> Option<RoomReport> {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let report = RoomReport {
            room_id: room_id.to_owned(),
            delivered: take(&self.delivered),
            skipped_normal: take(&self.skipped_normal),
            skipped_priority: take(&self.skipped_priority),
            evicted_normal: take(&self.evicted_normal),
            evicted_priority: take(&self.evicted_priority),
            slow_consumer_kicks: take(&self.slow_consumer_kicks),
        };
        let counts = [
            report.delivered,
            report.skipped_normal,
            report.skipped_priority,
            report.evicted_normal,
            report.evicted_priority,
            report.slow_consumer_kicks,
        ];
        counts.iter().any(|&n| n > 0).then_some(report)
    }

    /// Puts back a report that could not be sent, for the next one.
    pub(crate) fn restore(&self, report: &RoomReport) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        add(&self.delivered, report.delivered);
        add(&self.skipped_normal, report.skipped_normal);
        add(&self.skipped_priority, report.skipped_priority);
        add(&self.evicted_normal, report.evicted_normal);
        add(&self.evicted_priority, report.evicted_priority);
        add(&self.slow_consumer_kicks, report.slow_consumer_kicks);
    }
}

/// What one frame handed a member: messages, and the gaps (by lane) it
/// told them of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) messages: u64,
    pub(crate) skipped_normal: u64,
    pub(crate) skipped_priority: u64,
}

impl Taken {
    /// What a selection hands over.
    pub(crate) fn of(selection: &Selection<'_>) -> Self {
        Self {
            messages: selection.entries.len() as u64,
            skipped_normal: selection.dropped,
            skipped_priority: selection.dropped_priority,
        }
    }
}

/// One room on this node.
#[derive(Debug)]
pub(crate) struct LocalRoom {
    pub(crate) id: Arc<str>,
    pub(crate) ring: RwLock<RoomRing>,
    pub(crate) state: Mutex<RoomState>,
    pub(crate) downstream: Downstream,
}

impl LocalRoom {
    /// A room waiting for its owner's SubscribeAck.
    pub(crate) fn pending(id: Arc<str>) -> Self {
        Self {
            id,
            ring: RwLock::new(RoomRing::new(Cursor::default(), 0, 0)),
            state: Mutex::new(RoomState {
                subscription: Subscription::Pending(Vec::new()),
                owner: None,
                config: RoomConfig::default(),
                member_count: 0,
                sessions: 0,
                presence: HashMap::new(),
                empty_since: None,
            }),
            downstream: Downstream::default(),
        }
    }

    /// Applies the owner's SubscribeAck: fills the ring from its history and
    /// wakes the joiners waiting. An ack for a live ring of the same epoch only
    /// adds what the ring lacks, so nothing delivered is lost or repeated.
    /// Returns what filling (or resizing) the ring evicted.
    pub(crate) fn activate(
        &self,
        latest: Cursor,
        config: RoomConfig,
        member_count: u64,
        history: &[ChatMessage],
    ) -> Evicted {
        let evicted = {
            let mut ring = self.ring.write();
            let live = matches!(self.state.lock().subscription, Subscription::Active);
            if !live || ring.epoch() != latest.epoch {
                *ring = RoomRing::new(
                    Cursor::start(latest.epoch),
                    config.normal_ring as usize,
                    config.priority_ring as usize,
                );
            }
            let before = Evicted::so_far(&ring);
            ring.resize(config.normal_ring as usize, config.priority_ring as usize);
            for msg in history {
                ring.append(msg);
            }
            ring.observe(latest);
            Evicted::since(before, &ring)
        };
        let mut state = self.state.lock();
        state.config = config;
        state.member_count = member_count;
        if let Subscription::Pending(waiters) =
            std::mem::replace(&mut state.subscription, Subscription::Active)
        {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
        evicted
    }

    /// Appends a broadcast's messages to the ring; returns what they
    /// evicted.
    pub(crate) fn append(&self, messages: &[ChatMessage]) -> Evicted {
        let mut ring = self.ring.write();
        let before = Evicted::so_far(&ring);
        for msg in messages {
            ring.append(msg);
        }
        Evicted::since(before, &ring)
    }

    /// Applies new settings from the owner; returns what shrinking the ring
    /// evicted.
    pub(crate) fn reconfigure(&self, config: RoomConfig) -> Evicted {
        let evicted = {
            let mut ring = self.ring.write();
            let before = Evicted::so_far(&ring);
            ring.resize(config.normal_ring as usize, config.priority_ring as usize);
            Evicted::since(before, &ring)
        };
        self.state.lock().config = config;
        evicted
    }
}

/// What a client is told about the room's limits.
pub(crate) fn limits(config: &RoomConfig, max_pull: u32) -> RoomLimits {
    RoomLimits {
        max_payload_bytes: config.max_payload_bytes,
        normal_per_s: config.normal_per_s,
        priority_per_s: config.priority_per_s,
        max_pull,
        slow_mode_ms: config.slow_mode_ms,
    }
}

/// A room as a map key: identity is the allocation, so a room reaped and
/// created again is a different key.
#[derive(Debug, Clone)]
pub(crate) struct RoomKey(pub(crate) Arc<LocalRoom>);

impl PartialEq for RoomKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RoomKey {}

impl Hash for RoomKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

#[cfg(test)]
mod props;
