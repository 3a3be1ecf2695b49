//! What the harness counts, and how counts from many workers add up.
//!
//! Accounting is per room and per lane: senders count what the room accepted
//! (from SendAcks), receivers count what reached them and what the server
//! said they will never get (`dropped`). Every receiver of a room is owed
//! every message the room accepted after it joined, so
//! `lost = accepted × receivers − delivered − dropped`, which must be 0 for
//! PRIORITY and is 0 for NORMAL unless something is wrong.
//!
//! Latency is end to end: the sender stamps the payload with the wall clock,
//! the receiver subtracts. Histograms are HDR (1 µs to 60 s, 3 significant
//! digits), merged across workers without loss of precision.

use std::collections::BTreeMap;

use base64::Engine as _;
use chatroom_proto::v1::ErrorCode;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Lowest and highest latency recorded, µs.
const LATENCY_RANGE: (u64, u64) = (1, 60_000_000);

/// The two lanes, indexed by `Lane as usize`.
pub const LANES: usize = 2;

/// Counts of one room, from one worker or merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTally {
    /// Messages the room accepted, per lane (from SendAcks).
    pub accepted: [u64; LANES],
    /// Sends refused, by error code name.
    pub refused: BTreeMap<String, u64>,
    /// The highest msg_id the room acked to these senders.
    pub last_msg_id: u64,
    /// Receivers in the room.
    pub receivers: u64,
    /// Messages that reached receivers, per lane.
    pub delivered: [u64; LANES],
    /// Messages receivers were told they will never get, per lane.
    pub dropped: [u64; LANES],
    /// Messages sent again to a receiver that had them (at or below its
    /// cursor), per lane.
    #[serde(default)]
    pub redundant: [u64; LANES],
    /// Messages a receiver got out of order (`msg_id` or `ts` not above
    /// the one before), per lane.
    #[serde(default)]
    pub disordered: [u64; LANES],
    /// Messages whose `msg_id` a receiver saw on another message, per lane.
    #[serde(default)]
    pub conflicting: [u64; LANES],
}

impl RoomTally {
    /// Counts a send the room refused with error `code`.
    pub fn refuse(&mut self, code: i32) {
        let name = ErrorCode::try_from(code).map_or("UNKNOWN", |c| c.as_str_name());
        *self
            .refused
            .entry(name.trim_start_matches("ERROR_CODE_").to_owned())
            .or_default() += 1;
    }

    /// Adds `other` (the same room seen by another worker).
    pub fn merge(&mut self, other: &RoomTally) {
        for lane in 0..LANES {
            self.accepted[lane] += other.accepted[lane];
            self.delivered[lane] += other.delivered[lane];
            self.dropped[lane] += other.dropped[lane];
            self.redundant[lane] += other.redundant[lane];
            self.disordered[lane] += other.disordered[lane];
            self.conflicting[lane] += other.conflicting[lane];
        }
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
        self.last_msg_id = self.last_msg_id.max(other.last_msg_id);
        self.receivers += other.receivers;
    }
}

/// One lane's totals over every room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneTotals {
    /// Messages accepted.
    pub accepted: u64,
    /// Deliveries owed: each room's accepted messages times its receivers.
    pub expected: u64,
    /// Deliveries made.
    pub delivered: u64,
    /// Deliveries the server reported dropped by design.
    pub dropped: u64,
    /// `expected − delivered − dropped`: deliveries that went missing.
    pub lost: i64,
    /// Messages sent again to receivers that had them.
    #[serde(default)]
    pub redundant: u64,
    /// Messages receivers got out of order.
    #[serde(default)]
    pub disordered: u64,
    /// Messages under a `msg_id` that receivers saw on another message.
    #[serde(default)]
    pub conflicting: u64,
}

/// Counts over every room, from one worker or merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Per room id.
    pub rooms: BTreeMap<String, RoomTally>,
}

impl Tally {
    /// The tally of `room`, created empty if needed.
    pub fn room(&mut self, room: &str) -> &mut RoomTally {
        if !self.rooms.contains_key(room) {
            self.rooms.insert(room.to_owned(), RoomTally::default());
        }
        // Inserted just above when it was missing.
        self.rooms.get_mut(room).expect("room tally exists")
    }

    /// Adds another worker's tally.
    pub fn merge(&mut self, other: &Tally) {
        for (room, tally) in &other.rooms {
            self.room(room).merge(tally);
        }
    }

    /// Totals of `lane` (0 NORMAL, 1 PRIORITY) over every room.
    pub fn lane(&self, lane: usize) -> LaneTotals {
        let mut totals = LaneTotals::default();
        for room in self.rooms.values() {
            totals.accepted += room.accepted[lane];
            totals.expected += room.accepted[lane] * room.receivers;
            totals.delivered += room.delivered[lane];
            totals.dropped += room.dropped[lane];
            totals.redundant += room.redundant[lane];
            totals.disordered += room.disordered[lane];
            totals.conflicting += room.conflicting[lane];
        }
        totals.lost = totals.expected as i64 - totals.delivered as i64 - totals.dropped as i64;
        totals
    }

