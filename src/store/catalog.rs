//! Catalog entries: each id's entry (its id, where its vector is, its metadata inline or in a
//! chain of overflow pages) in slotted catalog pages. The index maps an id to its entry's
//! place; an entry never moves while it lives, so readers borrow its metadata in place.
//!
//! The writer finds room for a new entry in the hot page (meta field), then in the first pages
//! of the roomy list, then in a fresh page. It learns a page's free space by decoding the page
//! the first time it places an entry there, and keeps what it learnt in a bounded cache: no
//! page is read at open.

use std::collections::HashMap;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::alloc::{List, OpCtx, Release};
use crate::arena::Arena;
use crate::format::index::LeafValue;
use crate::format::meta::{self, ID_MAX_BYTES, METADATA_MAX_BYTES};
use crate::format::page::{
    self, CATALOG_SLOT_BYTES, CATALOG_SLOTS_OFFSET, CatalogSlot, ENTRY_FLAG_OVERFLOW, ENTRY_HEADER_BYTES, EntryHeader,
    OVERFLOW_DATA_OFFSET, PAGE_A_OFFSET, PAGE_B_OFFSET, PAGE_C_OFFSET, PAGE_D_BYTES, PAGE_D_OFFSET, PAGE_HEADER_BYTES, PAGE_KIND_OFFSET, PageHeader,
    PageId, PageKind, Space, VectorLayout,
};
use crate::format::record::PageInit;
use crate::{Error, Result};

/// Free space of one catalog page, as the writer knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatPage {
    /// Directory slots.
    pub slot_count: u32,
    /// The lowest byte of entry data; the gap `[directory end, data_start)` is free.
    pub data_start: u32,
    /// Directory slots that hold no entry.
    pub free_slots: Vec<u32>,
    /// Free extents above `data_start` left by released entries: `(offset, len)`, in order.
    pub holes: Vec<(u32, u32)>,
}

