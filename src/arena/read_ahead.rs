//! Reading the pages of a space in order through mappings read at random.
//!
//! The arena's mappings are read at random (`StorageFile::map_private`): a fault reads its own
//! 4 KiB and no more, which is right for a point read and slow for a pass over every page (one
//! wait on the disk each 4 KiB). A reader that goes through the pages of a space in order (the
//! exact search's scan, an index build, a check) asks for them a window ahead instead: while
//! it reads one window, the disk reads the next. While a pass runs, the first check of a page
//! of its space on its thread (`Arena::verify`) does not ask for the page again: a system call
//! a page, a third of the time of a warm first pass.

use std::cell::Cell;

use super::Arena;
use crate::format::page::Space;

thread_local! {
    /// How many passes over each space run on this thread.
    static PASSES: Cell<[u32; 2]> = const { Cell::new([0; 2]) };
}

/// True if a pass over `space` runs on this thread (its window asked for the pages it reads).
pub(super) fn in_pass(space: Space) -> bool {
    PASSES.with(|passes| passes.get()[space.index()] > 0)
}

fn count_pass(space: Space, up: bool) {
    PASSES.with(|passes| {
        let mut counts = passes.get();
        let count = &mut counts[space.index()];
        *count = if up { *count + 1 } else { count.checked_sub(1).expect("a pass ends once") };
        passes.set(counts);
    });
}

/// How far ahead a reader in order asks for pages: a window of this many bytes (rounded down
/// to whole pages, at least one).
const WINDOW_BYTES: u64 = 4 << 20;

/// A pass over pages `..end` of one space, asking for them a window ahead of the reader.
pub struct ReadAhead<'a> {
    arena: &'a Arena,
    space: Space,
    /// The pass reads no page at or past this one.
    end: u64,
    /// Every page below this one was asked for.
    asked_to: u64,
    window_pages: u64,
}

impl<'a> ReadAhead<'a> {
    /// A pass over pages `from..end` of `space`; the first window is asked for now.
    pub fn new(arena: &'a Arena, space: Space, from: u64, end: u64) -> ReadAhead<'a> {
        let window_pages = (WINDOW_BYTES / u64::from(arena.page_size_bytes())).max(1);
        count_pass(space, true);
        let mut pass = ReadAhead {
            arena,
            space,
            end,
            asked_to: from,
            window_pages,
        };
        pass.at(from);
        pass
    }

    /// The reader is at page `page_no`: the window after the one it is in is asked for, once.
    pub fn at(&mut self, page_no: u64) {
        while self.asked_to < self.end && page_no + self.window_pages > self.asked_to {
            let count = self.window_pages.min(self.end - self.asked_to);
            self.arena.will_need_range(self.space, self.asked_to, count);
            self.asked_to += count;
        }
    }
}

impl Drop for ReadAhead<'_> {
    fn drop(&mut self) {
        count_pass(self.space, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_marks_its_space_on_its_thread_until_it_ends() {
        let catalog = Space::Catalog;
        let vector = Space::Vector;
        assert!(!in_pass(vector) && !in_pass(catalog), "no pass runs yet");
        count_pass(vector, true);
        count_pass(vector, true);
        assert!(in_pass(vector), "a pass over the vector space runs");
        assert!(!in_pass(catalog), "the catalog's first reads still ask for their pages");
        let elsewhere = std::thread::spawn(move || in_pass(vector)).join().expect("a thread");
        assert!(!elsewhere, "another thread's reads still ask for their pages");
        count_pass(vector, false);
        assert!(in_pass(vector), "one of the two passes still runs");
        count_pass(vector, false);
        assert!(!in_pass(vector), "both passes ended");
    }
}
