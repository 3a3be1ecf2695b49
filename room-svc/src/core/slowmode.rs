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
    use std::collections::VecDeque;

    use proptest::collection::vec;
    use proptest::prelude::*;

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

    /// Members whose last post is younger than the interval, kept up to
    /// date as posts come in time order.
    struct Live {
        interval_ns: u64,
        last: Vec<Option<u64>>,
        posts: VecDeque<(u64, usize)>,
        count: usize,
    }

    impl Live {
        fn post(&mut self, member: usize, now: u64) {
            while let Some(&(at, who)) = self.posts.front() {
                if at + self.interval_ns > now {
                    break;
                }
                self.posts.pop_front();
                if self.last[who] == Some(at) {
                    self.count -= 1;
                }
            }
            match self.last[member] {
                Some(at) if at == now => return,
                Some(at) if at + self.interval_ns > now => {}
                _ => self.count += 1,
            }
            self.last[member] = Some(now);
            self.posts.push_back((now, member));
        }

        fn wait(&self, member: usize, now: u64) -> Option<u64> {
            let next = self.last[member]? + self.interval_ns;
            (next > now).then(|| next - now)
        }
    }

    const MEMBERS: usize = 3_000;

    /// Posts by some of [`MEMBERS`] in steps of 50 µs (so a wait often ends
    /// exactly at a post), each with another member to ask about.
    fn posts() -> impl Strategy<Value = Vec<(usize, u64, usize)>> {
        let step_ns = (0..5u64).prop_map(|n| n * 50_000);
        vec((0..MEMBERS, step_ns, 0..MEMBERS), 1..4_000)
    }

    proptest! {
        // Thousands of posts a case, to get past the pruning floor.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Pruning never forgets a member who must still wait: every wait
        /// is the member's last post plus the interval; and the map holds
        /// at most the pruning floor or twice the most members ever inside
        /// one interval at once.
        #[test]
        fn waits_are_exact_and_the_map_stays_bounded(
            interval_ms in 1..200u64,
            posts in posts(),
        ) {
            let interval_ns = interval_ms * 1_000_000;
            let mut slow = SlowMode::default();
            let mut live = Live {
                interval_ns,
                last: vec![None; MEMBERS],
                posts: VecDeque::new(),
                count: 0,
            };
            let mut peak = 0;
            let mut now = 0;
            for (member, step_ns, other) in posts {
                now += step_ns;
                slow.posted(&format!("u{member}"), now, interval_ns);
                live.post(member, now);
                peak = peak.max(live.count);
                prop_assert!(slow.last_ns.len() <= PRUNE_FLOOR.max(2 * peak));
                let waits = slow.wait(&format!("u{other}"), now, interval_ns);
                prop_assert_eq!(waits, live.wait(other, now), "u{}", other);
            }
        }
    }
}
