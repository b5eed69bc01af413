//! The store's in-memory state, rebuilt from the catalog pages at open: the id index that
//! readers use, and the single writer's allocators (vector slots, catalog entry space, free
//! pages), plus releases waiting for readers to leave.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use zerocopy::FromBytes;

use crate::format::meta;
use crate::arena::Arena;
use crate::format::page::{
    self, CATALOG_SLOT_BYTES, CATALOG_SLOTS_OFFSET, CatalogEntry, ENTRY_HEADER_BYTES, OVERFLOW_DATA_OFFSET,
    PAGE_HEADER_BYTES, PageHeader, PageId, PageKind, Space,
};
use crate::{Error, Result};

/// Where a committed (or, in a transaction's overlay, pending) entry lives.
#[derive(Clone, Debug)]
pub struct Located {
    pub vector: *const f32,
    pub vector_page: PageId,
    pub vector_slot: u32,
    pub cat_page: PageId,
    pub cat_slot: u32,
    pub entry_offset: u32,
    pub entry_len: u32,
    pub meta: Meta,
    pub overflow: Option<PageId>,
}

/// Encoded metadata: inline in a catalog page, or assembled from an overflow chain.
#[derive(Clone, Debug)]
pub enum Meta {
    Inline { ptr: *const u8, len: u32 },
    Owned(Arc<[u8]>),
}

// SAFETY: the raw pointers point into arena mappings, which never move or unmap while the
// store lives (the index is owned by the store), and the bytes they point to are immutable
// while the entry is reachable: the writer only writes free space, and freed space is reused
// only after every reader that could hold it has unpinned (see `epoch`).
unsafe impl Send for Located {}
// SAFETY: as above; shared access only reads immutable bytes.
unsafe impl Sync for Located {}
// SAFETY: as for `Located`: an inline pointer addresses immutable bytes of a reachable entry
// inside a mapping that outlives every holder (the store's index and slot registry).
unsafe impl Send for Meta {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Meta {}

/// Something a commit freed, reusable once no reader can hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    VectorSlot(PageId, u32),
    CatalogExtent { page_no: u64, offset: u32, len: u32 },
    Pages(Vec<u64>),
}

/// Free space of one catalog page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatPage {
    pub slot_count: u32,
    /// The lowest byte of entry data; the gap `[directory end, data_start)` is free.
    pub data_start: u32,
    pub free_slots: Vec<u32>,
    /// Free extents below... above `data_start` left by released entries: `(offset, len)`.
    pub holes: Vec<(u32, u32)>,
}

impl CatPage {
    pub fn directory_end(&self) -> u32 {
        (CATALOG_SLOTS_OFFSET + self.slot_count as usize * CATALOG_SLOT_BYTES) as u32
    }

    /// Adds a released extent to the holes, merging neighbours.
    pub fn add_hole(&mut self, offset: u32, len: u32) {
        let at = self.holes.partition_point(|h| h.0 < offset);
        self.holes.insert(at, (offset, len));
        if at + 1 < self.holes.len() && self.holes[at].0 + self.holes[at].1 == self.holes[at + 1].0 {
            self.holes[at].1 += self.holes[at + 1].1;
            self.holes.remove(at + 1);
        }
        if at > 0 && self.holes[at - 1].0 + self.holes[at - 1].1 == self.holes[at].0 {
            self.holes[at - 1].1 += self.holes[at].1;
            self.holes.remove(at);
        }
    }
}

/// Vector slot allocation.
#[derive(Clone, Debug)]
pub struct VectorAlloc {
    pub free: Vec<(PageId, u32)>,
    pub fresh_page: u64,
    pub fresh_slot: u32,
    pub slots_per_page: u32,
}

impl VectorAlloc {
    /// A slot, and whether its page must be initialised first.
    pub fn take(&mut self) -> (PageId, u32, bool) {
        if let Some((page, slot)) = self.free.pop() {
            return (page, slot, false);
        }
        let (page_no, slot) = (self.fresh_page, self.fresh_slot);
        self.fresh_slot += 1;
        if self.fresh_slot == self.slots_per_page {
            self.fresh_slot = 0;
            self.fresh_page += 1;
        }
        (PageId::new(Space::Vector, page_no), slot, slot == 0)
    }
}

/// Catalog space allocation.
#[derive(Clone, Debug, Default)]
pub struct CatalogAlloc {
    pub pages: BTreeMap<u64, CatPage>,
    /// The page new entries go to first.
    pub hot: Option<u64>,
    /// Pages that gained holes or free slots since they were last full.
    pub roomy: BTreeSet<u64>,
    /// Free catalog-space pages (zero, or dead overflow pages), lowest last.
    pub free_pages: Vec<u64>,
    /// The first page beyond every file of the catalog space.
    pub next_new_page: u64,
}

