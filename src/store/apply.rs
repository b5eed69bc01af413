//! Logging a change and applying it to pages in memory (the write-ahead rule: a record is
//! appended before its edits touch a page), and the same application for redo.


use parking_lot::Mutex;

use crate::arena::Arena;
use crate::error::Result;
use crate::format::page::{PageHeader, PageId};
use crate::format::record::{self, Edit, EditKind, Kind, PageInit};
use crate::wal::{RecordSpec, now_us};
use crate::Lsn;
use super::{ActiveTxn, Inner};
use super::state::PageMap;


impl Inner {
    /// Appends a record for transaction `active` (or none) and applies its edits to the pages
    /// in memory, atomically with respect to checkpoints. Returns the record's LSN.
    pub fn log_and_apply(
        &self,
        txn: Option<&mut ActiveTxn>,
        kind: Kind,
        payload: &[u8],
        edits: &[Edit<'_>],
    ) -> Result<Lsn> {
        let mut active = self.apply.lock();
        let spec = RecordSpec {
            kind: kind as u8,
            flags: 0,
            txn_id: txn.as_ref().map_or(0, |t| t.txn_id),
            prev_lsn: txn.as_ref().map_or(0, |t| t.last_lsn.0),
            timestamp_us: now_us(),
        };
        let lsn = self.wal.append(&spec, &[payload])?;
        if let Some(txn) = txn {
            if txn.first_lsn.is_none() {
                txn.first_lsn = lsn;
            }
            txn.last_lsn = lsn;
            // A transaction leaves the table in the same critical section as its commit or end
            // record, so no checkpoint can list it as running after that record.
            *active = if matches!(kind, Kind::Commit | Kind::End) {
                None
            } else {
                Some(*txn)
            };
        }
        self.applying.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        apply_edits(&self.arena, &self.dirty, lsn, edits, false);
        // Readers start from the root the meta page names as of the last record applied:
        // published before the record counts as applied, so that a reader that meets a node
        // an undo emptied knows to look again.
        let meta = super::alloc::meta_page();
        if edits.iter().any(|e| e.page == meta) {
            self.refresh_index_root();
        }
        self.applying.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(lsn)
    }

    /// Sets the readers' root from the meta page.
    fn refresh_index_root(&self) {
        let image = self.arena.read_page(super::alloc::meta_page());
        if let Some(fields) = crate::format::index::MetaFields::read(&image) {
            self.index_root
                .store(fields.root.get(), std::sync::atomic::Ordering::Release);
        }
    }

    /// Logs and applies the initialisation of page `page` as an empty page of `kind`.
    pub fn init_page(&self, page: PageId, init: PageInit) -> Result<Lsn> {
        self.arena.ensure_page(page)?;
        self.fresh_ahead(page);
        let payload = record::encode_page_init(page, init);
        let _active = self.apply.lock();
        let spec = RecordSpec {
            kind: Kind::PageInit as u8,
            flags: 0,
            txn_id: 0,
            prev_lsn: 0,
            timestamp_us: now_us(),
        };
        let lsn = self.wal.append(&spec, &[&payload])?;
        format_page(&self.arena, &self.dirty, page, init, lsn);
        self.note_initialised(page);
        self.recent_inits.lock().insert(page, lsn);
        Ok(lsn)
    }
}


impl Inner {
    /// Where `page` is the first of its space never initialised (a store growing), makes it
    /// and the pages after it in its file, up to a run (`Arena::run_len`), fresh zeroed memory
    /// at once: one mapping call, and one call that faults them all in, where formatting them
    /// one by one makes one mapping call each and four page faults (a bulk load formats a
    /// vector page every 16 inserts of 1 KiB). Invisible to every reader: the pages were never
    /// initialised, so their files hold zeros there, as the fresh memory does, and no index,
    /// entry or free list names them; none is written back before its own page-init.
    fn fresh_ahead(&self, page: PageId) {
        let high_water = self.initialised_pages()[page.space().index()];
        if page.page_no() != high_water || self.arena.is_fresh(page) {
            return;
        }
        let count = self.arena.run_len(page, usize::MAX);
        let last = PageId::new(page.space(), page.page_no() + count as u64 - 1);
        // Optional: skipped where a stripe of the run is held (a reader's, or the caller's own).
        if self.arena.ensure_page(last).is_ok()
            && let Some(run) = self.arena.try_latch_run(page, count)
        {
            self.arena.format_fresh_run(&run);
        }
    }
}

/// Applies `edits` of the record at `lsn`: each page is changed if `only_older` is false or its
/// page LSN is older than `lsn`; its page LSN becomes `lsn` and it joins the dirty page table.
/// Returns how many pages were changed.
pub(crate) fn apply_edits(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    lsn: Lsn,
    edits: &[Edit<'_>],
    only_older: bool,
) -> usize {
    // Each page once, its edits in log order, the pages in the order of their first edit: the
    // index relies on it (a record writes its new nodes before the edit that links them in,
    // and frees the old ones after; see store/tree.rs). A record edits a handful of pages, found
    // by a scan of the edits before each; a record with many edits (a hostile log may hold
    // 65,535) groups them through a stable sort by first appearance, so the work stays n log n.
    const SCAN_EDITS_MAX: usize = 32;
    if edits.len() > SCAN_EDITS_MAX {
        let mut first_seen: std::collections::HashMap<PageId, usize> = Default::default();
        let mut order: Vec<(usize, usize)> = edits
            .iter()
            .enumerate()
            .map(|(i, e)| (*first_seen.entry(e.page).or_insert(i), i))
            .collect();
        order.sort_unstable();
        return order
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|group| {
                let page = edits[group[0].1].page;
                apply_page(arena, dirty, lsn, page, group.iter().map(|&(_, i)| &edits[i]), only_older)
            })
            .count();
    }
    let mut changed = 0;
    for (i, edit) in edits.iter().enumerate() {
        if edits[..i].iter().all(|e| e.page != edit.page) {
            let page_edits = edits[i..].iter().filter(|e| e.page == edit.page);
            changed += usize::from(apply_page(arena, dirty, lsn, edit.page, page_edits, only_older));
        }
    }
    changed
}

/// Applies `page_edits` (all of page `page`) under its latch, unless `only_older` and the page
/// already holds `lsn`. Returns whether the page changed.
fn apply_page<'e, 'a: 'e>(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    lsn: Lsn,
    page: PageId,
    page_edits: impl Iterator<Item = &'e Edit<'a>>,
    only_older: bool,
) -> bool {
    let _latch = arena.latch(page);
    if only_older && arena.page_lsn(page) >= lsn {
        return false;
    }
    for edit in page_edits {
        assert_eq!(edit.page, page, "the edits of one page");
        apply_edit(arena, edit);
    }
    arena.set_page_lsn(page, lsn);
    dirty.lock().entry(page).or_insert(lsn);
    true
}

