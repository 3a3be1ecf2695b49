//! Writes waiting for the second-level store, coalesced per room: the newest
//! position and config win, the history keeps the room's newest
//! `history_size` messages, moderation keeps the last change per list and
//! user. Plain data and no I/O: a worker records into one, the store's writer
//! merges them and turns a batch into one Redis transaction.
//!
//! What waits for one room is bounded: at most `history_size` messages, one
//! position, one config, a clear and a history reset (two flags), and at most
//! [`MAX_PENDING_MODERATION`] moderation entries. Messages that fall out of
//! the history window are superseded, not lost: the stored list is trimmed to
//! the same window. A moderation entry beyond the bound is lost for the
//! store (the room in memory still has it): the oldest is dropped and
//! counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chatroom_proto::cluster::v1::{RoomConfig, RoomOverrides};
use chatroom_proto::v1::{ChatMessage, Cursor};

use crate::core::PersistedRoom;
use crate::core::moderation::List;

/// Most moderation entries waiting per room.
pub(crate) const MAX_PENDING_MODERATION: usize = 4096;

/// The last change to one user's entry in one moderation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryChange {
    /// Added (or, for a mute, set to end at the given wall-clock
    /// microsecond; `None`: until unmuted).
    Put(Option<u64>),
    /// Removed.
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ordered {
    /// Arrival order within the room, for dropping the oldest at the bound.
    order: u64,
    change: EntryChange,
}

/// Where a room's stream stands in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredPosition {
    /// The stored stream's epoch.
    pub(crate) epoch: u64,
    /// The stored stream's newest msg_id.
    pub(crate) msg_id: u64,
}

/// What of a room's writes an earlier attempt may already have stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The clear and history reset that began this stream are done.
    pub(crate) began: bool,
    /// Messages up to this msg_id are in the stored history.
    pub(crate) through_msg_id: u64,
}

/// How much merging dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Coalesced {
    /// Messages that fell out of a room's history window before being
    /// written (superseded: the stored list drops them too).
    pub(crate) history: u64,
    /// Moderation entries dropped at the bound (lost for the store).
    pub(crate) moderation: u64,
}

impl Coalesced {
    fn add(&mut self, other: Self) {
        self.history += other.history;
        self.moderation += other.moderation;
    }
}

/// Everything waiting to be written for one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RoomWrites {
    /// The room was closed: whatever is stored goes before what follows.
    pub(crate) clear: bool,
    /// The room began a new stream: the stored history goes first.
    pub(crate) reset_history: bool,
    /// The stream's newest position.
    pub(crate) latest: Option<Cursor>,
    /// The newest overrides set through the admin API.
    pub(crate) overrides: Option<RoomOverrides>,
    moderation: HashMap<(List, Box<str>), Ordered>,
    next_order: u64,
    /// Messages to append, oldest first, all of the stream at `latest`.
    pub(crate) history: VecDeque<ChatMessage>,
    /// The room's history size as of the newest write that knew it: what the
    /// stored list is trimmed to.
    pub(crate) history_cap: Option<u32>,
    /// The oldest submission whose writes are in here.
    first_submission: u64,
    /// The term under which the writer took the room (see
    /// [`RoomStore::load`](super::RoomStore::load)): the store takes these
    /// writes only while no newer owner has claimed the room.
    pub(crate) fence: u64,
}

impl RoomWrites {
    /// The moderation changes, in no particular order (entries are
    /// independent of each other).
    pub(crate) fn moderation(&self) -> impl Iterator<Item = (List, &str, EntryChange)> {
        self.moderation
            .iter()
            .map(|((list, user), entry)| (*list, &**user, entry.change))
    }

    /// The messages and moderation entries waiting, to size batches.
    pub(crate) fn weight(&self) -> usize {
        1 + self.history.len() + self.moderation.len()
    }

