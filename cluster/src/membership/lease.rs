//! How long this node may still act on its member view.
//!
//! ZooKeeper expires a session no sooner than the session timeout after the
//! server last heard from it, and only then do the other nodes see this
//! node leave and take over its share. A request this node sent at `t` and
//! saw answered proves the server heard the session at or after `t`, so
//! nobody can take over before `t + timeout`. The lease runs to a fraction
//! of that ([`LEASE_SHARE`]), leaving room for clocks that run at slightly
//! different rates and for the work in flight when it ends; it is renewed
//! by such requests well before it runs out. A node acts as the owner of
//! anything only while its lease holds: after a partition from ZooKeeper
//! or a stall it stops before anyone else can start.
//!
//! A lease also names the first member view of its session: after a session
//! expired and a new one began, the views of the old one are out of date
//! (the node's share may have moved meanwhile), so the lease covers only a
//! view at least that new.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The share of the session timeout a proven-alive session is trusted for.
pub(super) const LEASE_SHARE: (u32, u32) = (2, 3);

/// This node's lease on what membership gives it. Cheap to clone; every
/// clone reads the same lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `None`: held for ever (a membership nobody else can change).
    clock: Option<Arc<LeaseClock>>,
}

#[derive(Debug)]
struct LeaseClock {
    base: Instant,
    /// Nanoseconds after `base` the lease ends; 0: not held.
    until_ns: AtomicU64,
    /// The oldest view term the lease covers.
    since_term: AtomicU64,
}

impl Lease {
    /// A lease that never ends: the embedded server's, whose membership
    /// nobody else can change.
    pub fn forever() -> Self {
        Self { clock: None }
    }

    /// A lease not held yet, to be extended by whoever proves the session
    /// alive.
    pub fn renewable() -> Self {
        Self {
            clock: Some(Arc::new(LeaseClock {
                base: Instant::now(),
                until_ns: AtomicU64::new(0),
                since_term: AtomicU64::new(0),
            })),
        }
    }

    /// Whether the lease holds at `now` for a node acting on the member
    /// view `term`.
    pub fn holds(&self, now: Instant, term: u64) -> bool {
        let Some(clock) = &self.clock else {
            return true;
        };
        term >= clock.since_term.load(Ordering::Acquire)
            && self.until().is_some_and(|until| now < until)
    }

    /// When the lease ends (in the past when it is not held); `None` for a
    /// lease that never ends.
    pub fn until(&self) -> Option<Instant> {
        let clock = self.clock.as_ref()?;
        let until = clock.until_ns.load(Ordering::Acquire);
        Some(clock.base + Duration::from_nanos(until))
    }

    /// A session begins whose first view is `term`: the lease will cover
    /// that view and later ones once renewed.
    pub(super) fn begin(&self, term: u64) {
        if let Some(clock) = &self.clock {
            clock.since_term.store(term, Ordering::Release);
        }
    }

    /// The session was alive at `proven` (a request sent then was
    /// answered) and expires no sooner than `timeout` after it: the lease
    /// runs to a share of that, unless it already runs longer.
    pub(super) fn renew(&self, proven: Instant, timeout: Duration) {
        let Some(clock) = &self.clock else {
            return;
        };
        let until = proven + timeout * LEASE_SHARE.0 / LEASE_SHARE.1;
        let until_ns = u64::try_from(until.saturating_duration_since(clock.base).as_nanos())
            .unwrap_or(u64::MAX);
        clock.until_ns.fetch_max(until_ns, Ordering::AcqRel);
    }

    /// The session is gone: the lease ends now.
    pub(super) fn end(&self) {
        if let Some(clock) = &self.clock {
            clock.until_ns.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewable_lease_holds_from_a_proof_for_a_share_of_the_timeout() {
        let lease = Lease::renewable();
        let now = Instant::now();
        assert!(!lease.holds(now, 0), "not held before any proof");
        let timeout = Duration::from_secs(3);
        lease.renew(now, timeout);
        assert!(lease.holds(now + Duration::from_millis(1_999), 0));
        assert!(!lease.holds(now + Duration::from_secs(2), 0));
        // An older proof never shortens it.
        lease.renew(now - Duration::from_secs(1), timeout);
        assert!(lease.holds(now + Duration::from_millis(1_999), 0));
        lease.renew(now + Duration::from_secs(1), timeout);
        assert!(lease.holds(now + Duration::from_millis(2_999), 0));
        let clone = lease.clone();
        lease.end();
        assert!(!clone.holds(now, 0), "every clone sees the end");
    }

    #[test]
    fn a_new_session_s_lease_covers_only_its_views() {
        let lease = Lease::renewable();
        let now = Instant::now();
        lease.begin(7);
        lease.renew(now, Duration::from_secs(3));
        assert!(!lease.holds(now, 6), "a view of the session before");
        assert!(lease.holds(now, 7));
        assert!(lease.holds(now, 9));
    }

    #[test]
    fn a_lease_for_ever_always_holds() {
        let lease = Lease::forever();
        assert!(lease.holds(Instant::now() + Duration::from_secs(1 << 30), 0));
        assert_eq!(lease.until(), None);
    }
}
