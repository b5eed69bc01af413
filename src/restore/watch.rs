//! A restore (or backup) watched from the calling thread: the restore runs on a scoped thread
//! while the thread that asked for it reports its progress and may stop it, as an index build
//! is watched (src/ann/watch.rs, where the reasons for the calling thread are).
//!
//! Stopping: the worker's storage is a stoppable [`Adapted`], so once the watcher says stop,
//! the worker's next file operation fails (and a replay's log reader stops within 1,024
//! records). The failure unwinds through the restore's usual error path, which removes its
//! staging directory through the unwrapped storage: a stopped restore leaves nothing, like
//! one that failed.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;

use crate::ann::watch::WATCH_INTERVAL;
use crate::error::{Error, Result};
use crate::storage::{Adapted, Storage};

use super::RestoreReport;

/// The phases of a restore, in order, as a watcher of
/// [`restore_watched`](crate::restore_watched) or
/// [`Store::backup_watched`](crate::Store::backup_watched) is told them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestorePhase {
    /// Reading what the source holds: its control file and the archive's listing (a remote
    /// archive's too). Units: none (`total` 0).
    Planning,
    /// Writing the base image's arena files. Units: bytes of arena.
    StageArena,
    /// Copying (live) or decoding (archived) the log after the base image. Units: bytes of log.
    StageLog,
    /// Finding the target in the log and cutting it there (not for `Latest`). Units: none.
    FindCut,
    /// Recovering the staged store: redo to the target, undo of what was open there. Units:
    /// none.
    Replay,
    /// Starting the restored store's timeline and taking its first base image. Units: none.
    NewTimeline,
}

/// How far a restore has come: `done` of `total` units of its `phase` (`total` 0 where the
/// phase has no measure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreProgress {
    /// The phase running.
    pub phase: RestorePhase,
    /// Units of it done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

const PHASES: [RestorePhase; 6] = [
    RestorePhase::Planning,
    RestorePhase::StageArena,
    RestorePhase::StageLog,
    RestorePhase::FindCut,
    RestorePhase::Replay,
    RestorePhase::NewTimeline,
];