    fn record_moderation(&mut self, list: List, user: Box<str>, change: EntryChange) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        self.moderation
            .insert((list, user), Ordered { order, change });
        if self.moderation.len() <= MAX_PENDING_MODERATION {
            return 0;
        }
        let oldest = self
            .moderation
            .iter()
            .min_by_key(|(_, entry)| entry.order)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.moderation.remove(&key);
        }
        1
    }

    fn trim_history(&mut self) -> u64 {
        let keep = self.history_cap.map_or(usize::MAX, |cap| cap as usize);
        let excess = self.history.len().saturating_sub(keep);
        self.history.drain(..excess);
        excess as u64
    }

    /// Folds `newer` (written after these) into these.
    pub(crate) fn merge_newer(&mut self, mut newer: Self) -> Coalesced {
        let first_submission = self.first_submission.min(newer.first_submission);
        let fence = self.fence.max(newer.fence);
        if newer.clear {
            newer.first_submission = first_submission;
            newer.fence = fence;
            *self = newer;
            return Coalesced::default();
        }
        self.fence = fence;
        let mut coalesced = Coalesced::default();
        if newer.reset_history {
            self.reset_history = true;
            self.history = newer.history;
        } else {
            self.history.extend(newer.history);
        }
        self.latest = newer.latest.or(self.latest);
        self.overrides = newer.overrides.or(self.overrides.take());
        self.history_cap = newer.history_cap.or(self.history_cap);
        coalesced.history = self.trim_history();
        let mut entries: Vec<_> = newer.moderation.into_iter().collect();
        entries.sort_unstable_by_key(|(_, entry)| entry.order);
        for ((list, user), entry) in entries {
            coalesced.moderation += self.record_moderation(list, user, entry.change);
        }
        self.first_submission = first_submission;
        coalesced
    }

    /// What an earlier attempt may already have stored, given where the
    /// room's stream stands in the store. Writes go out as one transaction,
    /// so a stored position of this stream's epoch means the transaction
    /// that began the stream (its clear and history reset) and every message
    /// up to the stored msg_id are in.
    pub(crate) fn stored(&self, position: Option<StoredPosition>) -> Stored {
        match (self.latest, position) {
            (Some(latest), Some(position)) if latest.epoch == position.epoch => Stored {
                began: true,
                through_msg_id: position.msg_id,
            },
            _ => Stored {
                began: false,
                through_msg_id: 0,
            },
        }
    }

    /// The room as it will be once these writes are stored on top of
    /// `stored` (what a load found), skipping what `stored` already holds.
    pub(crate) fn apply_to(&self, stored: Option<PersistedRoom>) -> Option<PersistedRoom> {
        let position = stored
            .as_ref()
            .and_then(|room| room.latest)
            .map(|latest| StoredPosition {
                epoch: latest.epoch,
                msg_id: latest.msg_id,
            });
        let already = self.stored(position);
        let stored = if self.clear && !already.began {
            None
        } else {
            stored
        };
        if self.is_clear_only() {
            return stored;
        }
        let mut room = stored.unwrap_or_default();
        if self.reset_history && !already.began {
            room.history.clear();
        }
        if let Some(latest) = self.latest {
            room.latest = Some(latest);
        }
        if let Some(overrides) = &self.overrides {
            room.overrides = Some(overrides.clone());
        }
        for (list, user, change) in self.moderation() {
            apply_entry(&mut room, list, user, change);
        }
        room.history.extend(
            self.history
                .iter()
                .filter(|msg| msg.msg_id > already.through_msg_id)
                .cloned(),
        );
        if let Some(cap) = self.history_cap {
            let excess = room.history.len().saturating_sub(cap as usize);
            room.history.drain(..excess);
        }
        Some(room)
    }

    fn is_clear_only(&self) -> bool {
        !self.reset_history
            && self.latest.is_none()
            && self.overrides.is_none()
            && self.moderation.is_empty()
            && self.history.is_empty()
            && self.history_cap.is_none()
    }
}

fn apply_entry(room: &mut PersistedRoom, list: List, user: &str, change: EntryChange) {
    match list {
        List::Mutes => {
            room.mutes.retain(|(muted, _)| muted != user);
            if let EntryChange::Put(until_us) = change {
                room.mutes.push((user.to_owned(), until_us));
            }
        }
        List::Bans | List::Whitelist => {
            let users = match list {
                List::Bans => &mut room.bans,
                _ => &mut room.whitelist,
            };
            users.retain(|listed| listed != user);
            if change != EntryChange::Remove {
                users.push(user.to_owned());
            }
        }
    }
}

/// The writes waiting for the store, per room.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PendingWrites {
    rooms: HashMap<Arc<str>, RoomWrites>,
    /// What recording dropped since these were created.
    coalesced: Coalesced,
}

impl PendingWrites {
    /// Nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Rooms with writes waiting.
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// The writes waiting for `room`.
    pub(crate) fn get(&self, room: &str) -> Option<&RoomWrites> {
        self.rooms.get(room)
    }

