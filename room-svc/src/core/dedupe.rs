//! Remembers the acks of recently accepted messages by `(sender,
//! client_msg_id)`, so a sender's retry gets the original ack instead of a
//! second copy of the message. Bounded in time and in entries (oldest out
//! first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chatroom_proto::v1::SendAck;

/// How long an ack is remembered, in nanoseconds.
pub const DEDUPE_WINDOW_NS: u64 = 60 * 1_000_000_000;
/// Most acks remembered per room.
pub const DEDUPE_CAPACITY: usize = 4096;

type Key = (Arc<str>, u64);

#[derive(Debug)]
struct Remembered {
    ack: SendAck,
    at_ns: u64,
    /// Which insertion this is, so a stale entry of `order` cannot evict a
    /// newer ack for the same key.
    seq: u64,
}

/// The acks of one room.
#[derive(Debug)]
pub struct Dedupe {
    acks: HashMap<Key, Remembered>,
    /// Insertions, oldest first. Never longer than the capacity; may hold
    /// entries already replaced in `acks`.
    order: VecDeque<(Key, u64)>,
    next_seq: u64,
    window_ns: u64,
    capacity: usize,
}

impl Default for Dedupe {
    fn default() -> Self {
        Self::new()
    }
}

impl Dedupe {
    /// The room default: [`DEDUPE_CAPACITY`] acks for [`DEDUPE_WINDOW_NS`].
    pub fn new() -> Self {
        Self::with_limits(DEDUPE_CAPACITY, DEDUPE_WINDOW_NS)
    }

    /// At most `capacity` (at least 1) acks, each for `window_ns`.
    pub fn with_limits(capacity: usize, window_ns: u64) -> Self {
        Self {
            acks: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            window_ns,
            capacity: capacity.max(1),
        }
    }

    /// Acks remembered (some may have expired but not been dropped yet).
    pub fn len(&self) -> usize {
        self.acks.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// The ack of the message `sender` sent as `client_msg_id` within the
    /// window before `now_ns` (monotonic). `client_msg_id` 0 never matches.
    pub fn get(&mut self, sender: &str, client_msg_id: u64, now_ns: u64) -> Option<SendAck> {
        if client_msg_id == 0 {
            return None;
        }
        self.expire(now_ns);
        let key: Key = (sender.into(), client_msg_id);
        self.acks
            .get(&key)
            .filter(|entry| !self.expired(entry.at_ns, now_ns))
            .map(|entry| entry.ack)
    }

    /// Remembers the ack of an accepted message (not for `client_msg_id` 0).
    pub fn remember(&mut self, sender: &str, client_msg_id: u64, ack: SendAck, now_ns: u64) {
        if client_msg_id == 0 {
            return;
        }
        self.expire(now_ns);
        while self.order.len() >= self.capacity {
            self.evict_oldest();
        }
        let key: Key = (sender.into(), client_msg_id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key.clone(), seq));
        self.acks.insert(
            key,
            Remembered {
                ack,
                at_ns: now_ns,
                seq,
            },
        );
    }

    fn expired(&self, at_ns: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(at_ns) >= self.window_ns
    }