impl CatPage {
    fn directory_end(&self) -> u32 {
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

    /// Takes `[offset, offset + len)` out of the holes (an extent still held by readers).
    fn remove_range(&mut self, offset: u32, len: u32) {
        let end = offset + len;
        let mut kept = Vec::with_capacity(self.holes.len() + 1);
        for &(start, hole_len) in &self.holes {
            let hole_end = start + hole_len;
            if hole_end <= offset || start >= end {
                kept.push((start, hole_len));
                continue;
            }
            if start < offset {
                kept.push((start, offset - start));
            }
            if hole_end > end {
                kept.push((end, hole_end - end));
            }
        }
        self.holes = kept;
    }

    /// Free bytes in the page (gap and holes).
    pub fn free_bytes(&self) -> u32 {
        self.data_start - self.directory_end() + self.holes.iter().map(|h| h.1).sum::<u32>()
    }
}

/// Catalog pages whose free space the writer knows, at most [`CATALOG_CACHE_PAGES_MAX`].
#[derive(Debug, Default)]
pub struct CatalogCache {
    pages: HashMap<u64, CatPage, super::state::FastHash>,
}

/// Pages the cache keeps (about 100 bytes each): when full it forgets them all, and relearns
/// a page's free space from the page when it next places an entry there.
pub const CATALOG_CACHE_PAGES_MAX: usize = 4096;

impl CatalogCache {
    /// A released extent became reusable.
    pub fn reclaim(&mut self, page_no: u64, offset: u32, len: u32) {
        if let Some(page) = self.pages.get_mut(&page_no) {
            page.add_hole(offset, len);
        }
    }
}

/// Where a new entry goes.
#[derive(Debug)]
pub struct Placement {
    /// The catalog page.
    pub page: PageId,
    /// Its directory slot.
    pub slot: u32,
    /// Where the entry starts.
    pub offset: u32,
    /// Its length.
    pub len_bytes: u32,
    before_slot_count: u32,
    before_data_start: u32,
    after: CatPage,
}

/// Where an entry of `len` bytes fits in `page`, with the page's free space after placing it.
fn fit(page: &CatPage, page_no: u64, len: u32) -> Option<Placement> {
    let mut after = page.clone();
    let slot = match after.free_slots.pop() {
        Some(slot) => slot,
        None => {
            after.slot_count += 1;
            page.slot_count
        }
    };
    if after.directory_end() > after.data_start {
        return None;
    }
    let offset = if let Some(i) = after
        .holes
        .iter()
        .position(|h| h.1 >= len && h.0 >= after.directory_end())
    {
        let (offset, hole_len) = after.holes[i];
        if hole_len == len {
            after.holes.remove(i);
        } else {
            after.holes[i] = (offset + len, hole_len - len);
        }
        offset
    } else if after.data_start - after.directory_end() >= len {
        after.data_start -= len;
        after.data_start
    } else {
        return None;
    };
    Some(Placement {
        page: PageId::new(Space::Catalog, page_no),
        slot,
        offset,
        len_bytes: len,
        before_slot_count: page.slot_count,
        before_data_start: page.data_start,
        after,
    })
}

/// True if an entry with this id and metadata stays inline (an entry is at most a quarter page).
pub fn inline_fits(page_size_bytes: u32, id_len: usize, meta_len: usize) -> bool {
    ENTRY_HEADER_BYTES + id_len + meta_len <= (page_size_bytes as usize - PAGE_HEADER_BYTES) / 4
}

impl OpCtx<'_> {
    /// Finds room for an entry of `len` bytes: the hot page, the first roomy pages, or a new one.
    pub fn place_entry(&mut self, len: u32) -> Result<Placement> {
        self.ensure_meta()?;
        let hot = PageId::from_raw(self.w.meta.hot_catalog.get());
        if let Some(hot) = hot
            && let Some(placement) = self.try_page(hot, len)?
        {
            return Ok(placement);
        }
        let mut prev = None;
        for &page in self.list_first::<3>(List::Roomy, Space::Catalog)?.iter() {
            if let Some(placement) = self.try_page(page, len)? {
                return Ok(placement);
            }
            let state = self.page_state(page)?;
            if state.free_bytes() < self.inner.arena.page_size_bytes() / 8 && self.w.quarantine.extents(page.page_no()).is_empty() {
                // Too full to be worth trying again until an entry of it is freed.
                self.list_unlink(List::Roomy, prev, page)?;
            } else {
                prev = Some(page);
            }
        }
        let page_size = self.inner.arena.page_size_bytes();
        let init = PageInit::Catalog {
            slot_count: 0,
            data_start: page_size,
        };
        let (page, reused) = self.take_catalog_page(init)?;
        if reused {
            self.rewrite_header(page, PageKind::Catalog, 0, page_size, 0);
        }
        let fresh = CatPage {
            slot_count: 0,
            data_start: page_size,
            free_slots: Vec::new(),
            holes: Vec::new(),
        };
        self.remember(page.page_no(), fresh.clone());
        self.set_meta(|m| m.hot_catalog = page.0.into());
        Ok(fit(&fresh, page.page_no(), len).expect("an entry fits an empty page (inline_fits)"))
    }

    fn try_page(&mut self, page: PageId, len: u32) -> Result<Option<Placement>> {
        let state = self.page_state(page)?;
        Ok(fit(&state, page.page_no(), len))
    }

    fn remember(&mut self, page_no: u64, state: CatPage) {
        let cache = &mut self.w.catalog.pages;
        if cache.len() >= CATALOG_CACHE_PAGES_MAX && !cache.contains_key(&page_no) {
            cache.clear();
        }
        cache.insert(page_no, state);
    }

