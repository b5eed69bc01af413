//! Faulting in, ahead of redo, the arena pages the log changes ([`Arena::prefault`]).
//!
//! Redo touches most pages of a long log for the first time since the open. Each first touch of
//! a page of a private file mapping is a read fault (the page cache fills, from the disk or with
//! zeros for an unwritten extent) and then, at the first write, a copy-on-write fault with a TLB
//! shootdown, one pair per 4 KiB: half of redo's time in a long log of inserts. Analysis reads
//! every record redo will read, and so learns every page redo will change; it hands them to a
//! [`Prefaulter`], which faults each batch in with one `madvise` per run of adjacent pages (the
//! last batch is only asked for: recovery faults it in beside redo, once its reads are done).
//! Nothing is decided from it: a page it did not reach (or that a hint could not fault in) is
//! faulted by redo as before, and no byte of any page changes.
//!
//! [`Arena::prefault`]: crate::arena::Arena::prefault

use crate::arena::Arena;
use crate::format::page::PageId;

/// The distinct pages a batch gathers before they are faulted in.
const BATCH_PAGES: usize = 4096;

/// Gathers pages and faults them in by batches.
pub(crate) struct Prefaulter<'a> {
    arena: &'a Arena,
    pages: Vec<PageId>,
}

impl<'a> Prefaulter<'a> {
    pub(crate) fn new(arena: &'a Arena) -> Prefaulter<'a> {
        Prefaulter {
            arena,
            pages: Vec::with_capacity(BATCH_PAGES),
        }
    }

    /// Notes that redo will change `page`.
    pub(crate) fn note(&mut self, page: PageId) {
        if self.pages.last() == Some(&page) {
            return;
        }
        self.pages.push(page);
        if self.pages.len() >= BATCH_PAGES {
            self.flush();
        }
    }

    /// Faults in the pages gathered since the last batch.
    pub(crate) fn flush(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        self.pages.sort_unstable();
        self.pages.dedup();
        self.arena.prefault(&self.pages);
        self.pages.clear();
    }

    /// Asks the OS to read the pages of the last batch (gathered since the last full one) and
    /// returns them, sorted, for the caller to fault in later ([`Arena::populate_pages`]): their
    /// reads then run while it does other work (an open after a crash makes its fresh pages
    /// meanwhile) instead of being waited for now.
    pub(crate) fn finish(mut self) -> Vec<PageId> {
        let mut pages = std::mem::take(&mut self.pages);
        pages.sort_unstable();
        pages.dedup();
        self.arena.will_need(&pages);
        pages
    }
}

impl Drop for Prefaulter<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::arena::{ArenaOpen, arena_file_name};
    use crate::format::page::Space;
    use crate::storage::RealStorage;

    const PAGE: usize = 4096;
    const PAGES_PER_FILE: u64 = 4;

    fn vector(page_no: u64) -> PageId {
        PageId::new(Space::Vector, page_no)
    }

    /// Two arena files of four pages; pages 1 to 3 of each hold `page_no + 1` in every byte on
    /// disk (page 0 of a file stays zero: the open checks its header).
    fn arena_files(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for file_no in 0..2u64 {
            let file = std::fs::File::create(dir.join(arena_file_name(Space::Vector, file_no))).unwrap();
            file.set_len(PAGES_PER_FILE * PAGE as u64).unwrap();
            for index in 1..PAGES_PER_FILE {
                let page_no = file_no * PAGES_PER_FILE + index;
                file.write_all_at(&[page_no as u8 + 1; PAGE], index * PAGE as u64).unwrap();
            }
        }
    }

    fn page_bytes(arena: &Arena, page_no: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; PAGE];
        arena.read(vector(page_no), 0, &mut bytes);
        bytes
    }

    #[test]
    fn prefaulted_pages_keep_their_bytes_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let arena_dir = dir.path().join("arena");
        arena_files(&arena_dir);
        let arena = Arena::open(
            Arc::new(RealStorage::new()),
            &arena_dir,
            PAGE as u32,
            PAGES_PER_FILE * PAGE as u64,
            ArenaOpen::TEST,
        )
        .unwrap();
        assert_eq!(arena.page_count(Space::Vector), 8, "both files mapped");
        // Page 2 changed in memory only (a copy-on-write page the file never sees).
        {
            let _latch = arena.latch(vector(2));
            arena.write(vector(2), 0, &[0xAB; PAGE]);
        }
        {
            // Unsorted, repeated, across the two files, and a page beyond the arena.
            let mut prefaulter = Prefaulter::new(&arena);
            for page_no in [6, 1, 2, 3, 5, 5, 1, 99, 4] {
                prefaulter.note(vector(page_no));
            }
        }
        assert_eq!(arena.page_count(Space::Vector), 8, "a page beyond the arena adds nothing");
        assert!(page_bytes(&arena, 2) == vec![0xAB; PAGE], "the page changed in memory keeps its change");
        for page_no in [1u64, 3, 5, 6, 7] {
            assert!(
                page_bytes(&arena, page_no) == vec![page_no as u8 + 1; PAGE],
                "page {page_no} reads what its file holds"
            );
        }
        assert!(page_bytes(&arena, 4) == vec![0; PAGE], "an unwritten page reads as zeros");
        let on_disk = std::fs::read(arena_dir.join(arena_file_name(Space::Vector, 0))).unwrap();
        assert!(
            on_disk[2 * PAGE..3 * PAGE] == [3u8; PAGE],
            "the file never sees a store into the private mapping"
        );
    }
}