impl CatalogAlloc {
    /// A free catalog-space page number (it must be initialised before use).
    pub fn take_page(&mut self) -> u64 {
        if let Some(page_no) = self.free_pages.pop() {
            return page_no;
        }
        self.next_new_page += 1;
        self.next_new_page - 1
    }
}

/// The hasher of the maps keyed by ids and pages: foldhash, seeded at random per map (several
/// times faster than SipHash on short ids, and still not predictable by whoever picks the ids).
pub type FastHash = foldhash::fast::RandomState;
/// A map keyed by arena pages (the dirty page table, recent page inits).
pub type PageMap<V> = HashMap<PageId, V, FastHash>;
/// A vector id as the index keeps it: shared by the index and the slot registry (search
/// results name their ids), so an id is allocated once.
pub type IdKey = Arc<str>;
/// A map keyed by vector ids.
pub type IdMap<V> = HashMap<IdKey, V, FastHash>;

/// The writer's state, under the writer lock.
#[derive(Debug)]
pub struct WriterState {
    pub next_txn_id: u64,
    pub vectors: VectorAlloc,
    pub catalog: CatalogAlloc,
    pub pending: VecDeque<(u64, Release)>,
    /// The last transaction's id overlay, emptied, kept so that the next one does not grow a
    /// table from nothing (see `Transaction::begin`).
    pub spare_overlay: IdMap<Option<Located>>,
}

/// An emptied overlay larger than this many entries is freed rather than kept for reuse.
pub const SPARE_OVERLAY_MAX_ENTRIES: usize = 1 << 16;

/// What loading the catalog found.
pub struct Loaded {
    pub index: IdMap<Located>,
    pub writer: WriterState,
    /// Pages skipped as damaged (SkipCorrupted only).
    pub skipped_pages: Vec<String>,
    /// Per space, a count of pages the loader found initialised (the pages below it are):
    /// for stores whose control file did not record it (format minor 0).
    pub initialised: [u64; 2],
}

/// Rebuilds the index and allocators from the catalog pages in memory (after redo and undo).
///
/// `initialised` counts, per space, the pages known to be in use: a catalog page below the
/// count that reads as zero was lost (damage), not free.
pub fn load(
    arena: &Arena,
    dimension: u32,
    next_txn_id: u64,
    skip_damaged: bool,
    initialised: [u64; 2],
) -> Result<Loaded> {
    let page_size = arena.page_size_bytes();
    let slots_per_page = page::vector_slots_per_page(page_size, dimension) as u32;
    let mut loader = Loader {
        arena,
        page_size,
        dimension,
        slots_per_page,
        index: IdMap::with_capacity_and_hasher(entries_hint(arena), FastHash::default()),
        used_vectors: SlotBits::new(arena.page_count(Space::Vector), slots_per_page),
        used_overflow: HashSet::default(),
        catalog: CatalogAlloc::default(),
        chains: Vec::new(),
        skipped: Vec::new(),
        skip_damaged,
        page_ids: Vec::new(),
        pages_per_file: arena.pages_per_file(),
        catalog_in_use: initialised[Space::Catalog.index()],
        catalog_seen: 0,
    };
    let page_count = arena.page_count(Space::Catalog);
    let mut spare_pages = Vec::new();
    for page_no in 0..page_count {
        if let Some(spare) = loader.load_page(page_no)? {
            spare_pages.push(spare);
        }
    }
    loader.load_chains()?;
    spare_pages.retain(|p| !loader.used_overflow.contains(p));
    spare_pages.reverse();
    loader.catalog.free_pages = spare_pages;
    loader.catalog.next_new_page = page_count;
    loader.catalog.roomy = loader.catalog.pages.keys().copied().collect();
    let vectors = loader.vector_alloc();
    let initialised = [loader.catalog_seen, vectors.fresh_page];
    Ok(Loaded {
        index: loader.index,
        writer: WriterState {
            next_txn_id,
            vectors,
            catalog: loader.catalog,
            pending: VecDeque::new(),
            spare_overlay: IdMap::default(),
        },
        skipped_pages: loader.skipped,
        initialised,
    })
}