    /// The free space of catalog page `page`: from the cache, or decoded from the page (the
    /// gaps between its entries, less the extents readers may still hold).
    fn page_state(&mut self, page: PageId) -> Result<CatPage> {
        if let Some(state) = self.w.catalog.pages.get(&page.page_no()) {
            return Ok(state.clone());
        }
        self.inner.arena.check_in_use(page)?;
        let image = self.list.page_image(&self.inner.arena, page);
        let damaged = |reason: String| self.inner.arena.corrupted(page, reason);
        let entries = page::decode_catalog_page(&image).map_err(damaged)?;
        let header = PageHeader::read_from_prefix(&image).expect("a page holds a header").0;
        let mut state = CatPage {
            slot_count: header.a.get(),
            data_start: header.b.get(),
            free_slots: Vec::new(),
            holes: Vec::new(),
        };
        let mut used = entries.iter().map(|e| e.slot).peekable();
        for slot in 0..state.slot_count {
            if used.next_if_eq(&slot).is_none() {
                state.free_slots.push(slot);
            }
        }
        state.free_slots.reverse();
        let mut extents: Vec<(u32, u32)> = entries.iter().map(|e| (e.offset, e.len_bytes)).collect();
        extents.sort_unstable();
        let mut cursor = state.data_start;
        for (offset, len) in extents {
            if offset > cursor {
                state.add_hole(cursor, offset - cursor);
            }
            cursor = offset + len;
        }
        let page_size = self.inner.arena.page_size_bytes();
        if cursor < page_size {
            state.add_hole(cursor, page_size - cursor);
        }
        for &(offset, len) in self.w.quarantine.extents(page.page_no()) {
            state.remove_range(offset, len);
        }
        self.remember(page.page_no(), state.clone());
        Ok(state)
    }

    /// Writes a new entry at `placement`: the page header fields it moves, its directory slot
    /// and its bytes (into free space). The page's new free space is remembered.
    pub fn write_entry(&mut self, placement: Placement, entry: &NewEntry<'_>) {
        let arena = &self.inner.arena;
        let page = placement.page;
        let after = &placement.after;
        if after.slot_count != placement.before_slot_count {
            self.list
                .push_change(arena, page, PAGE_A_OFFSET, &after.slot_count.to_le_bytes());
        }
        if after.data_start != placement.before_data_start {
            self.list
                .push_change(arena, page, PAGE_B_OFFSET, &after.data_start.to_le_bytes());
        }
        let slot = CatalogSlot {
            offset: U32::new(placement.offset),
            len_bytes: U32::new(placement.len_bytes),
        };
        let slot_offset = CATALOG_SLOTS_OFFSET + placement.slot as usize * CATALOG_SLOT_BYTES;
        // A new or freed slot: written earlier in this list only if freed in it.
        self.list.push_change_unfolded(arena, page, slot_offset, slot.as_bytes());
        self.list
            .push_new_with(page, placement.offset as usize, |out| entry.encode(out));
        self.remember(page.page_no(), placement.after);
    }

    /// Frees the entry `value` names (its directory slot cleared, its bytes quarantined, its
    /// overflow pages freed) and puts its page on the roomy list.
    pub fn free_entry(&mut self, value: &LeafValue, overflow: Option<PageId>, meta_len: u32) -> Result<()> {
        let page = PageId::new(Space::Catalog, u64::from(value.catalog_page.get()));
        let slot = value.catalog_slot.get();
        let slot_offset = CATALOG_SLOTS_OFFSET + slot as usize * CATALOG_SLOT_BYTES;
        self.list
            .push_change(&self.inner.arena, page, slot_offset, &[0; CATALOG_SLOT_BYTES]);
        if let Some(state) = self.w.catalog.pages.get_mut(&page.page_no()) {
            state.free_slots.push(slot);
        }
        self.free(Release::CatalogExtent {
            page_no: page.page_no(),
            offset: value.entry_offset.get(),
            len: value.entry_len.get(),
        });
        if page.0 != self.w.meta.hot_catalog.get() && self.link(page) == 0 {
            self.list_push(List::Roomy, page)?;
        }
        if let Some(first) = overflow {
            let (meta, pages) = read_chain(&self.inner.arena, first, meta_len)?;
            // Readers of the committed entry may still follow the chain once its pages are
            // marked free: they find its bytes in the mask until the commit publishes the
            // change (or the undo restores the pages).
            self.inner.mask.record_chain(first.0, &meta);
            for page_no in pages {
                self.free_catalog_page(PageId::new(Space::Catalog, page_no))?;
            }
        }
        Ok(())
    }

