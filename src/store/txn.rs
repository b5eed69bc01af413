//! Write transactions: one at a time, holding the writer lock from `begin` to commit or abort.
//!
//! Each operation is one `update` record holding byte-range edits: the new vector and catalog
//! entry go to free space (no before-image needed), the catalog slot directory and page header
//! fields change with before-images. Abort undoes the records newest first, logging a CLR for
//! each, then an `end` record.

use std::collections::HashMap;

use parking_lot::MutexGuard;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use super::meta::{self, ID_MAX_BYTES, METADATA_MAX_BYTES};
use super::state::{CatPage, IdMap, Located, Meta, Release, WriterState};
use super::{ActiveTxn, Store};
use crate::page::{
    self, CATALOG_SLOT_BYTES, CATALOG_SLOTS_OFFSET, ENTRY_FLAG_OVERFLOW, ENTRY_HEADER_BYTES, EntryHeader,
    OVERFLOW_DATA_OFFSET, PAGE_A_OFFSET, PAGE_B_OFFSET, PAGE_C_OFFSET, PAGE_HEADER_BYTES, PageId, PageKind, Space,
};
use crate::record::{self, Edit, Kind, Op, Payload};
use crate::{Error, Lsn, Result};

/// A write transaction. Dropping it without `commit` aborts it.
pub struct Transaction<'s> {
    store: &'s Store,
    writer: MutexGuard<'s, WriterState>,
    active: ActiveTxn,
    /// Update records for abort: (lsn, prev_lsn, payload).
    undo: Vec<(Lsn, Lsn, Vec<u8>)>,
    overlay: IdMap<Option<Located>>,
    allocated_slots: Vec<(PageId, u32)>,
    allocated_pages: Vec<u64>,
    page_snapshots: HashMap<u64, CatPage>,
    released: Vec<Release>,
    freed_dir_slots: Vec<(u64, u32)>,
    finished: bool,
}

/// Where a new catalog entry goes.
struct Placement {
    page: PageId,
    slot: u32,
    offset: u32,
    before: CatPage,
    after: CatPage,
}

