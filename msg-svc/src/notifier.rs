//! The notifier: decides, round by round, what each member of a room gets.
//!
//! A room with new messages is *dirty*; once per round interval its members
//! are visited. A member whose cursor is behind gets exactly one frame in the
//! round: the messages themselves (an inline delta, shared by every member at
//! the same cursor) when they are few enough, otherwise a plain Notify, after
//! which it is *pulling*. A pulling member gets nothing new until it pulls or
//! `pull_timeout` passes; then it is notified again at the next round, and
//! after `slow_consumer_notifies` unanswered notifies in a row it is kicked.
//! Rounds of a room are at least the interval apart, renotifies included,
//! so no member gets two frames within one interval.
//!
//! Sans-I/O and generic over the room key `K` and session handle `H`: the
//! server plugs in its rooms and sockets, the simulation plain counters, and
//! time is passed in as milliseconds.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use chatroom_proto::cluster::v1::RoomConfig;
use chatroom_proto::v1::Cursor;

/// Session identifier, unique per node.
pub type SessionId = u64;

/// Per-room timing of the notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundConfig {
    /// A room is visited at most this often, ms.
    pub interval_ms: u64,
    /// A notified member that has not pulled is left alone this long, ms.
    pub pull_timeout_ms: u64,
    /// Unanswered notifies in a row before the member is kicked.
    pub slow_consumer_notifies: u32,
}

impl RoundConfig {
    /// The timing a room's settings ask for.
    pub fn of(config: &RoomConfig) -> Self {
        Self {
            interval_ms: u64::from(config.round_interval_ms),
            pull_timeout_ms: u64::from(config.pull_timeout_ms),
            slow_consumer_notifies: config.slow_consumer_notifies,
        }
    }
}

/// Where a round gets its frames from. Frames are built lazily and at most
/// once per distinct cursor per round.
pub trait RoundSource {
    /// A built frame; cloned for every recipient, so it should be cheap to
    /// clone (e.g. `Bytes`).
    type Frame;
    /// The room's newest position at the start of the round.
    fn latest(&self) -> Cursor;
    /// The inline delta from `since` to [`latest`](Self::latest), or `None`
    /// when it is too large to inline.
    fn delta(&mut self, since: &Cursor) -> Option<Self::Frame>;
    /// A Notify without messages.
    fn plain(&mut self) -> Self::Frame;
}

/// What happened to a frame handed to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written or queued for the socket.
    Accepted,
    /// Not taken: the session's socket is backed up.
    Refused,
}

/// What a round asks of the I/O layer.
#[derive(Debug)]
pub enum Action<'a, H, F> {
    /// Hand `frame` (a delta) to the session; the member's cursor moves to the
    /// round's latest if accepted.
    Deliver(&'a H, &'a F),
    /// Hand `frame` (a plain Notify) to the session.
    Notify(&'a H, &'a F),
    /// The member left notifies unanswered too long: remove the session.
    Kick(&'a H),
}

/// What one round did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    /// Inline deltas accepted.
    pub delivered: u32,
    /// Plain notifies sent (first or repeated).
    pub notified: u32,
    /// Members behind but inside their pull timeout.
    pub suppressed: u32,
    /// Frames a backed-up session refused.
    pub refused: u32,
    /// Members kicked as slow.
    pub kicked: u32,
    /// Distinct frames built for the round.
    pub frames_built: u32,
    /// Notifies coalesced: messages that reached a member without a frame
    /// of their own because the round bundled them with another. For each
    /// member handed a delta or its first notify, the messages (of both
    /// lanes, dropped ones included) it was behind by, less one; a repeated
    /// notify bundles nothing new.
    pub coalesced: u64,
}

#[derive(Debug)]
struct Member<H> {
    session: SessionId,
    handle: H,
    cursor: Cursor,
    /// When the unanswered notify was sent, while pulling.
    notified_at: Option<u64>,
    unanswered: u32,
}

#[derive(Debug)]
struct FanoutRoom<H> {
    members: Vec<Member<H>>,
    slots: HashMap<SessionId, usize>,
    config: RoundConfig,
    dirty: bool,
    next_round_at: u64,
    /// Earliest moment a pulling member is due a repeat notify.
    renotify_at: Option<u64>,
}

impl<H> FanoutRoom<H> {
    fn due(&self, now: u64) -> bool {
        self.next_wakeup().is_some_and(|at| now >= at)
    }

