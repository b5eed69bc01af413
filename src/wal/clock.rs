//! The record clock: the timestamps records carry (FORMAT.md 9) never go backwards in a log.
//!
//! A restore to a time (FORMAT.md 19.6) cuts the log at the first commit stamped after the
//! target, and takes a base image whose checkpoint time is at or before it, trusting that every
//! record before the checkpoint's end is stamped no later than that time. A wall clock that
//! steps back (an NTP correction, a virtual machine resumed from a snapshot) would break both:
//! a cut inside a checkpoint's window, whose pages the base image already holds, cannot be
//! undone. So every record time and checkpoint time comes from here: the wall clock, or the
//! latest time this log already issued or holds, whichever is later. The open raises the floor to
//! the latest time recovery reads in the log and in the control file.

use std::sync::atomic::{AtomicU64, Ordering};

/// Microseconds since the Unix epoch by the wall clock (0 before it).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A clock that never goes backwards.
#[derive(Debug, Default)]
pub(super) struct RecordClock {
    /// The latest time issued or raised to.
    floor_us: AtomicU64,
    /// Added to the wall clock (the project's tests: a clock that steps back).
    #[cfg(feature = "testing")]
    shift_us: std::sync::atomic::AtomicI64,
}

impl RecordClock {
    /// The time now, never earlier than any time issued or raised to before.
    pub(super) fn now_us(&self) -> u64 {
        let wall = self.wall_us();
        let before = self.floor_us.fetch_max(wall, Ordering::AcqRel);
        before.max(wall)
    }

    /// Raises the floor to `time_us`, a time the log or the control file already holds.
    pub(super) fn raise(&self, time_us: u64) {
        self.floor_us.fetch_max(time_us, Ordering::AcqRel);
    }

    #[cfg(not(feature = "testing"))]
    fn wall_us(&self) -> u64 {
        wall_clock_us()
    }

    #[cfg(feature = "testing")]
    fn wall_us(&self) -> u64 {
        wall_clock_us().saturating_add_signed(self.shift_us.load(Ordering::Relaxed))
    }

    /// Moves this clock's wall clock by `delta_us` (the project's tests).
    #[cfg(feature = "testing")]
    pub(super) fn shift(&self, delta_us: i64) {
        self.shift_us.fetch_add(delta_us, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_ahead_of_the_wall_clock_holds_the_time_there() {
        let clock = RecordClock::default();
        let ahead = wall_clock_us() + 3_600_000_000;
        clock.raise(ahead);
        assert_eq!(clock.now_us(), ahead, "a time already in the log is never undercut");
        assert_eq!(clock.now_us(), ahead, "nor by the next one");
    }

    #[test]
    fn successive_times_never_decrease() {
        let clock = RecordClock::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let now = clock.now_us();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
    }
}