/// Applies one edit to its page (FORMAT.md, "Edits"); the caller holds the page latch. The
/// ranges were checked against the page size when the record was built or decoded.
fn apply_edit(arena: &Arena, edit: &Edit<'_>) {
    let offset = edit.offset as usize;
    match edit.kind {
        EditKind::Write => arena.write(edit.page, offset, edit.after),
        EditKind::Insert { end } => {
            let len = edit.after.len();
            arena.move_within(edit.page, offset, offset + len, end as usize - offset);
            arena.write(edit.page, offset, edit.after);
        }
        EditKind::Remove { end, len } => {
            let (end, len) = (end as usize, len as usize);
            arena.move_within(edit.page, offset + len, offset, end - offset - len);
            arena.write(edit.page, end - len, &ZEROS[..len]);
        }
    }
}

/// Zeros for the bytes a remove leaves (an edit spans at most a page of at most 1 MiB).
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Formats `page` as an empty page (the redo of a page-init record).
pub(crate) fn format_page(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    page: PageId,
    init: PageInit,
    lsn: Lsn,
) {
    use zerocopy::IntoBytes;
    let (a, b) = init.fields();
    let mut header: PageHeader = crate::format::page::new_header(init.kind(), page, a, b);
    header.page_lsn = lsn.0.into();
    header.store_id = arena.store_id().into();
    let _latch = arena.latch(page);
    arena.reset_page(page, header.as_bytes());
    dirty.lock().entry(page).or_insert(lsn);
}


