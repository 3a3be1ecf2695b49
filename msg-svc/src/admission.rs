//! Abuse limits decided without I/O: a token bucket (time passed in), and
//! per-source-address admission of new connections (how many one address
//! may hold open, how fast it may open them).
//!
//! Memory is bounded: an address has an entry only while it holds a
//! connection or its bucket is still refilling, and [`IpAdmission::prune`]
//! drops the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

// parking_lot, not a tokio lock: the critical sections are a map lookup and
// some arithmetic, never held across an await.
use parking_lot::Mutex;

/// A rate with a burst: `per_s` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second; 0 turns the limit off.
    pub per_s: u32,
    /// Tokens the bucket holds when full.
    pub burst: u32,
}

impl Rate {
    /// Whether the limit applies at all.
    pub fn is_on(self) -> bool {
        self.per_s > 0
    }
}

/// A token bucket, kept as the thousandths of a token spent and not yet
/// refilled, so it starts full whatever the rate and integer arithmetic is
/// exact.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    spent_milli: u64,
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            spent_milli: 0,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let refilled = elapsed.saturating_mul(u64::from(rate.per_s));
        self.spent_milli = self.spent_milli.saturating_sub(refilled);
        self.at_ms = now_ms.max(self.at_ms);
    }

    /// Takes a token; when there is none, how many ms until there is.
    pub(crate) fn take(&mut self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        if !rate.is_on() {
            return Ok(());
        }
        self.refill(rate, now_ms);
        let cap = u64::from(rate.burst.max(1)) * 1000;
        if self.spent_milli + 1000 <= cap {
            self.spent_milli += 1000;
            Ok(())
        } else {
            let short = self.spent_milli + 1000 - cap;
            Err(short.div_ceil(u64::from(rate.per_s)))
        }
    }

    /// Whether the bucket is back to full (so forgetting it changes nothing).
    fn is_full(&mut self, rate: Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.spent_milli == 0
    }
}

/// Limits on what one source address may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimits {
    /// Connections one address may hold open (per transport); 0 is unlimited.
    pub max_connections: usize,
    /// How fast one address may open connections.
    pub connect_rate: Rate,
    /// Loopback addresses are not limited (the load harness connects
    /// thousands of bots from 127.x.y.z).
    pub exempt_loopback: bool,
}

impl Default for IpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            connect_rate: Rate {
                per_s: 20,
                burst: 100,
            },
            exempt_loopback: true,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The address holds as many connections as it may.
    #[error("too many connections from this address")]
    TooMany,
    /// The address opens connections faster than it may.
    #[error("connecting too fast from this address")]
    TooFast,
}

#[derive(Debug)]
struct Entry {
    open: usize,
    bucket: TokenBucket,
}

