//! A room's recent messages on one msg-svc: two bounded lanes, NORMAL and
//! PRIORITY, each dropping its oldest entry when full, so an ordinary flood
//! can never evict a priority message.
//!
//! Selection answers "what comes after this cursor" for pulls, inline deltas
//! and join backfill. Its accounting is exact from the cursor alone: every
//! message after the caller's cursor and up to the returned cursor is either
//! returned or counted as dropped, per lane, because cursors carry the room-wide
//! `msg_id` and the NORMAL count `normal_seq`.

use std::collections::VecDeque;

use bytes::Bytes;
use chatroom_proto::compose::{encode_message, notify_frame, pull_result_frame};
use chatroom_proto::v1::{ChatMessage, Cursor, Delta, Lane, Notify, PullResult};

/// A message as the ring keeps it: its position and its encoding, shared by
/// every frame that carries it.
#[derive(Debug, Clone)]
pub struct RingEntry {
    /// Room timestamp, µs.
    pub ts: u64,
    /// Room-wide message number.
    pub msg_id: u64,
    /// NORMAL messages up to and including this one.
    pub normal_seq: u64,
    /// Which lane holds it.
    pub lane: Lane,
    /// The encoded `ChatMessage`.
    pub encoded: Bytes,
}

#[derive(Debug)]
struct LaneRing {
    entries: VecDeque<RingEntry>,
    capacity: usize,
    evicted: u64,
}

impl LaneRing {
    fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            evicted: 0,
        }
    }

    /// Appends, evicting the oldest entries beyond capacity; returns how many
    /// were evicted (the new entry itself when the capacity is 0).
    fn push(&mut self, entry: RingEntry) -> u64 {
        self.entries.push_back(entry);
        self.trim()
    }

    fn trim(&mut self) -> u64 {
        let excess = self.entries.len().saturating_sub(self.capacity);
        self.entries.drain(..excess);
        self.evicted += excess as u64;
        excess as u64
    }

    /// Index of the first entry with `msg_id > after`.
    fn first_after(&self, after: u64) -> usize {
        self.entries.partition_point(|e| e.msg_id <= after)
    }

    /// Index past the last entry with `msg_id <= upto`.
    fn end_at(&self, upto: u64) -> usize {
        self.entries.partition_point(|e| e.msg_id <= upto)
    }

    /// The newest entry at or before `msg_id`, and the oldest after it.
    fn around(&self, msg_id: u64) -> (Option<&RingEntry>, Option<&RingEntry>) {
        let after = self.first_after(msg_id);
        let before = after.checked_sub(1).and_then(|i| self.entries.get(i));
        (before, self.entries.get(after))
    }
}

/// The position just before `entry`: its msg_id, ts and NORMAL count less
/// itself. (An owner's entry with counts of 0 is taken as it is: the ring
/// does not judge its owner.)
fn before(entry: &RingEntry) -> (u64, u64, u64) {
    let normal = u64::from(entry.lane == Lane::Normal);
    (
        entry.msg_id.saturating_sub(1),
        entry.ts,
        entry.normal_seq.saturating_sub(normal),
    )
}

/// Whether `later` (msg_id, normal_seq) can follow `earlier`: neither goes
/// back, and no more NORMAL messages came between than messages.
fn follows(earlier: (u64, u64), later: (u64, u64)) -> bool {
    later.0 >= earlier.0 && later.1 >= earlier.1 && later.1 - earlier.1 <= later.0 - earlier.0
}

/// What [`RoomRing::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored; `evicted` older entries of its lane were dropped to make room.
    Stored {
        /// Entries evicted from the message's lane.
        evicted: u64,
    },
    /// Already covered by the ring (a replay after a resubscribe): ignored.
    Stale,
}

/// The answer to "what comes after this cursor".
#[derive(Debug)]
pub struct Selection<'a> {
    /// Both lanes merged by ts, oldest first.
    pub entries: Vec<&'a RingEntry>,
    /// The caller's new cursor.
    pub cursor: Cursor,
    /// NORMAL messages after the old cursor, up to `cursor`, not in `entries`.
    pub dropped: u64,
    /// The same for PRIORITY.
    pub dropped_priority: u64,
    /// More messages wait after `cursor`.
    pub more: bool,
    /// The old cursor belonged to another epoch.
    pub reset: bool,
}

impl Selection<'_> {
    /// Encoded size of the selected messages.
    pub fn encoded_len(&self) -> usize {
        self.entries.iter().map(|e| e.encoded.len()).sum()
    }

    /// The selected messages' encodings, for the frame composers.
    pub fn encoded(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.entries.iter().map(|e| &e.encoded[..])
    }
}

/// A room's two lanes and its newest position.
#[derive(Debug)]
pub struct RoomRing {
    normal: LaneRing,
    priority: LaneRing,
    latest: Cursor,
}

