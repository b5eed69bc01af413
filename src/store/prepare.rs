//! Fresh pages made ahead of the writer, on a background thread.
//!
//! A store that grows formats the first never-initialised page of a space every few inserts
//! (a vector page every 16 inserts of 1 KiB). [`Inner::fresh_ahead`] makes that page and the
//! rest of its run fresh zeroed memory with one mapping call and faults them in with one more
//! (`Arena::format_fresh_run`): 0.3–2 ms, paid by one commit in ~960, most of a single
//! writer's 99.9th percentile. With background I/O, the run *after* the one the writer is in
//! is made here instead, while the writer fills the current one, so commits find their pages
//! ready.
//!
//! Rules that keep the writer and this thread apart (the writer is one thread at a time: the
//! writer lock serialises `init_page`):
//! - A run is asked for (`queued`) only beyond the pages the writer has initialised; the thread
//!   checks again under the run's latches, and makes nothing where the writer got there first.
//! - Before the writer initialises a page at or past its space's high water, it settles with
//!   this thread ([`Preparer::settle`]): a queued run holding the page is taken back (the writer
//!   makes the page itself), a running one is waited for. So no page the writer formats is
//!   ever made fresh under it.
//! - Everything here is optional: a run that cannot be made (a stripe latched, too many fresh
//!   runs, a run in a file the store does not have yet) is left for the writer, which makes
//!   it inline as before. No file is created here.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::error::{Error, Result};
use crate::format::page::{PageId, Space};

/// The preparer's side of a store: the run asked for, the run being made, and the thread.
#[derive(Default)]
pub(crate) struct Preparer {
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// A run asked for and not started: `(first page, pages)`.
    queued: Option<(PageId, u64)>,
    /// The run the thread is making now.
    running: Option<(PageId, u64)>,
    /// Per space, the last run the thread made: `(first page_no, end page_no)`. When the
    /// writer reaches its first page, the run after it is asked for.
    made: [Option<(u64, u64)>; 2],
    /// Runs the thread has made since the open.
    made_runs: u64,
    /// The thread runs (set by [`start`]).
    started: bool,
    stopping: bool,
}

fn covers(run: Option<(PageId, u64)>, page: PageId) -> bool {
    run.is_some_and(|(first, count)| {
        first.space() == page.space() && (first.page_no()..first.page_no() + count).contains(&page.page_no())
    })
}

impl Preparer {
    /// Before the writer initialises `page` (at or past its space's high water): takes back a
    /// queued run that holds it and waits for a running one. Returns whether the thread runs.
    pub fn settle(&self, page: PageId) -> bool {
        let mut state = self.state.lock();
        if covers(state.queued, page) {
            state.queued = None;
        }
        while covers(state.running, page) {
            self.changed.wait(&mut state);
        }
        state.started && !state.stopping
    }

    /// The end of the run the thread made last in `page`'s space, if `page` is its first page.
    pub fn made_run_starting_at(&self, page: PageId) -> Option<u64> {
        let state = self.state.lock();
        match state.made[page.space().index()] {
            Some((first, end)) if first == page.page_no() => Some(end),
            _ => None,
        }
    }

    /// Runs the thread has made since the open.
    #[cfg(test)]
    pub fn made_runs(&self) -> u64 {
        self.state.lock().made_runs
    }

    /// Asks the thread to make the `count` pages from `first` fresh.
    pub fn ask(&self, first: PageId, count: u64) {
        let mut state = self.state.lock();
        if !state.started || state.stopping || count == 0 {
            return;
        }
        state.queued = Some((first, count));
        self.changed.notify_all();
    }
}

/// Starts the preparer thread for `inner` (background I/O, a writable store), once.
pub(crate) fn start(inner: &Arc<Inner>) -> Result<()> {
    let preparer = Arc::clone(&inner.preparer);
    let mut slot = preparer.thread.lock();
    if slot.is_some() || preparer.state.lock().stopping {
        return Ok(());
    }
    let weak = Arc::downgrade(inner);
    let shared = Arc::clone(&preparer);
    let handle = crate::background::spawn("vellum-prepare", move || run(&shared, &weak))
        .map_err(|e| Error::io("starting the page preparer thread", e))?;
    preparer.state.lock().started = true;
    *slot = Some(handle);
    Ok(())
}

/// Stops the thread and waits for it: nothing is made fresh after this returns.
pub(crate) fn stop(inner: &Inner) {
    let preparer = &inner.preparer;
    {
        let mut state = preparer.state.lock();
        state.stopping = true;
        state.queued = None;
        preparer.changed.notify_all();
    }
    if let Some(handle) = preparer.thread.lock().take() {
        let _ = handle.join();
    }
}

/// The thread: makes each run asked for, until the store stops or is gone. It holds the store
/// only while it makes a run.
fn run(preparer: &Preparer, weak: &Weak<Inner>) {
    loop {
        let job = {
            let mut state = preparer.state.lock();
            while state.queued.is_none() && !state.stopping {
                // Woken by `ask` or `stop`; the timeout lets the thread of a store dropped
                // without a stop end.
                preparer.changed.wait_for(&mut state, Duration::from_millis(250));
                if weak.strong_count() == 0 {
                    return;
                }
            }
            if state.stopping {
                return;
            }
            let job = state.queued.take().expect("a queued run");
            state.running = Some(job);
            job
        };
        let running = Running(preparer);
        let made = weak.upgrade().is_some_and(|inner| inner.prepare_run(job.0, job.1));
        if made {
            // Noted before the run ends: a writer that waited for it finds it made and asks
            // for the next.
            let mut state = preparer.state.lock();
            state.made_runs += 1;
            state.made[job.0.space().index()] = Some((job.0.page_no(), job.0.page_no() + job.1));
        }
        drop(running);
    }
}

