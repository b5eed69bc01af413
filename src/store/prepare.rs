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
//! - The writer settles without the lock where the page lies below `low_water`, the first
//!   page of every run queued or running: only the writer adds runs (so only it lowers
//!   `low_water`), and the thread only takes runs off, so a page below it is in none. The lock
//!   is taken where a run asked for may hold the page, and where `frontier` (the end of the
//!   runs asked for) says the next run is wanted: once a run.
//! - Everything here is optional: a run that cannot be made (a stripe latched, too many fresh
//!   runs, a file that cannot be created) is left for the writer, which makes it inline as
//!   before.
//! - The next arena file of a space is created here when the writer comes within
//!   [`FILE_AHEAD_PAGES`] of the end of the last one ([`Preparer::ask_file`]; files of at
//!   least that many pages only): creating a file allocates its blocks, and on a memory file
//!   system zeroes them, 22% of a writer's time in a bulk load to tmpfs when the writer made
//!   its files itself. Never more than one file ahead: a file made ahead takes its 16 MiB
//!   before the store needs them. A close or a crash may leave it unused, as a file the
//!   writer created and never formatted a page of: an arena file of zeros, which the open
//!   accepts (FORMAT.md 14.1).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::error::{Error, Result};
use crate::arena::RUN_PAGES_MAX;
use crate::format::page::{PageId, Space};

/// The preparer's side of a store: the runs asked for, the run being made, and the thread.
///
/// The writer consults it for every page it initialises at the high water (a vector page every
/// 15 inserts of 1 KiB), mostly without its lock: `low_water` and `frontier` say whether any
/// run asked for can hold the page and whether more are wanted. The lock is shared with a
/// thread of lower priority (src/background.rs), and a writer that found it held waited for
/// that thread to get a core again: 70–90 ms of a 256 MiB bulk load (~10% of its time) went
/// to taking it, though the writer waited for a run being made 0–1 times.
#[derive(Default)]
pub(crate) struct Preparer {
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The thread runs: started and not stopping (mirrors `State`, set under its lock).
    active: AtomicBool,
    /// Per space, the first page_no of the runs queued or running; `u64::MAX` when none (0
    /// until the thread starts: every settle takes the lock, uncontended). Lowered only by the
    /// writer's own `ask_ahead`, so a page below it lies in no run asked for; published under
    /// the lock after every change.
    low_water: [AtomicU64; 2],
    /// Per space, the end page_no of the furthest run asked for (0: none). Written under the
    /// lock; the writer reads it to decide whether to ask for more.
    frontier: [AtomicU64; 2],
    /// Per space, the first page of the last file asked for by [`Preparer::ask_file`] (0:
    /// none): the writer asks once per file, without the lock.
    file_asked: [AtomicU64; 2],
}

/// How far from the end of a space's last file the writer asks for the next file (four runs):
/// the thread then has four runs of the writer's time to create it (fallocate 16 MiB: a fraction
/// of a millisecond on ext4, several on tmpfs, which zeroes the memory), where one run was
/// not enough on tmpfs.
pub const FILE_AHEAD_PAGES: u64 = 4 * RUN_PAGES_MAX as u64;

/// How many runs past the writer's page are asked for (1 MiB of 16 KiB pages): the writer
/// fills a run in ~1.5 ms of a bulk load, the thread makes one in ~0.4 ms. Two ahead made no
/// difference (a 256 MiB bulk load, three runs each).
pub const AHEAD_RUNS: u64 = 1;

#[derive(Default)]
struct State {
    /// Runs asked for and not started, `(first page, pages)`, in the order asked.
    queued: VecDeque<(PageId, u64)>,
    /// The run the thread is making now.
    running: Option<(PageId, u64)>,
    /// Runs the thread has made since the open.
    made_runs: u64,
    /// Per space, the first page of the last file the thread created (see
    /// [`Preparer::made_ahead`]).
    made_ahead: [Option<u64>; 2],
    /// Per space, the first page of a file to create (the next file, asked for by
    /// [`Preparer::ask_file`]), if not taken yet.
    file_wanted: [Option<u64>; 2],
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
    /// Before the writer initialises `page` (at or past its space's high water): takes back
    /// queued runs it reached and waits for a running one that holds it. Returns whether the
    /// thread runs.
    pub fn settle(&self, page: PageId) -> bool {
        if page.page_no() < self.low_water[page.space().index()].load(Ordering::Acquire) {
            // No run asked for holds it: the common case, without the lock.
            return self.active.load(Ordering::Acquire);
        }
        let mut state = self.state.lock();
        // Runs the writer reached or passed are its own to make (or made by it already).
        state
            .queued
            .retain(|&(first, _)| first.space() != page.space() || first.page_no() > page.page_no());
        self.publish(&state);
        while covers(state.running, page) {
            self.changed.wait(&mut state);
        }
        state.started && !state.stopping
    }