    /// When the next round is due. A renotify waits for the interval too:
    /// a round visits every member behind, so an early one would hand the
    /// others a second frame within one interval.
    fn next_wakeup(&self) -> Option<u64> {
        let dirty = self.dirty.then_some(self.next_round_at);
        let wanted = match (dirty, self.renotify_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wanted.map(|at| at.max(self.next_round_at))
    }

    fn remove_at(&mut self, slot: usize) -> Member<H> {
        let member = self.members.swap_remove(slot);
        self.slots.remove(&member.session);
        if let Some(moved) = self.members.get(slot) {
            self.slots.insert(moved.session, slot);
        }
        member
    }
}

/// The notifier of one fan-out shard: the members of its sessions in every room.
#[derive(Debug)]
pub struct Notifier<K, H> {
    rooms: HashMap<K, FanoutRoom<H>>,
    /// Rooms that may be due: dirty or waiting on a pulling member.
    pending: HashSet<K>,
}

impl<K: Hash + Eq + Clone, H> Default for Notifier<K, H> {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            pending: HashSet::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, H> Notifier<K, H> {
    /// An empty notifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `session` to `room` at `cursor` (replacing an earlier membership of
    /// the same session). The room's timing comes with its first member.
    pub fn join(
        &mut self,
        room: K,
        config: RoundConfig,
        session: SessionId,
        handle: H,
        cursor: Cursor,
    ) {
        let entry = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| FanoutRoom {
                members: Vec::new(),
                slots: HashMap::new(),
                config,
                dirty: false,
                next_round_at: 0,
                renotify_at: None,
            });
        let member = Member {
            session,
            handle,
            cursor,
            notified_at: None,
            unanswered: 0,
        };
        match entry.slots.get(&session) {
            Some(&slot) => entry.members[slot] = member,
            None => {
                entry.slots.insert(session, entry.members.len());
                entry.members.push(member);
            }
        }
        // The joiner may be behind already: let the next round look.
        entry.dirty = true;
        self.pending.insert(room);
    }

    /// Removes `session` from `room`; returns whether it was a member.
    pub fn leave(&mut self, room: &K, session: SessionId) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(&slot) = entry.slots.get(&session) else {
            return false;
        };
        entry.remove_at(slot);
        if entry.members.is_empty() {
            self.rooms.remove(room);
            self.pending.remove(room);
        }
        true
    }

    /// Drops a room and all its members (the room was closed).
    pub fn forget(&mut self, room: &K) {
        self.rooms.remove(room);
        self.pending.remove(room);
    }

    /// The member pulled up to `cursor` at `now`. With `more` waiting after
    /// it, the member goes on pulling: left alone as after a plain Notify
    /// (for the pull timeout), so no round sends it a delta its next pull
    /// returns too. Otherwise it is no longer pulling, and deltas resume
    /// from `cursor`. Returns how far the member had been handed messages
    /// before the pull (`None`: no such member).
    pub fn pulled(
        &mut self,
        room: &K,
        session: SessionId,
        cursor: Cursor,
        more: bool,
        now: u64,
    ) -> Option<Cursor> {
        let entry = self.rooms.get_mut(room)?;
        let &slot = entry.slots.get(&session)?;
        let member = &mut entry.members[slot];
        let handed = member.cursor;
        if cursor.epoch != member.cursor.epoch || cursor.msg_id > member.cursor.msg_id {
            member.cursor = cursor;
        }
        member.notified_at = more.then_some(now);
        member.unanswered = 0;
        // Anything that arrived after the pull is the next round's business.
        entry.dirty = true;
        self.pending.insert(room.clone());
        Some(handed)
    }

