//! What happened downstream of a room on this node, for its owner's room
//! stats: deliveries and gaps per round or pull, ring evictions, kicks.
//! Counted without a lock by whoever delivers, taken about once a second.

use std::sync::atomic::{AtomicU64, Ordering};

use chatroom_proto::cluster::v1::RoomReport;
use chatroom_proto::v1::{Cursor, Lane};

use crate::ring::{RoomRing, Selection};

/// Entries a change to a ring evicted from each lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) normal: u64,
    pub(crate) priority: u64,
}

impl Evicted {
    /// What `ring` has evicted in its life.
    pub(crate) fn so_far(ring: &RoomRing) -> Self {
        Self {
            normal: ring.evicted(Lane::Normal),
            priority: ring.evicted(Lane::Priority),
        }
    }

    /// What `ring` has evicted since it had evicted `before`.
    pub(crate) fn since(before: Self, ring: &RoomRing) -> Self {
        let now = Self::so_far(ring);
        Self {
            normal: now.normal - before.normal,
            priority: now.priority - before.priority,
        }
    }
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

    /// What a selection of `entries` (message number and lane) up to `to`
    /// hands a member that had been handed everything up to `from` (same
    /// stream): only the messages after `from`, and the gaps after it.
    pub(crate) fn beyond(entries: &[(u64, Lane)], from: Cursor, to: Cursor) -> Self {
        let fresh = |lane| {
            entries
                .iter()
                .filter(|&&(msg_id, of)| msg_id > from.msg_id && of == lane)
                .count() as u64
        };
        let (normal, priority) = (fresh(Lane::Normal), fresh(Lane::Priority));
        let normal_span = to.normal_seq.saturating_sub(from.normal_seq);
        let priority_span = to
            .msg_id
            .saturating_sub(from.msg_id)
            .saturating_sub(normal_span);
        Self {
            messages: normal + priority,
            skipped_normal: normal_span.saturating_sub(normal),
            skipped_priority: priority_span.saturating_sub(priority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(msg_id: u64, normal_seq: u64) -> Cursor {
        Cursor {
            epoch: 1,
            ts: msg_id,
            msg_id,
            normal_seq,
        }
    }

    /// Messages 1–10; 4 and 8 are PRIORITY. A pull from 0 handed 6–10
    /// (the ring lost 1–5).
    const PULLED: [(u64, Lane); 5] = [
        (6, Lane::Normal),
        (7, Lane::Normal),
        (8, Lane::Priority),
        (9, Lane::Normal),
        (10, Lane::Normal),
    ];

    #[test]
    fn a_pull_counts_only_what_lies_beyond_what_the_member_was_handed() {
        let to = at(10, 8);
        // Handed nothing before: all of it, and the gap 1–5 (one PRIORITY).
        assert_eq!(
            Taken::beyond(&PULLED, at(0, 0), to),
            Taken {
                messages: 5,
                skipped_normal: 4,
                skipped_priority: 1,
            }
        );
        // Handed up to 7 already (a delta): 8–10 only, no gap.
        assert_eq!(
            Taken::beyond(&PULLED, at(7, 6), to),
            Taken {
                messages: 3,
                skipped_normal: 0,
                skipped_priority: 0,
            }
        );
        // Handed everything: nothing counts again.
        assert_eq!(Taken::beyond(&PULLED, to, to), Taken::default());
    }
}
