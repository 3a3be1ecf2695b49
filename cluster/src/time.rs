//! Time sources. The cores never read a clock: callers read one of these and
//! pass the value in, so tests and the simulation can drive time themselves.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds since the Unix epoch: what room timestamps are made of.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Monotonic milliseconds since this process first asked: for deadlines and
/// rounds, which must not jump when the wall clock does.
pub fn mono_millis() -> u64 {
    mono_nanos() / 1_000_000
}

/// Monotonic nanoseconds on the same base as [`mono_millis`].
pub fn mono_nanos() -> u64 {
    u64::try_from(start().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`Instant`] of a [`mono_millis`] reading, to sleep until it.
pub fn instant_at(mono_ms: u64) -> Instant {
    start() + Duration::from_millis(mono_ms)
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}