impl RoomRing {
    /// An empty ring whose stream is at `latest` (the room's position when the
    /// node subscribed; history is appended after).
    pub fn new(latest: Cursor, normal_capacity: usize, priority_capacity: usize) -> Self {
        Self {
            normal: LaneRing::new(normal_capacity),
            priority: LaneRing::new(priority_capacity),
            latest,
        }
    }

    /// The stream's epoch.
    pub fn epoch(&self) -> u64 {
        self.latest.epoch
    }

    /// The newest position known.
    pub fn latest(&self) -> Cursor {
        self.latest
    }

    /// Entries evicted so far from `lane`.
    pub fn evicted(&self, lane: Lane) -> u64 {
        self.lane(lane).evicted
    }

    /// Entries held in `lane`.
    pub fn len(&self, lane: Lane) -> usize {
        self.lane(lane).entries.len()
    }

    /// Changes the lanes' capacities, evicting the oldest entries if needed.
    pub fn resize(&mut self, normal_capacity: usize, priority_capacity: usize) {
        self.normal.capacity = normal_capacity;
        self.normal.trim();
        self.priority.capacity = priority_capacity;
        self.priority.trim();
    }

    /// Moves the newest position forward to `latest` when the room is ahead of
    /// what the ring holds (history shorter than the stream).
    pub fn observe(&mut self, latest: Cursor) {
        if latest.epoch == self.latest.epoch && latest.msg_id > self.latest.msg_id {
            self.latest = latest;
        }
    }

    /// Appends a stamped message. Messages at or before the newest position
    /// are ignored, so replays are harmless.
    pub fn append(&mut self, msg: &ChatMessage) -> Appended {
        if msg.msg_id <= self.latest.msg_id {
            return Appended::Stale;
        }
        let lane = Lane::try_from(msg.lane).unwrap_or(Lane::Normal);
        let entry = RingEntry {
            ts: msg.ts,
            msg_id: msg.msg_id,
            normal_seq: msg.normal_seq,
            lane,
            encoded: encode_message(msg),
        };
        self.latest = Cursor {
            epoch: self.latest.epoch,
            ts: msg.ts,
            msg_id: msg.msg_id,
            normal_seq: msg.normal_seq,
        };
        let evicted = match lane {
            Lane::Normal => self.normal.push(entry),
            Lane::Priority => self.priority.push(entry),
        };
        Appended::Stored { evicted }
    }

    /// Up to `limit` messages after `since` and no later than `upto` (the
    /// newest position when `None`).
    ///
    /// When more are waiting than `limit` allows, PRIORITY comes first: every
    /// priority message is returned (oldest first, `more` set if even they do
    /// not fit) and the rest of the room is filled with the newest NORMAL
    /// messages; the older NORMAL ones are counted as dropped, which is what a
    /// live chat wants from a client that fell behind.
    ///
    /// A cursor this room could not have handed out (another epoch, ahead
    /// of the room, fields that contradict each other or the messages the
    /// ring holds around it) is answered with `reset`: from the start of
    /// what the ring holds, nothing counted as dropped.
    pub fn select(&self, since: &Cursor, limit: usize, upto: Option<&Cursor>) -> Selection<'_> {
        let limit = limit.max(1);
        let upto = upto.copied().unwrap_or(self.latest);
        let reset = !self.could_have_given(since);
        let since = if reset {
            // Nothing after it can be counted; start afresh.
            Cursor::start(self.latest.epoch)
        } else {
            *since
        };
        if since.msg_id >= upto.msg_id {
            return Selection {
                entries: Vec::new(),
                cursor: since,
                dropped: 0,
                dropped_priority: 0,
                more: false,
                reset,
            };
        }
        let window = |lane: &LaneRing| lane.first_after(since.msg_id)..lane.end_at(upto.msg_id);
        let (normal_range, priority_range) = (window(&self.normal), window(&self.priority));
        let (n, p) = (normal_range.len(), priority_range.len());

        let (normal_range, priority_range, cursor, more) = if n + p <= limit {
            (normal_range, priority_range, upto, false)
        } else if p >= limit {
            let priority_range = priority_range.start..priority_range.start + limit;
            let last = &self.priority.entries[priority_range.end - 1];
            let cursor = Cursor {
                epoch: upto.epoch,
                ts: last.ts,
                msg_id: last.msg_id,
                normal_seq: last.normal_seq,
            };
            (
                normal_range.start..normal_range.start,
                priority_range,
                cursor,
                true,
            )
        } else {
            let keep = limit - p;
            (
                normal_range.end - keep..normal_range.end,
                priority_range,
                upto,
                false,
            )
        };

        let normal = self.normal.entries.range(normal_range);
        let priority = self.priority.entries.range(priority_range);
        let (returned_normal, returned_priority) = (normal.len() as u64, priority.len() as u64);
        let entries = merge_by_ts(normal, priority);