    /// Sends refused, by error code, over every room.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        let mut refused = BTreeMap::new();
        for room in self.rooms.values() {
            for (code, n) in &room.refused {
                *refused.entry(code.clone()).or_default() += n;
            }
        }
        refused
    }

    /// Deliveries of both lanes.
    pub fn delivered(&self) -> u64 {
        self.rooms
            .values()
            .map(|r| r.delivered.iter().sum::<u64>())
            .sum()
    }
}

/// End-to-end latencies, µs.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Constant, valid bounds: creation cannot fail.
        Self(
            Histogram::new_with_bounds(LATENCY_RANGE.0, LATENCY_RANGE.1, 3)
                .expect("valid histogram bounds"),
        )
    }
}

impl Latency {
    /// Records one latency; out-of-range values are clamped.
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Records the same latency `count` times (one message reaching many
    /// recipients at once).
    pub fn record_n(&mut self, micros: u64, count: u64) {
        self.0
            .saturating_record_n(micros.clamp(LATENCY_RANGE.0, LATENCY_RANGE.1), count);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: addition cannot fail.
        self.0.add(&other.0).expect("histograms share their bounds");
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `quantile` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// The largest value, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1_000.0
    }

    /// The usual percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile_ms(0.50),
            p90: self.quantile_ms(0.90),
            p99: self.quantile_ms(0.99),
            p999: self.quantile_ms(0.999),
            max: self.max_ms(),
        }
    }

    /// Compact text form (HDR V2, base64) for a worker's report line.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        // Writing to a Vec cannot fail, and the histogram is well formed.
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("histogram serialises into memory");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("latency histogram: {e}"))?;
        let histogram: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("latency histogram: {e:?}"))?;
        let mut latency = Self::default();
        latency
            .0
            .add(&histogram)
            .map_err(|e| format!("latency histogram: {e:?}"))?;
        Ok(latency)
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_what_no_receiver_got_or_was_told_about() {
        let mut tally = Tally::default();
        let room = tally.room("giant");
        room.accepted = [100, 3];
        room.receivers = 10;
        room.delivered = [900, 30];
        room.dropped = [100, 0];
        let normal = tally.lane(0);
        assert_eq!((normal.expected, normal.lost), (1_000, 0));
        let priority = tally.lane(1);
        assert_eq!(
            (priority.accepted, priority.expected, priority.lost),
            (3, 30, 0)
        );

        tally.room("giant").delivered[1] -= 2;
        assert_eq!(tally.lane(1).lost, 2);
    }

    #[test]
    fn worker_tallies_add_up_per_room() {
        // Worker A sends and receives in "a"; worker B only receives, in
        // "a" and "b".
        let mut a = Tally::default();
        let room = a.room("a");
        room.accepted = [10, 1];
        room.last_msg_id = 11;
        room.receivers = 2;
        room.delivered = [20, 2];
        *room.refused.entry("RATE_LIMITED".into()).or_default() += 5;
        let mut b = Tally::default();
        b.room("a").receivers = 3;
        b.room("a").delivered = [25, 3];
        b.room("a").dropped = [5, 0];
        b.room("b").receivers = 1;

        let mut total = Tally::default();
        total.merge(&a);
        total.merge(&b);
        let merged = &total.rooms["a"];
        assert_eq!(merged.receivers, 5);
        assert_eq!(merged.last_msg_id, 11);
        assert_eq!(
            total.lane(0),
            LaneTotals {
                accepted: 10,
                expected: 50,
                delivered: 45,
                dropped: 5,
                lost: 0,
                ..LaneTotals::default()
            }
        );
        assert_eq!(total.lane(1).lost, 0);
        assert_eq!(total.refused()["RATE_LIMITED"], 5);
        assert_eq!(total.delivered(), 50);
        // Merging is order-independent.
        let mut reverse = Tally::default();
        reverse.merge(&b);
        reverse.merge(&a);
        assert_eq!(reverse, total);
    }

    #[test]
    fn histograms_merge_exactly_and_survive_the_wire() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for v in 1..=1_000 {
            a.record(v * 1_000);
        }
        for v in 1_001..=2_000 {
            b.record(v * 1_000);
        }
        b.record(0);
        b.record(u64::MAX);
        let b = Latency::decode(&b.encode()).unwrap();
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!(all.count(), 2_002);
        let p = all.percentiles();
        assert!((p.p50 - 1_000.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99 - 1_980.0).abs() <= 2.0, "{p:?}");
        assert!(
            p.max >= 60_000.0 * 0.999,
            "clamped to the top of the range: {p:?}"
        );
        let json = serde_json::to_string(&all).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back.percentiles(), p);
        assert!(Latency::decode("not base64!").is_err());
    }
}
