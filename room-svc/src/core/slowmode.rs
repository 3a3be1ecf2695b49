//! Slow mode: each member may post to the NORMAL lane at most once per
//! interval (a room setting; 0 turns it off). Only the last accepted send
//! of each member is kept, and entries older than the interval are pruned
//! whenever the map has doubled since the last pruning, so it stays within
//! about twice the members who sent within one interval.

use std::collections::HashMap;

/// Entries below which the map is never pruned.
const PRUNE_FLOOR: usize = 1024;

/// When each member last posted, by a monotonic clock.
#[derive(Debug, Default)]
pub struct SlowMode {
    last_ns: HashMap<Box<str>, u64>,
    /// Size after the last pruning.
    kept: usize,
}

impl SlowMode {
    /// Nanoseconds `user` must still wait at `now_ns` with `interval_ns`
    /// between posts, or `None` when they may post.
    pub fn wait(&self, user: &str, now_ns: u64, interval_ns: u64) -> Option<u64> {
        let last = *self.last_ns.get(user)?;
        let next = last.saturating_add(interval_ns);
        (next > now_ns).then(|| next - now_ns)
    }

    /// Records that `user` posted at `now_ns`.
    pub fn posted(&mut self, user: &str, now_ns: u64, interval_ns: u64) {
        match self.last_ns.get_mut(user) {
            Some(last) => *last = now_ns,
            None => {
                self.last_ns.insert(user.into(), now_ns);
            }
        }
        if self.last_ns.len() >= (2 * self.kept).max(PRUNE_FLOOR) {
            self.last_ns
                .retain(|_, last| last.saturating_add(interval_ns) > now_ns);
            self.kept = self.last_ns.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_member_waits_out_the_interval() {
        let mut slow = SlowMode::default();
        assert_eq!(slow.wait("alice", 0, 5 * S), None);
        slow.posted("alice", 10 * S, 5 * S);
        assert_eq!(slow.wait("alice", 12 * S, 5 * S), Some(3 * S));
        assert_eq!(slow.wait("alice", 15 * S, 5 * S), None);
        assert_eq!(slow.wait("bob", 12 * S, 5 * S), None);
        // A shorter interval set meanwhile applies at once.
        assert_eq!(slow.wait("alice", 12 * S, 2 * S), None);
    }

    #[test]
    fn old_entries_are_pruned_as_the_map_grows() {
        let mut slow = SlowMode::default();
        for i in 0..PRUNE_FLOOR - 1 {
            slow.posted(&format!("u{i}"), 0, S);
        }
        assert_eq!(slow.last_ns.len(), PRUNE_FLOOR - 1);
        // The next post reaches the floor, long after the others expired.
        slow.posted("late", 10 * S, S);
        assert_eq!(slow.last_ns.len(), 1);
        for i in 0..10_000u64 {
            slow.posted(&format!("v{i}"), 20 * S + i, S);
        }
        assert!(slow.last_ns.len() <= 10_001 && slow.last_ns.len() >= 10_000);
        for i in 0..10_000u64 {
            slow.posted(&format!("w{i}"), 30 * S + i, S);
        }
        assert!(
            slow.last_ns.len() < 15_000,
            "the v entries were pruned: {}",
            slow.last_ns.len()
        );
    }
}
