//! The history checker: what every receiver of a room saw, checked as it
//! arrives. Per receiver, the messages it takes in must climb strictly in
//! `msg_id` and in `ts`; per room, one `msg_id` of a stream must always be
//! the same message (its `ts` and its sender's stamp), whoever received
//! it: two owners stamping one room at once would give one `msg_id` to two
//! messages. A message a receiver is sent again (at or below its cursor,
//! as an overlapping delta does) is counted as redundant, not taken in.

use std::collections::BTreeMap;

use chatroom_proto::v1::Cursor;

use super::wire::Seen;

/// How many of a room's newest messages are remembered per stream, to
/// bound the checker's memory in long runs.
const WINDOW: u64 = 1 << 16;

/// What a room's messages were, as its receivers (of one worker) saw them.
#[derive(Debug, Default)]
pub(crate) struct RoomHistory {
    /// (epoch, msg_id) -> the message's identity.
    seen: BTreeMap<(u64, u64), Identity>,
}

/// What tells two messages apart: the room's stamp and the sender's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    ts: u64,
    stamp: Option<u64>,
}

/// What one batch a receiver took in broke, by lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Messages at or below the receiver's cursor, sent again.
    pub(crate) redundant: [u64; 2],
    /// Messages out of order for the receiver (`msg_id` or `ts` not above
    /// the one before).
    pub(crate) disordered: [u64; 2],
    /// Messages whose `msg_id` another receiver saw on another message.
    pub(crate) conflicting: [u64; 2],
}

impl RoomHistory {
    /// Checks `messages`, a batch a receiver at `cursor` got (in the
    /// stream `cursor.epoch`), oldest first.
    pub(crate) fn check(&mut self, cursor: Cursor, messages: &[Seen]) -> Verdict {
        let mut verdict = Verdict::default();
        let (mut last_id, mut last_ts) = (cursor.msg_id, cursor.ts);
        for seen in messages {
            let lane = seen.lane as usize;
            if seen.msg_id <= cursor.msg_id {
                verdict.redundant[lane] += 1;
                continue;
            }
            if seen.msg_id <= last_id || seen.ts <= last_ts {
                verdict.disordered[lane] += 1;
            }
            (last_id, last_ts) = (seen.msg_id.max(last_id), seen.ts.max(last_ts));
            let identity = Identity {
                ts: seen.ts,
                stamp: seen.stamp,
            };
            let known = *self
                .seen
                .entry((cursor.epoch, seen.msg_id))
                .or_insert(identity);
            if known != identity {
                verdict.conflicting[lane] += 1;
            }
        }
        self.forget_before(cursor.epoch, (last_id + 1).saturating_sub(WINDOW));
        verdict
    }

    fn forget_before(&mut self, epoch: u64, msg_id: u64) {
        while let Some((&(oldest_epoch, oldest_id), _)) = self.seen.first_key_value() {
            if oldest_epoch > epoch || (oldest_epoch == epoch && oldest_id >= msg_id) {
                break;
            }
            self.seen.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use chatroom_proto::v1::Lane;

    use super::*;

    fn seen(msg_id: u64, ts: u64, stamp: u64) -> Seen {
        Seen {
            msg_id,
            ts,
            lane: Lane::Normal,
            stamp: Some(stamp),
        }
    }

    fn at(msg_id: u64, ts: u64) -> Cursor {
        Cursor {
            epoch: 1,
            ts,
            msg_id,
            normal_seq: msg_id,
        }
    }

    #[test]
    fn a_clean_history_breaks_nothing() {
        let mut room = RoomHistory::default();
        let batch = [seen(1, 10, 100), seen(2, 11, 101)];
        assert_eq!(room.check(at(0, 0), &batch), Verdict::default());
        // Another receiver sees the same messages.
        assert_eq!(room.check(at(0, 0), &batch), Verdict::default());
    }

    #[test]
    fn overlaps_are_redundant_and_not_taken_in() {
        let mut room = RoomHistory::default();
        let verdict = room.check(at(2, 11), &[seen(2, 11, 101), seen(3, 12, 102)]);
        assert_eq!(verdict.redundant, [1, 0]);
        assert_eq!(verdict.disordered, [0, 0]);
    }

    #[test]
    fn out_of_order_messages_are_caught() {
        let mut room = RoomHistory::default();
        let verdict = room.check(at(0, 0), &[seen(2, 11, 101), seen(1, 10, 100)]);
        assert_eq!(verdict.disordered, [1, 0], "msg_id went back");
        let verdict = room.check(at(2, 11), &[seen(3, 11, 102)]);
        assert_eq!(verdict.disordered, [1, 0], "ts did not climb");
    }

    #[test]
    fn one_msg_id_on_two_messages_is_a_conflict() {
        let mut room = RoomHistory::default();
        room.check(at(0, 0), &[seen(1, 10, 100)]);
        let verdict = room.check(at(0, 0), &[seen(1, 10, 999)]);
        assert_eq!(verdict.conflicting, [1, 0]);
        // A new stream may use the msg_id again.
        let new_stream = Cursor {
            epoch: 2,
            ..at(0, 0)
        };
        assert_eq!(
            room.check(new_stream, &[seen(1, 20, 555)]),
            Verdict::default()
        );
    }

    #[test]
    fn memory_is_bounded_to_a_window() {
        let mut room = RoomHistory::default();
        let batch: Vec<Seen> = (1..=WINDOW + 10).map(|id| seen(id, id, id)).collect();
        room.check(at(0, 0), &batch);
        assert_eq!(room.seen.len() as u64, WINDOW);
    }
}
