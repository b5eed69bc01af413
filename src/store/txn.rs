//! Write transactions: one at a time, holding the writer lock from `begin` to commit or abort.
//!
//! Each operation is one `update` record holding byte-range edits: the new vector and catalog
//! entry go to free space (no before-image needed), the catalog slot directory and page header
//! fields change with before-images. Abort undoes the records newest first, logging a CLR for
//! each, then an `end` record.

use std::collections::HashMap;
use std::ops::Range;

use parking_lot::MutexGuard;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::format::meta::{self, ID_MAX_BYTES, METADATA_MAX_BYTES};
use super::state::{CatPage, FastHash, IdMap, Located, Meta, Release, SPARE_OVERLAY_MAX_ENTRIES, WriterState};
use super::{ActiveTxn, Store};
use crate::arena::Arena;
use crate::format::page::{
    self, CATALOG_SLOT_BYTES, CATALOG_SLOTS_OFFSET, CatalogSlot, ENTRY_FLAG_OVERFLOW, ENTRY_HEADER_BYTES, EntryHeader,
    OVERFLOW_DATA_OFFSET, PAGE_A_OFFSET, PAGE_B_OFFSET, PAGE_C_OFFSET, PAGE_HEADER_BYTES, PageId, Space,
};
use crate::format::record::{self, Edit, Kind, Op, PageInit};
use crate::{Error, Lsn, Result};

/// A write transaction. Dropping it without `commit` aborts it.
pub struct Transaction<'s> {
    store: &'s Store,
    writer: MutexGuard<'s, WriterState>,
    active: ActiveTxn,
    /// What abort needs of each update record: its compensation edits.
    undo: UndoLog,
    overlay: IdMap<Option<Located>>,
    allocated_slots: Vec<(PageId, u32)>,
    allocated_pages: Vec<u64>,
    page_snapshots: HashMap<u64, CatPage, FastHash>,
    released: Vec<Release>,
    freed_dir_slots: Vec<(u64, u32)>,
    /// Buffers reused by every operation, so that an insert allocates almost nothing: the
    /// edits being built, the encoded payload and the encoded metadata.
    edits: EditList,
    payload: Vec<u8>,
    meta_bytes: Vec<u8>,
    finished: bool,
}

/// Where a new catalog entry goes.
struct Placement {
    page: PageId,
    slot: u32,
    offset: u32,
    len_bytes: u32,
    /// The page's slot count and data start before the entry: their header fields change only
    /// if the placement moved them.
    before_slot_count: u32,
    before_data_start: u32,
    after: CatPage,
}

