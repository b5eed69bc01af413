//! Work on every core, watched from the calling thread: the long phases of a build (linking the
//! nodes, the calibration's exact scan) run on scoped threads while the thread that asked for
//! them reports progress and may stop them.
//!
//! The watcher runs on the calling thread, never on a worker, because what it does may only
//! work there: Python runs its signal handlers (Ctrl-C) on the main thread alone, and a
//! progress bar belongs to the thread that draws it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How often a watcher is called while workers run (and once more when they finish).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Told `(done, total)` units of a phase, on the calling thread; returns `false` to stop it.
pub type Watcher<'w> = &'w mut dyn FnMut(usize, usize) -> bool;

/// A watcher that never stops anything.
pub fn unwatched(_done: usize, _total: usize) -> bool {
    true
}

/// What the workers of one phase share: units done, whether to stop, how many still run.
pub struct Phase {
    total: usize,
    done: AtomicUsize,
    stop: AtomicBool,
    running: Mutex<usize>,
    finished: Condvar,
}

impl Phase {
    /// Workers check this between units of work and return when it is set.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the other workers too (one that failed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Counts `units` more as done.
    pub fn add_done(&self, units: usize) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed).min(self.total)
    }
}

/// Runs `work` on `threads` scoped threads (at least 1) over a phase of `total` units, calling
/// `watch` on this thread every [`WATCH_INTERVAL`] and when they finish. If `watch` returns
/// `false` the phase is stopped (workers see [`Phase::stopped`]) and this returns `false` once
/// they have returned; otherwise `true` (workers may still have stopped themselves on a failure,
/// which `work` records on its own).
pub fn run_watched<F>(threads: usize, total: usize, work: F, watch: Watcher<'_>) -> bool
where
    F: Fn(&Phase) + Sync,
{
    let threads = threads.max(1);
    let phase = Phase {
        total,
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        running: Mutex::new(threads),
        finished: Condvar::new(),
    };
    let mut asked_to_stop = false;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // Counted down however `work` ends, a panic included, so the watch loop ends.
                let _leaving = Leaving(&phase);
                work(&phase);
            });
        }
        // A watcher that panics stops the workers too: the scope waits for them before the
        // panic goes on (a build's linking phase left to run takes minutes).
        let _stop_on_unwind = StopOnUnwind(&phase);
        let mut running = phase.running.lock();
        while *running > 0 {
            phase.finished.wait_for(&mut running, WATCH_INTERVAL);
            if *running > 0 && !asked_to_stop {
                let done = phase.done();
                asked_to_stop = parking_lot::MutexGuard::unlocked(&mut running, || !watch(done, total));
                if asked_to_stop {
                    phase.stop();
                }
            }
        }
    });
    if !asked_to_stop {
        asked_to_stop = !watch(phase.done(), total);
    }
    !asked_to_stop
}

/// Stops the phase it holds if dropped while the thread unwinds.
struct StopOnUnwind<'p>(&'p Phase);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// Counts a worker out of [`Phase::running`] when it returns or unwinds.
struct Leaving<'p>(&'p Phase);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock();
        *running -= 1;
        self.0.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_that_says_stop_stops_every_worker_and_is_called_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let mut calls = 0;
        let mut watch = |done: usize, total: usize| {
            assert_eq!(std::thread::current().id(), caller, "the watcher runs on the calling thread");
            assert!(done <= total, "done {done} of {total}");
            calls += 1;
            false
        };
        let went_on = run_watched(
            3,
            10,
            |phase: &Phase| {
                while !phase.stopped() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
            &mut watch,
        );
        assert!(!went_on, "stopped");
        assert_eq!(calls, 1, "asked once: the workers stop at its first answer");
    }

    #[test]
    fn work_that_ends_on_its_own_is_watched_to_the_end() {
        let mut last = (0, 0);
        let mut watch = |done: usize, total: usize| {
            last = (done, total);
            true
        };
        let went_on = run_watched(
            2,
            1000,
            |phase: &Phase| {
                for _ in 0..500 {
                    phase.add_done(1);
                }
            },
            &mut watch,
        );
        assert!(went_on, "never asked to stop");
        assert_eq!(last, (1000, 1000), "the last call sees every unit done");
    }

    #[test]
    fn a_watcher_that_panics_stops_every_worker_before_its_panic_goes_on() {
        let started = std::time::Instant::now();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_watched(
                2,
                10,
                |phase: &Phase| {
                    // Work of 10 s unless stopped.
                    while !phase.stopped() && started.elapsed() < Duration::from_secs(10) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
                &mut |_, _| panic!("a watcher that fails"),
            )
        }));
        assert!(panicked.is_err(), "the panic goes on to the caller");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "the workers stopped at once, not after their work: {took:?}");
    }
}