    /// Writes metadata too large to sit inline into a chain of overflow pages; returns the
    /// first.
    pub fn write_overflow(&mut self, meta_bytes: &[u8]) -> Result<PageId> {
        let capacity = self.inner.arena.page_size_bytes() as usize - OVERFLOW_DATA_OFFSET;
        let mut pages = Vec::new();
        for chunk in meta_bytes.chunks(capacity) {
            let init = PageInit::Overflow {
                used_bytes: chunk.len() as u32,
                b_unused: 0,
            };
            let (page, reused) = self.take_catalog_page(init)?;
            if reused {
                self.rewrite_header(page, PageKind::Overflow, chunk.len() as u32, 0, 0);
            }
            pages.push(page);
        }
        for (i, chunk) in meta_bytes.chunks(capacity).enumerate() {
            let next = pages.get(i + 1).map_or(0, |p| p.0);
            self.list
                .push_change(&self.inner.arena, pages[i], PAGE_C_OFFSET, &next.to_le_bytes());
            self.list.push_new(pages[i], OVERFLOW_DATA_OFFSET, chunk);
        }
        Ok(pages[0])
    }

    /// Rewrites the kind and the fields `a`, `b`, `c` of a reused page's header (with
    /// before-images: an undo gives the page back to the free list as it was).
    pub fn rewrite_header(&mut self, page: PageId, kind: PageKind, a: u32, b: u32, c: u64) {
        let arena = &self.inner.arena;
        self.list.push_change(arena, page, PAGE_KIND_OFFSET, &[kind as u8]);
        let mut fields = [0u8; 16];
        fields[..4].copy_from_slice(&a.to_le_bytes());
        fields[4..8].copy_from_slice(&b.to_le_bytes());
        fields[8..].copy_from_slice(&c.to_le_bytes());
        self.list.push_change(arena, page, PAGE_A_OFFSET, &fields);
        // Field `d` (bytes 48..64) is left from the page's last use (a node's key prefix) and
        // zero in every kind a page is reused as but an index node, which sets its own.
        self.list.push_change(arena, page, PAGE_D_OFFSET, &[0u8; PAGE_D_BYTES]);
    }
}

/// A catalog entry to write.
pub struct NewEntry<'a> {
    /// Where its vector is.
    pub vector_page: PageId,
    /// Its slot.
    pub vector_slot: u32,
    /// The id.
    pub id: &'a str,
    /// The encoded metadata's length.
    pub meta_len: usize,
    /// The metadata when inline (empty when it lives in a chain).
    pub inline_meta: &'a [u8],
    /// The chain's first page.
    pub overflow: Option<PageId>,
}

impl NewEntry<'_> {
    /// Bytes the entry takes.
    pub fn len_bytes(&self) -> usize {
        ENTRY_HEADER_BYTES + self.id.len() + self.inline_meta.len()
    }

    /// Appends the entry (FORMAT.md, catalog pages) to `out`: its header, the id and, unless
    /// the metadata lives in an overflow chain, the metadata.
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.id.len() <= ID_MAX_BYTES && self.meta_len <= METADATA_MAX_BYTES);
        assert!(
            self.overflow.is_some() || self.inline_meta.len() == self.meta_len,
            "inline metadata is whole"
        );
        let header = EntryHeader {
            vector_page: U64::new(self.vector_page.0),
            vector_slot: U32::new(self.vector_slot),
            flags: U16::new(if self.overflow.is_some() { ENTRY_FLAG_OVERFLOW } else { 0 }),
            id_len: U16::new(self.id.len() as u16),
            meta_len: U32::new(self.meta_len as u32),
            reserved: U32::ZERO,
            overflow_page: U64::new(self.overflow.map_or(0, |p| p.0)),
        };
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.inline_meta);
    }
}

/// A live entry as a reader finds it from the index.
#[derive(Clone, Debug)]
pub struct EntryView {
    /// The id, in place in the catalog page.
    pub id: *const u8,
    /// Its length.
    pub id_len: usize,
    /// The metadata: in place, or its chain's first page and length.
    pub meta: EntryMeta,
    /// The vector, in place in its slot.
    pub vector: *const f32,
}

