//! Runs of adjacent pages of one arena file, changed with one mapping call each.
//!
//! Formatting a page in fresh memory and giving a written-back page's memory to its file are
//! each one `mmap` or `madvise` call. Made page by page they cost more than the bytes they
//! save: a recovery of 360 MB of log made 39,445 mapping calls, a quarter of its time (the
//! kernel splits and merges its table of mappings and flushes TLBs on every call). A run of up
//! to [`RUN_PAGES_MAX`] adjacent pages is changed with one call per stretch of pages in the
//! same state, under the latches of every page in the run.
//!
//! Latch order: a run's stripes are taken in ascending stripe order, and only by a holder of
//! no other latch. Every other holder holds one stripe at a time ([`Arena::latch`]), so no
//! cycle of waits can form: two run holders take their stripes in the same global order.
//!
//! The count of fresh runs ([`super::FRESH_RUNS_MAX`]) is kept exact by counting the runs of a
//! window one page wider than the change on each side, before and after it: runs outside the
//! window are untouched, and each run that meets the window meets it in one piece.

use std::sync::atomic::Ordering;

use parking_lot::RwLockWriteGuard;

use super::{Arena, ArenaFile, FRESH_RUNS_MAX, is_fresh};
use crate::format::page::PageId;

/// The most pages in one run (1 MiB of 16 KiB pages): long enough that the mapping calls of a
/// recovery or a checkpoint are few, short enough that readers of the run's stripes wait for
/// one call only.
pub const RUN_PAGES_MAX: usize = 64;

/// The exclusive latches of a run of adjacent pages of one file (see [`Arena::latch_run`]).
pub struct RunLatch<'a> {
    _stripes: Vec<RwLockWriteGuard<'a, ()>>,
    first: PageId,
    count: usize,
}

impl RunLatch<'_> {
    /// The run's first page.
    pub fn first(&self) -> PageId {
        self.first
    }

    /// How many pages the run holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Page `i` of the run.
    pub fn page(&self, i: usize) -> PageId {
        assert!(i < self.count, "page {i} of a run of {}", self.count);
        PageId::new(self.first.space(), self.first.page_no() + i as u64)
    }
}

impl Arena {
    /// How many pages from `first` on, up to `count` and [`RUN_PAGES_MAX`], lie in `first`'s
    /// file: the longest run [`Arena::latch_run`] takes from there.
    pub fn run_len(&self, first: PageId, count: usize) -> usize {
        let (_, index) = self.split(first.page_no());
        let left_in_file = (self.pages_per_file - index) as usize;
        count.min(RUN_PAGES_MAX).min(left_in_file)
    }

    /// Whether page `id` is fresh memory (see [`Arena::format_fresh_run`]). Without the lock
    /// of the fresh runs (the bits are atomic, and a bit changes under the page's latch only):
    /// the writer asks for every page it initialises, and that lock is also held, across a
    /// mapping call, by the thread that makes runs ahead, at a lower priority.
    pub fn is_fresh(&self, id: PageId) -> bool {
        let (file, _) = self.locate(id);
        let (_, index) = self.split(id.page_no());
        is_fresh(file, index)
    }

    /// The page_no past the fresh pages that follow `id` (a fresh page) in its file, up to
    /// [`RUN_PAGES_MAX`] of them: where a run made fresh at once, or the rest of it, ends.
    pub fn fresh_end(&self, id: PageId) -> u64 {
        let (file, _) = self.locate(id);
        let (_, index) = self.split(id.page_no());
        let run = self.run_len(id, RUN_PAGES_MAX) as u64;
        let fresh = (0..run).take_while(|&i| is_fresh(file, index + i)).count() as u64;
        id.page_no() + fresh
    }