impl<'s> Transaction<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Transaction<'s>> {
        store.inner().check_writable()?;
        let inner = store.inner();
        let mut writer = inner.writer.lock();
        inner.epochs.try_advance();
        reclaim(&mut writer, inner);
        let txn_id = writer.next_txn_id;
        writer.next_txn_id += 1;
        let overlay = std::mem::take(&mut writer.spare_overlay);
        assert!(overlay.is_empty(), "a spare overlay is put back empty");
        inner
            .next_txn_id
            .store(writer.next_txn_id, std::sync::atomic::Ordering::SeqCst);
        Ok(Transaction {
            store,
            writer,
            active: ActiveTxn {
                txn_id,
                first_lsn: Lsn::NONE,
                last_lsn: Lsn::NONE,
            },
            undo: UndoLog::default(),
            overlay,
            allocated_slots: Vec::new(),
            allocated_pages: Vec::new(),
            page_snapshots: HashMap::default(),
            released: Vec::new(),
            freed_dir_slots: Vec::new(),
            edits: EditList::default(),
            payload: Vec::new(),
            meta_bytes: Vec::new(),
            finished: false,
        })
    }

    /// This transaction's id.
    pub fn id(&self) -> u64 {
        self.active.txn_id
    }

    /// Inserts a vector; `Err(AlreadyExists)` if `id` is present.
    pub fn insert(&mut self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        self.check_input(id, vector, metadata)?;
        if self.lookup(id).is_some() {
            return Err(Error::AlreadyExists);
        }
        self.write_entry(Op::Insert, id, vector, metadata, None)
    }

    /// Inserts or replaces a vector.
    pub fn upsert(&mut self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        self.check_input(id, vector, metadata)?;
        let old = self.lookup(id);
        self.write_entry(Op::Upsert, id, vector, metadata, old)
    }

    /// Deletes a vector; returns whether it existed.
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        check_id(id)?;
        let Some(old) = self.lookup(id) else { return Ok(false) };
        let mut list = self.take_edit_list();
        self.free_entry_edits(&old, &mut list);
        let logged = self.log_update(Op::Delete, id, &list.edits(&[]));
        self.edits = list;
        logged?;
        self.release_entry(&old);
        self.overlay.insert(id.into(), None);
        Ok(true)
    }

    /// The vector `id` as this transaction sees it (its own writes included).
    pub fn get(&self, id: &str) -> Option<Vec<f32>> {
        let located = self.lookup(id)?;
        let inner = self.store.inner();
        let pin = inner.epochs.pin();
        Some(inner.vector_ref(&located, pin).to_vec())
    }

    /// Commits: the changes become visible to readers, and durable per the sync mode before
    /// this returns. Returns the commit record's LSN.
    pub fn commit(mut self) -> Result<Lsn> {
        let inner = self.store.inner();
        let lsn = inner.log_and_apply(Some(&mut self.active), Kind::Commit, &[], &[])?;
        // The device works on the commit while its changes are published (they are visible
        // before they are durable, as with any committer that waits for a group's flush).
        inner.wal.start_commit(lsn);
        inner.publish(self.overlay.drain());
        self.put_back_overlay();
        let epoch = inner.epochs.now();
        let released = std::mem::take(&mut self.released);
        self.writer.pending.extend(released.into_iter().map(|r| (epoch, r)));
        for (page_no, slot) in std::mem::take(&mut self.freed_dir_slots) {
            if let Some(page) = self.writer.catalog.pages.get_mut(&page_no) {
                page.free_slots.push(slot);
                self.writer.catalog.roomy.insert(page_no);
            }
        }
        *inner.apply.lock() = None;
        self.finished = true;
        drop(self);
        // The writer lock is released: other writers proceed while this commit waits for its
        // flush, and share it (group commit).
        inner.wal.commit(lsn)?;
        // The commit is durable (per the sync mode) whatever happens next: a checkpoint that
        // fails here leaves its pages dirty and is retried at the next trigger.
        let _ = inner.nudge_checkpointer();
        // Hook (memory budget, inner.rs): a writer that outruns the checkpointer waits here.
        inner.wait_for_memory();
        Ok(lsn)
    }

    /// Rolls back every change of this transaction.
    pub fn abort(mut self) -> Result<()> {
        self.rollback()
    }

    fn rollback(&mut self) -> Result<()> {
        self.finished = true;
        let inner = self.store.inner();
        let result = self.undo_all();
        if result.is_err() {
            // The log holds this transaction's changes but not their undoing, and so do the
            // pages in memory: nothing more may be logged (a checkpoint would record the
            // transaction as gone and write its changes out). The next open rolls it back.
            inner.wal.poison();
        }
        *inner.apply.lock() = None;
        self.overlay.clear();
        self.put_back_overlay();
        let writer = &mut *self.writer;
        writer.vectors.free.append(&mut self.allocated_slots);
        writer.catalog.free_pages.append(&mut self.allocated_pages);
        for (page_no, snapshot) in self.page_snapshots.drain() {
            writer.catalog.pages.insert(page_no, snapshot);
            writer.catalog.roomy.insert(page_no);
        }
        result
    }

    fn undo_all(&mut self) -> Result<()> {
        if self.undo.records.is_empty() {
            return Ok(());
        }
        let inner = self.store.inner();
        inner.log_and_apply(Some(&mut self.active), Kind::Abort, &[], &[])?;
        let undo = std::mem::take(&mut self.undo);
        for record in (0..undo.records.len()).rev() {
            let (undo_next, compensation) = undo.compensation(record);
            let clr = record::encode_clr(undo_next, &compensation);
            inner.log_and_apply(Some(&mut self.active), Kind::Clr, &clr, &compensation)?;
        }
        inner.log_and_apply(Some(&mut self.active), Kind::End, &[], &[])?;
        Ok(())
    }

    /// Keeps the emptied overlay for the next transaction, unless it grew large.
    fn put_back_overlay(&mut self) {
        let overlay = std::mem::take(&mut self.overlay);
        assert!(overlay.is_empty(), "the overlay was published or rolled back");
        if overlay.capacity() <= SPARE_OVERLAY_MAX_ENTRIES {
            self.writer.spare_overlay = overlay;
        }
    }

    fn lookup(&self, id: &str) -> Option<Located> {
        match self.overlay.get(id) {
            Some(change) => change.clone(),
            None => self.store.inner().index.read().get(id).cloned(),
        }
    }

    fn check_input(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<()> {
        check_id(id)?;
        let dimension = self.store.dimension();
        if vector.len() != dimension {
            return Err(Error::InvalidArgument(format!(
                "vector has {} components, the store holds {dimension}",
                vector.len()
            )));
        }
        if !all_finite(vector)
            && let Some(at) = vector.iter().position(|x| !x.is_finite())
        {
            return Err(Error::InvalidArgument(format!(
                "component {at} is {} (NaN and infinities are refused)",
                vector[at]
            )));
        }
        match meta::encoded_len(metadata) {
            Some(len) if len <= METADATA_MAX_BYTES => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "metadata encodes to more than {METADATA_MAX_BYTES} bytes"
            ))),
        }
    }

    /// Logs one update record for this transaction and remembers its compensation for abort.
    fn log_update(&mut self, op: Op, id: &str, edits: &[Edit<'_>]) -> Result<Lsn> {
        let inner = self.store.inner();
        for (i, edit) in edits.iter().enumerate() {
            // A page read from disk is checked before it is changed: a damaged page must not be
            // rewritten with a fresh checksum, nor a lost (all-zero) one written over.
            if edits[..i].iter().all(|e| e.page != edit.page) {
                inner.arena.check_in_use(edit.page)?;
            }
        }
        record::encode_update_into(&mut self.payload, op, id, edits);
        let prev = self.active.last_lsn;
        let lsn = inner.log_and_apply(Some(&mut self.active), Kind::Update, &self.payload, edits)?;
        self.undo.push(prev, edits);
        Ok(lsn)
    }

    /// The reusable edit list, emptied (put back by the caller).
    fn take_edit_list(&mut self) -> EditList {
        let mut list = std::mem::take(&mut self.edits);
        list.clear();
        list
    }

    fn write_entry(
        &mut self,
        op: Op,
        id: &str,
        vector: &[f32],
        metadata: &[(&str, &str)],
        old: Option<Located>,
    ) -> Result<Lsn> {
        let mut meta_bytes = std::mem::take(&mut self.meta_bytes);
        meta_bytes.clear();
        meta::encode(metadata, &mut meta_bytes);
        let mut list = self.take_edit_list();
        let result = self.write_entry_with(&mut list, op, id, vector, &meta_bytes, old);
        self.edits = list;
        self.meta_bytes = meta_bytes;
        result
    }

    fn write_entry_with(
        &mut self,
        list: &mut EditList,
        op: Op,
        id: &str,
        vector: &[f32],
        meta_bytes: &[u8],
        old: Option<Located>,
    ) -> Result<Lsn> {
        let (vector_page, vector_slot) = self.place_vector(list)?;
        let overflow = self.place_overflow(id.len(), meta_bytes, list)?;
        let inline_meta: &[u8] = if overflow.is_some() { &[] } else { meta_bytes };
        let placement = self.place_entry(ENTRY_HEADER_BYTES + id.len() + inline_meta.len())?;
        self.entry_edits(&placement, list);
        list.push_new_with(placement.page, placement.offset as usize, |out| {
            encode_entry(
                out,
                vector_page,
                vector_slot,
                id,
                meta_bytes.len(),
                inline_meta,
                overflow,
            );
        });
        if let Some(old) = &old {
            self.free_entry_edits(old, list);
        }
        let lsn = self.log_update(op, id, &list.edits(vector.as_bytes()))?;
        let located = self.located(&placement, vector_page, vector_slot, id, meta_bytes, overflow);
        self.commit_placement(placement);
        if let Some(old) = old {
            self.release_entry(&old);
        }
        self.overlay.insert(id.into(), Some(located));
        Ok(lsn)
    }

    /// Takes a vector slot (formatting a fresh page) for the caller's vector.
    fn place_vector(&mut self, list: &mut EditList) -> Result<(PageId, u32)> {
        let inner = self.store.inner();
        let (page, slot, fresh) = self.writer.vectors.take();
        let stride_bytes = page::vector_stride_bytes(inner.dimension);
        if fresh && let Err(error) = inner.init_page(
            page,
            PageInit::Vector {
                dimension: inner.dimension,
                stride_bytes: stride_bytes as u32,
            },
        ) {
            // The page was never formatted (its file may not even exist): it stays the next
            // fresh page, never a free slot a later writer would use as a formatted one.
            self.writer.vectors.fresh_page = page.page_no();
            self.writer.vectors.fresh_slot = 0;
            return Err(error);
        }
        self.allocated_slots.push((page, slot));
        list.push_vector(page, page::VECTOR_SLOTS_OFFSET + slot as usize * stride_bytes);
        Ok((page, slot))
    }

    /// Writes metadata too large to sit inline into a chain of overflow pages.
    fn place_overflow(&mut self, id_len: usize, meta_bytes: &[u8], list: &mut EditList) -> Result<Option<PageId>> {
        let inner = self.store.inner();
        if inline_fits(inner.arena.page_size_bytes(), id_len, meta_bytes.len()) {
            return Ok(None);
        }
        let capacity = inner.arena.page_size_bytes() as usize - OVERFLOW_DATA_OFFSET;
        let pages: Vec<u64> = meta_bytes
            .chunks(capacity)
            .map(|_| self.writer.catalog.take_page())
            .collect();
        self.allocated_pages.extend(&pages);
        for (i, chunk) in meta_bytes.chunks(capacity).enumerate() {
            let page = PageId::new(Space::Catalog, pages[i]);
            inner.init_page(
                page,
                PageInit::Overflow {
                    used_bytes: chunk.len() as u32,
                    b_unused: 0,
                },
            )?;
            let next = pages.get(i + 1).map_or(0, |&n| PageId::new(Space::Catalog, n).0);
            list.push_new(page, PAGE_C_OFFSET, &next.to_le_bytes());
            list.push_new(page, OVERFLOW_DATA_OFFSET, chunk);
        }
        Ok(Some(PageId::new(Space::Catalog, pages[0])))
    }

    /// Finds room for an entry of `len` bytes: the hot page, a page with free space, or a new one.
    fn place_entry(&mut self, len: usize) -> Result<Placement> {
        let len = len as u32;
        let catalog = &self.writer.catalog;
        let mut candidates = [0u64; 8];
        let mut candidate_count = 0;
        for page_no in catalog.hot.into_iter().chain(catalog.roomy.iter().copied()).take(8) {
            candidates[candidate_count] = page_no;
            candidate_count += 1;
        }
        let mut tried = Vec::new();
        for &page_no in &candidates[..candidate_count] {
            let page = self
                .writer
                .catalog
                .pages
                .get(&page_no)
                .expect("candidates are catalog pages");
            if let Some(placement) = fit(page, page_no, len) {
                self.writer.catalog.hot = Some(page_no);
                return Ok(placement);
            }
            tried.push(page_no);
        }
        for page_no in tried {
            self.writer.catalog.roomy.remove(&page_no);
        }
        let inner = self.store.inner();
        let page_size = inner.arena.page_size_bytes();
        let page_no = self.writer.catalog.take_page();
        if let Err(error) = inner.init_page(
            PageId::new(Space::Catalog, page_no),
            PageInit::Catalog {
                slot_count: 0,
                data_start: page_size,
            },
        ) {
            self.writer.catalog.free_pages.push(page_no);
            return Err(error);
        }
        // The page stays a catalog page even if this transaction aborts (page-init records are
        // never undone): its snapshot is the empty page.
        let fresh = CatPage {
            slot_count: 0,
            data_start: page_size,
            free_slots: Vec::new(),
            holes: Vec::new(),
        };
        self.writer.catalog.pages.insert(page_no, fresh.clone());
        self.page_snapshots.entry(page_no).or_insert_with(|| fresh.clone());
        self.writer.catalog.hot = Some(page_no);
        Ok(fit(&fresh, page_no, len).expect("an entry fits an empty page (inline_fits)"))
    }

    /// The edits of a placement's page header fields and directory slot (the entry's bytes
    /// follow, into free space).
    fn entry_edits(&self, placement: &Placement, list: &mut EditList) {
        let arena = &self.store.inner().arena;
        let page = placement.page;
        let after = &placement.after;
        if after.slot_count != placement.before_slot_count {
            list.push_change(arena, page, PAGE_A_OFFSET, &after.slot_count.to_le_bytes());
        }
        if after.data_start != placement.before_data_start {
            list.push_change(arena, page, PAGE_B_OFFSET, &after.data_start.to_le_bytes());
        }
        let slot = CatalogSlot {
            offset: U32::new(placement.offset),
            len_bytes: U32::new(placement.len_bytes),
        };
        let slot_offset = CATALOG_SLOTS_OFFSET + placement.slot as usize * CATALOG_SLOT_BYTES;
        list.push_change(arena, page, slot_offset, slot.as_bytes());
    }

    /// The edit that frees `old`'s catalog slot (its bytes stay until readers are gone).
    fn free_entry_edits(&self, old: &Located, list: &mut EditList) {
        let arena = &self.store.inner().arena;
        let slot_offset = CATALOG_SLOTS_OFFSET + old.cat_slot as usize * CATALOG_SLOT_BYTES;
        list.push_change(arena, old.cat_page, slot_offset, &[0; CATALOG_SLOT_BYTES]);
    }

    fn release_entry(&mut self, old: &Located) {
        self.released
            .push(Release::VectorSlot(old.vector_page, old.vector_slot));
        self.released.push(Release::CatalogExtent {
            page_no: old.cat_page.page_no(),
            offset: old.entry_offset,
            len: old.entry_len,
        });
        self.freed_dir_slots.push((old.cat_page.page_no(), old.cat_slot));
        if let Some(first) = old.overflow {
            let chain = super::state::read_chain(&self.store.inner().arena, first, meta_len(old));
            if let Ok((_, pages)) = chain {
                self.released.push(Release::Pages(pages));
            }
        }
    }

    /// The placement's page takes its new free space; the page as it was is kept for abort.
    fn commit_placement(&mut self, placement: Placement) {
        let page_no = placement.page.page_no();
        let before = self
            .writer
            .catalog
            .pages
            .insert(page_no, placement.after)
            .expect("placed in a known page");
        self.page_snapshots.entry(page_no).or_insert(before);
    }

    fn located(
        &self,
        placement: &Placement,
        vector_page: PageId,
        vector_slot: u32,
        id: &str,
        meta_bytes: &[u8],
        overflow: Option<PageId>,
    ) -> Located {
        let arena = &self.store.inner().arena;
        let stride = page::vector_stride_bytes(self.store.inner().dimension);
        let vector =
            arena.page_ptr(vector_page, page::VECTOR_SLOTS_OFFSET + vector_slot as usize * stride) as *const f32;
        let meta = if overflow.is_some() {
            Meta::Owned(meta_bytes.into())
        } else {
            let at = placement.offset as usize + ENTRY_HEADER_BYTES + id.len();
            Meta::Inline {
                ptr: arena.page_ptr(placement.page, at) as *const u8,
                len: meta_bytes.len() as u32,
            }
        };
        Located {
            vector,
            vector_page,
            vector_slot,
            cat_page: placement.page,
            cat_slot: placement.slot,
            entry_offset: placement.offset,
            entry_len: placement.len_bytes,
            meta,
            overflow,
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropping is abort. An error here (the log failed) leaves the store poisoned; the
            // next open's recovery undoes this transaction from the log.
            let _ = self.rollback();
        }
    }
}

