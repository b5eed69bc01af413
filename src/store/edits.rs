//! The edits of one update record while the writer builds them.
//!
//! An operation decides several changes before any is applied (a vector slot, a catalog
//! entry, index nodes, list links, meta fields), and later decisions read what earlier ones
//! wrote: [`EditList::read`] reads a page as it will be once the list's edits are applied, and
//! before-images are read so too, so an undo that replays them newest first restores exactly
//! what the page held. Small images sit in one byte buffer that every operation of a
//! transaction reuses, and the new vector is borrowed from the caller: building an insert
//! allocates almost nothing.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::arena::Arena;
use crate::format::page::PageId;
use crate::format::record::{Edit, EditKind};

/// The most edits of one page a read overlays on the arena's bytes where the page has a
/// replayed image already; a page with more is read from its image (a bulk record writes
/// hundreds of entries into one catalog page, and overlaying each read with all of them made
/// building the record quadratic).
const OVERLAY_EDITS_MAX: usize = 16;
/// The most edits a read overlays where the page has no image yet: making one copies the page
/// and replays every edit, ~8,500 instructions, where a bulk record reads a vector page's
/// owner table (~30 edits of it pending) twice, once per read. A page read often passes this
/// and keeps an image from then on.
const OVERLAY_EDITS_COLD_MAX: usize = 64;

/// How many writes of a page [`EditList::push_change`] remembers as ones a later write of the
/// same bytes may fold into (the most recent ones).
const FOLD_CANDIDATES_MAX: usize = 8;

/// Hashes a page id (one `u64` the writer made, not input from outside) by a multiply and a
/// rotate: an insert looks its few pages up a few dozen times, and SipHash was ~6% of an
/// insert's CPU.
#[derive(Default)]
pub(crate) struct PageIdHasher(u64);

impl std::hash::Hasher for PageIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

type PageIdState = std::hash::BuildHasherDefault<PageIdHasher>;

/// The edits of the update record being built.
#[derive(Default)]
pub(crate) struct EditList {
    bytes: Vec<u8>,
    specs: Vec<EditSpec>,
    /// Each page's edits (and the writes a later one may fold into).
    by_page: HashMap<PageId, PageEdits, PageIdState>,
    /// The lists of cleared pages, reused.
    spare_pages: Vec<PageEdits>,
    /// The pages with an insert or a remove (a read of them needs the whole page replayed).
    shifted: HashSet<PageId, PageIdState>,
    /// Replayed images of shifted pages, with how many of the page's edits each holds: a
    /// bulk record inserts hundreds of cells into one leaf, and replaying every earlier edit
    /// at each read made building it quadratic. The arena page does not change while the list
    /// is built (the list is applied only once logged), so an image only ever grows by the
    /// page's later edits.
    images: RefCell<HashMap<PageId, (usize, Vec<u8>), PageIdState>>,
    /// Page buffers of cleared images, reused (an insert's leaf image is one page per
    /// operation: a fresh allocation of each was a measurable part of an insert).
    spare_images: RefCell<Vec<Vec<u8>>>,
}

/// One page's edits in the list.
#[derive(Default)]
struct PageEdits {
    /// Their indices in `specs`, in order.
    indices: Vec<usize>,
    /// The writes of [`EditList::push_change`] a later one of exactly the same bytes folds
    /// into, oldest first. Every edit of the page drops those whose bytes it touches, so a
    /// candidate's bytes were untouched since it was written: what makes a fold exact. (A look
    /// back through the page's last 8 edits missed a catalog page's header, rewritten once a
    /// row between a directory slot and an entry: each row logged it again.)
    candidates: Vec<FoldCandidate>,
}

/// A write a later write of the same bytes may fold into.
#[derive(Clone, Copy)]
struct FoldCandidate {
    offset: u32,
    len_bytes: u32,
    /// Its index in `specs`.
    spec: usize,
    /// Its position among its page's edits (`PageEdits::indices`).
    position: usize,
}

