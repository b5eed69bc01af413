//! Logging a change and applying it to pages in memory (the write-ahead rule: a record is
//! appended before its edits touch a page), and the same application for redo.


use parking_lot::Mutex;

use crate::arena::Arena;
use crate::error::Result;
use crate::format::page::{PageHeader, PageId};
use crate::format::record::{self, Edit, EditKind, Kind, PageInit};
use crate::wal::RecordSpec;
use crate::Lsn;
use super::{ActiveTxn, Inner};
use super::state::PageMap;


impl Inner {
    /// Appends a record for transaction `active` (or none) and applies its edits to the pages
    /// in memory, atomically with respect to checkpoints; `payload` is its parts, in order
    /// (a bulk record leaves its vectors where they are: `record::encode_update_runs_gathered`).
    /// Returns the record's LSN.
    pub fn log_and_apply(
        &self,
        txn: Option<&mut ActiveTxn>,
        kind: Kind,
        payload: &[&[u8]],
        edits: &[Edit<'_>],
    ) -> Result<Lsn> {
        let mut active = self.apply.lock();
        let spec = RecordSpec {
            kind: kind as u8,
            flags: 0,
            txn_id: txn.as_ref().map_or(0, |t| t.txn_id),
            prev_lsn: txn.as_ref().map_or(0, |t| t.last_lsn.0),
            timestamp_us: self.wal.record_time_us(),
        };
        let lsn = match (kind, txn.is_some()) {
            (Kind::Update, true) => {
                let undo_bytes = undo_log_bytes(record::edits_bytes_max(edits));
                self.wal.append_reserving(&spec, payload, undo_bytes)?
            }
            (Kind::Abort | Kind::Clr | Kind::End, true) => self.wal.append_undo(&spec, payload)?,
            _ => self.wal.append(&spec, payload)?,
        };
        if matches!(kind, Kind::Commit | Kind::End) {
            self.wal.release_undo_reserve();
        }
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
            timestamp_us: self.wal.record_time_us(),
        };
        let lsn = self.wal.append(&spec, &[&payload])?;
        // A page the store grows into that is fresh memory holds zeros: nothing writes a page
        // before its first page-init, and the high water passes it with that one. Its header
        // alone is written (zeroing the rest was 16 KiB of stores a vector page, every 15 rows
        // of a bulk load, each line then written again by the vectors).
        let zeroed = page.page_no() >= self.initialised_pages()[page.space().index()] && self.arena.is_fresh(page);
        format_page(&self.arena, &self.dirty, page, init, lsn, zeroed);
        self.note_initialised(page);
        self.recent_inits.lock().insert(page, lsn);
        Ok(lsn)
    }
}


/// Log bytes the undo of an update record may take, held back when it is appended
/// (`Wal::append_reserving`), given `edits_bytes`, its edits as applied encoded one by one
/// (`record::edits_bytes_max`; a rollback compensates those, whether the record logged them so
/// or, a bulk record, in fewer and longer writes): its compensation record, whose edits carry
/// at most the bytes the update's edits carry (an image each where the update had two, none
/// for an insert's), with its undo-next LSN, record header, alignment and the page headers it
/// may cross; and, counted with every update, an abort and an end record.
fn undo_log_bytes(edits_bytes: usize) -> u64 {
    const FIXED_BYTES: u64 = 512;
    let edits_bytes = edits_bytes as u64;
    edits_bytes + edits_bytes / 64 + FIXED_BYTES
}