/// The edits of one update record, built without an allocation per edit: small images sit in
/// one byte buffer that every operation of the transaction reuses, and the new vector is
/// borrowed from the caller.
#[derive(Default)]
struct EditList {
    bytes: Vec<u8>,
    specs: Vec<EditSpec>,
}

struct EditSpec {
    page: PageId,
    offset: u32,
    /// The after-image: a range of `bytes`, or (`None`) the caller's vector.
    after: Option<Range<usize>>,
    before: Option<Range<usize>>,
}

impl EditList {
    fn clear(&mut self) {
        self.bytes.clear();
        self.specs.clear();
    }

    /// An edit of free space: nothing for an undo to restore.
    fn push_new(&mut self, page: PageId, offset: usize, after: &[u8]) {
        self.push_new_with(page, offset, |out| out.extend_from_slice(after));
    }

    /// An edit of free space whose after-image `fill` appends to the buffer.
    fn push_new_with(&mut self, page: PageId, offset: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        fill(&mut self.bytes);
        self.specs.push(EditSpec {
            page,
            offset: offset as u32,
            after: Some(start..self.bytes.len()),
            before: None,
        });
    }

    /// The caller's vector, into a free slot.
    fn push_vector(&mut self, page: PageId, offset: usize) {
        self.specs.push(EditSpec {
            page,
            offset: offset as u32,
            after: None,
            before: None,
        });
    }