struct Loader<'a> {
    arena: &'a Arena,
    page_size: u32,
    dimension: u32,
    slots_per_page: u32,
    index: IdMap<Located>,
    used_vectors: SlotBits,
    used_overflow: HashSet<u64, FastHash>,
    catalog: CatalogAlloc,
    /// Entries whose metadata lives in an overflow chain: (id, first page, length).
    chains: Vec<(IdKey, PageId, u32)>,
    skipped: Vec<String>,
    skip_damaged: bool,
    /// Ids (and their vector slots) loaded from the current page, to roll back if it fails.
    page_ids: Vec<(IdKey, (u64, u32))>,
    pages_per_file: u64,
    /// Catalog pages below this are in use: one that reads as zero was lost.
    catalog_in_use: u64,
    /// One past the highest catalog-space page found initialised.
    catalog_seen: u64,
}

impl Loader<'_> {
    fn damaged(&mut self, error: Error) -> Result<()> {
        if self.skip_damaged {
            self.skipped.push(error.to_string());
            Ok(())
        } else {
            Err(error)
        }
    }

    /// Loads one catalog-space page; returns its number if it is free for reuse.
    fn load_page(&mut self, page_no: u64) -> Result<Option<u64>> {
        let id = PageId::new(Space::Catalog, page_no);
        if let Err(error) = self.arena.verify(id) {
            self.damaged(error)?;
            return Ok(None);
        }
        let image = self.arena.copy_page(id);
        let header = PageHeader::read_from_prefix(&image).expect("page holds a header").0;
        if header.kind != PageKind::Zero as u8 {
            self.catalog_seen = page_no + 1;
        }
        match PageKind::from_u8(header.kind) {
            Some(PageKind::Zero) if page_no < self.catalog_in_use => {
                let file = crate::arena::arena_file_name(Space::Catalog, page_no / self.pages_per_file);
                self.damaged(Error::corrupted_file(
                    format!("arena/{file}"),
                    format!("{id} is empty, but the store had initialised it (its contents were lost)"),
                ))?;
                Ok(None)
            }
            Some(PageKind::Zero) | Some(PageKind::Overflow) => Ok(Some(page_no)),
            Some(PageKind::Catalog) => {
                let mark = (self.page_ids.len(), self.chains.len());
                if let Err(reason) = self.load_catalog_page(id, &image, &header) {
                    // A page is loaded whole or not at all: forget what its earlier slots added.
                    for (entry_id, vector) in self.page_ids.drain(mark.0..).collect::<Vec<_>>() {
                        self.index.remove(&entry_id);
                        self.used_vectors.remove(vector.0, vector.1);
                    }
                    self.chains.truncate(mark.1);
                    let file = crate::arena::arena_file_name(Space::Catalog, page_no / self.pages_per_file);
                    self.damaged(Error::corrupted_file(
                        format!("arena/{file}"),
                        format!("{id}: {reason}"),
                    ))?;
                }
                self.page_ids.clear();
                Ok(None)
            }
            // `verify` above refused every kind not allowed in the catalog space.
            Some(PageKind::Vector) | None => unreachable!("{id}: a verified catalog-space page of kind {}", header.kind),
        }
    }

    fn load_catalog_page(&mut self, id: PageId, image: &[u8], header: &PageHeader) -> std::result::Result<(), String> {
        // The rules that need nothing but the page are the page module's; the loader adds
        // those that need the arena and the other pages (vector slots, overflow pages, ids).
        let entries = page::decode_catalog_page(image)?;
        let (slot_count, data_start) = (header.a.get(), header.b.get());
        let mut page = CatPage {
            slot_count,
            data_start,
            free_slots: Vec::new(),
            holes: Vec::new(),
        };
        let mut used = entries.iter().map(|e| e.slot).peekable();
        for slot in 0..slot_count {
            if used.next_if_eq(&slot).is_none() {
                page.free_slots.push(slot);
            }
        }
        for entry in &entries {
            self.load_entry(id, entry)?;
        }
        // Entries do not overlap (checked by the decoder): the gaps between them are holes.
        let mut extents: Vec<(u32, u32)> = entries.iter().map(|e| (e.offset, e.len_bytes)).collect();
        extents.sort_unstable();
        let mut cursor = data_start;
        for (offset, len) in extents {
            if offset > cursor {
                page.add_hole(cursor, offset - cursor);
            }
            cursor = offset + len;
        }
        if cursor < self.page_size {
            page.add_hole(cursor, self.page_size - cursor);
        }
        page.free_slots.reverse();
        self.catalog.pages.insert(id.page_no(), page);
        Ok(())
    }

    fn load_entry(&mut self, page: PageId, entry: &CatalogEntry<'_>) -> std::result::Result<(), String> {
        let (slot, header, id) = (entry.slot, &entry.header, entry.id);
        let vector_page = PageId::from_raw(header.vector_page.get())
            .filter(|p| p.space() == Space::Vector && p.page_no() < self.arena.page_count(Space::Vector))
            .ok_or_else(|| format!("slot {slot}: vector page {:#x} out of range", header.vector_page.get()))?;
        let vector_slot = header.vector_slot.get();
        if vector_slot >= self.slots_per_page || !self.used_vectors.insert(vector_page.page_no(), vector_slot) {
            return Err(format!("slot {slot}: vector slot {vector_slot} invalid or used twice"));
        }
        let meta_len = header.meta_len.get();
        let (meta, overflow) = match entry.inline_meta {
            None => {
                let first = PageId::from_raw(header.overflow_page.get())
                    .filter(|p| p.space() == Space::Catalog && p.page_no() < self.arena.page_count(Space::Catalog))
                    .ok_or_else(|| format!("slot {slot}: overflow page out of range"))?;
                self.chains.push((id.into(), first, meta_len));
                (Meta::Owned(Arc::from(&[][..])), Some(first))
            }
            Some(_) => {
                // In place in the mapping (the decoder read a copy of the page).
                let at = entry.offset as usize + ENTRY_HEADER_BYTES + id.len();
                let ptr = self.arena.page_ptr(page, at) as *const u8;
                (Meta::Inline { ptr, len: meta_len }, None)
            }
        };
        let stride = page::vector_stride_bytes(self.dimension);
        let vector = self
            .arena
            .page_ptr(vector_page, page::VECTOR_SLOTS_OFFSET + vector_slot as usize * stride);
        let located = Located {
            vector: vector as *const f32,
            vector_page,
            vector_slot,
            cat_page: page,
            cat_slot: slot,
            entry_offset: entry.offset,
            entry_len: entry.len_bytes,
            meta,
            overflow,
        };
        let key = IdKey::from(id);
        match self.index.entry(key.clone()) {
            Entry::Occupied(_) => return Err(format!("slot {slot}: id {id:?} appears twice in the catalog")),
            Entry::Vacant(vacant) => vacant.insert(located),
        };
        self.page_ids.push((key, (vector_page.page_no(), vector_slot)));
        Ok(())
    }

    /// Reads every overflow chain, checking each page and bounding the walk by the length.
    fn load_chains(&mut self) -> Result<()> {
        let chains = std::mem::take(&mut self.chains);
        for (id, first, meta_len) in chains {
            match read_chain(self.arena, first, meta_len) {
                Ok((bytes, pages)) => {
                    for page in pages {
                        if !self.used_overflow.insert(page) {
                            self.damaged(Error::corrupted_file(
                                "arena",
                                format!("overflow page {page} shared by two entries"),
                            ))?;
                        }
                    }
                    if let Some(located) = self.index.get_mut(&id) {
                        located.meta = Meta::Owned(bytes.into());
                    }
                }
                Err(error) => {
                    self.index.remove(&id);
                    self.damaged(error)?;
                }
            }
        }
        Ok(())
    }

    fn vector_alloc(&self) -> VectorAlloc {
        let fresh_page = self.used_vectors.highest_page().map_or(0, |p| p + 1);
        let mut free = Vec::new();
        for page_no in (0..fresh_page).rev() {
            for slot in (0..self.slots_per_page).rev() {
                if !self.used_vectors.contains(page_no, slot) {
                    free.push((PageId::new(Space::Vector, page_no), slot));
                }
            }
        }
        VectorAlloc {
            free,
            fresh_page,
            fresh_slot: 0,
            slots_per_page: self.slots_per_page,
        }
    }
}