/// Ends the thread's running run when dropped, also by a panic's unwinding (a broken invariant
/// in `prepare_run`): a writer waiting for the run in [`Preparer::settle`] is never left
/// waiting for a thread that is gone.
struct Running<'a>(&'a Preparer);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.state.lock().running = None;
        self.0.changed.notify_all();
    }
}

impl Inner {
    /// Makes the `count` pages from `first` fresh zeroed memory, faulted in, where they lie
    /// wholly past the space's initialised pages (see the module's rules). Returns whether it
    /// did.
    fn prepare_run(&self, first: PageId, count: u64) -> bool {
        let space: Space = first.space();
        let count = count as usize;
        assert_eq!(self.arena.run_len(first, count), count, "a prepared run lies in one file");
        let beyond = || first.page_no() >= self.initialised_pages()[space.index()];
        // Only in files the store has: a file made ahead would take its 16 MiB of disk before
        // the store needs them (and the writer makes one file in ~1,000 runs of 1 KiB inserts).
        let last = PageId::new(space, first.page_no() + count as u64 - 1);
        if !beyond() || last.page_no() >= self.arena.page_count(space) || self.arena.ensure_page(last).is_err() {
            return false;
        }
        let made = {
            let Some(run) = self.arena.try_latch_run(first, count) else {
                return false;
            };
            beyond() && self.arena.format_fresh_run_lazily(&run)
        };
        // Faulted in once the latches are given back: a run's latches are stripes that other
        // pages share (the writer's current vector page among them, at times), and the faults
        // take longer than the mapping call. The writer waits for the whole of it only if it
        // reaches the run first (`Preparer::settle`).
        if made {
            self.arena.populate(first, count);
        }
        made
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Store};

    fn vector_page(page_no: u64) -> PageId {
        PageId::new(Space::Vector, page_no)
    }

    #[test]
    fn a_queued_run_that_holds_the_page_is_taken_back_by_the_writer() {
        let preparer = Preparer::default();
        preparer.state.lock().started = true;
        preparer.ask(vector_page(64), 64);
        assert!(preparer.settle(vector_page(10)), "the thread runs");
        assert!(preparer.state.lock().queued.is_some(), "a page outside the run leaves it queued");
        preparer.settle(vector_page(100));
        assert!(preparer.state.lock().queued.is_none(), "the writer makes page 100 itself: the run is no longer asked for");
    }

    #[test]
    #[cfg_attr(miri, ignore = "threads and timing")]
    fn the_writer_waits_for_a_running_run_that_holds_the_page_and_not_for_one_that_does_not() {
        let preparer = Arc::new(Preparer::default());
        preparer.state.lock().running = Some((vector_page(64), 64));
        preparer.settle(vector_page(128));
        let ending = {
            let preparer = Arc::clone(&preparer);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                preparer.state.lock().running = None;
                preparer.changed.notify_all();
            })
        };
        let started = std::time::Instant::now();
        preparer.settle(vector_page(64));
        assert!(started.elapsed() >= Duration::from_millis(50), "settle returned while the run was being made");
        ending.join().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "threads and timing")]
    fn a_writer_waiting_for_a_run_is_released_when_the_thread_making_it_panics() {
        let preparer = Arc::new(Preparer::default());
        preparer.state.lock().running = Some((vector_page(64), 64));
        let making = {
            let preparer = Arc::clone(&preparer);
            std::thread::spawn(move || {
                let _running = Running(&preparer);
                std::thread::sleep(Duration::from_millis(20));
                panic!("a broken invariant while the run is made (this panic is the test's)");
            })
        };
        let (done, settled) = std::sync::mpsc::channel();
        let waiting = {
            let preparer = Arc::clone(&preparer);
            std::thread::spawn(move || {
                preparer.settle(vector_page(70));
                let _ = done.send(());
            })
        };
        assert!(
            settled.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the writer waiting for the run was released when the thread died"
        );
        waiting.join().unwrap();
        assert!(making.join().is_err(), "the thread making the run panicked");
        assert!(preparer.state.lock().running.is_none(), "its run ended with it");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_growing_store_finds_its_next_runs_made_ahead_and_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), 256, Options::default()).unwrap();
        // 16 KiB pages hold 15 vectors of 1 KiB: a run of 64 pages every 960 inserts.
        let vector = |i: usize| (0..256).map(|j| (i * 256 + j) as f32).collect::<Vec<f32>>();
        for i in 0..4_000 {
            store.insert(&format!("id-{i}"), &vector(i), &[]).unwrap();
        }
        let made = store.inner().preparer.made_runs();
        assert!(made >= 3, "the preparer made {made} runs ahead of 4,000 inserts");
        store.close().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        for i in (0..4_000).step_by(97) {
            let got = store.get(&format!("id-{i}")).unwrap().expect("present");
            assert_eq!(&*got, vector(i).as_slice(), "vector {i} reads back");
        }
        store.close().unwrap();
        let report = crate::inspect::verify_store(dir.path(), &()).unwrap();
        assert!(report.clean(), "the store verifies: {report:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_store_without_background_io_makes_its_runs_inline_and_starts_no_preparer() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            background_io: false,
            ..Options::default()
        };
        let store = Store::create(dir.path(), 256, options).unwrap();
        for i in 0..1_000 {
            store.insert(&format!("id-{i}"), &[i as f32; 256], &[]).unwrap();
        }
        assert_eq!(store.inner().preparer.made_runs(), 0, "no thread made a run");
        assert!(store.inner().preparer.thread.lock().is_none(), "no preparer thread");
        store.close().unwrap();
    }
}
