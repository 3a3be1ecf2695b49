//! The webhook's delivery policy (sans-I/O): one batch out at a time, held
//! and retried after a jittered, growing pause until a 2xx completes it, so
//! events reach the receiver in order and at least once. Time and the jitter
//! sample are passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hooks::batch::{BatchLimits, Batcher};

/// Pauses between attempts: exponential from `min`, capped at `max`, with
/// full jitter so receivers coming back are not hit by every sender at once.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The pause after one more failure: uniform between `min` and
    /// `min * 2^failures` (capped at `max`), for `jitter` in `[0, 1)`.
    pub(crate) fn next(&mut self, jitter: f64) -> Duration {
        let ceiling = self
            .min
            .checked_mul(1 << self.failures.min(30))
            .map_or(self.max, |ceiling| ceiling.min(self.max));
        self.failures = self.failures.saturating_add(1);
        self.min + (ceiling - self.min).mul_f64(jitter.clamp(0.0, 1.0))
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A batch to send now.
#[derive(Debug)]
pub(crate) struct Transmit<T> {
    /// Its items, oldest first; the same ones on every attempt.
    pub(crate) items: Arc<[T]>,
    /// 0 for the first attempt, then the retry's number.
    pub(crate) attempt: u32,
}

#[derive(Debug)]
enum Attempt {
    /// The request is out.
    Sending,
    /// The last attempt failed; the next may start at this instant.
    RetryAt(Instant),
}

#[derive(Debug)]
struct Current<T> {
    items: Arc<[T]>,
    attempts: u32,
    state: Attempt,
}

/// Events waiting and the batch out; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    batcher: Batcher<T>,
    current: Option<Current<T>>,
    backoff: Backoff,
    accepted: u64,
    delivered: u64,
}

impl<T> Outbox<T> {
    /// An empty outbox batching by `max_items` and `max_delay`, holding at
    /// most `queue` waiting items, pausing between `backoff_min` and
    /// `backoff_max` after failures.
    pub(crate) fn new(
        max_items: usize,
        max_delay: Duration,
        queue: usize,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> Self {
        Self {
            batcher: Batcher::new(BatchLimits {
                max_items,
                max_delay,
                max_in_flight: 1,
                queue,
            }),
            current: None,
            backoff: Backoff::new(backoff_min, backoff_max),
            accepted: 0,
            delivered: 0,
        }
    }

    /// Queues `item`, or gives it back when the queue is at its bound.
    pub(crate) fn push(&mut self, now: Instant, item: T) -> Result<(), T> {
        self.batcher.push(now, item)?;
        self.accepted += 1;
        Ok(())
    }

    /// The batch to send at `now`, if one is due: a new one, or the failed
    /// one again once its pause is over.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<T>> {
        if self.current.is_none() {
            let items = self.batcher.poll_batch(now)?;
            self.current = Some(Current {
                items: items.into(),
                attempts: 0,
                state: Attempt::RetryAt(now),
            });
        }
        let current = self.current.as_mut()?;
        match current.state {
            Attempt::RetryAt(at) if at <= now => {
                current.state = Attempt::Sending;
                let attempt = current.attempts;
                current.attempts += 1;
                Some(Transmit {
                    items: Arc::clone(&current.items),
                    attempt,
                })
            }
            Attempt::RetryAt(_) | Attempt::Sending => None,
        }
    }