    /// An edit of bytes in use: the before-image is read from the page as it is now.
    fn push_change(&mut self, arena: &Arena, page: PageId, offset: usize, after: &[u8]) {
        let after_start = self.bytes.len();
        self.bytes.extend_from_slice(after);
        let before_start = self.bytes.len();
        self.bytes.resize(before_start + after.len(), 0);
        arena.read(page, offset, &mut self.bytes[before_start..]);
        self.specs.push(EditSpec {
            page,
            offset: offset as u32,
            after: Some(after_start..before_start),
            before: Some(before_start..self.bytes.len()),
        });
    }

    /// The edits, with `vector` as the image of the vector edit.
    fn edits<'a>(&'a self, vector: &'a [u8]) -> Vec<Edit<'a>> {
        self.specs
            .iter()
            .map(|spec| {
                assert!(
                    spec.after.is_some() || !vector.is_empty(),
                    "a vector edit needs the vector"
                );
                Edit {
                    page: spec.page,
                    offset: spec.offset,
                    after: spec.after.clone().map_or(vector, |range| &self.bytes[range]),
                    before: spec.before.clone().map(|range| &self.bytes[range]),
                }
            })
            .collect()
    }
}

/// What abort needs of a transaction's update records: the compensation of each (its
/// before-images, newest edit first; free-space edits need none), in one buffer for all, so
/// an open transaction holds a few bytes per record, not a copy of every vector it wrote.
#[derive(Default)]
struct UndoLog {
    /// Per update record: its prev-LSN (the undo-next of its CLR) and the end of its edits.
    records: Vec<(Lsn, usize)>,
    edits: Vec<(PageId, u32, Range<usize>)>,
    bytes: Vec<u8>,
}

