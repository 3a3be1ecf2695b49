//! What the simulation measures: per shard, latency histograms and counts
//! for the measured phase, second by second, merged at the end; for the
//! process, CPU time and resident memory, read from `/proc` as the
//! coordinator reads the target's.

use std::time::Duration;

use msg_svc::notifier::RoundStats;

use crate::harness::coordinator;
use crate::harness::report::Second;
use crate::harness::stats::{Latency, Percentiles};

/// Counts over the measured phase (or one second of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Measured {
    /// Session-message pairs delivered (inline or pulled).
    pub(super) deliveries: u64,
    /// Frames handed to sessions: deltas, plain notifies and pull results.
    pub(super) frames: u64,
    /// Inline deltas among them.
    pub(super) deltas: u64,
    /// Plain notifies among them.
    pub(super) notifies: u64,
    /// Pull results among them.
    pub(super) pulls: u64,
    /// Bytes of those frames.
    pub(super) bytes: u64,
    /// Notifier rounds run.
    pub(super) rounds: u64,
    /// Distinct frames the rounds built.
    pub(super) frames_built: u64,
    /// Time the fan-out threads spent on rounds and pulls.
    pub(super) busy: Duration,
}

impl Measured {
    fn add(&mut self, other: &Measured) {
        self.deliveries += other.deliveries;
        self.frames += other.frames;
        self.deltas += other.deltas;
        self.notifies += other.notifies;
        self.pulls += other.pulls;
        self.bytes += other.bytes;
        self.rounds += other.rounds;
        self.frames_built += other.frames_built;
        self.busy += other.busy;
    }
}

#[derive(Debug)]
struct SecondMeter {
    latency: Latency,
    counts: Measured,
}

/// One shard's measurements, or all of them merged.
///
/// Deliveries outside the measured phase (the drain after it) count in the
/// overall latency but in no second: every message was stamped during the
/// phase, so a late delivery is part of its latency, not of its throughput.
#[derive(Debug)]
pub(super) struct Meter {
    /// Start of the measured phase, µs; nothing is counted before.
    start_us: Option<u64>,
    window: Duration,
    latency: Latency,
    seconds: Vec<SecondMeter>,
}

impl Meter {
    /// A meter for a measured phase of `window`, in whole-second buckets
    /// (the last one partial).
    pub(super) fn new(window: Duration) -> Self {
        let buckets = window.as_secs_f64().ceil().max(1.0) as usize;
        Self {
            start_us: None,
            window,
            latency: Latency::default(),
            seconds: (0..buckets)
                .map(|_| SecondMeter {
                    latency: Latency::default(),
                    counts: Measured::default(),
                })
                .collect(),
        }
    }

    /// The measured phase begins at `start_us`.
    pub(super) fn start(&mut self, start_us: u64) {
        self.start_us = Some(start_us);
    }

    fn bucket(&self, now_us: u64) -> Option<usize> {
        let since = now_us.checked_sub(self.start_us?)?;
        (since < self.window.as_micros() as u64).then_some((since / 1_000_000) as usize)
    }

    /// `recipients` sessions got, at `now_us`, messages stamped at `stamps`.
    pub(super) fn deliveries(
        &mut self,
        now_us: u64,
        stamps: impl Iterator<Item = u64>,
        recipients: u64,
    ) {
        let bucket = self.bucket(now_us);
        for stamp in stamps {
            let micros = now_us.saturating_sub(stamp);
            self.latency.record_n(micros, recipients);
            if let Some(second) = bucket.map(|b| &mut self.seconds[b]) {
                second.latency.record_n(micros, recipients);
                second.counts.deliveries += recipients;
            }
        }
    }

    /// A round that started at `now_us` did `stats`, handing out `bytes`.
    pub(super) fn round(&mut self, now_us: u64, stats: &RoundStats, bytes: u64) {
        if let Some(b) = self.bucket(now_us) {
            let counts = &mut self.seconds[b].counts;
            counts.rounds += 1;
            counts.frames_built += u64::from(stats.frames_built);
            counts.deltas += u64::from(stats.delivered);
            counts.notifies += u64::from(stats.notified);
            counts.frames += u64::from(stats.delivered) + u64::from(stats.notified);
            counts.bytes += bytes;
        }
    }

