//! The room clock: message timestamps strictly increase within a room even
//! when the wall clock stands still or steps back.

/// Stamps a room's messages with `max(now, last + 1)` microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomClock {
    last: u64,
}

impl RoomClock {
    /// A clock that has stamped nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock resuming after `last`, e.g. the value a previous owner of the
    /// room stored, so a new owner never issues a smaller timestamp.
    pub fn resuming_after(last: u64) -> Self {
        Self { last }
    }

    /// The newest timestamp issued (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next timestamp for a wall-clock reading of `now_us`. Saturates at
    /// `u64::MAX` (which repeats from then on) rather than panicking.
    pub fn stamp(&mut self, now_us: u64) -> u64 {
        self.last = now_us.max(self.last.saturating_add(1));
        self.last
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Wall-clock readings as a host sees them: mostly moving on, sometimes
    /// standing still, stepping back (NTP) or jumping ahead, far from the
    /// end of time (saturation has its own test).
    fn readings() -> impl Strategy<Value = Vec<u64>> {
        let step = prop_oneof![
            3 => 0..2_000i64,
            2 => Just(0i64),
            2 => -2_000..0i64,
            1 => -10_000_000_000..10_000_000_000i64,
        ];
        (0..1u64 << 50, vec(step, 1..64)).prop_map(|(start, steps)| {
            steps
                .iter()
                .scan(start, |now, &step| {
                    *now = now.saturating_add_signed(step);
                    Some(*now)
                })
                .collect()
        })
    }

    proptest! {
        /// Each stamp is above the one before and at or above its reading,
        /// whatever the wall clock does, and so is the first stamp of a
        /// clock that resumes after the last one (the room on a new owner).
        #[test]
        fn stamps_strictly_increase_across_owners(
            readings in readings(),
            handover in any::<prop::sample::Index>(),
        ) {
            let handover = handover.index(readings.len());
            let mut clock = RoomClock::new();
            let mut last = 0;
            for (i, &now) in readings.iter().enumerate() {
                if i == handover {
                    clock = RoomClock::resuming_after(clock.last());
                }
                let ts = clock.stamp(now);
                prop_assert!(ts > last, "stamp {ts} after {last}");
                prop_assert!(ts >= now, "stamp {ts} below the reading {now}");
                prop_assert_eq!(clock.last(), ts);
                last = ts;
            }
        }
    }

    #[test]
    fn follows_the_wall_clock_when_it_moves_forward() {
        let mut clock = RoomClock::new();
        assert_eq!(clock.stamp(1_000), 1_000);
        assert_eq!(clock.stamp(5_000), 5_000);
        assert_eq!(clock.last(), 5_000);
    }

    #[test]
    fn equal_readings_still_increase() {
        let mut clock = RoomClock::new();
        assert_eq!(clock.stamp(1_000), 1_000);
        assert_eq!(clock.stamp(1_000), 1_001);
        assert_eq!(clock.stamp(1_000), 1_002);
        assert_eq!(clock.stamp(1_002), 1_003);
    }

    #[test]
    fn backward_readings_still_increase() {
        let mut clock = RoomClock::new();
        assert_eq!(clock.stamp(10_000), 10_000);
        assert_eq!(clock.stamp(3), 10_001);
        assert_eq!(clock.stamp(0), 10_002);
        assert_eq!(clock.stamp(20_000), 20_000);
    }

    #[test]
    fn first_stamp_of_a_zero_clock_is_positive() {
        assert_eq!(RoomClock::new().stamp(0), 1);
    }

    #[test]
    fn resumes_after_a_stored_value() {
        let mut clock = RoomClock::resuming_after(50);
        assert_eq!(clock.stamp(10), 51);
    }

    #[test]
    fn saturates_at_the_end_of_time() {
        let mut clock = RoomClock::resuming_after(u64::MAX - 1);
        assert_eq!(clock.stamp(0), u64::MAX);
        assert_eq!(clock.stamp(0), u64::MAX);
        assert_eq!(clock.stamp(u64::MAX), u64::MAX);
    }
}