/// Admission of new connections by source address, shared by a node's
/// transports (each keeps its own: the limits are per transport).
#[derive(Debug)]
pub(crate) struct IpAdmission {
    limits: IpLimits,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl IpAdmission {
    pub(crate) fn new(limits: IpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            entries: Mutex::default(),
        })
    }

    /// Admits a connection from `ip`; the guard releases it when dropped.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<IpGuard, Refused> {
        let ip = ip.to_canonical();
        let limits = self.limits;
        let unlimited = limits.max_connections == 0 && !limits.connect_rate.is_on();
        if unlimited || (limits.exempt_loopback && ip.is_loopback()) {
            return Ok(IpGuard {
                admission: None,
                ip,
            });
        }
        let mut entries = self.entries.lock();
        let entry = entries.entry(ip).or_insert_with(|| Entry {
            open: 0,
            bucket: TokenBucket::new(now_ms),
        });
        if limits.max_connections > 0 && entry.open >= limits.max_connections {
            return Err(Refused::TooMany);
        }
        entry
            .bucket
            .take(limits.connect_rate, now_ms)
            .map_err(|_| Refused::TooFast)?;
        entry.open += 1;
        Ok(IpGuard {
            admission: Some(Arc::clone(self)),
            ip,
        })
    }

    /// Forgets addresses with nothing open whose bucket is full again.
    pub(crate) fn prune(&self, now_ms: u64) {
        let rate = self.limits.connect_rate;
        self.entries
            .lock()
            .retain(|_, entry| entry.open > 0 || !entry.bucket.is_full(rate, now_ms));
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.entries.lock().len()
    }

    fn release(&self, ip: IpAddr) {
        if let Some(entry) = self.entries.lock().get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

/// A connection admitted from an address; dropping it releases the slot.
#[derive(Debug)]
pub(crate) struct IpGuard {
    admission: Option<Arc<IpAdmission>>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        if let Some(admission) = &self.admission {
            admission.release(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const RATE: Rate = Rate {
        per_s: 10,
        burst: 3,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn bucket_spends_its_burst_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(0);
        for _ in 0..3 {
            assert_eq!(bucket.take(RATE, 0), Ok(()));
        }
        assert_eq!(bucket.take(RATE, 0), Err(100));
        assert_eq!(bucket.take(RATE, 40), Err(60));
        assert_eq!(bucket.take(RATE, 100), Ok(()));
        assert!(bucket.is_full(RATE, 10_000));
    }

    #[test]
    fn count_limit_holds_until_a_guard_is_dropped() {
        let limits = IpLimits {
            max_connections: 2,
            connect_rate: Rate { per_s: 0, burst: 0 },
            exempt_loopback: false,
        };
        let admission = IpAdmission::new(limits);
        let first = admission.admit(ip(1), 0).unwrap();
        let _second = admission.admit(ip(1), 0).unwrap();
        assert_eq!(admission.admit(ip(1), 0).unwrap_err(), Refused::TooMany);
        // Other addresses are not affected.
        let _other = admission.admit(ip(2), 0).unwrap();
        drop(first);
        let _third = admission.admit(ip(1), 0).unwrap();
    }

    #[test]
    fn rate_limit_refuses_past_the_burst_and_admits_after_refill() {
        let limits = IpLimits {
            max_connections: 0,
            connect_rate: RATE,
            exempt_loopback: false,
        };
        let admission = IpAdmission::new(limits);
        let guards: Vec<_> = (0..3).map(|_| admission.admit(ip(1), 0).unwrap()).collect();
        assert_eq!(admission.admit(ip(1), 50).unwrap_err(), Refused::TooFast);
        assert!(admission.admit(ip(1), 100).is_ok());
        drop(guards);
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let strict = IpLimits {
            max_connections: 1,
            exempt_loopback: false,
            ..IpLimits::default()
        };
        let loopback: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        let exempt = IpAdmission::new(IpLimits {
            exempt_loopback: true,
            ..strict
        });
        let _a = exempt.admit(loopback, 0).unwrap();
        let _b = exempt.admit(loopback, 0).unwrap();
        assert_eq!(exempt.tracked(), 0);
        let limited = IpAdmission::new(strict);
        let _c = limited.admit(loopback, 0).unwrap();
        assert_eq!(limited.admit(loopback, 0).unwrap_err(), Refused::TooMany);
    }

    #[test]
    fn entries_are_pruned_once_idle_and_refilled() {
        let admission = IpAdmission::new(IpLimits {
            exempt_loopback: false,
            ..IpLimits::default()
        });
        for last in 0..=255 {
            drop(admission.admit(ip(last), 0).unwrap());
        }
        let held = admission.admit(ip(7), 0).unwrap();
        assert_eq!(admission.tracked(), 256);
        // Not yet refilled: kept, so reconnecting cannot reset the bucket.
        admission.prune(10);
        assert_eq!(admission.tracked(), 256);
        admission.prune(60_000);
        assert_eq!(admission.tracked(), 1, "only the address holding one");
        drop(held);
        admission.prune(120_000);
        assert_eq!(admission.tracked(), 0);
    }

    /// Checks that `admitted` (times in ms, the newest last) holds no more
    /// than `rate`'s burst plus its rate over any span ending at the newest.
    fn within_rate(admitted: &[u64], rate: Rate) -> Result<(), TestCaseError> {
        let Some(&now) = admitted.last() else {
            return Ok(());
        };
        for (i, &since) in admitted.iter().enumerate() {
            let count = (admitted.len() - i) as u64;
            let allowed =
                u64::from(rate.burst.max(1)) + (now - since) * u64::from(rate.per_s) / 1000;
            prop_assert!(
                count <= allowed,
                "{count} in {} ms at {rate:?}",
                now - since
            );
        }
        Ok(())
    }

    /// Addresses in the admission property; few, so each sees many steps.
    const ADDRESSES: u8 = 2;

    fn rate() -> impl Strategy<Value = Rate> {
        let per_s = prop_oneof![1..20u32, 1..2_000u32];
        (per_s, prop_oneof![0..4u32, 0..20u32]).prop_map(|(per_s, burst)| Rate { per_s, burst })
    }

    /// What happens next: an address connects after `wait_ms` or closes
    /// one of its connections, or the table is pruned.
    #[derive(Debug, Clone)]
    enum Step {
        Connect { ip: u8, wait_ms: u64 },
        Close { ip: u8, which: prop::sample::Index },
        Prune { wait_ms: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        let wait = prop_oneof![Just(0), 0..50u64, 0..5_000u64];
        prop_oneof![
            4 => (0..ADDRESSES, wait.clone())
                .prop_map(|(ip, wait_ms)| Step::Connect { ip, wait_ms }),
            2 => (0..ADDRESSES, any::<prop::sample::Index>())
                .prop_map(|(ip, which)| Step::Close { ip, which }),
            1 => wait.prop_map(|wait_ms| Step::Prune { wait_ms }),
        ]
    }

    proptest! {
        /// A bucket takes no more than its burst plus its rate over any
        /// span, and the wait it names is exact to the millisecond: one
        /// earlier is still refused, at it a token is there.
        #[test]
        fn a_bucket_keeps_its_rate_and_names_the_exact_wait(
            rate in rate(),
            waits in vec((prop_oneof![Just(0), 0..20u64, 0..2_000u64], any::<bool>()), 1..200),
        ) {
            let mut bucket = TokenBucket::new(0);
            let mut admitted = Vec::new();
            let mut now = 0;
            for (wait_ms, obey) in waits {
                now += wait_ms;
                match bucket.take(rate, now) {
                    Ok(()) => admitted.push(now),
                    Err(wait) => {
                        prop_assert!(wait >= 1);
                        if obey {
                            let early = bucket.take(rate, now + wait - 1);
                            prop_assert!(early.is_err(), "a token early");
                            now += wait;
                            prop_assert_eq!(bucket.take(rate, now), Ok(()), "no token at the wait");
                            admitted.push(now);
                        }
                    }
                }
                within_rate(&admitted, rate)?;
            }
        }

        /// Per address: open connections never exceed the count limit,
        /// admissions never exceed the connect rate (pruning never hands an
        /// address a fresh bucket early), a connection is refused only for
        /// one of the two, and the table holds only addresses with a
        /// connection open or a recent connect.
        #[test]
        fn each_address_keeps_its_count_and_rate(
            max_connections in 1..4usize,
            connect_rate in rate(),
            steps in vec(step(), 1..120),
        ) {
            let admission = IpAdmission::new(IpLimits {
                max_connections,
                connect_rate,
                exempt_loopback: false,
            });
            let mut open: [Vec<IpGuard>; ADDRESSES as usize] = Default::default();
            let mut admitted: [Vec<u64>; ADDRESSES as usize] = Default::default();
            let mut now = 0;
            for step in steps {
                match step {
                    Step::Connect { ip: last, wait_ms } => {
                        now += wait_ms;
                        let i = usize::from(last);
                        match admission.admit(ip(last), now) {
                            Ok(guard) => {
                                open[i].push(guard);
                                admitted[i].push(now);
                                prop_assert!(open[i].len() <= max_connections);
                                within_rate(&admitted[i], connect_rate)?;
                            }
                            Err(Refused::TooMany) => {
                                prop_assert_eq!(open[i].len(), max_connections);
                            }
                            Err(Refused::TooFast) => {
                                prop_assert!(open[i].len() < max_connections);
                                prop_assert!(!admitted[i].is_empty(), "a first connect refused");
                            }
                        }
                    }
                    Step::Close { ip: last, which } => {
                        let held = &mut open[usize::from(last)];
                        if !held.is_empty() {
                            held.swap_remove(which.index(held.len()));
                        }
                    }
                    Step::Prune { wait_ms } => {
                        now += wait_ms;
                        admission.prune(now);
                        // A bucket refills within burst / rate seconds.
                        let refill_ms = u64::from(connect_rate.burst.max(1)) * 1000
                            / u64::from(connect_rate.per_s) + 1;
                        let needed = (0..usize::from(ADDRESSES))
                            .filter(|&i| !open[i].is_empty())
                            .count();
                        let allowed = (0..usize::from(ADDRESSES))
                            .filter(|&i| {
                                !open[i].is_empty()
                                    || admitted[i].last().is_some_and(|&at| now < at + refill_ms)
                            })
                            .count();
                        let tracked = admission.tracked();
                        prop_assert!(needed <= tracked && tracked <= allowed, "{tracked} tracked");
                    }
                }
            }
        }
    }
}