impl<'s> Transaction<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Transaction<'s>> {
        let inner = store.inner();
        let mut writer = inner.writer.lock();
        inner.epochs.try_advance();
        reclaim(&mut writer, inner);
        let txn_id = writer.next_txn_id;
        writer.next_txn_id += 1;
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
            undo: Vec::new(),
            overlay: IdMap::default(),
            allocated_slots: Vec::new(),
            allocated_pages: Vec::new(),
            page_snapshots: HashMap::new(),
            released: Vec::new(),
            freed_dir_slots: Vec::new(),
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
        let mut edits_owned = Vec::new();
        self.free_entry_edits(&old, &mut edits_owned)?;
        let edits: Vec<Edit<'_>> = edits_owned.iter().map(OwnedEdit::as_edit).collect();
        self.log_update(Op::Delete, id, &edits)?;
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
        inner.publish(self.overlay.drain());
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
        *inner.apply.lock() = None;
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
        if self.undo.is_empty() {
            return Ok(());
        }
        let inner = self.store.inner();
        inner.log_and_apply(Some(&mut self.active), Kind::Abort, &[], &[])?;
        let page_size = inner.arena.page_size_bytes();
        for (lsn, prev_lsn, payload) in std::mem::take(&mut self.undo).into_iter().rev() {
            let Payload::Update { edits, .. } = record::decode(Kind::Update as u8, &payload, lsn, page_size)? else {
                unreachable!("the undo list holds update payloads only");
            };
            let compensation = record::compensation(&edits);
            let clr = record::encode_clr(prev_lsn, &compensation);
            inner.log_and_apply(Some(&mut self.active), Kind::Clr, &clr, &compensation)?;
        }
        inner.log_and_apply(Some(&mut self.active), Kind::End, &[], &[])?;
        Ok(())
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
        if let Some(at) = vector.iter().position(|x| !x.is_finite()) {
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

    /// Logs one update record for this transaction and remembers it for abort.
    fn log_update(&mut self, op: Op, id: &str, edits: &[Edit<'_>]) -> Result<Lsn> {
        let inner = self.store.inner();
        for page in edits.iter().map(|e| e.page) {
            // A page read from disk is checked before it is changed: a damaged page must not be
            // rewritten with a fresh checksum, nor a lost (all-zero) one written over.
            inner.arena.check_in_use(page)?;
        }
        let payload = record::encode_update(op, id, edits);
        let prev = self.active.last_lsn;
        let lsn = inner.log_and_apply(Some(&mut self.active), Kind::Update, &payload, edits)?;
        self.undo.push((lsn, prev, payload));
        Ok(lsn)
    }

    fn write_entry(
        &mut self,
        op: Op,
        id: &str,
        vector: &[f32],
        metadata: &[(&str, &str)],
        old: Option<Located>,
    ) -> Result<Lsn> {
        let mut meta_bytes = Vec::new();
        meta::encode(metadata, &mut meta_bytes);
        let mut edits = Vec::new();
        let (vector_page, vector_slot) = self.place_vector(vector, &mut edits)?;
        let overflow = self.place_overflow(id.len(), &meta_bytes, &mut edits)?;
        let entry = build_entry(vector_page, vector_slot, id, &meta_bytes, overflow);
        let placement = self.place_entry(entry.len())?;
        self.entry_edits(&placement, &entry, &mut edits);
        if let Some(old) = &old {
            self.free_entry_edits(old, &mut edits)?;
        }
        let borrowed: Vec<Edit<'_>> = edits.iter().map(OwnedEdit::as_edit).collect();
        let lsn = self.log_update(op, id, &borrowed)?;
        self.commit_placement(placement.page.page_no(), placement.after.clone());
        if let Some(old) = old {
            self.release_entry(&old);
        }
        let located = self.located(
            &placement,
            vector_page,
            vector_slot,
            id,
            meta_bytes,
            overflow,
            entry.len(),
        );
        self.overlay.insert(id.into(), Some(located));
        Ok(lsn)
    }

    fn place_vector(&mut self, vector: &[f32], edits: &mut Vec<OwnedEdit>) -> Result<(PageId, u32)> {
        let inner = self.store.inner();
        let (page, slot, fresh) = self.writer.vectors.take();
        self.allocated_slots.push((page, slot));
        if fresh {
            let dimension = inner.dimension;
            inner.init_page(
                page,
                PageKind::Vector,
                dimension,
                page::vector_stride_bytes(dimension) as u32,
            )?;
        }
        let offset = page::VECTOR_SLOTS_OFFSET + slot as usize * page::vector_stride_bytes(inner.dimension);
        edits.push(OwnedEdit {
            page,
            offset: offset as u32,
            after: vector.as_bytes().to_vec(),
            before: None,
        });
        Ok((page, slot))
    }

    /// Writes metadata too large to sit inline into a chain of overflow pages.
    fn place_overflow(
        &mut self,
        id_len: usize,
        meta_bytes: &[u8],
        edits: &mut Vec<OwnedEdit>,
    ) -> Result<Option<PageId>> {
        let inner = self.store.inner();
        if inline_fits(inner.arena.page_size_bytes(), id_len, meta_bytes.len()) {
            return Ok(None);
        }
        let capacity = inner.arena.page_size_bytes() as usize - OVERFLOW_DATA_OFFSET;
        let chunks: Vec<&[u8]> = meta_bytes.chunks(capacity).collect();
        let pages: Vec<u64> = chunks.iter().map(|_| self.writer.catalog.take_page()).collect();
        self.allocated_pages.extend(&pages);
        for (i, chunk) in chunks.iter().enumerate() {
            let page = PageId::new(Space::Catalog, pages[i]);
            inner.init_page(page, PageKind::Overflow, chunk.len() as u32, 0)?;
            let next = pages.get(i + 1).map_or(0, |&n| PageId::new(Space::Catalog, n).0);
            edits.push(OwnedEdit {
                page,
                offset: PAGE_C_OFFSET as u32,
                after: next.to_le_bytes().to_vec(),
                before: None,
            });
            edits.push(OwnedEdit {
                page,
                offset: OVERFLOW_DATA_OFFSET as u32,
                after: chunk.to_vec(),
                before: None,
            });
        }
        Ok(Some(PageId::new(Space::Catalog, pages[0])))
    }

    /// Finds room for an entry of `len` bytes: the hot page, a page with free space, or a new one.
    fn place_entry(&mut self, len: usize) -> Result<Placement> {
        let len = len as u32;
        let mut tried = Vec::new();
        let candidates: Vec<u64> = self
            .writer
            .catalog
            .hot
            .into_iter()
            .chain(self.writer.catalog.roomy.iter().copied())
            .collect();
        for page_no in candidates.into_iter().take(8) {
            let page = self
                .writer
                .catalog
                .pages
                .get(&page_no)
                .expect("candidates are catalog pages")
                .clone();
            if let Some(placement) = fit(&page, page_no, len) {
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
        if let Err(error) = inner.init_page(PageId::new(Space::Catalog, page_no), PageKind::Catalog, 0, page_size) {
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

    fn entry_edits(&self, placement: &Placement, entry: &[u8], edits: &mut Vec<OwnedEdit>) {
        let inner = self.store.inner();
        let page = placement.page;
        let (before, after) = (&placement.before, &placement.after);
        if after.slot_count != before.slot_count {
            edits.push(OwnedEdit::header_field(inner, page, PAGE_A_OFFSET, after.slot_count));
        }
        if after.data_start != before.data_start {
            edits.push(OwnedEdit::header_field(inner, page, PAGE_B_OFFSET, after.data_start));
        }
        let slot_offset = CATALOG_SLOTS_OFFSET + placement.slot as usize * CATALOG_SLOT_BYTES;
        let mut slot_bytes = Vec::with_capacity(8);
        slot_bytes.extend_from_slice(&placement.offset.to_le_bytes());
        slot_bytes.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        edits.push(OwnedEdit::with_before(inner, page, slot_offset, slot_bytes));
        edits.push(OwnedEdit {
            page,
            offset: placement.offset,
            after: entry.to_vec(),
            before: None,
        });
    }

    /// The edit that frees `old`'s catalog slot (its bytes stay until readers are gone).
    fn free_entry_edits(&mut self, old: &Located, edits: &mut Vec<OwnedEdit>) -> Result<()> {
        let inner = self.store.inner();
        let slot_offset = CATALOG_SLOTS_OFFSET + old.cat_slot as usize * CATALOG_SLOT_BYTES;
        edits.push(OwnedEdit::with_before(
            inner,
            old.cat_page,
            slot_offset,
            vec![0; CATALOG_SLOT_BYTES],
        ));
        Ok(())
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

    fn commit_placement(&mut self, page_no: u64, after: CatPage) {
        let current = self
            .writer
            .catalog
            .pages
            .get(&page_no)
            .cloned()
            .expect("placed in a known page");
        self.page_snapshots.entry(page_no).or_insert(current);
        self.writer.catalog.pages.insert(page_no, after);
    }

    #[allow(clippy::too_many_arguments)]
    fn located(
        &self,
        placement: &Placement,
        vector_page: PageId,
        vector_slot: u32,
        id: &str,
        meta_bytes: Vec<u8>,
        overflow: Option<PageId>,
        entry_len: usize,
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
            entry_len: entry_len as u32,
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

/// A byte-range edit with owned images.
struct OwnedEdit {
    page: PageId,
    offset: u32,
    after: Vec<u8>,
    before: Option<Vec<u8>>,
}

impl OwnedEdit {
    fn as_edit(&self) -> Edit<'_> {
        Edit {
            page: self.page,
            offset: self.offset,
            after: &self.after,
            before: self.before.as_deref(),
        }
    }

    /// An edit of bytes in use: the before-image is read from the page as it is now.
    fn with_before(inner: &super::Inner, page: PageId, offset: usize, after: Vec<u8>) -> OwnedEdit {
        let mut before = vec![0u8; after.len()];
        inner.arena.read(page, offset, &mut before);
        OwnedEdit {
            page,
            offset: offset as u32,
            after,
            before: Some(before),
        }
    }

    fn header_field(inner: &super::Inner, page: PageId, offset: usize, value: u32) -> OwnedEdit {
        OwnedEdit::with_before(inner, page, offset, value.to_le_bytes().to_vec())
    }
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

fn build_entry(
    vector_page: PageId,
    vector_slot: u32,
    id: &str,
    meta_bytes: &[u8],
    overflow: Option<PageId>,
) -> Vec<u8> {
    assert!(id.len() <= ID_MAX_BYTES && meta_bytes.len() <= METADATA_MAX_BYTES);
    let header = EntryHeader {
        vector_page: U64::new(vector_page.0),
        vector_slot: U32::new(vector_slot),
        flags: U16::new(if overflow.is_some() { ENTRY_FLAG_OVERFLOW } else { 0 }),
        id_len: U16::new(id.len() as u16),
        meta_len: U32::new(meta_bytes.len() as u32),
        reserved: U32::ZERO,
        overflow_page: U64::new(overflow.map_or(0, |p| p.0)),
    };
    let mut entry = Vec::with_capacity(ENTRY_HEADER_BYTES + id.len() + meta_bytes.len());
    entry.extend_from_slice(header.as_bytes());
    entry.extend_from_slice(id.as_bytes());
    if overflow.is_none() {
        entry.extend_from_slice(meta_bytes);
    }
    entry
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
        before: page.clone(),
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
