//! What a room has done since its state was created: counters kept on the hot
//! path as plain integers, and the snapshot the admin API serves.

use std::collections::BTreeMap;

use chatroom_proto::cluster::v1::RoomReport;
use chatroom_proto::v1::{Cursor, ErrorCode, Lane};
use serde::ser::{SerializeStruct, Serializer};

/// One slot per `ErrorCode` value.
const CODES: usize = ErrorCode::LAST as usize + 1;

/// Seconds a rate is averaged over.
pub const RATE_WINDOW_S: u64 = 10;

/// Events per second over the last [`RATE_WINDOW_S`] seconds (the current
/// one included): one bucket per second of a monotonic clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RateWindow {
    buckets: [u64; RATE_WINDOW_S as usize],
    /// The second the newest bucket counts.
    newest: u64,
}

impl RateWindow {
    pub(crate) fn add(&mut self, now_s: u64, events: u64) {
        if now_s > self.newest {
            let stale = (now_s - self.newest).min(RATE_WINDOW_S);
            for second in now_s - stale + 1..=now_s {
                self.buckets[Self::slot(second)] = 0;
            }
            self.newest = now_s;
        }
        // A time before the newest bucket (never, with a monotonic clock)
        // counts in the newest one. Counts come from msg-svc nodes' reports,
        // so they saturate rather than overflow.
        let bucket = &mut self.buckets[Self::slot(self.newest)];
        *bucket = bucket.saturating_add(events);
    }

    /// The average per second over the window ending at `now_s`.
    pub(crate) fn per_s(&self, now_s: u64) -> f64 {
        let events: u64 = (0..RATE_WINDOW_S)
            .filter_map(|age| self.newest.checked_sub(age))
            .filter(|&second| second + RATE_WINDOW_S > now_s)
            .map(|second| self.buckets[Self::slot(second)])
            .fold(0, u64::saturating_add);
        events as f64 / RATE_WINDOW_S as f64
    }

    fn slot(second: u64) -> usize {
        // The remainder is below RATE_WINDOW_S.
        (second % RATE_WINDOW_S) as usize
    }
}

/// Running counters of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) accepted_normal: u64,
    pub(crate) accepted_priority: u64,
    pub(crate) duplicates: u64,
    /// Accepted messages the word filter masked.
    pub(crate) masked: u64,
    /// Accepted messages whose payload the moderation hook replaced.
    pub(crate) hook_replaced: u64,
    /// Messages accepted because the hook failed and the room fails open.
    pub(crate) hook_failed_open: u64,
    rejected: [u64; CODES],
    pub(crate) broadcast_frames: u64,
    pub(crate) broadcast_messages: u64,
    /// Accepted messages, for the rate in.
    pub(crate) accepted_rate: RateWindow,
    /// What the nodes reported, summed.
    pub(crate) downstream: RoomReport,
    /// Deliveries the nodes reported, for the rate out.
    pub(crate) delivered_rate: RateWindow,
}

impl Counters {
    pub(crate) fn accepted(&mut self, lane: Lane, now_s: u64) {
        match lane {
            Lane::Normal => self.accepted_normal += 1,
            Lane::Priority => self.accepted_priority += 1,
        }
        self.accepted_rate.add(now_s, 1);
    }

    /// Adds a node's report of what happened downstream.
    pub(crate) fn reported(&mut self, report: &RoomReport, now_s: u64) {
        let total = &mut self.downstream;
        total.delivered = total.delivered.saturating_add(report.delivered);
        total.skipped_normal = total.skipped_normal.saturating_add(report.skipped_normal);
        total.skipped_priority = total
            .skipped_priority
            .saturating_add(report.skipped_priority);
        total.evicted_normal = total.evicted_normal.saturating_add(report.evicted_normal);
        total.evicted_priority = total
            .evicted_priority
            .saturating_add(report.evicted_priority);
        total.slow_consumer_kicks = total
            .slow_consumer_kicks
            .saturating_add(report.slow_consumer_kicks);
        self.delivered_rate.add(now_s, report.delivered);
    }

    pub(crate) fn rejected(&mut self, code: i32) {
        let slot = usize::try_from(code).ok().filter(|&c| c < CODES);
        self.rejected[slot.unwrap_or(ErrorCode::Unspecified as usize)] += 1;
    }