impl UndoLog {
    fn push(&mut self, prev_lsn: Lsn, edits: &[Edit<'_>]) {
        for edit in record::compensation_iter(edits) {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(edit.after);
            self.edits.push((edit.page, edit.offset, start..self.bytes.len()));
        }
        self.records.push((prev_lsn, self.edits.len()));
    }

    /// Record `index`'s undo-next LSN and compensation edits.
    fn compensation(&self, index: usize) -> (Lsn, Vec<Edit<'_>>) {
        let start = index.checked_sub(1).map_or(0, |i| self.records[i].1);
        let (undo_next, end) = self.records[index];
        let edits = self.edits[start..end]
            .iter()
            .map(|(page, offset, range)| Edit {
                page: *page,
                offset: *offset,
                after: &self.bytes[range.clone()],
                before: None,
            })
            .collect();
        (undo_next, edits)
    }
}

/// True if no component is NaN or infinite. Branch-free within each chunk, so the compiler
/// checks a chunk in a few vector instructions; the early-exit loop it replaces took ~6% of
/// an insert's time.
fn all_finite(vector: &[f32]) -> bool {
    vector
        .chunks(16)
        .all(|chunk| chunk.iter().fold(true, |finite, x| finite & x.is_finite()))
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > ID_MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "an id must be 1..={ID_MAX_BYTES} bytes, not {}",
            id.len()
        )));
    }
    Ok(())
}

