//! A room as one msg-svc holds it: its [`lifecycle`] (the sans-I/O core
//! deciding where the node stands with the room's owner), the ring its
//! broadcasts fill, and what happened [`downstream`] since the last report.
//!
//! [`LocalRoom::drive`] is the one way an event reaches a room: it feeds the
//! lifecycle, carries out its ring changes and its frames for the owner
//! while the room is still locked (so nobody sees a room live with its ring
//! unfilled, and the owner gets a room's frames in the order they were
//! decided), and hands back the rest for the node to do unlocked.
//!
//! Locks: the lifecycle's, then the ring's, never the other way round.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chatroom_cluster::link::UpLink;
use chatroom_proto::cluster::v1::{Membership, Subscribe, ToRoomSvc, Unsubscribe, to_room_svc};
use chatroom_proto::v1::{Cursor, RoomLimits};
use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::oneshot;

use crate::ring::RoomRing;

pub(crate) mod downstream;
pub(crate) mod lifecycle;

pub(crate) use downstream::{Downstream, Evicted, Taken};
pub(crate) use lifecycle::{Action, Admission, Event, JoinRefusal, RingOp, RoomLifecycle, Timers};

/// How the node answers a joiner waiting for a room.
pub(crate) type JoinWaiter = oneshot::Sender<Result<Admission, JoinRefusal>>;

/// What an event left for the node to do once the room is unlocked.
#[derive(Debug, Default)]
pub(crate) struct Followup {
    /// In the order the lifecycle asked.
    pub(crate) actions: Vec<Action<JoinWaiter>>,
    /// What the event's ring changes evicted.
    pub(crate) evicted: Evicted,
    /// Presence changes wait for the next flush.
    pub(crate) presence_pending: bool,
}

/// One room on this node.
#[derive(Debug)]
pub(crate) struct LocalRoom {
    pub(crate) id: Arc<str>,
    lifecycle: Mutex<RoomLifecycle<JoinWaiter>>,
    pub(crate) ring: RwLock<RoomRing>,
    pub(crate) downstream: Downstream,
}

impl LocalRoom {
    /// A room nobody has joined yet, pending its owner's SubscribeAck.
    pub(crate) fn new(id: Arc<str>, timers: Timers) -> Self {
        Self {
            id,
            lifecycle: Mutex::new(RoomLifecycle::new(timers)),
            ring: RwLock::new(RoomRing::new(Cursor::default(), 0, 0)),
            downstream: Downstream::default(),
        }
    }

    /// Feeds `events` to the room at monotonic time `now` (ms) and carries
    /// out what must happen while it is locked: ring changes, and frames for
    /// the owner through `uplink` (presence changes only with
    /// `flush_presence`).
    pub(crate) fn drive(
        &self,
        now: u64,
        events: impl IntoIterator<Item = Event<JoinWaiter>>,
        uplink: &dyn UpLink,
        flush_presence: bool,
    ) -> Followup {
        self.drive_then(now, events, uplink, flush_presence, |_| ())
            .0
    }

    /// [`drive`](Self::drive), then `then` with the room still locked: what
    /// goes to the owner after the room's own frames (a member's send).
    pub(crate) fn drive_then<T>(
        &self,
        now: u64,
        events: impl IntoIterator<Item = Event<JoinWaiter>>,
        uplink: &dyn UpLink,
        flush_presence: bool,
        then: impl FnOnce(&RoomLifecycle<JoinWaiter>) -> T,
    ) -> (Followup, T) {
        let mut lifecycle = self.lifecycle.lock();
        for event in events {
            lifecycle.handle(now, event);
        }
        let mut evicted = Evicted::default();
        while let Some(op) = lifecycle.poll_ring() {
            let more = apply(&mut self.ring.write(), op);
            evicted.normal += more.normal;
            evicted.priority += more.priority;
        }
        lifecycle.transmit(flush_presence, &mut |transmit| {
            self.frames(transmit)
                .into_iter()
                .try_for_each(|frame| uplink.try_send(frame))
        });
        let then = then(&lifecycle);
        let followup = Followup {
            actions: std::iter::from_fn(|| lifecycle.poll_action()).collect(),
            evicted,
            presence_pending: lifecycle.presence_pending(),
        };
        (followup, then)
    }

    /// The room's lifecycle, for reading.
    pub(crate) fn lifecycle(&self) -> MutexGuard<'_, RoomLifecycle<JoinWaiter>> {
        self.lifecycle.lock()
    }

    /// The newest position the ring knows.
    pub(crate) fn latest(&self) -> Cursor {
        self.ring.read().latest()
    }

    /// The frames a transmit is made of.
    fn frames(&self, transmit: lifecycle::Transmit) -> Vec<ToRoomSvc> {
        let room_id = self.id.to_string();
        let frame = |body| ToRoomSvc { body: Some(body) };
        match transmit {
            lifecycle::Transmit::Subscribe { live, present, seq } => {
                let subscribe = Subscribe {
                    room_id: room_id.clone(),
                    latest: live.then(|| self.latest()),
                };
                let mut frames = vec![frame(to_room_svc::Body::Subscribe(subscribe))];
                if !present.is_empty() {
                    frames.push(frame(to_room_svc::Body::Membership(Membership {
                        room_id,
                        joined: present,
                        left: Vec::new(),
                        seq,
                    })));
                }
                frames
            }
            lifecycle::Transmit::Membership { joined, left, seq } => {
                vec![frame(to_room_svc::Body::Membership(Membership {
                    room_id,
                    joined,
                    left,
                    seq,
                }))]
            }
            lifecycle::Transmit::Unsubscribe => {
                vec![frame(to_room_svc::Body::Unsubscribe(Unsubscribe {
                    room_id,
                }))]
            }
        }
    }
}

/// Carries out a ring change; returns what it evicted.
pub(crate) fn apply(ring: &mut RoomRing, op: RingOp) -> Evicted {
    match op {
        RingOp::Fill {
            fresh,
            normal,
            priority,
            history,
            latest,
        } => {
            if fresh {
                // What a replaced ring held was not evicted: it belonged to
                // no stream the room is on now, or to none yet.
                *ring = RoomRing::new(Cursor::start(latest.epoch), normal, priority);
            }
            let before = Evicted::so_far(ring);
            ring.resize(normal, priority);
            for msg in &history {
                ring.append(msg);
            }
            ring.observe(latest);
            Evicted::since(before, ring)
        }
        RingOp::Append(messages) => {
            let before = Evicted::so_far(ring);
            for msg in &messages {
                ring.append(msg);
            }
            Evicted::since(before, ring)
        }
        RingOp::Resize { normal, priority } => {
            let before = Evicted::so_far(ring);
            ring.resize(normal, priority);
            Evicted::since(before, ring)
        }
    }
}

/// What a client is told about the room's limits.
pub(crate) fn limits(
    config: &chatroom_proto::cluster::v1::RoomConfig,
    max_pull: u32,
) -> RoomLimits {
    RoomLimits {
        max_payload_bytes: config.max_payload_bytes,
        normal_per_s: config.normal_per_s,
        priority_per_s: config.priority_per_s,
        max_pull,
        slow_mode_ms: config.slow_mode_ms,
        read_only: config.read_only,
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
mod fixtures;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
