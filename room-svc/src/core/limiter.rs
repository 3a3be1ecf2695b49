//! The upstream limiter of one lane of one room: governor's GCRA driven by a
//! time the caller passes in, so decisions are deterministic in tests and the
//! simulation.
//!
//! A governor quota cannot change in place; a room replaces a lane's limiter
//! when its rate or burst changes (the bucket starts full again).

use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// What a closed lane (rate 0) tells senders to wait before trying again.
pub const CLOSED_RETRY_AFTER_MS: u32 = 1_000;

/// A point on the caller's monotonic clock, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MonoInstant(u64);

impl Add<Nanos> for MonoInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for MonoInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::new(self.0.saturating_sub(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.saturating_sub(duration.as_u64()))
    }
}

/// A clock that reads whatever time was last set on it. It starts at 0, so
/// every limiter measures from the same origin as the caller's clock.
#[derive(Debug, Default)]
pub struct PassedClock {
    // Atomic only because governor reads the clock through `&self`; the
    // limiter is used from one task at a time, so relaxed is enough.
    now_ns: AtomicU64,
}

impl PassedClock {
    fn set(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::Relaxed);
    }
}

impl Clock for PassedClock {
    type Instant = MonoInstant;

    fn now(&self) -> MonoInstant {
        MonoInstant(self.now_ns.load(Ordering::Relaxed))
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, PassedClock, NoOpMiddleware<MonoInstant>>;

/// A refusal: the lane is over its rate, or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Milliseconds until a message would conform, rounded up, at least 1.
    pub retry_after_ms: u32,
    /// The lane's rate is 0: nothing passes until the config changes.
    pub closed: bool,
}

/// One lane's limiter: `per_s` messages a second with bursts of `burst`.
#[derive(Debug)]
pub struct LaneLimiter {
    per_s: u32,
    burst: u32,
    /// `None` while the lane is closed.
    gcra: Option<Gcra>,
}

impl LaneLimiter {
    /// A limiter with a full bucket. `per_s` 0 closes the lane; `burst` is
    /// then ignored, and otherwise raised to at least 1.
    pub fn new(per_s: u32, burst: u32) -> Self {
        let gcra = NonZeroU32::new(per_s).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::per_second(rate).allow_burst(burst);
            RateLimiter::direct_with_clock(quota, PassedClock::default())
        });
        Self { per_s, burst, gcra }
    }

    /// Messages per second (0: closed).
    pub fn per_s(&self) -> u32 {
        self.per_s
    }

    /// Whether this limiter already enforces `per_s` with `burst`, so it can
    /// be kept (with its bucket) across a config change.
    pub fn enforces(&self, per_s: u32, burst: u32) -> bool {
        self.per_s == per_s && (per_s == 0 || self.burst == burst)
    }

    /// Takes one message's worth from the bucket at `now_ns` (monotonic), or
    /// says how long to wait.
    pub fn check_at(&self, now_ns: u64) -> Result<(), Limited> {
        let Some(gcra) = &self.gcra else {
            return Err(Limited {
                retry_after_ms: CLOSED_RETRY_AFTER_MS,
                closed: true,
            });
        };
        gcra.clock().set(now_ns);
        gcra.check().map_err(|not_until| Limited {
            retry_after_ms: ceil_millis(not_until.wait_time_from(MonoInstant(now_ns))),
            closed: false,
        })
    }
}

