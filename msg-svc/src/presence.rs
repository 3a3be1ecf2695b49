//! Presence reports to room owners, coalesced per room per tick: a join storm
//! becomes one `Membership` frame per room per tick carrying each user's
//! final state.

use std::collections::HashMap;
use std::sync::Arc;

use chatroom_cluster::link::UpLink;
use chatroom_proto::cluster::v1::{Membership, ToRoomSvc, to_room_svc};
use parking_lot::Mutex;
use tracing::debug;

/// The final presence of each user whose presence changed: user -> present.
type Changes = HashMap<Arc<str>, bool>;

/// Presence changes not yet reported.
#[derive(Debug, Default)]
pub(crate) struct PresenceReports {
    /// Per room.
    pending: Mutex<HashMap<Arc<str>, Changes>>,
}

impl PresenceReports {
    /// Notes that `user` became present in (or absent from) `room` here.
    pub(crate) fn record(&self, room: &Arc<str>, user: &Arc<str>, present: bool) {
        self.pending
            .lock()
            .entry(room.clone())
            .or_default()
            .insert(user.clone(), present);
    }

    /// Reports `room`'s pending changes now, so a send that follows on the
    /// same link finds its sender present.
    pub(crate) fn flush_room(&self, room: &str, uplink: &dyn UpLink) {
        let batch = self.pending.lock().remove_entry(room);
        if let Some((room, users)) = batch {
            self.send_or_keep(room, users, uplink);
        }
    }

    /// Reports everything pending. What the link cannot take stays pending.
    pub(crate) fn flush(&self, uplink: &dyn UpLink) {
        let batches = std::mem::take(&mut *self.pending.lock());
        for (room, users) in batches {
            self.send_or_keep(room, users, uplink);
        }
    }

    fn send_or_keep(&self, room: Arc<str>, users: Changes, uplink: &dyn UpLink) {
        let mut joined = Vec::new();
        let mut left = Vec::new();
        for (user, present) in &users {
            if *present {
                joined.push(user.to_string());
            } else {
                left.push(user.to_string());
            }
        }
        let frame = ToRoomSvc {
            body: Some(to_room_svc::Body::Membership(Membership {
                room_id: room.to_string(),
                joined,
                left,
            })),
        };
        if let Err(error) = uplink.try_send(frame) {
            debug!(%error, %room, "presence report deferred");
            let mut pending = self.pending.lock();
            let newer = pending.entry(room).or_default();
            for (user, present) in users {
                // Changes recorded meanwhile are newer: keep them.
                newer.entry(user).or_insert(present);
            }
        }
    }
}