        let normal_span = if reset {
            0
        } else {
            cursor.normal_seq.saturating_sub(since.normal_seq)
        };
        let priority_span = if reset {
            0
        } else {
            cursor
                .msg_id
                .saturating_sub(since.msg_id)
                .saturating_sub(normal_span)
        };
        Selection {
            entries,
            cursor,
            dropped: normal_span.saturating_sub(returned_normal),
            dropped_priority: priority_span.saturating_sub(returned_priority),
            more,
            reset,
        }
    }

    /// Whether this room could have handed out `since`: of its epoch, not
    /// ahead of the newest position, and consistent with it and with the
    /// messages the ring holds just before and after it (the one at its
    /// msg_id, if held, must match it exactly). Where the ring no longer
    /// holds anything near it, only bounds can be checked.
    pub fn could_have_given(&self, since: &Cursor) -> bool {
        let latest = &self.latest;
        if since.epoch != latest.epoch {
            return false;
        }
        let at = |c: &Cursor| (c.msg_id, c.normal_seq);
        if !follows((0, 0), at(since)) || !follows(at(since), at(latest)) || since.ts > latest.ts {
            return false;
        }
        if since.msg_id == latest.msg_id {
            return since.ts == latest.ts;
        }
        for lane in [&self.normal, &self.priority] {
            let (earlier, later) = lane.around(since.msg_id);
            if let Some(entry) = earlier {
                if entry.msg_id == since.msg_id {
                    if entry.ts != since.ts || entry.normal_seq != since.normal_seq {
                        return false;
                    }
                } else if !follows((entry.msg_id, entry.normal_seq), at(since))
                    || entry.ts >= since.ts
                {
                    return false;
                }
            }
            if let Some(entry) = later {
                let (msg_id, ts, normal_seq) = before(entry);
                if !follows(at(since), (msg_id, normal_seq)) || since.ts >= ts {
                    return false;
                }
            }
        }
        true
    }

    /// A round's inline delta: `head` (whose `latest` bounds it) carrying
    /// what comes after `since`, with the selection it holds; `None` when it
    /// cannot be inlined (another epoch, more than `max_messages`, or over
    /// `inline_max` bytes), and the member is notified plainly instead.
    pub fn delta_frame(
        &self,
        head: &Notify,
        since: &Cursor,
        max_messages: usize,
        inline_max: usize,
    ) -> Option<(Bytes, Selection<'_>)> {
        if inline_max == 0 {
            return None;
        }
        let selection = self.select(since, max_messages, head.latest.as_ref());
        if selection.reset || selection.more || selection.encoded_len() > inline_max {
            return None;
        }
        let delta = Delta {
            since: Some(*since),
            messages: Vec::new(),
            dropped: selection.dropped,
            dropped_priority: selection.dropped_priority,
        };
        Some((notify_frame(head, &delta, selection.encoded()), selection))
    }

    /// The answer to a Pull of up to `limit` messages after `since`, with the
    /// selection it carries.
    pub fn pull_frame(
        &self,
        request_id: u64,
        room_id: &str,
        since: &Cursor,
        limit: usize,
    ) -> (Bytes, Selection<'_>) {
        let selection = self.select(since, limit, None);
        let head = PullResult {
            room_id: room_id.to_owned(),
            messages: Vec::new(),
            dropped: selection.dropped,
            dropped_priority: selection.dropped_priority,
            cursor: Some(selection.cursor),
            more: selection.more,
            reset: selection.reset,
        };
        let frame = pull_result_frame(request_id, &head, selection.encoded());
        (frame, selection)
    }

    /// The newest `n` messages of both lanes, oldest first (a joiner's backfill).
    pub fn recent(&self, n: usize) -> Vec<&RingEntry> {
        let mut normal = self.normal.entries.iter().rev().peekable();
        let mut priority = self.priority.entries.iter().rev().peekable();
        let mut newest_first = Vec::with_capacity(n);
        while newest_first.len() < n {
            let next = match (normal.peek(), priority.peek()) {
                (Some(a), Some(b)) if a.ts >= b.ts => normal.next(),
                (Some(_), Some(_)) | (None, Some(_)) => priority.next(),
                (Some(_), None) => normal.next(),
                (None, None) => None,
            };
            match next {
                Some(entry) => newest_first.push(entry),
                None => break,
            }
        }
        newest_first.reverse();
        newest_first
    }

    fn lane(&self, lane: Lane) -> &LaneRing {
        match lane {
            Lane::Normal => &self.normal,
            Lane::Priority => &self.priority,
        }
    }
}

fn merge_by_ts<'a>(
    normal: impl ExactSizeIterator<Item = &'a RingEntry>,
    priority: impl ExactSizeIterator<Item = &'a RingEntry>,
) -> Vec<&'a RingEntry> {
    let mut out = Vec::with_capacity(normal.len() + priority.len());
    let mut normal = normal.peekable();
    let mut priority = priority.peekable();
    loop {
        let next = match (normal.peek(), priority.peek()) {
            (Some(a), Some(b)) if a.ts <= b.ts => normal.next(),
            (Some(_), Some(_)) | (None, Some(_)) => priority.next(),
            (Some(_), None) => normal.next(),
            (None, None) => return out,
        };
        out.extend(next);
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