    /// Drops expired acks from the old end.
    fn expire(&mut self, now_ns: u64) {
        while let Some((key, seq)) = self.order.front() {
            let stale = self
                .acks
                .get(key)
                .is_none_or(|entry| entry.seq != *seq || self.expired(entry.at_ns, now_ns));
            if !stale {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((key, seq)) = self.order.pop_front()
            && self.acks.get(&key).is_some_and(|entry| entry.seq == seq)
        {
            self.acks.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_proto::v1::Lane;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn ack(msg_id: u64) -> SendAck {
        SendAck {
            msg_id,
            ts: msg_id * 10,
            lane: Lane::Normal as i32,
        }
    }

    #[test]
    fn a_retry_within_the_window_hits() {
        let mut dedupe = Dedupe::new();
        assert_eq!(dedupe.get("alice", 7, 0), None);
        dedupe.remember("alice", 7, ack(1), 0);
        assert_eq!(dedupe.get("alice", 7, 59 * S), Some(ack(1)));
        // Another sender or another id misses.
        assert_eq!(dedupe.get("bob", 7, S), None);
        assert_eq!(dedupe.get("alice", 8, S), None);
    }

    #[test]
    fn id_zero_is_never_deduplicated() {
        let mut dedupe = Dedupe::new();
        dedupe.remember("alice", 0, ack(1), 0);
        assert_eq!(dedupe.get("alice", 0, 0), None);
        assert!(dedupe.is_empty());
    }

    #[test]
    fn acks_expire_after_the_window() {
        let mut dedupe = Dedupe::new();
        dedupe.remember("alice", 7, ack(1), 10 * S);
        dedupe.remember("alice", 8, ack(2), 40 * S);
        assert_eq!(dedupe.get("alice", 7, 70 * S - 1), Some(ack(1)));
        assert_eq!(dedupe.get("alice", 7, 70 * S), None);
        assert_eq!(dedupe.len(), 1, "the expired ack was dropped");
        assert_eq!(dedupe.get("alice", 8, 70 * S), Some(ack(2)));
        // After expiry the id is free to be used again.
        dedupe.remember("alice", 7, ack(3), 70 * S);
        assert_eq!(dedupe.get("alice", 7, 71 * S), Some(ack(3)));
    }

    #[test]
    fn capacity_evicts_the_oldest_first() {
        let mut dedupe = Dedupe::with_limits(3, DEDUPE_WINDOW_NS);
        for id in 1..=3 {
            dedupe.remember("alice", id, ack(id), 0);
        }
        dedupe.remember("alice", 4, ack(4), 0);
        assert_eq!(dedupe.len(), 3);
        assert_eq!(dedupe.get("alice", 1, 0), None);
        for id in 2..=4 {
            assert_eq!(dedupe.get("alice", id, 0), Some(ack(id)));
        }
    }

    #[test]
    fn the_default_capacity_is_4096() {
        let mut dedupe = Dedupe::new();
        for id in 1..=(DEDUPE_CAPACITY as u64 + 1) {
            dedupe.remember("alice", id, ack(id), id);
        }
        assert_eq!(dedupe.len(), DEDUPE_CAPACITY);
        assert_eq!(dedupe.get("alice", 1, 5000), None);
        assert_eq!(dedupe.get("alice", 2, 5000), Some(ack(2)));
    }

    #[test]
    fn a_stale_order_entry_does_not_evict_a_newer_ack() {
        let mut dedupe = Dedupe::with_limits(2, 10 * S);
        dedupe.remember("alice", 1, ack(1), 0);
        // Expired by the entry's own check while still queued.
        dedupe.remember("alice", 1, ack(2), 10 * S);
        assert_eq!(dedupe.get("alice", 1, 11 * S), Some(ack(2)));
        dedupe.remember("bob", 1, ack(3), 11 * S);
        assert_eq!(dedupe.get("alice", 1, 11 * S), Some(ack(2)));
        assert_eq!(dedupe.get("bob", 1, 11 * S), Some(ack(3)));
    }

    const SENDERS: [&str; 3] = ["alice", "bob", "carol"];

    /// A sender's message or retry, `wait_ns` after the one before.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Remember {
            sender: usize,
            client_msg_id: u64,
            wait_ns: u64,
        },
        Get {
            sender: usize,
            client_msg_id: u64,
            wait_ns: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Whole half-seconds, so a retry often comes exactly at the window's end.
        let wait = (0..8u64).prop_map(|halves| halves * S / 2);
        let fields = (0..SENDERS.len(), 0..6u64, wait);
        prop_oneof![
            fields
                .clone()
                .prop_map(|(sender, client_msg_id, wait_ns)| Op::Remember {
                    sender,
                    client_msg_id,
                    wait_ns,
                }),
            fields.prop_map(|(sender, client_msg_id, wait_ns)| Op::Get {
                sender,
                client_msg_id,
                wait_ns,
            }),
        ]
    }

    proptest! {
        /// A retry gets the ack last remembered for its sender and id
        /// exactly while that ack is younger than the window and among the
        /// last `capacity` acks remembered, and nothing otherwise; the
        /// acks and their order never outgrow the capacity.
        #[test]
        fn answers_the_original_ack_within_window_and_capacity(
            capacity in 1..6usize,
            window_ns in (1..20u64).prop_map(|halves| halves * S / 2),
            ops in vec(op(), 1..100),
        ) {
            let mut dedupe = Dedupe::with_limits(capacity, window_ns);
            // Every ack remembered, oldest first: key, ack, when.
            let mut remembered: Vec<((usize, u64), SendAck, u64)> = Vec::new();
            let mut now = 0;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Remember { sender, client_msg_id, wait_ns } => {
                        now += wait_ns;
                        let ack = ack(i as u64);
                        dedupe.remember(SENDERS[sender], client_msg_id, ack, now);
                        if client_msg_id != 0 {
                            remembered.push(((sender, client_msg_id), ack, now));
                        }
                    }
                    Op::Get { sender, client_msg_id, wait_ns } => {
                        now += wait_ns;
                        let kept = remembered.len().saturating_sub(capacity);
                        let expected = remembered
                            .iter()
                            .enumerate()
                            .rfind(|(_, (key, _, _))| *key == (sender, client_msg_id))
                            .filter(|&(at, (_, _, when))| at >= kept && now - when < window_ns)
                            .map(|(_, &(_, ack, _))| ack);
                        let got = dedupe.get(SENDERS[sender], client_msg_id, now);
                        prop_assert_eq!(got, expected);
                    }
                }
                prop_assert!(dedupe.len() <= capacity);
                prop_assert!(dedupe.order.len() <= capacity);
            }
        }
    }
}