    /// Non-zero rejection counts keyed by the code's name in lower case
    /// without its prefix (`rate_limited`).
    pub(crate) fn rejected_by_code(&self) -> BTreeMap<String, u64> {
        self.rejected
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(code, &n)| {
                let name = i32::try_from(code)
                    .ok()
                    .and_then(|code| ErrorCode::try_from(code).ok())
                    .unwrap_or(ErrorCode::Unspecified)
                    .as_str_name();
                let name = name.strip_prefix("ERROR_CODE_").unwrap_or(name);
                (name.to_ascii_lowercase(), n)
            })
            .collect()
    }
}

/// A snapshot of one room for operators. Counts run from when the room
/// came into this room service's memory; rates are averages over the last
/// [`RATE_WINDOW_S`] seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoomStats {
    /// The room.
    pub room_id: String,
    /// Distinct users present on some node.
    pub members: u64,
    /// msg-svc nodes subscribed to the room.
    pub nodes: u64,
    /// Messages accepted per second.
    pub in_per_s: f64,
    /// Messages delivered to members per second, as the nodes report.
    pub out_per_s: f64,
    /// Messages delivered to members (one per member per message), as the
    /// nodes report.
    pub delivered: u64,
    /// Messages members were told they missed because they fell behind
    /// (dropped by design), by lane, summed over members.
    pub skipped_normal: u64,
    /// As `skipped_normal`, in the PRIORITY lane (only when a priority ring
    /// is too small for a member's gap).
    pub skipped_priority: u64,
    /// Ring entries the nodes evicted from the NORMAL lane, summed over nodes.
    pub evicted_normal: u64,
    /// Ring entries the nodes evicted from the PRIORITY lane.
    pub evicted_priority: u64,
    /// Members kicked as slow consumers.
    pub slow_consumer_kicks: u64,
    /// Messages accepted into the NORMAL lane.
    pub accepted_normal: u64,
    /// Messages accepted into the PRIORITY lane (notices included).
    pub accepted_priority: u64,
    /// Retries answered with their original ack.
    pub duplicates: u64,
    /// Accepted messages the word filter masked words in.
    pub masked: u64,
    /// Sends waiting for the moderation hook's verdict now.
    pub held: u64,
    /// Accepted messages whose payload the moderation hook replaced.
    pub hook_replaced: u64,
    /// Messages accepted without a verdict because the hook failed and the
    /// room fails open.
    pub hook_failed_open: u64,
    /// Refused sends by error code (`rate_limited`, `muted`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Broadcast frames sent, one per subscribed node per batch.
    pub broadcast_frames: u64,
    /// Message copies sent in broadcasts, summed over nodes.
    pub broadcast_messages: u64,
    /// Messages in the room's history.
    pub history: u64,
    /// Mutes still running.
    pub mutes: u64,
    /// Banned users.
    pub bans: u64,
    /// Whitelisted users.
    pub whitelist: u64,
    /// The room's newest position.
    #[serde(serialize_with = "cursor_fields")]
    pub latest: Cursor,
}

/// One line of the busiest rooms.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoomSummary {
    /// The room.
    pub room_id: String,
    /// Distinct users present on some node.
    pub members: u64,
    /// msg-svc nodes subscribed to the room.
    pub nodes: u64,
    /// Messages accepted per second.
    pub in_per_s: f64,
    /// Messages delivered to members per second.
    pub out_per_s: f64,
}

/// What "busiest" means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Messages accepted per second.
    #[default]
    InPerS,
    /// Messages delivered per second.
    OutPerS,
    /// Members.
    Members,
}

impl RankBy {
    /// Orders `a` before `b` when it is busier; ties go by member count,
    /// then by room id.
    pub fn busier(self, a: &RoomSummary, b: &RoomSummary) -> std::cmp::Ordering {
        let key = |room: &RoomSummary| match self {
            Self::InPerS => room.in_per_s,
            Self::OutPerS => room.out_per_s,
            Self::Members => room.members as f64,
        };
        key(b)
            .total_cmp(&key(a))
            .then(b.members.cmp(&a.members))
            .then_with(|| a.room_id.cmp(&b.room_id))
    }