/// Whole milliseconds, rounded up, at least 1, at most `u32::MAX`.
fn ceil_millis(wait: Duration) -> u32 {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn a_closed_lane_refuses_everything_for_a_second() {
        let limiter = LaneLimiter::new(0, 100);
        for now in [0, S, 1000 * S] {
            assert_eq!(
                limiter.check_at(now),
                Err(Limited {
                    retry_after_ms: 1_000,
                    closed: true
                })
            );
        }
    }

    #[test]
    fn burst_is_exhausted_then_refills_with_passed_in_time() {
        let limiter = LaneLimiter::new(200, 200);
        let t0 = 5 * S;
        for i in 0..200 {
            assert_eq!(limiter.check_at(t0), Ok(()), "message {i}");
        }
        // One message is replenished every 5 ms.
        assert_eq!(
            limiter.check_at(t0),
            Err(Limited {
                retry_after_ms: 5,
                closed: false
            })
        );
        assert_eq!(limiter.check_at(t0 + 2 * MS).unwrap_err().retry_after_ms, 3);
        assert_eq!(limiter.check_at(t0 + 5 * MS), Ok(()));
        assert!(limiter.check_at(t0 + 5 * MS).is_err());
        // A whole second later the bucket is full again.
        let t1 = t0 + 5 * MS + S;
        for i in 0..200 {
            assert_eq!(limiter.check_at(t1), Ok(()), "message {i} after refill");
        }
        assert!(limiter.check_at(t1).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        // 3 per second: one every 333.33 ms.
        let limiter = LaneLimiter::new(3, 1);
        assert_eq!(limiter.check_at(0), Ok(()));
        assert_eq!(limiter.check_at(0).unwrap_err().retry_after_ms, 334);
        assert_eq!(limiter.check_at(333 * MS).unwrap_err().retry_after_ms, 1);
        assert_eq!(limiter.check_at(333_333_333), Ok(()));
    }

    #[test]
    fn burst_larger_than_rate() {
        let limiter = LaneLimiter::new(1, 10);
        for _ in 0..10 {
            assert_eq!(limiter.check_at(S), Ok(()));
        }
        assert_eq!(limiter.check_at(S).unwrap_err().retry_after_ms, 1_000);
    }

    #[test]
    fn a_million_per_second_works() {
        let limiter = LaneLimiter::new(1_000_000, 1);
        assert_eq!(limiter.check_at(S), Ok(()));
        // One message every microsecond; the wait rounds up to 1 ms.
        assert_eq!(limiter.check_at(S).unwrap_err().retry_after_ms, 1);
        assert_eq!(limiter.check_at(S + 1_000), Ok(()));

        let limiter = LaneLimiter::new(1_000_000, 1_000_000);
        for _ in 0..1_000_000 {
            assert!(limiter.check_at(S).is_ok());
        }
        assert_eq!(limiter.check_at(S).unwrap_err().retry_after_ms, 1);
    }

    #[test]
    fn a_zero_burst_counts_as_one() {
        let limiter = LaneLimiter::new(10, 0);
        assert_eq!(limiter.check_at(0), Ok(()));
        assert_eq!(limiter.check_at(0).unwrap_err().retry_after_ms, 100);
    }

    #[test]
    fn time_running_backwards_does_not_refill() {
        let limiter = LaneLimiter::new(1, 1);
        assert_eq!(limiter.check_at(10 * S), Ok(()));
        assert!(limiter.check_at(S).is_err());
        assert_eq!(limiter.check_at(11 * S), Ok(()));
    }

    #[test]
    fn knows_whether_it_enforces_a_quota() {
        let limiter = LaneLimiter::new(200, 100);
        assert!(limiter.enforces(200, 100));
        assert!(!limiter.enforces(200, 200));
        assert!(!limiter.enforces(100, 100));
        assert!(LaneLimiter::new(0, 1).enforces(0, 7));
    }

    /// A sender's next try: after `wait_ns`, or, right after a refusal,
    /// exactly when the refusal said (`obey`).
    #[derive(Debug, Clone, Copy)]
    struct Try {
        wait_ns: u64,
        obey: bool,
    }

    fn tries() -> impl Strategy<Value = Vec<Try>> {
        let wait = prop_oneof![Just(0), 0..10 * MS, 0..2 * S];
        vec(
            (wait, prop::bool::weighted(0.3)).prop_map(|(wait_ns, obey)| Try { wait_ns, obey }),
            1..200,
        )
    }

    proptest! {
        /// Over any span between two admitted messages the lane admits at
        /// most its burst plus its rate times the span (governor's emission
        /// interval is whole nanoseconds, so 1 s / rate rounded down); and
        /// a refusal's `retry_after_ms` is exact to the millisecond: one
        /// millisecond earlier is still refused, at it the sender is let in.
        #[test]
        fn admits_no_more_than_rate_and_burst_and_retry_after_is_exact(
            per_s in prop_oneof![1..50u32, 1..1_000_000u32],
            burst in 1..40u32,
            tries in tries(),
        ) {
            let limiter = LaneLimiter::new(per_s, burst);
            let interval = S / u64::from(per_s);
            let mut admitted: Vec<u64> = Vec::new();
            let mut admit = |now: u64| -> Result<(), TestCaseError> {
                admitted.push(now);
                for (i, &since) in admitted.iter().enumerate() {
                    let count = (admitted.len() - i) as u64;
                    let allowed = u64::from(burst) + (now - since) / interval;
                    prop_assert!(count <= allowed, "{count} admitted in {} ns", now - since);
                }
                Ok(())
            };
            let mut now = S;
            let mut refused: Option<u32> = None;
            for Try { wait_ns, obey } in tries {
                if let (Some(retry_after_ms), true) = (refused, obey) {
                    let wait = u64::from(retry_after_ms) * MS;
                    let early = limiter.check_at(now + wait - MS);
                    prop_assert!(early.is_err(), "admitted 1 ms before retry_after");
                    now += wait;
                    prop_assert_eq!(limiter.check_at(now), Ok(()), "refused at retry_after");
                    admit(now)?;
                    refused = None;
                    continue;
                }
                now += wait_ns;
                match limiter.check_at(now) {
                    Ok(()) => {
                        admit(now)?;
                        refused = None;
                    }
                    Err(limited) => {
                        prop_assert!(!limited.closed && limited.retry_after_ms >= 1);
                        refused = Some(limited.retry_after_ms);
                    }
                }
            }
        }
    }
}