/// True if an entry with this id and metadata stays inline (an entry is at most a quarter page).
fn inline_fits(page_size_bytes: u32, id_len: usize, meta_len: usize) -> bool {
    ENTRY_HEADER_BYTES + id_len + meta_len <= (page_size_bytes as usize - PAGE_HEADER_BYTES) / 4
}

fn meta_len(located: &Located) -> u32 {
    match &located.meta {
        Meta::Inline { len, .. } => *len,
        Meta::Owned(bytes) => bytes.len() as u32,
    }
}

/// Appends a catalog entry (FORMAT.md, catalog pages) to `out`: its header, the id and, unless
/// the metadata lives in an overflow chain, the metadata.
fn encode_entry(
    out: &mut Vec<u8>,
    vector_page: PageId,
    vector_slot: u32,
    id: &str,
    meta_len: usize,
    inline_meta: &[u8],
    overflow: Option<PageId>,
) {
    assert!(id.len() <= ID_MAX_BYTES && meta_len <= METADATA_MAX_BYTES);
    assert!(
        overflow.is_some() || inline_meta.len() == meta_len,
        "inline metadata is whole"
    );
    let header = EntryHeader {
        vector_page: U64::new(vector_page.0),
        vector_slot: U32::new(vector_slot),
        flags: U16::new(if overflow.is_some() { ENTRY_FLAG_OVERFLOW } else { 0 }),
        id_len: U16::new(id.len() as u16),
        meta_len: U32::new(meta_len as u32),
        reserved: U32::ZERO,
        overflow_page: U64::new(overflow.map_or(0, |p| p.0)),
    };
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(inline_meta);
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

/// Moves releases whose readers are gone back into the allocators.
fn reclaim(writer: &mut WriterState, inner: &super::Inner) {
    while let Some((epoch, _)) = writer.pending.front() {
        if !inner.epochs.is_reclaimable(*epoch) {
            break;
        }
        let (_, release) = writer.pending.pop_front().expect("front exists");
        match release {
            Release::VectorSlot(page, slot) => writer.vectors.free.push((page, slot)),
            Release::CatalogExtent { page_no, offset, len } => {
                if let Some(page) = writer.catalog.pages.get_mut(&page_no) {
                    page.add_hole(offset, len);
                    writer.catalog.roomy.insert(page_no);
                }
            }
            Release::Pages(pages) => writer.catalog.free_pages.extend(pages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_a_non_finite_component_at_any_position() {
        let finite = [0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -1.5];
        for len in [1usize, 15, 16, 17, 33, 384] {
            let vector: Vec<f32> = (0..len).map(|i| finite[i % finite.len()]).collect();
            assert!(all_finite(&vector), "len {len}: extremes and subnormals are finite");
            // Long vectors: every 7th position (7 is prime to 16, so every lane of a chunk is
            // hit) and the last; short ones: every position.
            let step = if len > 64 { 7 } else { 1 };
            for at in (0..len).step_by(step).chain([len - 1]) {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                    let mut damaged = vector.clone();
                    damaged[at] = bad;
                    assert!(!all_finite(&damaged), "len {len}: {bad} at {at} must be refused");
                }
            }
        }
    }
}