    /// Runs the thread has made since the open.
    #[cfg(test)]
    pub fn made_runs(&self) -> u64 {
        self.state.lock().made_runs
    }

    /// The first page of the last arena file of `space` the thread created in this session,
    /// if any. Every page the writer initialises in this session is counted by
    /// `Inner::note_initialised`, so where the space's initialised pages end at or before it,
    /// no page of that file is in use.
    pub fn made_ahead(&self, space: Space) -> Option<u64> {
        self.state.lock().made_ahead[space.index()]
    }

    /// Whether the runs asked for in `page`'s space end less than [`AHEAD_RUNS`] runs past it,
    /// with the thread running: [`Preparer::ask_ahead`] is wanted. Without the lock.
    pub fn wants_more(&self, page: PageId) -> bool {
        let until = page.page_no() + AHEAD_RUNS * RUN_PAGES_MAX as u64;
        self.active.load(Ordering::Acquire) && self.frontier[page.space().index()].load(Ordering::Acquire) <= until
    }

    /// Where the writer initialises `current` at the high water, with the pages before `next`
    /// made already: asks the thread to make the runs from `next` (or the furthest run asked
    /// for, if further) until they reach [`AHEAD_RUNS`] runs past `current`. `run_len` gives
    /// the pages of the run starting at a page (0: none can be made there, as in a file the
    /// store does not have yet; asking stops, and the next call asks again).
    pub fn ask_ahead(&self, current: PageId, next: u64, run_len: impl Fn(PageId) -> u64) {
        let space = current.space();
        let until = current.page_no() + AHEAD_RUNS * RUN_PAGES_MAX as u64;
        let mut state = self.state.lock();
        if !state.started || state.stopping {
            return;
        }
        let mut first = next.max(self.frontier[space.index()].load(Ordering::Acquire));
        let mut asked = false;
        while first <= until {
            let count = run_len(PageId::new(space, first));
            if count == 0 {
                break;
            }
            state.queued.push_back((PageId::new(space, first), count));
            first += count;
            asked = true;
        }
        self.frontier[space.index()].fetch_max(first, Ordering::AcqRel);
        self.publish(&state);
        if asked {
            self.changed.notify_all();
        }
    }

    /// Where the writer initialises `current`, with `pages` pages in its space's files of
    /// `pages_per_file` (at least [`FILE_AHEAD_PAGES`]): once `current` is within
    /// [`FILE_AHEAD_PAGES`] of their end, so in the last file, asks the thread (once) to
    /// create the next file, so that the writer finds it made. Without the lock when asked
    /// already.
    pub fn ask_file(&self, current: PageId, pages: u64, pages_per_file: u64) {
        let space = current.space();
        // Small files cost little to make: they are the writer's, as before.
        if pages == 0
            || pages_per_file < FILE_AHEAD_PAGES
            || current.page_no() + FILE_AHEAD_PAGES < pages
            || self.file_asked[space.index()].load(Ordering::Acquire) >= pages
        {
            return;
        }
        let mut state = self.state.lock();
        if !state.started || state.stopping {
            return;
        }
        self.file_asked[space.index()].fetch_max(pages, Ordering::AcqRel);
        state.file_wanted[space.index()] = Some(pages);
        self.changed.notify_all();
    }