/// About how many entries the catalog holds, from the slot counts in the catalog page headers
/// (read before the pages are checked: a damaged count is bounded by what a page can hold),
/// so the index is sized once instead of growing through a dozen rehashes.
fn entries_hint(arena: &Arena) -> usize {
    let slots_max = u64::from(arena.page_size_bytes()) / CATALOG_SLOT_BYTES as u64;
    let mut entries = 0u64;
    for page_no in 0..arena.page_count(Space::Catalog) {
        let mut header = [0u8; PAGE_HEADER_BYTES];
        arena.read(PageId::new(Space::Catalog, page_no), 0, &mut header);
        let header = PageHeader::read_from_bytes(&header).expect("header size");
        if header.kind == PageKind::Catalog as u8 {
            entries += u64::from(header.a.get()).min(slots_max);
        }
    }
    entries as usize
}

/// Which vector slots hold a loaded entry: one bit per slot of every vector page (a hash set of
/// slots cost more than the rest of loading an entry).
struct SlotBits {
    words: Vec<u64>,
    slots_per_page: u32,
}

impl SlotBits {
    fn new(page_count: u64, slots_per_page: u32) -> SlotBits {
        let bits = page_count * u64::from(slots_per_page);
        SlotBits {
            words: vec![0; bits.div_ceil(64) as usize],
            slots_per_page,
        }
    }