struct EditSpec {
    page: PageId,
    offset: u32,
    kind: EditKind,
    /// The written or inserted bytes: a range of `bytes`, or (`None`) the caller's vector
    /// number `vector`.
    after: Option<Range<usize>>,
    before: Option<Range<usize>>,
    /// The length of the caller's vector (`after` is `None`), else 0.
    vector_bytes: usize,
    /// Which of the caller's vectors (`after` is `None`).
    vector: usize,
}

impl EditList {
    /// Bytes of room the list's buffers hold (roughly: the byte buffer, the edits, the page
    /// images kept for reuse).
    pub fn room_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.specs.capacity() * size_of::<EditSpec>()
            + self.spare_images.borrow().iter().map(Vec::capacity).sum::<usize>()
    }

    /// Forgets every edit (keeps the buffers).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.specs.clear();
        self.spare_pages.extend(self.by_page.drain().map(|(_, mut edits)| {
            edits.indices.clear();
            edits.candidates.clear();
            edits
        }));
        self.shifted.clear();
        let spares = self.spare_images.get_mut();
        spares.extend(self.images.get_mut().drain().map(|(_, (_, image))| image));
    }

    /// Adds `spec` to the list; `foldable`: a later [`EditList::push_change`] of exactly its
    /// bytes may fold into it.
    fn push_spec(&mut self, spec: EditSpec, foldable: bool) {
        if spec.kind != EditKind::Write {
            self.shifted.insert(spec.page);
        }
        let touched = touched_by(&spec);
        let spare_pages = &mut self.spare_pages;
        let edits = self
            .by_page
            .entry(spec.page)
            .or_insert_with(|| spare_pages.pop().unwrap_or_default());
        edits.candidates.retain(|c| {
            let bytes = c.offset as usize..(c.offset + c.len_bytes) as usize;
            bytes.end <= touched.start || touched.end <= bytes.start
        });
        if foldable {
            assert!(
                spec.kind == EditKind::Write && spec.before.is_some(),
                "a fold candidate is a write with its before-image"
            );
            if edits.candidates.len() == FOLD_CANDIDATES_MAX {
                edits.candidates.remove(0);
            }
            edits.candidates.push(FoldCandidate {
                offset: spec.offset,
                len_bytes: touched.len() as u32,
                spec: self.specs.len(),
                position: edits.indices.len(),
            });
        }
        edits.indices.push(self.specs.len());
        self.specs.push(spec);
    }

    /// True if no edit was added (an operation on the approximate index that changed nothing
    /// logs no record).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// A write into free space: nothing for an undo to restore.
    pub fn push_new(&mut self, page: PageId, offset: usize, after: &[u8]) {
        self.push_new_with(page, offset, |out| out.extend_from_slice(after));
    }

    /// A write into free space whose bytes `fill` appends to the buffer.
    pub fn push_new_with(&mut self, page: PageId, offset: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        fill(&mut self.bytes);
        let spec = EditSpec {
            page,
            offset: offset as u32,
            kind: EditKind::Write,
            after: Some(start..self.bytes.len()),
            before: None,
            vector_bytes: 0,
            vector: 0,
        };
        self.push_spec(spec, false);
    }

    /// The caller's vector number `vector` (`len_bytes` long; see [`EditList::edits_of`]),
    /// into a free slot (never read back through the list: reads of other bytes of its page
    /// see through it).
    pub fn push_vector_of(&mut self, vector: usize, page: PageId, offset: usize, len_bytes: usize) {
        let spec = EditSpec {
            page,
            offset: offset as u32,
            kind: EditKind::Write,
            after: None,
            before: None,
            vector_bytes: len_bytes,
            vector,
        };
        self.push_spec(spec, false);
    }

    /// A write over bytes in use; the before-image is what the page will hold just before it.
    ///
    /// A write of the same bytes as one of the page's last [`FOLD_CANDIDATES_MAX`] writes made
    /// here, with no edit between them touching those bytes, is folded into it (its
    /// after-image replaced; its before-image, the bytes before both, kept): a bulk record sets
    /// the meta page's count, a node's cell count and a catalog page's header once per row, and
    /// logged them once per row.
    pub fn push_change(&mut self, arena: &Arena, page: PageId, offset: usize, after: &[u8]) {
        if self.fold_change(page, offset, after) {
            return;
        }
        self.push_change_with(arena, page, offset, after, true);
    }

    /// [`EditList::push_change`] that neither folds into an earlier write nor becomes one a later
    /// write folds into: for bytes the list seldom writes twice (a catalog page's new directory
    /// slot, written again in its record only if freed in it). As a fold candidate each such
    /// slot would push the page's header fields, rewritten every row, out of the page's few.
    /// Logging two writes where one would do is as correct: an undo replays both
    /// before-images, newest first.
    pub fn push_change_unfolded(&mut self, arena: &Arena, page: PageId, offset: usize, after: &[u8]) {
        self.push_change_with(arena, page, offset, after, false);
    }

    /// A write over bytes in use, its before-image read through the list; `foldable`: see
    /// [`EditList::push_spec`].
    fn push_change_with(&mut self, arena: &Arena, page: PageId, offset: usize, after: &[u8], foldable: bool) {
        let mut before = [0u8; 64];
        let mut long = Vec::new();
        let before: &mut [u8] = if after.len() <= before.len() {
            &mut before[..after.len()]
        } else {
            long.resize(after.len(), 0);
            &mut long
        };
        self.read(arena, page, offset, before);
        self.push_write(page, offset, after, Some(before), foldable);
    }

    /// [`EditList::push_change`] of bytes the caller knows hold zeros as the list leaves them,
    /// so their before-image is zeros and need not be read: a free vector slot's owner entry,
    /// which the slot's taker sets (FORMAT.md 14.3: 0 means the slot is free, and a slot is
    /// taken only where its entry reads 0, through the list). Reading it back was a fifth of
    /// a bulk row's `push_change` time.
    pub fn push_change_over_zeros(&mut self, arena: &Arena, page: PageId, offset: usize, after: &[u8]) {
        debug_assert!(
            {
                let mut now = vec![0u8; after.len()];
                self.read(arena, page, offset, &mut now);
                now.iter().all(|&b| b == 0)
            },
            "the bytes at {offset} of {page:?} hold zeros as the list leaves them"
        );
        // Not folded (see `push_change_unfolded`): a slot freed and taken again in one record
        // logs its owner entry twice.
        self.push_write(page, offset, after, None, false);
    }

    /// Appends a write of `after` at `offset` whose before-image is `before` (`None`: as many
    /// zeros).
    fn push_write(&mut self, page: PageId, offset: usize, after: &[u8], before: Option<&[u8]>, foldable: bool) {
        let after_start = self.bytes.len();
        self.bytes.extend_from_slice(after);
        let before_start = self.bytes.len();
        match before {
            Some(before) => {
                assert_eq!(before.len(), after.len(), "a before-image spans the write");
                self.bytes.extend_from_slice(before);
            }
            None => self.bytes.resize(before_start + after.len(), 0),
        }
        let spec = EditSpec {
            page,
            offset: offset as u32,
            kind: EditKind::Write,
            after: Some(after_start..before_start),
            before: Some(before_start..self.bytes.len()),
            vector_bytes: 0,
            vector: 0,
        };
        self.push_spec(spec, foldable);
    }

    /// Folds a write of `after` at `offset` into an earlier write of exactly those bytes that
    /// no edit since touched (see [`EditList::push_change`]); false if there is none.
    fn fold_change(&mut self, page: PageId, offset: usize, after: &[u8]) -> bool {
        let Some(PageEdits { candidates, .. }) = self.by_page.get_mut(&page) else { return false };
        let Some(at) = candidates
            .iter()
            .position(|c| c.offset as usize == offset && c.len_bytes as usize == after.len())
        else {
            return false;
        };
        // The most recent last: a field rewritten every row is never the one dropped.
        let candidate = candidates.remove(at);
        candidates.push(candidate);
        let spec = &self.specs[candidate.spec];
        let same_bytes = spec.page == page && spec.offset as usize == offset;
        assert!(
            same_bytes && spec.kind == EditKind::Write && spec.before.is_some(),
            "a fold candidate is a write of these bytes with its before-image"
        );
        let range = spec.after.clone().expect("a fold candidate holds its bytes");
        self.bytes[range].copy_from_slice(after);
        if let Some((applied, image)) = self.images.get_mut().get_mut(&page)
            && *applied > candidate.position
        {
            image[offset..offset + after.len()].copy_from_slice(after);
        }
        true
    }

    /// Inserts `after` at `offset`, shifting `[offset, end)` up (into free bytes above `end`).
    pub fn push_insert(&mut self, page: PageId, offset: usize, end: usize, after: &[u8]) {
        assert!(offset <= end, "an insert inside its range");
        let start = self.bytes.len();
        self.bytes.extend_from_slice(after);
        let spec = EditSpec {
            page,
            offset: offset as u32,
            kind: EditKind::Insert { end: end as u32 },
            after: Some(start..self.bytes.len()),
            before: None,
            vector_bytes: 0,
            vector: 0,
        };
        self.push_spec(spec, false);
    }

    /// Removes the `len` bytes at `offset`, shifting `[offset + len, end)` down.
    pub fn push_remove(&mut self, arena: &Arena, page: PageId, offset: usize, end: usize, len: usize) {
        assert!(offset + len <= end, "a remove inside its range");
        let mut removed = vec![0u8; len];
        self.read(arena, page, offset, &mut removed);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&removed);
        let spec = EditSpec {
            page,
            offset: offset as u32,
            kind: EditKind::Remove {
                end: end as u32,
                len: len as u32,
            },
            after: Some(start..start),
            before: Some(start..self.bytes.len()),
            vector_bytes: 0,
            vector: 0,
        };
        self.push_spec(spec, false);
    }

    /// Reads `buf.len()` bytes at `offset` of page `page` as they will be once the list's edits
    /// are applied. The caller is the single writer: nothing else changes the page meanwhile.
    pub fn read(&self, arena: &Arena, page: PageId, offset: usize, buf: &mut [u8]) {
        let Some(PageEdits { indices, .. }) = self.by_page.get(&page) else {
            arena.read(page, offset, buf);
            return;
        };
        let imaged = indices.len() > OVERLAY_EDITS_MAX && self.images.borrow().contains_key(&page);
        if self.shifted.contains(&page) || imaged || indices.len() > OVERLAY_EDITS_COLD_MAX {
            self.with_image(arena, page, |image| buf.copy_from_slice(&image[offset..offset + buf.len()]));
            return;
        }
        arena.read(page, offset, buf);
        let wanted = offset..offset + buf.len();
        for spec in indices.iter().map(|&i| &self.specs[i]) {
            if spec.after.is_none() {
                let vector = spec.offset as usize..spec.offset as usize + spec.vector_bytes;
                assert!(
                    vector.end <= wanted.start || vector.start >= wanted.end,
                    "a vector slot is never read back while its edit is pending"
                );
                continue;
            }
            let after = self.after_of(spec);
            let start = (spec.offset as usize).max(wanted.start);
            let end = (spec.offset as usize + after.len()).min(wanted.end);
            if start < end {
                let from = start - spec.offset as usize;
                buf[start - offset..end - offset].copy_from_slice(&after[from..from + end - start]);
            }
        }
    }

    /// Page `page` as it will be once the list's edits are applied.
    pub fn page_image(&self, arena: &Arena, page: PageId) -> Vec<u8> {
        if !self.shifted.contains(&page) {
            let mut image = arena.copy_page(page);
            for &i in self.by_page.get(&page).map_or(&[][..], |edits| edits.indices.as_slice()) {
                self.replay(&mut image, &self.specs[i]);
            }
            return image;
        }
        self.with_image(arena, page, <[u8]>::to_vec)
    }

    /// Runs `read` over page `page` as it will be once the list's edits are applied, without
    /// copying it when the list has no edit of it (the page is then read under its latch
    /// held shared; the caller, the single writer, holds no latch).
    pub fn with_page<T>(&self, arena: &Arena, page: PageId, read: impl FnOnce(&[u8]) -> T) -> T {
        if !self.by_page.contains_key(&page) {
            return read(&arena.read_page(page));
        }
        self.with_image(arena, page, read)
    }

    /// Runs `read` over the replayed image of page `page` (with edits), first bringing it up
    /// to the page's last edit.
    fn with_image<T>(&self, arena: &Arena, page: PageId, read: impl FnOnce(&[u8]) -> T) -> T {
        let mut images = self.images.borrow_mut();
        let (applied, image) = images.entry(page).or_insert_with(|| {
            let mut image = self.spare_images.borrow_mut().pop().unwrap_or_default();
            image.resize(arena.page_size_bytes() as usize, 0);
            arena.read(page, 0, &mut image);
            (0, image)
        });
        let indices = self.by_page.get(&page).map_or(&[][..], |edits| edits.indices.as_slice());
        for &i in &indices[*applied..] {
            self.replay(image, &self.specs[i]);
        }
        *applied = indices.len();
        read(image)
    }

    /// Applies one edit to a page image (a vector edit is left out: the builder never reads a
    /// vector slot back).
    fn replay(&self, image: &mut [u8], spec: &EditSpec) {
        if spec.after.is_none() {
            return;
        }
        let offset = spec.offset as usize;
        let after = self.after_of(spec);
        match spec.kind {
            EditKind::Write => image[offset..offset + after.len()].copy_from_slice(after),
            EditKind::Insert { end } => {
                image.copy_within(offset..end as usize, offset + after.len());
                image[offset..offset + after.len()].copy_from_slice(after);
            }
            EditKind::Remove { end, len } => {
                let (end, len) = (end as usize, len as usize);
                image.copy_within(offset + len..end, offset);
                image[end - len..end].fill(0);
            }
            EditKind::Stored { .. } => unreachable!("the builder makes no stored write"),
        }
    }

    fn after_of(&self, spec: &EditSpec) -> &[u8] {
        let range = spec
            .after
            .clone()
            .expect("a vector slot is never read back while its edit is pending");
        &self.bytes[range]
    }

    /// The edits `edits` (this list's, from [`EditList::edits_of`]) as a bulk record logs
    /// them, and the runs each logged as one write: see src/store/runs.rs.
    pub fn log_runs<'a>(&self, edits: &[Edit<'a>]) -> (Vec<Edit<'a>>, Vec<Range<usize>>) {
        assert_eq!(edits.len(), self.specs.len(), "the edits are this list's");
        let mut pages: Vec<&[usize]> = self.by_page.values().map(|edits| edits.indices.as_slice()).collect();
        pages.sort_unstable_by_key(|indices| indices[0]);
        super::runs::log_runs(edits, &pages)
    }

    /// Whether edit `index` (of [`EditList::edits_of`]) writes one of the caller's vectors.
    pub fn is_vector(&self, index: usize) -> bool {
        let spec = &self.specs[index];
        spec.after.is_none() && spec.kind == EditKind::Write
    }

    /// The edits, with `vector` as the image of the vector edit.
    pub fn edits<'a>(&'a self, vector: &'a [u8]) -> Vec<Edit<'a>> {
        self.edits_of(&[vector])
    }

    /// The edits, the vector edits naming `vectors[n]` (see [`EditList::push_vector_of`]).
    pub fn edits_of<'a>(&'a self, vectors: &[&'a [u8]]) -> Vec<Edit<'a>> {
        self.specs
            .iter()
            .map(|spec| {
                let after = match &spec.after {
                    Some(range) => &self.bytes[range.clone()],
                    None => {
                        let vector = vectors.get(spec.vector).copied().unwrap_or(&[]);
                        assert!(
                            !vector.is_empty() && vector.len() == spec.vector_bytes,
                            "a vector edit needs its vector"
                        );
                        vector
                    }
                };
                Edit {
                    page: spec.page,
                    offset: spec.offset,
                    after,
                    before: spec.before.clone().map(|range| &self.bytes[range]),
                    kind: spec.kind,
                }
            })
            .collect()
    }
}