/// Where an entry's metadata is.
#[derive(Clone, Copy, Debug)]
pub enum EntryMeta {
    /// In place in the catalog page.
    Inline {
        /// Its first byte.
        ptr: *const u8,
        /// Its length.
        len: u32,
    },
    /// In a chain of overflow pages.
    Chain {
        /// The chain's first page.
        first: PageId,
        /// The metadata's length.
        len: u32,
    },
}

/// Reads the entry and the vector `value` names, checking that they lie inside their pages and
/// agree with each other (damage otherwise). Their bytes stay in place: the caller holds an
/// epoch pin, so neither is reused while it reads them.
pub fn read_entry(arena: &Arena, layout: &VectorLayout, value: &LeafValue) -> Result<EntryView> {
    let place = EntryPlace::of(value);
    // The index names the vector's page too: from a cold cache, its read and the catalog
    // page's run together (two waits on the disk for a point read, not three).
    arena.ask_ahead(PageId::new(Space::Vector, place.vector_page));
    let (view, len) = read_entry_at(arena, layout, &place)?;
    if len != value.entry_len.get() as usize {
        let page = PageId::new(Space::Catalog, place.catalog_page);
        return Err(arena.corrupted(page, format!("entry at {}: its length disagrees with the index", place.offset)));
    }
    Ok(view)
}

/// Starts bringing the entry `value` names, and its vector, to where a read of them will find
/// them soon: into the CPU's caches if their pages were checked since the open, else from the
/// disk (`Arena::ask_ahead`). A hint for a reader that will read them after other work (a
/// batch of reads looks several ids up first: `Store::get_many`); a place outside the arena
/// is left alone (the read reports it). True if a page of the two was not read since the open
/// (the reader's cache is cold).
pub fn prefetch_entry(arena: &Arena, layout: &VectorLayout, value: &LeafValue) -> bool {
    let place = EntryPlace::of(value);
    if !place.inside(arena, layout) {
        return false;
    }
    let catalog = PageId::new(Space::Catalog, place.catalog_page);
    let vector = PageId::new(Space::Vector, place.vector_page);
    let lines = [
        (catalog, place.offset as usize, ENTRY_HEADER_BYTES),
        (vector, layout.slot_offset(place.vector_slot), layout.dimension as usize * 4),
    ];
    let mut unread = false;
    for (page, offset, len_bytes) in lines {
        if !arena.is_verified(page) {
            arena.ask_ahead(page);
            unread = true;
        } else if let Ok(in_use) = arena.page_in_use(page) {
            in_use.prefetch(offset, len_bytes);
        }
    }
    unread
}

/// Where an entry is, and the vector slot it must name.
#[derive(Clone, Copy, Debug)]
pub struct EntryPlace {
    /// The catalog page.
    pub catalog_page: u64,
    /// The entry's offset in it.
    pub offset: u32,
    /// The vector page the entry must name.
    pub vector_page: u64,
    /// The slot it must name.
    pub vector_slot: u32,
}

impl EntryPlace {
    /// The place an index value names.
    pub fn of(value: &LeafValue) -> EntryPlace {
        EntryPlace {
            catalog_page: u64::from(value.catalog_page.get()),
            offset: value.entry_offset.get(),
            vector_page: u64::from(value.vector_page.get()),
            vector_slot: value.vector_slot.get(),
        }
    }

    /// True if both pages are in the arena (the catalog's first page is the meta page, no
    /// entry's), the slot is in a vector page and the entry's header fits in its page.
    fn inside(&self, arena: &Arena, layout: &VectorLayout) -> bool {
        let offset = self.offset as usize;
        self.catalog_page != 0
            && self.catalog_page < arena.page_count(Space::Catalog)
            && self.vector_page < arena.page_count(Space::Vector)
            && self.vector_slot < layout.slots_per_page
            && offset >= PAGE_HEADER_BYTES
            && offset + ENTRY_HEADER_BYTES <= arena.page_size_bytes() as usize
    }
}