    /// Keeps the `limit` busiest of `rooms`, busiest first.
    pub fn top(self, rooms: &mut Vec<RoomSummary>, limit: usize) {
        if limit == 0 {
            rooms.clear();
            return;
        }
        if rooms.len() > limit {
            rooms.select_nth_unstable_by(limit - 1, |a, b| self.busier(a, b));
            rooms.truncate(limit);
        }
        rooms.sort_unstable_by(|a, b| self.busier(a, b));
    }
}

fn cursor_fields<S: Serializer>(cursor: &Cursor, serializer: S) -> Result<S::Ok, S::Error> {
    let mut fields = serializer.serialize_struct("Cursor", 4)?;
    fields.serialize_field("epoch", &cursor.epoch)?;
    fields.serialize_field("ts", &cursor.ts)?;
    fields.serialize_field("msg_id", &cursor.msg_id)?;
    fields.serialize_field("normal_seq", &cursor.normal_seq)?;
    fields.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(room_id: &str, members: u64, in_per_s: f64) -> RoomSummary {
        RoomSummary {
            room_id: room_id.into(),
            members,
            nodes: 1,
            in_per_s,
            out_per_s: in_per_s * members as f64,
        }
    }

    #[test]
    fn the_busiest_rooms_come_first() {
        let all = vec![
            summary("quiet", 500, 0.5),
            summary("loud", 10, 90.0),
            summary("big", 5_000, 1.0),
            summary("tie-b", 7, 3.0),
            summary("tie-a", 7, 3.0),
            summary("tie-more", 8, 3.0),
        ];
        let ids =
            |rooms: &[RoomSummary]| rooms.iter().map(|r| r.room_id.clone()).collect::<Vec<_>>();
        let mut rooms = all.clone();
        RankBy::InPerS.top(&mut rooms, 4);
        assert_eq!(ids(&rooms), ["loud", "tie-more", "tie-a", "tie-b"]);
        let mut rooms = all.clone();
        RankBy::Members.top(&mut rooms, 2);
        assert_eq!(ids(&rooms), ["big", "quiet"]);
        let mut rooms = all.clone();
        RankBy::OutPerS.top(&mut rooms, 100);
        assert_eq!(ids(&rooms)[..2], ["big", "loud"]);
        assert_eq!(rooms.len(), 6);
        RankBy::OutPerS.top(&mut rooms, 0);
        assert!(rooms.is_empty());
    }

    #[test]
    fn rates_average_the_last_seconds() {
        let mut rate = RateWindow::default();
        assert_eq!(rate.per_s(0), 0.0);
        rate.add(100, 30);
        rate.add(100, 20);
        rate.add(105, 50);
        assert_eq!(rate.per_s(105), 10.0);
        // Second 100 leaves the window at 110, second 105 at 115.
        assert_eq!(rate.per_s(109), 10.0);
        assert_eq!(rate.per_s(110), 5.0);
        assert_eq!(rate.per_s(115), 0.0);
        // Buckets that went stale are reused from zero.
        rate.add(112, 7);
        assert_eq!(rate.per_s(112), 5.7);
        rate.add(1_000, 1);
        assert_eq!(rate.per_s(1_000), 0.1);
    }

    /// Found while writing the cluster_frames fuzz target, and shown with
    /// its input of two reports counting u64::MAX deliveries in one second:
    /// the window's bucket and its sum overflowed (a panic in a debug build,
    /// a wrapped rate in a release build).
    #[test]
    fn reported_counts_saturate() {
        let mut rate = RateWindow::default();
        rate.add(7, u64::MAX);
        rate.add(7, u64::MAX);
        rate.add(8, u64::MAX);
        assert_eq!(rate.per_s(8), u64::MAX as f64 / RATE_WINDOW_S as f64);
    }

    #[test]
    fn rejections_are_keyed_by_short_names() {
        let mut counters = Counters::default();
        counters.rejected(ErrorCode::RateLimited as i32);
        counters.rejected(ErrorCode::RateLimited as i32);
        counters.rejected(ErrorCode::Muted as i32);
        counters.rejected(77);
        let by_code = counters.rejected_by_code();
        assert_eq!(by_code.len(), 3);
        assert_eq!(by_code["rate_limited"], 2);
        assert_eq!(by_code["muted"], 1);
        assert_eq!(by_code["unspecified"], 1);
    }
}