    fn at(&self, page_no: u64, slot: u32) -> (usize, u64) {
        assert!(slot < self.slots_per_page, "a slot of the page");
        let bit = page_no * u64::from(self.slots_per_page) + u64::from(slot);
        assert!(bit < self.words.len() as u64 * 64, "a page of the arena");
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// Marks a slot used; false if it was already.
    fn insert(&mut self, page_no: u64, slot: u32) -> bool {
        let (word, mask) = self.at(page_no, slot);
        let fresh = self.words[word] & mask == 0;
        self.words[word] |= mask;
        fresh
    }

    fn remove(&mut self, page_no: u64, slot: u32) {
        let (word, mask) = self.at(page_no, slot);
        self.words[word] &= !mask;
    }

    fn contains(&self, page_no: u64, slot: u32) -> bool {
        let (word, mask) = self.at(page_no, slot);
        self.words[word] & mask != 0
    }

    /// The highest page with a used slot.
    fn highest_page(&self) -> Option<u64> {
        let word = self.words.iter().rposition(|&w| w != 0)?;
        let bit = word as u64 * 64 + 63 - u64::from(self.words[word].leading_zeros());
        Some(bit / u64::from(self.slots_per_page))
    }
}

/// Reads `meta_len` bytes of an overflow chain starting at `first`; returns them and the pages.
pub fn read_chain(arena: &Arena, first: PageId, meta_len: u32) -> Result<(Vec<u8>, Vec<u64>)> {
    let capacity = arena.page_size_bytes() as usize - OVERFLOW_DATA_OFFSET;
    let max_pages = (meta_len as usize).div_ceil(capacity).max(1);
    let mut bytes = Vec::with_capacity(meta_len as usize);
    let mut pages = Vec::new();
    let mut next = Some(first);
    while let Some(page) = next {
        let damaged = |reason: String| Error::corrupted_file("arena", format!("{page}: {reason}"));
        if pages.len() == max_pages
            || page.space() != Space::Catalog
            || page.page_no() >= arena.page_count(Space::Catalog)
        {
            return Err(damaged(
                "overflow chain longer than its metadata or out of range".into(),
            ));
        }
        arena.verify(page)?;
        let image = arena.copy_page(page);
        let header = PageHeader::read_from_prefix(&image).expect("page holds a header").0;
        let used = header.a.get() as usize;
        if header.kind != PageKind::Overflow as u8 || used > capacity {
            return Err(damaged("not a valid overflow page".into()));
        }
        bytes.extend_from_slice(&image[OVERFLOW_DATA_OFFSET..OVERFLOW_DATA_OFFSET + used]);
        pages.push(page.page_no());
        next = match header.c.get() {
            0 => None,
            raw => Some(PageId::from_raw(raw).ok_or_else(|| damaged("bad next page id".into()))?),
        };
    }
    if bytes.len() != meta_len as usize {
        return Err(Error::corrupted_file(
            "arena",
            format!(
                "{first}: overflow chain holds {} bytes, expected {meta_len}",
                bytes.len()
            ),
        ));
    }
    meta::validate(&bytes).map_err(|r| Error::corrupted_file("arena", format!("{first}: {r}")))?;
    Ok((bytes, pages))
}

/// Checks a page-header-sized constant is consistent (catalog pages start their directory
/// right after the header).
const _: () = assert!(CATALOG_SLOTS_OFFSET == PAGE_HEADER_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_bits_refuse_a_slot_twice_and_find_the_highest_used_page() {
        let mut bits = SlotBits::new(10, 15);
        assert_eq!(bits.highest_page(), None, "nothing used yet");
        assert!(
            bits.insert(0, 0) && bits.insert(9, 14) && bits.insert(4, 7),
            "first uses"
        );
        assert!(!bits.insert(4, 7), "a slot used twice is refused");
        assert_eq!(bits.highest_page(), Some(9), "the last slot of the last page");
        bits.remove(9, 14);
        assert_eq!(bits.highest_page(), Some(4), "after its only slot is freed");
        assert!(bits.contains(0, 0) && !bits.contains(9, 14) && !bits.contains(4, 6));
    }
}