/// The bytes of its page an edit changes or shifts.
fn touched_by(spec: &EditSpec) -> Range<usize> {
    let start = spec.offset as usize;
    let after_len = spec.after.as_ref().map_or(0, Range::len);
    match (spec.kind, &spec.after) {
        (EditKind::Write, Some(_)) => start..start + after_len,
        (EditKind::Write, None) => start..start + spec.vector_bytes,
        (EditKind::Insert { end }, _) => start..end as usize + after_len,
        (EditKind::Remove { end, .. }, _) => start..end as usize,
        (EditKind::Stored { .. }, _) => unreachable!("the builder makes no stored write"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::Lsn;
    use crate::format::page::Space;
    use crate::format::record::{Kind, Op, Payload};
    use crate::storage::{SimStorage, Storage};

    /// A simulated arena whose catalog page 1 holds `abcdefgh` at offset 100.
    fn arena_with_abcdefgh_at_100(seed: u64) -> (Arena, PageId) {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(seed));
        let arena = Arena::open(storage, Path::new("/arena"), 4096, 4 * 4096, crate::arena::ArenaOpen::TEST).unwrap();
        let page = PageId::new(Space::Catalog, 1);
        arena.ensure_page(page).unwrap();
        {
            let _latch = arena.latch(page);
            arena.write(page, 100, b"abcdefgh");
        }
        (arena, page)
    }

    #[test]
    fn reads_see_the_pending_edits_in_order_and_before_images_are_exact() {
        let (arena, page) = arena_with_abcdefgh_at_100(1);
        let mut list = EditList::default();
        list.push_change(&arena, page, 102, b"XY");
        list.push_insert(page, 100, 108, b"12");
        list.push_change(&arena, page, 100, b"__");
        let mut seen = [0u8; 10];
        list.read(&arena, page, 100, &mut seen);
        assert_eq!(&seen, b"__abXYefgh", "the insert shifted the range, the writes landed");
        list.push_remove(&arena, page, 101, 110, 3);
        list.read(&arena, page, 100, &mut seen);
        assert_eq!(&seen, b"_XYefgh\0\0\0", "the remove shifted down and left zeros");
        let edits = list.edits(&[]);
        assert_eq!(edits[2].before, Some(&b"12"[..]), "a before-image is the page as it will be");
        assert_eq!(edits[3].before, Some(&b"_ab"[..]), "so is a remove's");
    }

    #[test]
    fn a_rewrite_of_the_same_bytes_folds_into_the_first_write_unless_an_edit_between_touches_them() {
        let (arena, page) = arena_with_abcdefgh_at_100(2);
        let mut list = EditList::default();
        list.push_change(&arena, page, 100, b"11");
        list.push_insert(page, 200, 220, b"zz");
        let mut seen = [0u8; 2];
        list.read(&arena, page, 100, &mut seen); // caches the shifted page's image
        list.push_change(&arena, page, 100, b"22");
        list.push_change(&arena, page, 100, b"33");
        let edits = list.edits(&[]);
        assert_eq!(edits.len(), 2, "two rewrites of the same bytes fold into the first write");
        assert_eq!((edits[0].after, edits[0].before), (&b"33"[..], Some(&b"ab"[..])), "last after, first before");
        list.read(&arena, page, 100, &mut seen);
        assert_eq!(&seen, b"33", "a read sees the folded write, the cached image included");
        list.push_change(&arena, page, 101, b"x");
        list.push_change(&arena, page, 100, b"44");
        let edits = list.edits(&[]);
        assert_eq!(edits.len(), 4, "a write between them that touches the bytes stops the fold");
        assert_eq!(edits[3].before, Some(&b"3x"[..]), "and the new write's before-image is exact");
        list.push_insert(page, 90, 110, b"!");
        list.push_change(&arena, page, 101, b"55");
        assert_eq!(list.edits(&[]).len(), 6, "an insert that shifts the bytes stops it too");
    }

    #[test]
    fn a_header_rewritten_every_row_folds_into_its_first_write_however_many_edits_lie_between() {
        // A catalog page's pattern: per row a count rewritten, a directory slot and entries
        // (more edits than a look back through the page's last few would see past).
        let (arena, page) = arena_with_abcdefgh_at_100(3);
        let mut list = EditList::default();
        for row in 0..40u8 {
            list.push_change(&arena, page, 100, &[b'0' + row % 10, b'!']);
            list.push_change_unfolded(&arena, page, 200 + 8 * row as usize, &[row; 8]);
            for k in 0..8 {
                list.push_new(page, 3000 - 20 * row as usize - 2 * k, &[row; 2]);
            }
        }
        let edits = list.edits(&[]);
        let at_100: Vec<_> = edits.iter().filter(|e| e.offset == 100).collect();
        assert_eq!(at_100.len(), 1, "forty rewrites are one write");
        assert_eq!((at_100[0].after, at_100[0].before), (&b"9!"[..], Some(&b"ab"[..])), "last after, first before");
        let mut seen = [0u8; 2];
        list.read(&arena, page, 100, &mut seen);
        assert_eq!(&seen, b"9!", "a read sees the folded bytes");
        // A write that touches one byte of them ends the fold: the next rewrite is a write of
        // its own, whose before-image is exact.
        list.push_change_unfolded(&arena, page, 101, b"?");
        list.push_change(&arena, page, 100, b"XY");
        let edits = list.edits(&[]);
        let last = edits.last().unwrap();
        assert_eq!((last.offset, last.before), (100, Some(&b"9?"[..])), "not folded past the write between");
    }

    /// Applies `edit` to a page image as FORMAT.md, "Edits", says.
    fn apply_to(image: &mut [u8], edit: &Edit<'_>) {
        let offset = edit.offset as usize;
        match edit.kind {
            EditKind::Write => image[offset..offset + edit.after.len()].copy_from_slice(edit.after),
            EditKind::Insert { end } => {
                image.copy_within(offset..end as usize, offset + edit.after.len());
                image[offset..offset + edit.after.len()].copy_from_slice(edit.after);
            }
            EditKind::Remove { end, len } => {
                let (end, len) = (end as usize, len as usize);
                image.copy_within(offset + len..end, offset);
                image[end - len..end].fill(0);
            }
            // Decoded, a stored write changes no byte (its bytes are in the page's file).
            EditKind::Stored { .. } => image[offset..offset + edit.after.len()].copy_from_slice(edit.after),
        }
    }

    /// Random edits on three pages, many of them writes of adjacent bytes or rewrites of the
    /// same bytes (a bulk record's shape), some inserts (at the end of their range or not),
    /// removes and partly overlapping writes. `VELLUM_EDITS_SEED=<n>` replays a failure.
    fn random_list(rng: &mut crate::rng::SplitMix64, arena: &Arena, pages: &[PageId]) -> EditList {
        let mut list = EditList::default();
        // Per page: the next free bytes to write, the next bytes in use to change.
        let mut cursors = [[200usize, 1800]; 3];
        for _ in 0..1 + rng.below(120) {
            let p = rng.below(pages.len() as u64) as usize;
            let page = pages[p];
            let len = 1 + rng.below(24) as usize;
            let bytes = rng.bytes(len);
            match rng.below(20) {
                0..=9 => {
                    if cursors[p][0] + len > 1800 {
                        cursors[p][0] = 200;
                    }
                    list.push_new(page, cursors[p][0], &bytes);
                    cursors[p][0] += len;
                }
                10..=13 => {
                    if cursors[p][1] + len > 3000 {
                        cursors[p][1] = 1800;
                    }
                    list.push_change(arena, page, cursors[p][1], &bytes);
                    cursors[p][1] += len;
                }
                14 | 15 => list.push_change(arena, page, 24 + 8 * rng.below(3) as usize, &bytes[..len.min(8)]),
                16 => list.push_change(arena, page, 64 + rng.below(3000) as usize, &bytes),
                17 => {
                    let offset = 3100 + rng.below(400) as usize;
                    let end = if rng.chance(50) { offset } else { offset + rng.below(100) as usize };
                    list.push_insert(page, offset, end, &bytes);
                }
                18 => {
                    let offset = 3100 + rng.below(400) as usize;
                    let end = offset + len + rng.below(100) as usize;
                    list.push_remove(arena, page, offset, end, len);
                }
                _ => list.push_new(page, 64 + rng.below(3000) as usize, &bytes),
            }
        }
        list
    }

    #[test]
    fn a_bulk_record_logged_in_runs_redoes_and_undoes_as_its_edits() {
        let seed = crate::rng::seed_from_env("VELLUM_EDITS_SEED", 0xED17_5EED);
        let mut rng = crate::rng::SplitMix64::new(seed);
        let (arena, _) = arena_with_abcdefgh_at_100(seed);
        let pages = [1, 2, 3].map(|n| PageId::new(Space::Catalog, n));
        for &page in &pages {
            arena.ensure_page(page).unwrap();
            let _latch = arena.latch(page);
            arena.write(page, 64, &rng.bytes(4000));
        }
        let (mut logged_edits, mut built_edits) = (0, 0);
        for round in 0..if cfg!(miri) { 4 } else { 400 } {
            let list = random_list(&mut rng, &arena, &pages);
            let edits = list.edits(&[]);
            let (ordered, runs) = list.log_runs(&edits);
            let mut payload = Vec::new();
            crate::format::record::encode_update_runs_into(&mut payload, Op::Batch, "x", &ordered, &runs);
            let decoded = match crate::format::record::decode(Kind::Update as u8, &payload, Lsn(1), 4096) {
                Ok(Payload::Update { edits, .. }) => edits,
                other => panic!("round {round}: a record of runs decodes as an update: {other:?}"),
            };
            assert_eq!(decoded.len(), runs.len(), "round {round}: one logged edit a run");
            (logged_edits, built_edits) = (logged_edits + decoded.len(), built_edits + edits.len());
            for &page in &pages {
                let original = arena.copy_page(page);
                let (mut built, mut logged) = (original.clone(), original.clone());
                edits.iter().filter(|e| e.page == page).for_each(|e| apply_to(&mut built, e));
                decoded.iter().filter(|e| e.page == page).for_each(|e| apply_to(&mut logged, e));
                assert!(built == logged, "round {round}, {page}: the logged runs redo to the page the edits make");
                let (mut undone_built, mut undone_logged) = (built.clone(), built);
                for e in crate::format::record::compensation(&edits).iter().filter(|e| e.page == page) {
                    apply_to(&mut undone_built, e);
                }
                for e in crate::format::record::compensation(&decoded).iter().filter(|e| e.page == page) {
                    apply_to(&mut undone_logged, e);
                }
                // Bytes written without a before-image were free: an undo need not restore
                // them. (Inserts here shift over bytes in use, which no writer does: the undo
                // of the edits as built zeroes those, and so must the undo of the log.)
                let mut free = vec![false; original.len()];
                for e in decoded.iter().filter(|e| e.page == page) {
                    let extent = e.extent();
                    let free_bytes = match e.kind {
                        EditKind::Write if e.before.is_none() => extent,
                        _ => 0..0,
                    };
                    free[free_bytes.start as usize..free_bytes.end as usize].fill(true);
                }
                for (at, (a, b)) in undone_built.iter().zip(&undone_logged).enumerate() {
                    assert!(
                        free[at] || a == b,
                        "round {round}, {page}: byte {at} undone to {b} from the log, {a} from the edits (was {})",
                        original[at]
                    );
                }
            }
        }
        eprintln!("{built_edits} edits built, {logged_edits} logged");
        assert!(logged_edits * 2 < built_edits, "runs leave out a good share of the edit headers");
    }
}