    /// Takes the latches of the `count` pages from `first` on, exclusively: no write and no
    /// [`super::PageRead`] of any of them runs while the returned guard lives. The pages lie
    /// in one file (see [`Arena::run_len`]); the caller holds no other latch.
    pub fn latch_run(&self, first: PageId, count: usize) -> RunLatch<'_> {
        RunLatch {
            _stripes: self.run_stripes(first, count).iter().map(|&s| self.latches[s].write()).collect(),
            first,
            count,
        }
    }

    /// The latch stripes of the `count` pages from `first` on, ascending, each once.
    fn run_stripes(&self, first: PageId, count: usize) -> Vec<usize> {
        assert!((1..=RUN_PAGES_MAX).contains(&count), "a run of {count} pages");
        assert_eq!(self.run_len(first, count), count, "a run lies in one file");
        let mut stripes: Vec<usize> = (0..count as u64)
            .map(|i| Self::stripe(PageId::new(first.space(), first.page_no() + i)))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    /// [`Arena::latch_run`] where every stripe is free at once, else `None` (nothing held):
    /// for an optional change made by a caller that may hold a latch or a [`super::PageRead`]
    /// already (a writer preparing pages ahead), which must then neither wait nor deadlock.
    pub fn try_latch_run(&self, first: PageId, count: usize) -> Option<RunLatch<'_>> {
        let guards = self
            .run_stripes(first, count)
            .iter()
            .map(|&s| self.latches[s].try_write())
            .collect::<Option<Vec<_>>>()?;
        Some(RunLatch {
            _stripes: guards,
            first,
            count,
        })
    }

    /// Makes every page of the run zeros in fresh memory (see [`Mapping::zero_fresh`]) with
    /// one mapping call, where none of them is fresh already: the pages of a log's page-init
    /// records, made fresh before redo formats them. Returns false, changing nothing, where
    /// a page is fresh already, the mapping cannot, or the run would pass
    /// [`super::FRESH_RUNS_MAX`]. The pages are not marked verified: an all-zero page never
    /// is (see [`Arena::verify`]); their page-init records format them.
    ///
    /// [`Mapping::zero_fresh`]: crate::storage::Mapping::zero_fresh
    pub fn format_fresh_run(&self, run: &RunLatch<'_>) -> bool {
        let made = self.format_fresh_run_lazily(run);
        if made {
            self.populate(run.first, run.count);
        }
        made
    }

    /// [`Arena::format_fresh_run`] without faulting the pages in: the caller does it later,
    /// or on another thread, with [`Arena::populate`].
    pub fn format_fresh_run_lazily(&self, run: &RunLatch<'_>) -> bool {
        let (file, offset) = self.locate(run.first);
        let (_, index) = self.split(run.first.page_no());
        let mut runs = self.fresh_runs.lock();
        if (0..run.count as u64).any(|i| is_fresh(file, index + i)) {
            return false;
        }
        let delta = self.fresh_runs_delta(file, index, run.count, true);
        if delta > 0 && *runs + delta as usize > FRESH_RUNS_MAX {
            return false;
        }
        let len_bytes = run.count * self.page_size_bytes as usize;
        // SAFETY: `run` holds every page's latch exclusively: no write and no `PageRead` of
        // them runs meanwhile; the caller formats each page before anything reads it (they
        // hold nothing a latch-free reader may read: redo runs before the store is open).
        if unsafe { file.map().zero_fresh(offset, len_bytes) }.is_err() {
            return false;
        }
        self.set_fresh(file, index, run.count, true, &mut runs);
        true
    }

    /// Faults in the `count` pages from `first` (one file) for writing, in one call: what a
    /// first store into each would do, without changing a byte, so it may run beside the
    /// writer of those pages. A hint: failures are ignored.
    pub fn populate(&self, first: PageId, count: usize) {
        assert_eq!(self.run_len(first, count), count.min(RUN_PAGES_MAX), "a run lies in one file");
        let (file, offset) = self.locate(first);
        super::populate_write(file.map().ptr_at(offset), count * self.page_size_bytes as usize);
    }

    /// Gives back the private memory of `count` pages of the run from its page `from` on, as
    /// [`Arena::release_page`] does for one page, with one call per stretch of pages in the
    /// same state (fresh or a copy). Returns how many pages were released: a stretch the
    /// mapping refuses keeps its copy.
    ///
    /// # Safety
    /// [`Arena::release_page`]'s contract for every page released; `run` is the latch.
    pub unsafe fn release_run(&self, run: &RunLatch<'_>, from: usize, count: usize) -> usize {
        assert!(from + count <= run.count, "pages {from}+{count} of a run of {}", run.count);
        if count == 0 {
            return 0;
        }
        let first = run.page(from);
        let (file, offset) = self.locate(first);
        let (_, index) = self.split(first.page_no());
        let page_bytes = self.page_size_bytes as usize;
        let mut released = 0;
        let mut start = 0;
        while start < count {
            let fresh = is_fresh(file, index + start as u64);
            let len = (start..count)
                .take_while(|&i| is_fresh(file, index + i as u64) == fresh)
                .count();
            let (at, len_bytes) = (offset + start * page_bytes, len * page_bytes);
            let done = if fresh {
                // SAFETY: the caller's contract is `Mapping::release_fresh`'s for every page of
                // the range, which `zero_fresh` made (their fresh bits say so).
                unsafe { file.map().release_fresh(at, len_bytes) }.is_ok()
            } else {
                // SAFETY: the caller's contract is `Mapping::release`'s for every page of it.
                unsafe { file.map().release(at, len_bytes) }.is_ok()
            };
            if done {
                self.after_release(file, index + start as u64, len, fresh);
                released += len;
            }
            start += len;
        }
        released
    }

    /// The bookkeeping of `count` pages from `index` of `file` given back: each is read from
    /// its file again, so verified again before its next use (the medium may have damaged it
    /// meanwhile); fresh ones leave their runs.
    pub(super) fn after_release(&self, file: &ArenaFile, index: u64, count: usize, fresh: bool) {
        for i in index..index + count as u64 {
            file.verified[(i / 64) as usize].fetch_and(!(1u64 << (i % 64)), Ordering::Relaxed);
            file.asked[(i / 64) as usize].fetch_and(!(1u64 << (i % 64)), Ordering::Relaxed);
        }
        if fresh {
            let mut runs = self.fresh_runs.lock();
            self.set_fresh(file, index, count, false, &mut runs);
        }
    }

    /// Sets (or clears) the fresh bits of `count` pages from `index` of `file` and keeps `runs`
    /// (the held count of fresh runs) exact.
    pub(super) fn set_fresh(&self, file: &ArenaFile, index: u64, count: usize, fresh: bool, runs: &mut usize) {
        let delta = self.fresh_runs_delta(file, index, count, fresh);
        for i in index..index + count as u64 {
            let bit = 1u64 << (i % 64);
            let word = &file.fresh[(i / 64) as usize];
            if fresh {
                word.fetch_or(bit, Ordering::Release);
            } else {
                word.fetch_and(!bit, Ordering::Release);
            }
        }
        *runs = usize::try_from(*runs as isize + delta).expect("the count of fresh runs stays positive");
    }

    /// How the count of fresh runs changes if `count` pages from `index` of `file` become
    /// fresh (or stop being fresh): the runs of the window one page wider on each side, after
    /// less before (see the module's comment).
    pub(super) fn fresh_runs_delta(&self, file: &ArenaFile, index: u64, count: usize, fresh: bool) -> isize {
        let low = index.saturating_sub(1);
        let high = (index + count as u64 + 1).min(self.pages_per_file);
        let changed = index..index + count as u64;
        let runs_in = |state: &dyn Fn(u64) -> bool| {
            (low..high).filter(|&i| state(i) && (i == low || !state(i - 1))).count() as isize
        };
        let before = runs_in(&|i| is_fresh(file, i));
        let after = runs_in(&|i| if changed.contains(&i) { fresh } else { is_fresh(file, i) });
        after - before
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zerocopy::IntoBytes;

    use super::*;
    use crate::format::page::{self, PageKind, Space};

    fn vector(page_no: u64) -> PageId {
        PageId::new(Space::Vector, page_no)
    }

    /// Writes page `id`'s current bytes to its file, sealed, and syncs: the file holds it.
    fn write_back(arena: &Arena, id: PageId) {
        let mut image = arena.copy_page(id);
        page::seal(&mut image);
        arena.write_page(id, &image).unwrap();
        arena.sync().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn a_run_made_fresh_in_one_call_joins_its_neighbours_and_goes_back_to_its_file_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let arena = super::super::real_arena(dir.path());
        arena.ensure_page(vector(15)).unwrap();
        // Page 9 was formatted alone, through the mapping's own path: a run of one.
        let format = |id: PageId| {
            let mut header = page::new_header(PageKind::Vector, id, 0, 0);
            header.store_id = arena.store_id().into();
            let _latch = arena.latch(id);
            arena.reset_page(id, header.as_bytes());
            arena.write(id, 1000, &[id.page_no() as u8; 8]);
        };
        format(vector(9));
        assert_eq!(*arena.fresh_runs.lock(), 1);
        assert!(
            !arena.format_fresh_run(&arena.latch_run(vector(8), 3)),
            "a run holding a fresh page is refused (page 9 keeps its bytes)"
        );
        assert!(arena.format_fresh_run(&arena.latch_run(vector(4), 5)), "pages 4-8 made fresh at once");
        assert_eq!(*arena.fresh_runs.lock(), 1, "4-8 joined 9: one run");
        for page_no in 4..=8 {
            assert!(arena.is_all_zero(vector(page_no)), "a fresh page reads zeros");
            assert!(!arena.is_verified(vector(page_no)), "an all-zero page is never marked verified");
            format(vector(page_no));
        }
        for page_no in 4..=9 {
            write_back(&arena, vector(page_no));
        }
        let run = arena.latch_run(vector(4), 6);
        // SAFETY: the run's latches are held; the files durably hold pages 5-6 (written from
        // sealed copies and synced, unchanged since).
        assert_eq!(unsafe { arena.release_run(&run, 1, 2) }, 2, "pages 5-6 released");
        drop(run);
        assert_eq!(*arena.fresh_runs.lock(), 2, "the run split: 4 | 7-9");
        for page_no in 4..=9 {
            assert_eq!(
                arena.copy_page(vector(page_no))[1000..1008],
                [page_no as u8; 8],
                "every page reads its bytes, released (from its file) or not"
            );
        }
        assert!(!arena.is_verified(vector(5)), "a released page is verified again before use");
        let run = arena.latch_run(vector(4), 6);
        // SAFETY: as above, for pages 4-9 (5-6 show their files already).
        assert_eq!(unsafe { arena.release_run(&run, 0, 6) }, 6, "fresh and copied stretches alike");
        drop(run);
        assert_eq!(*arena.fresh_runs.lock(), 0, "no fresh page is left");
    }

    #[test]
    fn a_run_stays_in_one_file_and_takes_each_stripe_once() {
        let storage = Arc::new(crate::storage::SimStorage::new(3));
        let arena = Arena::open(
            storage,
            std::path::Path::new("/arena"),
            4096,
            4096 * 8,
            crate::arena::ArenaOpen::TEST,
        )
        .unwrap();
        assert_eq!(arena.run_len(vector(6), 10), 2, "pages 6 and 7 end the first file");
        assert_eq!(arena.run_len(vector(8), 1000), 8, "a whole file, under the cap");
        arena.ensure_page(vector(7)).unwrap();
        let run = arena.latch_run(vector(6), 2);
        assert_eq!((run.first(), run.count(), run.page(1)), (vector(6), 2, vector(7)));
        drop(run);
        let reading = arena.read_page(vector(7));
        assert!(
            arena.try_latch_run(vector(6), 2).is_none(),
            "a run with a page read under its latch is not taken (no wait, no deadlock)"
        );
        drop(reading);
        assert!(arena.try_latch_run(vector(6), 2).is_some(), "and is once the reader is done");
    }
}
