//! A room as one msg-svc sees it: the ring its broadcasts fill, the room's
//! settings as its owner sent them, and which local users are present.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chatroom_proto::cluster::v1::RoomConfig;
use chatroom_proto::v1::{ChatMessage, Cursor, RoomLimits};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::ring::RoomRing;

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

/// One room on this node.
#[derive(Debug)]
pub(crate) struct LocalRoom {
    pub(crate) id: Arc<str>,
    pub(crate) ring: RwLock<RoomRing>,
    pub(crate) state: Mutex<RoomState>,
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
        }
    }

    /// Applies the owner's SubscribeAck: fills the ring from its history and
    /// wakes the joiners waiting. An ack for a live ring of the same epoch only
    /// adds what the ring lacks, so nothing delivered is lost or repeated.
    pub(crate) fn activate(
        &self,
        latest: Cursor,
        config: RoomConfig,
        member_count: u64,
        history: &[ChatMessage],
    ) {
        {
            let mut ring = self.ring.write();
            let live = matches!(self.state.lock().subscription, Subscription::Active);
            if !live || ring.epoch() != latest.epoch {
                *ring = RoomRing::new(
                    Cursor::start(latest.epoch),
                    config.normal_ring as usize,
                    config.priority_ring as usize,
                );
            } else {
                ring.resize(config.normal_ring as usize, config.priority_ring as usize);
            }
            for msg in history {
                ring.append(msg);
            }
            ring.observe(latest);
        }
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
    }

    /// Applies new settings from the owner.
    pub(crate) fn reconfigure(&self, config: RoomConfig) {
        self.ring
            .write()
            .resize(config.normal_ring as usize, config.priority_ring as usize);
        self.state.lock().config = config;
    }
}

/// What a client is told about the room's limits.
pub(crate) fn limits(config: &RoomConfig, max_pull: u32) -> RoomLimits {
    RoomLimits {
        max_payload_bytes: config.max_payload_bytes,
        normal_per_s: config.normal_per_s,
        priority_per_s: config.priority_per_s,
        max_pull,
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