impl Inner {
    /// Where `page` is the first of its space never initialised (a store growing), makes it
    /// and the pages after it in its file, up to a run (`Arena::run_len`), fresh zeroed memory
    /// at once: one mapping call, and one call that faults them all in, where formatting them
    /// one by one makes one mapping call each and four page faults (a bulk load formats a
    /// vector page every 16 inserts of 1 KiB). Invisible to every reader: the pages were never
    /// initialised, so their files hold zeros there, as the fresh memory does, and no index,
    /// entry or free list names them; none is written back before its own page-init. With the
    /// preparer thread (store/prepare.rs), the runs after this one are asked for, so that the
    /// writer finds them made when it gets there.
    fn fresh_ahead(&self, page: PageId) {
        let high_water = self.initialised_pages()[page.space().index()];
        if page.page_no() < high_water {
            return;
        }
        let preparing = self.preparer.settle(page);
        if page.page_no() != high_water {
            return;
        }
        let made_by_writer = if self.arena.is_fresh(page) {
            None // made ahead, with the pages after it
        } else {
            let count = self.arena.run_len(page, usize::MAX);
            let last = PageId::new(page.space(), page.page_no() + count as u64 - 1);
            // Optional: skipped where a stripe of the run is held (a reader's, or the caller's own).
            let made = self.arena.ensure_page(last).is_ok()
                && self
                    .arena
                    .try_latch_run(page, count)
                    .is_some_and(|run| self.arena.format_fresh_run(&run));
            if !made {
                return;
            }
            Some(page.page_no() + count as u64)
        };
        if !preparing {
            return;
        }
        let pages = self.arena.page_count(page.space());
        self.preparer.ask_file(page, pages, self.arena.pages_per_file());
        if self.preparer.wants_more(page) {
            let next = made_by_writer.unwrap_or_else(|| self.arena.fresh_end(page));
            // Runs only in files the store has: the next file is made on its own, ahead
            // (`Preparer::ask_file`), or by the writer.
            let run_len = |first: PageId| {
                if first.page_no() < pages { self.arena.run_len(first, usize::MAX) as u64 } else { 0 }
            };
            self.preparer.ask_ahead(page, next, run_len);
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
    // and frees the old ones after; see store/tree.rs). The edits are taken as runs of one
    // page (a record of index inserts alternates a catalog page and a leaf: ~1,700 edits, ~730
    // runs, ~27 pages), each run numbered by its page's first appearance (a scan of the pages
    // seen while they are few, a hash map beyond: a hostile log may name 65,535 pages), then
    // grouped by a counting sort: linear in the edits, whatever the log holds. A record of a
    // few edits (a single insert's) is grouped by a scan of its edits, allocating nothing.
    const SCAN_EDITS_MAX: usize = 32;
    if edits.len() <= SCAN_EDITS_MAX {
        let mut changed = 0;
        for (i, edit) in edits.iter().enumerate() {
            if edits[..i].iter().all(|e| e.page != edit.page) {
                let page_edits = edits[i..].iter().filter(|e| e.page == edit.page);
                changed += usize::from(apply_page(arena, dirty, lsn, edit.page, page_edits, only_older));
            }
        }
        return changed;
    }
    let runs = page_runs(edits);
    let (pages, group_of) = number_pages(&runs, edits);
    let mut starts = vec![0usize; pages.len() + 1];
    for &group in &group_of {
        starts[group + 1] += 1;
    }
    for group in 0..pages.len() {
        starts[group + 1] += starts[group];
    }
    let mut next = starts.clone();
    let mut by_group = vec![0usize; runs.len()];
    for (k, &group) in group_of.iter().enumerate() {
        by_group[next[group]] = k;
        next[group] += 1;
    }
    (0..pages.len())
        .filter(|&group| {
            let page_edits = by_group[starts[group]..starts[group + 1]]
                .iter()
                .flat_map(|&k| &edits[runs[k].clone()]);
            apply_page(arena, dirty, lsn, pages[group], page_edits, only_older)
        })
        .count()
}

/// The runs of adjacent edits of one page, as ranges of `edits`.
fn page_runs(edits: &[Edit<'_>]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, edit) in edits.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if edits[run.start].page == edit.page => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// The distinct pages of `runs` in order of first appearance, and each run's page's number in
/// that order.
fn number_pages(runs: &[std::ops::Range<usize>], edits: &[Edit<'_>]) -> (Vec<PageId>, Vec<usize>) {
    const SCAN_PAGES_MAX: usize = 32;
    let mut pages: Vec<PageId> = Vec::new();
    let mut numbers: std::collections::HashMap<PageId, usize> = Default::default();
    let group_of = runs
        .iter()
        .map(|run| {
            let page = edits[run.start].page;
            if numbers.is_empty() {
                if let Some(group) = pages.iter().position(|&seen| seen == page) {
                    return group;
                }
                if pages.len() < SCAN_PAGES_MAX {
                    pages.push(page);
                    return pages.len() - 1;
                }
                numbers.extend(pages.iter().enumerate().map(|(group, &seen)| (seen, group)));
            }
            *numbers.entry(page).or_insert_with(|| {
                pages.push(page);
                pages.len() - 1
            })
        })
        .collect();
    (pages, group_of)
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
        // A stored write built by the writer carries its bytes (they go to the page, and to its
        // file before the commit); decoded in redo it carries none: the page's file has them,
        // or the transaction did not commit and they are free bytes (store/recovery.rs decides).
        EditKind::Write | EditKind::Stored { .. } => arena.write(edit.page, offset, edit.after),
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

/// Formats `page` as an empty page (the redo of a page-init record). `zeroed`: the caller knows
/// the page holds only zeros, and its header alone is written.
pub(crate) fn format_page(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    page: PageId,
    init: PageInit,
    lsn: Lsn,
    zeroed: bool,
) {
    use zerocopy::IntoBytes;
    let (a, b) = init.fields();
    let mut header: PageHeader = crate::format::page::new_header(init.kind(), page, a, b);
    header.page_lsn = lsn.0.into();
    header.store_id = arena.store_id().into();
    let _latch = arena.latch(page);
    if zeroed {
        arena.write_zeroed_page_header(page, header.as_bytes());
    } else {
        arena.reset_page(page, header.as_bytes());
    }
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

    /// An arena of 4 KiB pages in files of 16 on the simulator.
    fn small_arena() -> Arena {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(1));
        Arena::open(storage, Path::new("/arena"), 4096, 16 * 4096, crate::arena::ArenaOpen::TEST).unwrap()
    }

    #[test]
    fn edits_apply_page_by_page_in_log_order_however_many_there_are() {
        let arena = small_arena();
        let pages = [
            PageId::new(Space::Vector, 3),
            PageId::new(Space::Catalog, 1),
            PageId::new(Space::Vector, 0),
        ];
        for page in pages {
            arena.ensure_page(page).unwrap();
        }
        // Three pages interleaved, later edits overwriting parts of earlier ones: 5 edits take
        // the scan path, 40 the runs (more than SCAN_EDITS_MAX).
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

    #[test]
    fn edits_of_more_pages_than_a_scan_numbers_apply_in_log_order_too() {
        let arena = small_arena();
        // 40 pages (past the 32 a scan numbers), each edited in three runs spread over the
        // record, every run overwriting the same bytes: each page must end with its last.
        let pages: Vec<PageId> = (0..40).map(|n| PageId::new(Space::Vector, n)).collect();
        for &page in &pages {
            arena.ensure_page(page).unwrap();
        }
        let images: Vec<[u8; 4]> = (0..120u32).map(|i| [i as u8; 4]).collect();
        let edits: Vec<Edit<'_>> = (0..120)
            .map(|i| Edit {
                page: pages[(i * 7) % 40],
                offset: 200,
                after: &images[i],
                before: None,
                kind: EditKind::Write,
            })
            .collect();
        let dirty = Mutex::new(PageMap::default());
        assert_eq!(apply_edits(&arena, &dirty, Lsn(500), &edits, false), 40, "every page once");
        for (n, &page) in pages.iter().enumerate() {
            let last = (0..120).rev().find(|i| (i * 7) % 40 == n).expect("each page is edited");
            let mut held = [0u8; 4];
            arena.read(page, 200, &mut held);
            assert_eq!(held, images[last], "{page} ends with its last edit in log order");
        }
    }
}