#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::format::page::Space;
    use crate::storage::{SimStorage, Storage};

    #[test]
    fn a_growing_store_makes_the_pages_past_its_high_water_fresh_a_run_at_a_time() {
        let sim = SimStorage::new(5);
        let options = crate::store::Options {
            storage: Arc::new(sim.clone()),
            page_size_bytes: 4096,
            ..crate::store::Options::default()
        };
        let store = crate::store::Store::create(Path::new("/db"), 64, options.clone()).unwrap();
        store.insert("first", &[1.0; 64], &[]).unwrap();
        let inner = store.inner();
        let high_water = inner.initialised_pages()[Space::Vector.index()];
        let next = PageId::new(Space::Vector, high_water);
        assert!(inner.arena.is_fresh(next), "the page past the high-water was made fresh with the first");
        assert!(inner.arena.is_all_zero(next), "and reads zeros, as its file does");
        for i in 0..200 {
            store.insert(&format!("v{i}"), &[i as f32; 64], &[]).unwrap();
        }
        assert!(
            inner.initialised_pages()[Space::Vector.index()] > high_water,
            "later inserts format the fresh pages"
        );
        store.close().unwrap();
        let store = crate::store::Store::open(Path::new("/db"), options).unwrap();
        assert_eq!(store.len(), 201);
        assert_eq!(&store.get("v199").unwrap().expect("present")[..], &[199.0; 64]);
    }

    #[test]
    fn edits_apply_page_by_page_in_log_order_however_many_there_are() {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(1));
        let arena = Arena::open(
            storage,
            Path::new("/arena"),
            4096,
            16 * 4096,
            crate::arena::ArenaOpen::TEST,
        )
        .unwrap();
        let pages = [
            PageId::new(Space::Vector, 3),
            PageId::new(Space::Catalog, 1),
            PageId::new(Space::Vector, 0),
        ];
        for page in pages {
            arena.ensure_page(page).unwrap();
        }
        // Three pages interleaved, later edits overwriting parts of earlier ones: 5 edits take
        // the scan path, 40 the sorted one (more than SCAN_EDITS_MAX).
        let images: Vec<[u8; 8]> = (1..=40u8).map(|i| [i; 8]).collect();
        let edits: Vec<Edit<'_>> = (0..40)
            .map(|i| Edit {
                page: pages[i % 3],
                offset: 100 + (i as u32 % 7) * 4,
                after: &images[i],
                before: None,
                kind: EditKind::Write,
            })
            .collect();
        for (count, lsn) in [(5, Lsn(1000)), (40, Lsn(2000))] {
            let dirty = Mutex::new(PageMap::default());
            let changed = apply_edits(&arena, &dirty, lsn, &edits[..count], false);
            assert_eq!(changed, 3, "{count} edits: every page once");
            for page in pages {
                // The second round overwrites every byte the first wrote (its 40 edits cover
                // all seven offsets of every page), so both compare with a replay from zeros.
                let mut expected = [0u8; 36];
                arena.read(page, 100, &mut expected);
                let mut replayed = [0u8; 36];
                for edit in edits[..count].iter().filter(|e| e.page == page) {
                    let at = edit.offset as usize - 100;
                    replayed[at..at + 8].copy_from_slice(edit.after);
                }
                assert!(
                    expected == replayed,
                    "{count} edits: {page} holds its edits applied in log order"
                );
                assert_eq!(
                    arena.page_lsn(page),
                    lsn,
                    "{count} edits: {page} carries the record's LSN"
                );
                assert_eq!(dirty.lock().get(&page), Some(&lsn), "{page} joins the dirty page table");
            }
        }
        let dirty = Mutex::new(PageMap::default());
        assert_eq!(
            apply_edits(&arena, &dirty, Lsn(2000), &edits, true),
            0,
            "redo leaves pages that already hold the record alone"
        );
    }
}