    /// A pull result of `bytes` was handed out at `now_us`.
    pub(super) fn pull(&mut self, now_us: u64, bytes: u64) {
        if let Some(b) = self.bucket(now_us) {
            let counts = &mut self.seconds[b].counts;
            counts.pulls += 1;
            counts.frames += 1;
            counts.bytes += bytes;
        }
    }

    /// Work that began at `now_us` took `spent`.
    pub(super) fn busy(&mut self, now_us: u64, spent: Duration) {
        if let Some(b) = self.bucket(now_us) {
            self.seconds[b].counts.busy += spent;
        }
    }

    /// Adds another shard's measurements (same window).
    pub(super) fn merge(&mut self, other: &Meter) {
        self.latency.merge(&other.latency);
        for (ours, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            ours.latency.merge(&theirs.latency);
            ours.counts.add(&theirs.counts);
        }
    }

    /// Totals over the measured phase.
    pub(super) fn measured(&self) -> Measured {
        let mut total = Measured::default();
        for second in &self.seconds {
            total.add(&second.counts);
        }
        total
    }

    /// Latency of every delivery, measured phase and drain.
    pub(super) fn percentiles(&self) -> Percentiles {
        self.latency.percentiles()
    }

    /// Deliveries per second and their latency, second by second.
    pub(super) fn timeline(&self) -> Vec<Second> {
        let window = self.window.as_secs_f64();
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, second)| {
                let length = (window - t as f64).clamp(1e-3, 1.0);
                let latency = second.latency.percentiles();
                Second {
                    t: t as u32,
                    delivered_per_s: second.counts.deliveries as f64 / length,
                    p50_ms: latency.p50,
                    p99_ms: latency.p99,
                }
            })
            .collect()
    }
}

/// CPU seconds (user + system, every thread) this process has used so far;
/// 0 where `/proc` cannot tell.
pub(super) fn cpu_seconds() -> f64 {
    coordinator::cpu_s(&[std::process::id()])
}

/// Resident memory of this process, KiB; `None` where `/proc` cannot tell.
pub(super) fn rss_kib() -> Option<u64> {
    Some(coordinator::rss_kb(&[std::process::id()])).filter(|&kib| kib > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_deliveries_count_once_per_recipient_and_message() {
        let mut meter = Meter::new(Duration::from_millis(2_500));
        meter.start(1_000_000);
        // Before the phase: latency only.
        meter.deliveries(999_000, [990_000].into_iter(), 5);
        // Second 0: two messages to 1,000 recipients, 10 and 30 ms old.
        meter.deliveries(1_040_000, [1_030_000, 1_010_000].into_iter(), 1_000);
        // Second 2 (partial, half a second long): one message to one session.
        meter.deliveries(3_100_000, [3_000_000].into_iter(), 1);
        // After the phase: latency only.
        meter.deliveries(3_600_000, [1_000_000].into_iter(), 1);

        let mut merged = Meter::new(Duration::from_millis(2_500));
        merged.merge(&meter);
        assert_eq!(merged.measured().deliveries, 2_001);
        let timeline = merged.timeline();
        assert_eq!(timeline.len(), 3);
        assert_eq!(timeline[0].delivered_per_s, 2_000.0);
        assert!((timeline[0].p50_ms - 10.0).abs() < 0.1, "{timeline:?}");
        assert!((timeline[0].p99_ms - 30.0).abs() < 0.1, "{timeline:?}");
        assert_eq!(timeline[1].delivered_per_s, 0.0);
        assert_eq!(timeline[2].delivered_per_s, 2.0);
        let all = merged.percentiles();
        assert!((all.max - 2_600.0).abs() < 2.0, "{all:?}");
        assert_eq!(merged.latency.count(), 2_007);
    }

    #[test]
    fn proc_readings_are_available_here() {
        let rss = rss_kib().unwrap();
        assert!(rss > 0);
        // Spin past a few 10 ms ticks so there is CPU time to show.
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds() > 0.0);
    }
}