    /// New messages arrived in `room`.
    pub fn mark_dirty(&mut self, room: &K) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.dirty = true;
            self.pending.insert(room.clone());
        }
    }

    /// Changes a room's timing.
    pub fn set_config(&mut self, room: &K, config: RoundConfig) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.config = config;
        }
    }

    /// Members of `room` in this notifier.
    pub fn member_count(&self, room: &K) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// The earliest moment any room is due, if any is waiting.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter_map(|k| self.rooms.get(k)?.next_wakeup())
            .min()
    }

    /// Rooms due a round at `now`.
    pub fn due(&self, now: u64) -> Vec<K> {
        self.pending
            .iter()
            .filter(|k| self.rooms.get(*k).is_some_and(|r| r.due(now)))
            .cloned()
            .collect()
    }

    /// Runs one round of `room` at `now`: every member gets at most one frame.
    /// `act` performs each action; for deliveries and notifies it reports
    /// whether the session took the frame.
    pub fn round<S: RoundSource>(
        &mut self,
        room: &K,
        now: u64,
        source: &mut S,
        mut act: impl FnMut(Action<'_, H, S::Frame>) -> Delivery,
    ) -> RoundStats {
        let mut stats = RoundStats::default();
        let Some(entry) = self.rooms.get_mut(room) else {
            self.pending.remove(room);
            return stats;
        };
        let config = entry.config;
        let latest = source.latest();
        // Each distinct cursor's delta, built once; `built` finds it.
        let mut deltas: Vec<Option<S::Frame>> = Vec::new();
        let mut built: HashMap<(u64, u64), usize> = HashMap::new();
        let mut last: Option<((u64, u64), usize)> = None;
        let mut plain: Option<S::Frame> = None;
        let mut renotify_at: Option<u64> = None;
        let mut slot = 0;
        while slot < entry.members.len() {
            let member = &mut entry.members[slot];
            if member.cursor.epoch == latest.epoch && member.cursor.msg_id >= latest.msg_id {
                slot += 1;
                continue;
            }
            // What one frame to this member bundles beyond the first message
            // (unknown across epochs: nothing is claimed).
            let bundled = if member.notified_at.is_none() && member.cursor.epoch == latest.epoch {
                latest.msg_id - member.cursor.msg_id - 1
            } else {
                0
            };
            let notify = match member.notified_at {
                Some(at) if now < at.saturating_add(config.pull_timeout_ms) => {
                    stats.suppressed += 1;
                    earliest(&mut renotify_at, at.saturating_add(config.pull_timeout_ms));
                    slot += 1;
                    continue;
                }
                Some(_) if member.unanswered >= config.slow_consumer_notifies => {
                    act(Action::Kick(&member.handle));
                    stats.kicked += 1;
                    entry.remove_at(slot);
                    continue;
                }
                Some(_) => true,
                None => {
                    let key = (member.cursor.epoch, member.cursor.msg_id);
                    // Members mostly share a cursor: the last one looked up
                    // spares hashing it again for each of them.
                    let frame_at = match last {
                        Some((at, frame_at)) if at == key => frame_at,
                        _ => {
                            let frame_at = *built.entry(key).or_insert_with(|| {
                                stats.frames_built += 1;
                                deltas.push(source.delta(&member.cursor));
                                deltas.len() - 1
                            });
                            last = Some((key, frame_at));
                            frame_at
                        }
                    };
                    let delta = &deltas[frame_at];
                    match delta {
                        None => true,
                        Some(frame) => match act(Action::Deliver(&member.handle, frame)) {
                            Delivery::Accepted => {
                                stats.delivered += 1;
                                stats.coalesced += bundled;
                                member.cursor = latest;
                                member.unanswered = 0;
                                slot += 1;
                                continue;
                            }
                            // A backed-up socket counts as an unanswered notify.
                            Delivery::Refused => {
                                stats.refused += 1;
                                false
                            }
                        },
                    }
                }
            };
            if notify {
                let frame = plain.get_or_insert_with(|| {
                    stats.frames_built += 1;
                    source.plain()
                });
                match act(Action::Notify(&member.handle, frame)) {
                    Delivery::Accepted => {
                        stats.notified += 1;
                        stats.coalesced += bundled;
                    }
                    Delivery::Refused => stats.refused += 1,
                }
            }
            // Now the member owes a pull (or its socket owes us room).
            member.notified_at = Some(now);
            member.unanswered += 1;
            earliest(&mut renotify_at, now.saturating_add(config.pull_timeout_ms));
            slot += 1;
        }
        entry.dirty = false;
        entry.next_round_at = now.saturating_add(config.interval_ms);
        entry.renotify_at = renotify_at;
        if entry.members.is_empty() {
            self.rooms.remove(room);
            self.pending.remove(room);
        } else if renotify_at.is_none() {
            self.pending.remove(room);
        }
        stats
    }
}

/// Lowers `at` to `candidate` if that is earlier.
fn earliest(at: &mut Option<u64>, candidate: u64) {
    *at = Some(at.map_or(candidate, |t| t.min(candidate)));
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