    /// Every room's writes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &RoomWrites)> {
        self.rooms.iter()
    }

    fn room(&mut self, room: &Arc<str>) -> &mut RoomWrites {
        self.rooms.entry(Arc::clone(room)).or_default()
    }

    /// Fences the writes waiting for each room with `fence_of(room)`: the
    /// term under which the writer holds it.
    pub(crate) fn fence_all(&mut self, mut fence_of: impl FnMut(&str) -> u64) {
        for (room, writes) in &mut self.rooms {
            writes.fence = writes.fence.max(fence_of(room));
        }
    }

    /// Fences the writes waiting for `room`, if any, with `fence`.
    pub(crate) fn fence(&mut self, room: &str, fence: u64) {
        if let Some(writes) = self.rooms.get_mut(room) {
            writes.fence = writes.fence.max(fence);
        }
    }

    /// The room began a new stream at `latest` (created afresh, or adopted
    /// a subscriber's): its stored history is replaced, not appended to. An
    /// empty stream is not written at all: there is nothing to keep yet, and
    /// a node that briefly took the room while views disagreed must not
    /// clobber the owner's record with it; its first message replaces the
    /// stored history instead (see [`append`](Self::append)).
    pub(crate) fn begin_stream(&mut self, room: &Arc<str>, latest: Cursor) {
        if latest.msg_id == 0 {
            return;
        }
        let writes = self.room(room);
        writes.reset_history = true;
        writes.history.clear();
        writes.latest = Some(latest);
    }

    /// The stream moved to `latest` without a message (a subscriber was
    /// further on).
    pub(crate) fn position(&mut self, room: &Arc<str>, latest: Cursor) {
        self.room(room).latest = Some(latest);
    }

    /// The room accepted `msg` in the stream `epoch`; its history keeps
    /// `history_size` messages.
    pub(crate) fn append(
        &mut self,
        room: &Arc<str>,
        epoch: u64,
        msg: &ChatMessage,
        history_size: u32,
    ) {
        let writes = self.room(room);
        if msg.msg_id == 1 {
            // The first message of a stream begun afresh: whatever history
            // is stored belongs to another stream.
            writes.reset_history = true;
            writes.history.clear();
        }
        writes.latest = Some(Cursor::after(epoch, msg));
        writes.history_cap = Some(history_size);
        if history_size > 0 {
            writes.history.push_back(msg.clone());
        }
        let superseded = writes.trim_history();
        self.coalesced.history += superseded;
    }

    /// An admin changed the room's overrides; `config` is what they resolve
    /// to.
    pub(crate) fn config(
        &mut self,
        room: &Arc<str>,
        config: &RoomConfig,
        overrides: &RoomOverrides,
    ) {
        let writes = self.room(room);
        writes.history_cap = Some(config.history_size);
        writes.overrides = Some(overrides.clone());
        let superseded = writes.trim_history();
        self.coalesced.history += superseded;
    }

    /// A moderation entry changed.
    pub(crate) fn moderation(
        &mut self,
        room: &Arc<str>,
        list: List,
        user: &str,
        change: EntryChange,
    ) {
        let dropped = self.room(room).record_moderation(list, user.into(), change);
        self.coalesced.moderation += dropped;
    }

    /// The room was closed: everything stored of it goes.
    pub(crate) fn clear(&mut self, room: &Arc<str>) {
        let writes = self.room(room);
        *writes = RoomWrites {
            clear: true,
            first_submission: writes.first_submission,
            ..RoomWrites::default()
        };
    }

    /// Folds `newer`, the writes of submission number `submission`, into
    /// these. Returns what recording and merging them dropped.
    pub(crate) fn merge_submission(&mut self, newer: Self, submission: u64) -> Coalesced {
        let mut coalesced = newer.coalesced;
        for (room, mut writes) in newer.rooms {
            writes.first_submission = submission;
            coalesced.add(self.merge_room(room, writes));
        }
        coalesced
    }

    /// Folds `newer` (written after these) into these.
    pub(crate) fn merge_newer(&mut self, newer: Self) -> Coalesced {
        let mut coalesced = Coalesced::default();
        for (room, writes) in newer.rooms {
            coalesced.add(self.merge_room(room, writes));
        }
        coalesced
    }

    fn merge_room(&mut self, room: Arc<str>, writes: RoomWrites) -> Coalesced {
        match self.rooms.get_mut(&room) {
            Some(older) => older.merge_newer(writes),
            None => {
                self.rooms.insert(room, writes);
                Coalesced::default()
            }
        }
    }

    /// Takes whole rooms until about `max_weight` messages and entries are
    /// taken (at least one room).
    pub(crate) fn take_batch(&mut self, max_weight: usize) -> Self {
        let mut taken = Vec::new();
        let mut weight = 0;
        for (room, writes) in &self.rooms {
            if weight > 0 && weight + writes.weight() > max_weight {
                continue;
            }
            weight += writes.weight();
            taken.push(Arc::clone(room));
            if weight >= max_weight {
                break;
            }
        }
        let rooms = taken
            .into_iter()
            .filter_map(|room| self.rooms.remove_entry(&room))
            .collect();
        Self {
            rooms,
            coalesced: Coalesced::default(),
        }
    }

    /// The oldest submission with writes still in here.
    pub(crate) fn oldest_submission(&self) -> Option<u64> {
        self.rooms
            .values()
            .map(|writes| writes.first_submission)
            .min()
    }
}

#[cfg(test)]
mod tests;