/// What the worker of a restore shares with its watcher: the phase and its progress, and the
/// flag that stops the worker's storage.
#[derive(Debug)]
pub(crate) struct Watch {
    stop: Arc<AtomicBool>,
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch {
            stop: Arc::new(AtomicBool::new(false)),
            phase: AtomicU8::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Enters `phase`, of `total` units.
    pub(crate) fn enter(&self, phase: RestorePhase, total: u64) {
        let index = PHASES.iter().position(|p| *p == phase).expect("every phase is listed");
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    /// Counts `units` more of the phase as done.
    pub(crate) fn add(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    /// `storage`, whose every operation fails once the watcher has said stop.
    pub(crate) fn stoppable(&self, storage: &Arc<dyn Storage>) -> Arc<dyn Storage> {
        Arc::new(Adapted::stoppable(storage.clone(), self.stop.clone()))
    }

    /// Stops the worker (as the watcher does); for tests that stop at a chosen operation.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn progress(&self) -> RestoreProgress {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        RestoreProgress {
            phase: PHASES[usize::from(self.phase.load(Ordering::Relaxed))],
            done: if total == 0 { done } else { done.min(total) },
            total,
        }
    }
}

/// Runs `work` (a restore into `dest`) on a scoped thread, calling `watcher` on this thread
/// every [`WATCH_INTERVAL`] and once more when the work ends well. If the watcher says stop,
/// the work is stopped and its failure becomes `Err(Interrupted)`; a stop that comes after the
/// work ended well changes nothing (`dest` is whole then).
pub(crate) fn run_watched(
    dest: &Path,
    work: impl FnOnce(&Watch) -> Result<RestoreReport> + Send,
    watcher: &mut dyn FnMut(RestoreProgress) -> ControlFlow<()>,
) -> Result<RestoreReport> {
    let watch = Watch::new();
    let result = std::thread::scope(|scope| {
        let (sender, ended) = mpsc::channel::<()>();
        let worker = scope.spawn(|| {
            // Sent however `work` ends (a panic drops the sender): the watch loop then ends.
            let _ending = sender;
            work(&watch)
        });
        // A watcher that panics stops the work too: the scope waits for the worker before the
        // panic goes on, and a restore left to run would make `dest` for a call that failed.
        let _stop_on_unwind = StopOnUnwind(&watch);
        while let Err(mpsc::RecvTimeoutError::Timeout) = ended.recv_timeout(WATCH_INTERVAL) {
            if !watch.stopped() && watcher(watch.progress()).is_break() {
                watch.stop();
            }
        }
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    match result {
        Ok(report) => {
            if !watch.stopped() {
                let mut last = watch.progress();
                last.done = last.total;
                let _ = watcher(last);
            }
            Ok(report)
        }
        Err(error) if watch.stopped() => {
            let _ = error;
            Err(Error::Interrupted(format!(
                "the restore into {} was stopped by its watcher; nothing of it was kept",
                dest.display()
            )))
        }
        Err(error) => Err(error),
    }
}

/// Stops the watch it holds if dropped while the thread unwinds.
struct StopOnUnwind<'w>(&'w Watch);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::storage::{Mapping, RealStorage, StorageFile};
    use crate::{Options, RestoreTarget, Retention, Store};

    /// A storage that stops a watch at its `at`-th operation (of the storage or of a file),
    /// counting them all.
    #[derive(Debug)]
    struct StopAt {
        inner: Arc<dyn Storage>,
        ops: Arc<AtomicU64>,
        at: u64,
        stop: Arc<AtomicBool>,
    }

    impl StopAt {
        fn tick(&self) {
            if self.ops.fetch_add(1, Ordering::Relaxed) == self.at {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    #[derive(Debug)]
    struct StopAtFile {
        inner: Arc<dyn StorageFile>,
        owner: Arc<StopAt>,
    }

    /// `StopAt` is shared by its files: the storage is an `Arc` wrapper over it.
    #[derive(Debug)]
    struct Counted(Arc<StopAt>);

    impl Storage for Counted {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.0.tick();
            self.0.inner.create_dir_all(path)
        }
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
            self.0.tick();
            let inner = self.0.inner.open(path, create)?;
            Ok(Arc::new(StopAtFile {
                inner,
                owner: self.0.clone(),
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.0.tick();
            self.0.inner.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.0.tick();
            self.0.inner.remove_file(path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.0.tick();
            self.0.inner.remove_dir(path)
        }
        fn list(&self, path: &Path) -> io::Result<Vec<String>> {
            self.0.tick();
            self.0.inner.list(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.0.tick();
            self.0.inner.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.inner.exists(path)
        }
        fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.0.inner.lock_exclusive(path)
        }
        fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.0.inner.lock_shared(path)
        }
        fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.0.inner.lock_dir(path, exclusive)
        }
    }

    impl StorageFile for StopAtFile {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn set_len(&self, len_bytes: u64) -> io::Result<()> {
            self.owner.tick();
            self.inner.set_len(len_bytes)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.owner.tick();
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.owner.tick();
            self.inner.write_at(buf, offset)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.owner.tick();
            self.inner.sync_data()
        }
        fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
            self.owner.tick();
            self.inner.allocate(len_bytes)
        }
        fn map_shared(&self) -> io::Result<Mapping> {
            self.owner.tick();
            self.inner.map_shared()
        }
        fn map_private(&self) -> io::Result<Mapping> {
            self.owner.tick();
            self.inner.map_private()
        }
    }

    fn options() -> Options {
        Options {
            page_size_bytes: 4096,
            segment_size_bytes: 1 << 18,
            checkpoint_interval_bytes: 0,
            base_image_every: 2,
            retention: Retention::KeepAll,
            background_io: false,
            ..Options::default()
        }
    }

    /// A store with an archive whose restore stages a base image and several segments, then
    /// replays thousands of records (so that the replay's log reader checks the stop).
    fn source(root: &Path) -> PathBuf {
        let src = root.join("src");
        let store = Store::create(&src, 8, options()).unwrap();
        for batch in 0..30u32 {
            let mut tx = store.begin().unwrap();
            for i in 0..200u32 {
                let n = batch * 200 + i;
                tx.upsert(&format!("id-{n}"), &[n as f32; 8], &[]).unwrap();
            }
            tx.commit().unwrap();
            if batch == 5 {
                store.checkpoint().unwrap();
            }
        }
        store.close().unwrap();
        src
    }

    fn count(dest: &Path) -> u64 {
        let store = Store::open(dest, options()).unwrap();
        let count = store.len() as u64;
        assert_eq!(store.get("id-5999").unwrap().as_deref(), Some(&[5999.0f32; 8][..]));
        store.close().unwrap();
        count
    }

    /// Runs a restore of `src` into `dest` whose watch is stopped at operation `at`; returns
    /// the result, whether the watch was stopped, and how many operations it made.
    fn restore_stopped_at(src: &Path, dest: &Path, at: u64) -> (Result<RestoreReport>, bool, u64) {
        let watch = Watch::new();
        let stop_at = Arc::new(StopAt {
            inner: Arc::new(RealStorage::new()),
            ops: Arc::new(AtomicU64::new(0)),
            at,
            stop: watch.stop.clone(),
        });
        let storage: Arc<dyn Storage> = Arc::new(Counted(stop_at.clone()));
        let result = super::super::restore_watching(storage, src, dest, RestoreTarget::Latest, &watch);
        (result, watch.stopped(), stop_at.ops.load(Ordering::Relaxed))
    }

    #[test]
    fn a_restore_stopped_at_any_file_operation_leaves_nothing_and_the_next_one_is_whole() {
        let root = tempfile::tempdir().unwrap();
        let src = source(root.path());
        let (whole, _, ops) = restore_stopped_at(&src, &root.path().join("whole"), u64::MAX);
        let report = whole.unwrap();
        assert!(
            report.records_redone > 1024,
            "the replay reads past a stop check: {report:?}"
        );
        assert_eq!(count(&root.path().join("whole")), 6000);
        let stride = (ops / 60).max(1);
        let (mut stopped, mut finished) = (0, 0);
        // Spread over the whole restore, and each of its last operations (the publish).
        // Each once: a second restore into a published destination would be refused at once.
        let ats: std::collections::BTreeSet<u64> = (0..ops)
            .step_by(stride as usize)
            .chain(ops.saturating_sub(4)..ops)
            .collect();
        for at in ats {
            let dest = root.path().join(format!("at-{at}"));
            let (result, was_stopped, _) = restore_stopped_at(&src, &dest, at);
            assert!(was_stopped, "operation {at} of {ops} was made");
            match result {
                Ok(_) => {
                    // Stopped after the last stoppable operation (the publish is not).
                    assert_eq!(count(&dest), 6000, "stopped at {at}: a published restore is whole");
                    finished += 1;
                }
                Err(error) => {
                    assert!(!dest.exists(), "stopped at {at} ({error}): no destination");
                    stopped += 1;
                }
            }
            let mut left: Vec<String> = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with('.'))
                .collect();
            left.sort();
            assert!(left.is_empty(), "stopped at {at}: nothing staged is left: {left:?}");
        }
        assert!(
            stopped > 50 && finished >= 1,
            "both ends were reached: {stopped} stopped, {finished} finished"
        );
        let dest = root.path().join("after");
        let (result, _, _) = restore_stopped_at(&src, &dest, u64::MAX);
        result.unwrap();
        assert_eq!(count(&dest), 6000, "a restore after the stopped ones is whole");
    }

    /// A restore that starts two of the watcher's ticks late: the watcher is called before it
    /// writes anything.
    fn restore_after_two_ticks(src: &Path, dest: &Path, watch: &Watch) -> Result<RestoreReport> {
        std::thread::sleep(WATCH_INTERVAL * 2);
        let storage = Arc::new(RealStorage::new());
        super::super::restore_watching(storage, src, dest, RestoreTarget::Latest, watch)
    }

    #[test]
    fn a_watcher_that_says_stop_or_panics_keeps_nothing_and_one_that_goes_on_sees_every_phase_in_order() {
        let root = tempfile::tempdir().unwrap();
        let src = source(root.path());
        let mut seen: Vec<RestoreProgress> = Vec::new();
        let dest = root.path().join("watched");
        let report = run_watched(
            &dest,
            |watch| {
                // Slowed so that the watcher is called in each phase at least once.
                let slow = |phase| {
                    watch.enter(phase, 10);
                    std::thread::sleep(WATCH_INTERVAL * 2);
                };
                slow(RestorePhase::Planning);
                slow(RestorePhase::StageArena);
                super::super::restore_watching(Arc::new(RealStorage::new()), &src, &dest, RestoreTarget::Latest, watch)
            },
            &mut |progress| {
                seen.push(progress);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert!(report.records_redone > 0);
        let phases: Vec<RestorePhase> = seen.iter().map(|p| p.phase).collect();
        assert!(phases.contains(&RestorePhase::StageArena), "{phases:?}");
        let last = *seen.last().unwrap();
        assert!(
            last.done == last.total,
            "the last call is the end of the last phase: {last:?}"
        );
        assert!(seen.iter().all(|p| p.total == 0 || p.done <= p.total), "{seen:?}");

        let stopped_dest = root.path().join("stopped");
        let mut calls = 0;
        let result = run_watched(
            &stopped_dest,
            |watch| restore_after_two_ticks(&src, &stopped_dest, watch),
            &mut |_| {
                calls += 1;
                ControlFlow::Break(())
            },
        );
        assert!(matches!(result, Err(Error::Interrupted(_))), "stopped: {result:?}");
        assert_eq!(calls, 1, "asked once: the restore stops at its first answer");
        assert!(!stopped_dest.exists(), "nothing of a stopped restore is kept");

        let panicked_dest = root.path().join("panicked");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_watched(
                &panicked_dest,
                |watch| restore_after_two_ticks(&src, &panicked_dest, watch),
                &mut |_| panic!("a watcher that fails"),
            )
        }));
        assert!(panicked.is_err(), "the watcher's panic goes on to the caller");
        assert!(
            !panicked_dest.exists(),
            "a watcher's panic stops the restore: no destination"
        );
        let staged = std::fs::read_dir(root.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(staged, 0, "nothing staged is left");
    }
}