/// Reads the entry at `place` (see [`read_entry`]); returns it and its length.
pub fn read_entry_at(arena: &Arena, layout: &VectorLayout, place: &EntryPlace) -> Result<(EntryView, usize)> {
    let page = PageId::new(Space::Catalog, place.catalog_page);
    let offset = place.offset as usize;
    let page_size = arena.page_size_bytes() as usize;
    let disagree = |reason: &str| arena.corrupted(page, format!("entry at {offset}: {reason}"));
    if !place.inside(arena, layout) {
        return Err(disagree("the index names a place outside the arena"));
    }
    let vector_page = PageId::new(Space::Vector, place.vector_page);
    let (catalog, vector) = (arena.page_in_use(page)?, arena.page_in_use(vector_page)?);
    // The vector's lines are on their way while the header is read: its caller (a get, a
    // search) reads it next.
    let slot_offset = layout.slot_offset(place.vector_slot);
    vector.prefetch(slot_offset, layout.dimension as usize * 4);
    let mut raw = [0u8; ENTRY_HEADER_BYTES];
    catalog.read(offset, &mut raw);
    let header = EntryHeader::read_from_bytes(&raw).expect("header size");
    if header.vector_page.get() != vector_page.0 || header.vector_slot.get() != place.vector_slot {
        return Err(disagree("the entry names another vector slot than the index"));
    }
    let id_len = header.id_len.get() as usize;
    let meta_len = header.meta_len.get();
    if id_len == 0 || id_len > ID_MAX_BYTES || meta_len as usize > METADATA_MAX_BYTES {
        return Err(disagree("id or metadata length out of range"));
    }
    let (meta, len) = match header.flags.get() {
        0 => (
            EntryMeta::Inline {
                ptr: catalog.ptr((offset + ENTRY_HEADER_BYTES + id_len).min(page_size)),
                len: meta_len,
            },
            ENTRY_HEADER_BYTES + id_len + meta_len as usize,
        ),
        ENTRY_FLAG_OVERFLOW => {
            let first = PageId::from_raw(header.overflow_page.get())
                .filter(|p| p.space() == Space::Catalog)
                .ok_or_else(|| disagree("overflow page id names no catalog page"))?;
            (EntryMeta::Chain { first, len: meta_len }, ENTRY_HEADER_BYTES + id_len)
        }
        _ => return Err(disagree("unknown entry flags")),
    };
    if offset + len > page_size {
        return Err(disagree("the entry runs past its page"));
    }
    let view = EntryView {
        id: catalog.ptr(offset + ENTRY_HEADER_BYTES),
        id_len,
        meta,
        vector: vector.ptr(slot_offset) as *const f32,
    };
    Ok((view, len))
}

impl EntryView {
    /// The id's bytes.
    ///
    /// # Safety
    /// The caller holds an epoch pin taken before it found the entry (so its bytes are not
    /// reused) for as long as the slice lives.
    pub unsafe fn id_bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: `read_entry_at` checked the id lies inside its page, inside a mapping that
        // lives as long as the store; the caller's pin keeps the bytes from change.
        unsafe { std::slice::from_raw_parts(self.id, self.id_len) }
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
        if pages.len() == max_pages || page.space() != Space::Catalog || page.page_no() >= arena.page_count(Space::Catalog)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_extents_are_cut_out_of_the_holes() {
        let mut page = CatPage {
            slot_count: 2,
            data_start: 1000,
            free_slots: vec![],
            holes: vec![],
        };
        page.add_hole(1000, 100);
        page.add_hole(1100, 50);
        assert_eq!(page.holes, vec![(1000, 150)], "neighbours merge");
        page.remove_range(1040, 20);
        assert_eq!(page.holes, vec![(1000, 40), (1060, 90)]);
        page.remove_range(1000, 40);
        assert_eq!(page.holes, vec![(1060, 90)]);
        assert_eq!(page.free_bytes(), 1000 - 80 + 90);
    }
}
