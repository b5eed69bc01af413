//! Reading the pages of a space in order through mappings read at random.
//!
//! The arena's mappings are read at random (`StorageFile::map_private`): a fault reads its own
//! 4 KiB and no more, which is right for a point read and slow for a pass over every page (one
//! wait on the disk each 4 KiB). A reader that goes through the pages of a space in order (the
//! exact search's scan, an index build, a check) asks for them a window ahead instead: while
//! it reads one window, the disk reads the next. The pages of a window count as asked for
//! (`Arena::will_need_range`), so their first checks (`Arena::verify`) ask for nothing more: a
//! system call a page, a third of the time of a warm first pass.

use super::Arena;
use crate::format::page::Space;

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
