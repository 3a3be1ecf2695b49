//! When a batch goes out (sans-I/O): when it is full or its oldest item has
//! waited long enough, and only while fewer than a limit of requests are
//! out. Items wait in a bounded queue; the caller decides what to do with an
//! item refused at the bound. Time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a [`Batcher`] forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Most items in one batch; a batch this full goes out at once.
    pub(crate) max_items: usize,
    /// How long the oldest waiting item may wait for a batch to fill.
    pub(crate) max_delay: Duration,
    /// Most batches out at once.
    pub(crate) max_in_flight: usize,
    /// Most items waiting (not yet in a batch).
    pub(crate) queue: usize,
}

/// Items waiting to be batched, and how many batches are out.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    limits: BatchLimits,
    waiting: VecDeque<(Instant, T)>,
    in_flight: usize,
}

impl<T> Batcher<T> {
    /// An empty batcher; limits of zero are taken as one so a batch can
    /// always form.
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Self {
            limits: BatchLimits {
                max_items: limits.max_items.max(1),
                max_in_flight: limits.max_in_flight.max(1),
                queue: limits.queue.max(1),
                ..limits
            },
            waiting: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Queues `item`, or gives it back when the queue is at its bound.
    pub(crate) fn push(&mut self, now: Instant, item: T) -> Result<(), T> {
        if self.waiting.len() >= self.limits.queue {
            return Err(item);
        }
        self.waiting.push_back((now, item));
        Ok(())
    }

    /// The next batch to send, oldest items first, if one is due at `now`;
    /// it counts as in flight until [`handle_done`](Self::handle_done).
    pub(crate) fn poll_batch(&mut self, now: Instant) -> Option<Vec<T>> {
        if self.in_flight >= self.limits.max_in_flight {
            return None;
        }
        let due = self.waiting.len() >= self.limits.max_items
            || self.waiting.front().is_some_and(|(since, _)| {
                now.saturating_duration_since(*since) >= self.limits.max_delay
            });
        if !due {
            return None;
        }
        let take = self.waiting.len().min(self.limits.max_items);
        self.in_flight += 1;
        Some(self.waiting.drain(..take).map(|(_, item)| item).collect())
    }

    /// When the next batch falls due if nothing is pushed or completed
    /// before: `None` while nothing waits or no request may start.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight >= self.limits.max_in_flight {
            return None;
        }
        self.waiting
            .front()
            .map(|(since, _)| *since + self.limits.max_delay)
    }

    /// A batch handed out by [`poll_batch`](Self::poll_batch) is finished,
    /// whatever its fate.
    pub(crate) fn handle_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Items waiting, not yet in a batch.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes every waiting item, oldest first (for shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.waiting.drain(..).map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn batcher(max_items: usize, max_in_flight: usize, queue: usize) -> Batcher<u32> {
        Batcher::new(BatchLimits {
            max_items,
            max_delay: 10 * MS,
            max_in_flight,
            queue,
        })
    }

    #[test]
    fn a_full_batch_goes_out_at_once() {
        let t0 = Instant::now();
        let mut batcher = batcher(3, 4, 100);
        for item in 0..7 {
            batcher.push(t0, item).expect("room");
        }
        assert_eq!(batcher.poll_batch(t0), Some(vec![0, 1, 2]));
        assert_eq!(batcher.poll_batch(t0), Some(vec![3, 4, 5]));
        assert_eq!(batcher.poll_batch(t0), None, "one left, not yet due");
        assert_eq!(batcher.poll_timeout(), Some(t0 + 10 * MS));
        assert_eq!(batcher.poll_batch(t0 + 10 * MS), Some(vec![6]));
        assert_eq!(batcher.poll_timeout(), None);
    }

    #[test]
    fn the_oldest_item_sets_the_deadline() {
        let t0 = Instant::now();
        let mut batcher = batcher(10, 1, 100);
        batcher.push(t0, 1).expect("room");
        batcher.push(t0 + 6 * MS, 2).expect("room");
        assert_eq!(batcher.poll_timeout(), Some(t0 + 10 * MS));
        assert_eq!(batcher.poll_batch(t0 + 9 * MS), None);
        assert_eq!(batcher.poll_batch(t0 + 10 * MS), Some(vec![1, 2]));
    }

    #[test]
    fn no_more_than_max_in_flight_batches_are_out() {
        let t0 = Instant::now();
        let mut batcher = batcher(1, 2, 100);
        for item in 0..4 {
            batcher.push(t0, item).expect("room");
        }
        assert_eq!(batcher.poll_batch(t0), Some(vec![0]));
        assert_eq!(batcher.poll_batch(t0), Some(vec![1]));
        assert_eq!(batcher.poll_batch(t0 + 60 * MS), None);
        assert_eq!(batcher.poll_timeout(), None, "nothing may start");
        batcher.handle_done();
        assert_eq!(batcher.poll_batch(t0), Some(vec![2]));
        assert_eq!(batcher.poll_batch(t0), None);
    }

    #[test]
    fn the_queue_gives_items_back_at_its_bound() {
        let t0 = Instant::now();
        let mut batcher = batcher(2, 1, 3);
        for item in 0..3 {
            batcher.push(t0, item).expect("room");
        }
        assert_eq!(batcher.push(t0, 3), Err(3));
        assert_eq!(batcher.poll_batch(t0), Some(vec![0, 1]));
        assert_eq!(batcher.waiting(), 1);
        batcher.push(t0, 4).expect("a batch left the queue");
        assert_eq!(batcher.drain().collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(batcher.waiting(), 0);
    }
}