    /// When [`poll_transmit`](Self::poll_transmit) may next have something
    /// if nothing is pushed before: `None` while a request is out or nothing
    /// waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.current {
            Some(Current {
                state: Attempt::RetryAt(at),
                ..
            }) => Some(*at),
            Some(_) => None,
            None => self.batcher.poll_timeout(),
        }
    }

    /// The batch out was acknowledged; returns how many items it held.
    pub(crate) fn handle_delivered(&mut self) -> usize {
        let Some(current) = self.current.take() else {
            return 0;
        };
        self.batcher.handle_done();
        self.backoff.reset();
        self.delivered += current.items.len() as u64;
        current.items.len()
    }

    /// The batch out failed at `now`; returns the pause before it is sent
    /// again (`jitter` uniform in `[0, 1)`).
    pub(crate) fn handle_failed(&mut self, now: Instant, jitter: f64) -> Duration {
        let pause = self.backoff.next(jitter);
        if let Some(current) = &mut self.current {
            current.state = Attempt::RetryAt(now + pause);
        }
        pause
    }

    /// Items held: waiting and in the batch out.
    pub(crate) fn len(&self) -> usize {
        self.batcher.waiting()
            + self
                .current
                .as_ref()
                .map_or(0, |current| current.items.len())
    }

    /// Items ever accepted by [`push`](Self::push).
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Items delivered; as delivery is in order, exactly the first this
    /// many accepted.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn outbox() -> Outbox<u32> {
        Outbox::new(3, 200 * MS, 5, 100 * MS, 1000 * MS)
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_caps() {
        let mut low = Backoff::new(100 * MS, 1000 * MS);
        let mut high = low.clone();
        let lows: Vec<_> = (0..6).map(|_| low.next(0.0)).collect();
        let highs: Vec<_> = (0..6).map(|_| high.next(0.999_999)).collect();
        assert!(lows.iter().all(|pause| *pause == 100 * MS));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for (pause, ceiling) in highs.iter().zip(ceilings) {
            assert!(
                *pause <= ceiling * MS && *pause > (ceiling - 1) * MS,
                "{pause:?} vs {ceiling}"
            );
        }
        let mut mid = Backoff::new(100 * MS, 1000 * MS);
        mid.next(0.5);
        assert_eq!(mid.next(0.5), 150 * MS, "halfway between 100 and 200 ms");
        mid.reset();
        assert_eq!(mid.next(0.5), 100 * MS);
    }

    #[test]
    fn backoff_survives_many_failures() {
        let mut backoff = Backoff::new(100 * MS, 30_000 * MS);
        for _ in 0..1000 {
            assert!(backoff.next(0.999) <= 30_000 * MS);
        }
    }

    #[test]
    fn a_failed_batch_is_resent_whole_after_its_pause() {
        let t0 = Instant::now();
        let mut outbox = outbox();
        for item in 0..4 {
            outbox.push(t0, item).expect("room");
        }
        let first = outbox.poll_transmit(t0).expect("full batch");
        assert_eq!((&*first.items, first.attempt), (&[0, 1, 2][..], 0));
        assert!(
            outbox.poll_transmit(t0 + 1000 * MS).is_none(),
            "one out at a time"
        );
        assert_eq!(outbox.poll_timeout(), None);

        let t1 = t0 + 50 * MS;
        assert_eq!(outbox.handle_failed(t1, 0.0), 100 * MS);
        outbox.push(t1, 4).expect("room");
        assert_eq!(outbox.poll_timeout(), Some(t1 + 100 * MS));
        assert!(outbox.poll_transmit(t1 + 99 * MS).is_none());
        let again = outbox.poll_transmit(t1 + 100 * MS).expect("retry due");
        assert_eq!((&*again.items, again.attempt), (&[0, 1, 2][..], 1));

        let t2 = t1 + 150 * MS;
        assert_eq!(
            outbox.handle_failed(t2, 0.5),
            150 * MS,
            "second pause grows"
        );
        let third = outbox.poll_transmit(t2 + 150 * MS).expect("retry due");
        assert_eq!(third.attempt, 2);
        assert_eq!(outbox.len(), 5);

        assert_eq!(outbox.handle_delivered(), 3);
        assert_eq!((outbox.accepted(), outbox.delivered()), (5, 3));
        let next = outbox
            .poll_transmit(t2 + 150 * MS)
            .expect("the rest, overdue");
        assert_eq!((&*next.items, next.attempt), (&[3, 4][..], 0));
        outbox.handle_failed(t2 + 150 * MS, 0.0);
        assert_eq!(
            outbox.poll_timeout(),
            Some(t2 + 250 * MS),
            "a delivery reset the backoff"
        );
    }

    #[test]
    fn events_queue_behind_a_failing_batch_up_to_the_bound() {
        let t0 = Instant::now();
        let mut outbox = outbox();
        for item in 0..3 {
            outbox.push(t0, item).expect("room");
        }
        outbox.poll_transmit(t0).expect("full batch");
        outbox.handle_failed(t0, 0.0);
        for item in 3..8 {
            outbox.push(t0, item).expect("room");
        }
        assert_eq!(outbox.push(t0, 8), Err(8));
        assert_eq!((outbox.len(), outbox.accepted()), (8, 8));
    }

    #[test]
    fn a_partial_batch_waits_for_its_delay() {
        let t0 = Instant::now();
        let mut outbox = outbox();
        outbox.push(t0, 7).expect("room");
        assert!(outbox.poll_transmit(t0 + 199 * MS).is_none());
        assert_eq!(outbox.poll_timeout(), Some(t0 + 200 * MS));
        let batch = outbox.poll_transmit(t0 + 200 * MS).expect("due");
        assert_eq!(&*batch.items, &[7]);
    }
}