    /// Publishes `state` to the writer's lock-free checks. Called under the lock after every
    /// change to the runs asked for, or to whether the thread runs.
    fn publish(&self, state: &State) {
        for space in [Space::Vector, Space::Catalog] {
            let low = state
                .queued
                .iter()
                .chain(state.running.iter())
                .filter(|(first, _)| first.space() == space)
                .map(|(first, _)| first.page_no())
                .min()
                .unwrap_or(u64::MAX);
            self.low_water[space.index()].store(low, Ordering::Release);
        }
        self.active.store(state.started && !state.stopping, Ordering::Release);
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
    {
        let mut state = preparer.state.lock();
        state.started = true;
        preparer.publish(&state);
    }
    *slot = Some(handle);
    Ok(())
}

/// Stops the thread and waits for it: nothing is made fresh after this returns.
pub(crate) fn stop(inner: &Inner) {
    let preparer = &inner.preparer;
    {
        let mut state = preparer.state.lock();
        state.stopping = true;
        state.queued.clear();
        state.file_wanted = [None; 2];
        preparer.publish(&state);
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
        let file = {
            let mut state = preparer.state.lock();
            let space = [Space::Vector, Space::Catalog].into_iter().find(|s| state.file_wanted[s.index()].is_some());
            space.and_then(|space| state.file_wanted[space.index()].take().map(|page_no| PageId::new(space, page_no)))
        };
        if let Some(first) = file {
            // Optional, as a run: a file that cannot be made now (a full disk) is the writer's
            // to make, and to report.
            if let Some(inner) = weak.upgrade() {
                let before = inner.arena.page_count(first.space());
                let made = inner.arena.ensure_page(first).is_ok() && inner.arena.page_count(first.space()) > before;
                if made {
                    preparer.state.lock().made_ahead[first.space().index()] = Some(first.page_no());
                }
            }
            continue;
        }
        let job = {
            let mut state = preparer.state.lock();
            let file_wanted = |state: &State| state.file_wanted.iter().any(Option::is_some);
            while state.queued.is_empty() && !file_wanted(&state) && !state.stopping {
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
            if state.queued.is_empty() {
                continue; // a file is wanted
            }
            let job = state.queued.pop_front().expect("a queued run");
            state.running = Some(job);
            preparer.publish(&state);
            job
        };
        let mut running = Running { preparer, made: false };
        running.made = weak.upgrade().is_some_and(|inner| inner.prepare_run(job.0, job.1));
        drop(running);
    }
}

/// Ends the thread's running run when dropped, also by a panic's unwinding (a broken invariant
/// in `prepare_run`): a writer waiting for the run in [`Preparer::settle`] is never left
/// waiting for a thread that is gone.
struct Running<'a> {
    preparer: &'a Preparer,
    /// The run was made (counted in `made_runs` as it ends).
    made: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let preparer = self.preparer;
        let mut state = preparer.state.lock();
        state.running = None;
        state.made_runs += u64::from(self.made);
        preparer.publish(&state);
        preparer.changed.notify_all();
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
        // Only in files the store has (the next file is asked for on its own: ask_file).
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

    fn started() -> Preparer {
        let preparer = Preparer::default();
        let mut state = preparer.state.lock();
        state.started = true;
        preparer.publish(&state);
        drop(state);
        preparer
    }

    const RUN: u64 = RUN_PAGES_MAX as u64;

    fn runs_of_64(_: PageId) -> u64 {
        RUN
    }

    #[test]
    fn a_queued_run_that_holds_the_page_is_taken_back_by_the_writer() {
        let preparer = started();
        preparer.ask_ahead(vector_page(0), RUN, runs_of_64);
        assert!(preparer.settle(vector_page(10)), "the thread runs");
        assert_eq!(preparer.state.lock().queued.len(), 1, "a page before the run leaves it queued");
        preparer.settle(vector_page(RUN + 36));
        assert!(preparer.state.lock().queued.is_empty(), "the writer makes page 100 itself: the run is no longer asked for");
    }

    #[test]
    fn the_writer_asks_for_one_run_ahead_once_per_run() {
        let preparer = started();
        assert!(preparer.wants_more(vector_page(0)), "nothing asked for yet");
        preparer.ask_ahead(vector_page(0), RUN, runs_of_64);
        assert_eq!(preparer.state.lock().queued.iter().copied().collect::<Vec<_>>(), vec![(vector_page(RUN), RUN)]);
        for page_no in 1..RUN {
            assert!(!preparer.wants_more(vector_page(page_no)), "page {page_no}: the next run is asked for already");
        }
        assert!(preparer.wants_more(vector_page(RUN)), "the writer reached the run asked for: the one after it is wanted");
        preparer.ask_ahead(vector_page(RUN), 2 * RUN, runs_of_64);
        let queued: Vec<u64> = preparer.state.lock().queued.iter().map(|(first, _)| first.page_no()).collect();
        assert_eq!(queued, vec![RUN, 2 * RUN], "each run asked for once");
        assert!(
            preparer.wants_more(PageId::new(Space::Catalog, 0)),
            "the catalog space has runs of its own"
        );
    }

    #[test]
    fn the_writer_asks_for_the_next_file_once_near_the_end_of_the_last() {
        let preparer = started();
        let pages = 1024;
        preparer.ask_file(vector_page(pages - FILE_AHEAD_PAGES - 1), pages, pages);
        assert_eq!(preparer.state.lock().file_wanted, [None, None], "far from the end: not yet");
        preparer.ask_file(vector_page(pages - FILE_AHEAD_PAGES), pages, pages);
        assert_eq!(preparer.state.lock().file_wanted[Space::Vector.index()], Some(pages), "the next file's first page");
        preparer.state.lock().file_wanted = [None, None];
        preparer.ask_file(vector_page(pages - 1), pages, pages);
        assert_eq!(preparer.state.lock().file_wanted, [None, None], "asked once per file");
        // The file made, the writer still in the file before: nothing more (one file ahead).
        preparer.ask_file(vector_page(pages - 1), 2 * pages, pages);
        assert_eq!(preparer.state.lock().file_wanted, [None, None], "never two files ahead");
        preparer.ask_file(vector_page(2 * pages - 1), 2 * pages, pages);
        assert_eq!(preparer.state.lock().file_wanted[Space::Vector.index()], Some(2 * pages), "then for the file after");
        // Files smaller than the distance are the writer's to make.
        let small = 16;
        preparer.ask_file(PageId::new(Space::Catalog, 4 * small - 1), 4 * small, small);
        assert_eq!(preparer.state.lock().file_wanted[Space::Catalog.index()], None, "small files: never");
        preparer.ask_file(PageId::new(Space::Vector, 0), 0, pages);
        assert_eq!(preparer.state.lock().file_wanted[Space::Vector.index()], Some(2 * pages), "no file yet: the writer makes the first");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_file_made_ahead_is_removed_by_a_close_and_kept_by_a_crash_unused() {
        // 4 MiB files of 16 KiB pages (256, all within FILE_AHEAD_PAGES of the end): the first
        // insert asks for file 1.
        let options = Options {
            segment_size_bytes: 4 << 20,
            ..Options::default()
        };
        let vector = |i: usize| (0..256).map(|j| (i * 3 + j) as f32).collect::<Vec<f32>>();
        let insert = |store: &Store, range: std::ops::Range<usize>| {
            let rows: Vec<(String, Vec<f32>)> = range.map(|i| (format!("id-{i:06}"), vector(i))).collect();
            let rows: Vec<crate::Row<'_>> = rows.iter().map(|(id, v)| (id.as_str(), v.as_slice(), &[][..])).collect();
            store.insert_many(&rows).unwrap();
        };
        let file_1 = |dir: &std::path::Path| dir.join("arena").join(crate::arena::arena_file_name(Space::Vector, 1));
        // A store of 100 rows (7 vector pages) whose file 1 the thread made.
        let made_ahead = |dir: &std::path::Path| {
            let store = Store::create(dir, 256, options.clone()).unwrap();
            insert(&store, 0..100);
            let started = std::time::Instant::now();
            // (The thread counts a file once it is made, after its name appears.)
            let made = || file_1(dir).exists() && store.inner().preparer.made_ahead(Space::Vector) == Some(256);
            while !made() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(made(), "the thread made the next vector file ahead of the writer");
            store
        };
        let verify = |dir: &std::path::Path, rows: usize| {
            let report = crate::inspect::verify_store(dir, &()).unwrap();
            assert!(report.clean(), "the store verifies: {report:?}");
            let store = Store::open(dir, options.clone()).unwrap();
            assert_eq!(store.len(), rows, "every row after a reopen");
            for i in (0..rows).step_by(37) {
                let got = store.get(&format!("id-{i:06}")).unwrap().expect("present after a reopen");
                assert_eq!(&*got, vector(i).as_slice(), "vector {i} after a reopen");
            }
            store
        };

        let closed = tempfile::tempdir().unwrap();
        made_ahead(closed.path()).close().unwrap();
        assert!(!file_1(closed.path()).exists(), "the close removes the file no page used");
        let store = verify(closed.path(), 100);
        insert(&store, 100..8_000); // on into files 1 and 2, made again
        store.close().unwrap();
        verify(closed.path(), 8_000).close().unwrap();

        let crashed = tempfile::tempdir().unwrap();
        drop(made_ahead(crashed.path())); // no close: the file stays, unused, maybe not durable
        assert!(file_1(crashed.path()).exists(), "kept");
        let store = Store::open(crashed.path(), options.clone()).unwrap();
        insert(&store, 100..8_000); // into the file made by the session before, and on
        store.close().unwrap();
        verify(crashed.path(), 8_000).close().unwrap();
    }

    #[test]
    fn no_run_is_asked_for_where_none_can_be_made() {
        let preparer = started();
        preparer.ask_ahead(vector_page(0), RUN, |_| 0);
        assert!(preparer.state.lock().queued.is_empty(), "a file the store does not have");
        assert!(preparer.wants_more(vector_page(0)), "asked again at the next page");
    }

    #[test]
    #[cfg_attr(miri, ignore = "threads and timing")]
    fn the_writer_settles_a_page_no_run_holds_without_the_lock_the_thread_may_hold() {
        let preparer = Arc::new(started());
        preparer.ask_ahead(vector_page(0), RUN, runs_of_64);
        let held = preparer.state.lock();
        let (done, settled) = std::sync::mpsc::channel();
        let writer = {
            let preparer = Arc::clone(&preparer);
            std::thread::spawn(move || {
                let running = preparer.settle(vector_page(5));
                let more = preparer.wants_more(vector_page(6));
                let _ = done.send((running, more));
            })
        };
        let answer = settled.recv_timeout(Duration::from_secs(10));
        drop(held);
        writer.join().unwrap();
        assert_eq!(answer, Ok((true, false)), "settled without waiting for the lock another thread held");
    }

    #[test]
    fn a_preparer_not_started_is_not_asked_and_settles_nothing() {
        let preparer = Preparer::default();
        assert!(!preparer.settle(vector_page(0)), "no thread");
        assert!(!preparer.wants_more(vector_page(0)), "nothing to ask");
        preparer.ask_ahead(vector_page(0), RUN, runs_of_64);
        assert!(preparer.state.lock().queued.is_empty(), "no thread to make it");
    }

    #[test]
    #[cfg_attr(miri, ignore = "threads and timing")]
    fn the_writer_waits_for_a_running_run_that_holds_the_page_and_not_for_one_that_does_not() {
        let preparer = Arc::new(started());
        preparer.state.lock().running = Some((vector_page(64), 64));
        preparer.publish(&preparer.state.lock());
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
        let preparer = Arc::new(started());
        preparer.state.lock().running = Some((vector_page(64), 64));
        preparer.publish(&preparer.state.lock());
        let making = {
            let preparer = Arc::clone(&preparer);
            std::thread::spawn(move || {
                let _running = Running {
                    preparer: &preparer,
                    made: false,
                };
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
    fn a_bulk_load_across_many_arena_files_with_readers_beside_it_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        // 4 MiB files of 16 KiB pages: four runs a file, so the load keeps reaching the end of
        // the files the store has (where no run can be asked for) and making the next one.
        let options = Options {
            segment_size_bytes: 4 << 20,
            ..Options::default()
        };
        let store = Store::create(dir.path(), 256, options.clone()).unwrap();
        let vector = |i: usize| (0..256).map(|j| (i * 7 + j) as f32).collect::<Vec<f32>>();
        let (batches, per_batch) = (30, 1_000);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..2)
                .map(|r| {
                    let (store, done) = (&store, &done);
                    scope.spawn(move || {
                        let mut checked = 0u64;
                        let mut i = r;
                        while !done.load(std::sync::atomic::Ordering::Acquire) {
                            let n = store.len();
                            if n > 0 {
                                i = (i * 7_919 + 13) % n;
                                let got = store.get(&format!("id-{i:06}")).unwrap().expect("a counted id is present");
                                assert_eq!(&*got, vector(i).as_slice(), "vector {i} read beside the load");
                                checked += 1;
                            }
                        }
                        checked
                    })
                })
                .collect();
            for b in 0..batches {
                let rows: Vec<(String, Vec<f32>)> =
                    (b * per_batch..(b + 1) * per_batch).map(|i| (format!("id-{i:06}"), vector(i))).collect();
                let rows: Vec<crate::Row<'_>> = rows.iter().map(|(id, v)| (id.as_str(), v.as_slice(), &[][..])).collect();
                store.insert_many(&rows).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            for reader in readers {
                assert!(reader.join().unwrap() > 0, "a reader read while the store grew");
            }
        });
        // How many depends on the scheduler (27 of ~31 vector runs here, the rest made by the
        // writer where it got there first): that it made some is the claim.
        let made = store.inner().preparer.made_runs();
        assert!(made > 0, "the preparer made runs ahead of the load");
        let made_ahead = [Space::Catalog, Space::Vector].map(|space| store.inner().preparer.made_ahead(space));
        assert!(made_ahead.iter().any(Option::is_some), "the preparer made files ahead of the load");
        store.close().unwrap();
        let report = crate::inspect::verify_store(dir.path(), &()).unwrap();
        assert!(report.clean(), "the store verifies: {report:?}");
        let store = Store::open(dir.path(), options).unwrap();
        for i in (0..batches * per_batch).step_by(101) {
            let got = store.get(&format!("id-{i:06}")).unwrap().expect("present after a reopen");
            assert_eq!(&*got, vector(i).as_slice(), "vector {i} after a reopen");
        }
        store.close().unwrap();
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
