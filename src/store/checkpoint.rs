//! Fuzzy checkpoints.
//!
//! 1. Under the apply lock: append `checkpoint-begin`, snapshot the dirty page table.
//! 2. Make the log durable through the begin record.
//! 3. Write every page of the snapshot, in batches, in page order: copy it under its latch
//!    (it leaves the dirty page table then; a later change puts it back), make sure the log is
//!    durable through its page LSN (the WAL rule, asserted), seal it, write the batch to the
//!    doublewrite area and sync (pages initialised since the checkpoint in force skip this),
//!    write the pages in place and sync.
//!    Once a sync has made written pages durable, each page not changed since its copy gives
//!    its private memory back (`Arena::release_page`): the memory of a checkpoint's pages is
//!    given back in chunks as it goes, not only at its end.
//! 4. Under the apply lock: append `checkpoint-end` with the transaction table and the dirty
//!    page table; make it durable.
//! 5. Write the control file (last): recovery now starts at this checkpoint's begin record.
//! 6. Release log segments wholly before the begin record and the running transaction's start.
//!
//! Writers go on throughout; only the page latch and the short apply lock are ever waited on.

use std::sync::atomic::Ordering;

use crate::Lsn;
use crate::error::Result;
use crate::format::page::{self, PageId, Space};
use crate::format::record::{self, Checkpoint, DirtyPage, Kind, TxnEntry};
use crate::store::Inner;
use crate::format::control::ArenaExtent;
use crate::format::wal::RECORD_FLAG_CLOSING;
use crate::wal::RecordSpec;

/// Runs one checkpoint for a caller that waits for it; returns its begin LSN.
pub(crate) fn run(inner: &Inner) -> Result<Lsn> {
    let _one_at_a_time = inner.checkpoint_lock.lock();
    run_locked(inner, false, Caller::Waiting)
}

/// Runs one checkpoint on the background checkpointer, beside the writers.
pub(crate) fn run_in_background(inner: &Inner) -> Result<Lsn> {
    let _one_at_a_time = inner.checkpoint_lock.lock();
    run_locked(inner, false, Caller::Background)
}

/// Runs one checkpoint to give memory back (`Options::memory_budget_bytes`): on the background
/// checkpointer, or in a commit without background I/O. It stores no base image and does not
/// count for `Options::base_image_every`: base images keep the pace the log interval sets.
pub(crate) fn run_writeback(inner: &Inner) -> Result<Lsn> {
    let _one_at_a_time = inner.checkpoint_lock.lock();
    run_locked(inner, false, Caller::Writeback)
}

/// The checkpoint of a close: it writes what the background checkpoints left and stores no
/// base image (nor counts for `Options::base_image_every`), so that a close after a bulk load
/// does not compress the whole arena in the caller's thread; base images keep the pace the
/// other checkpoints set.
pub(crate) fn run_closing(inner: &Inner) -> Result<Lsn> {
    let _one_at_a_time = inner.checkpoint_lock.lock();
    run_locked(inner, false, Caller::Closing)
}

/// Who a checkpoint runs for: a base image it stores is compressed on every core when a caller
/// waits for it, and on the checkpointer's thread alone when the writers go on beside it; a
/// writeback or closing checkpoint stores none.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    Waiting,
    Background,
    Writeback,
    Closing,
}

impl Caller {
    pub(crate) fn compress_threads(self) -> usize {
        match self {
            Caller::Waiting => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            Caller::Background | Caller::Writeback | Caller::Closing => 1,
        }
    }

    /// Whether the checkpoint may store a base image (and counts for `base_image_every`).
    fn stores_base_images(self) -> bool {
        match self {
            Caller::Waiting | Caller::Background => true,
            Caller::Writeback | Caller::Closing => false,
        }
    }
}

/// Runs one checkpoint under the checkpoint lock the caller holds; with `force_base_image` it
/// stores a base image whatever `Options::base_image_every` says.
pub(crate) fn run_locked(inner: &Inner, force_base_image: bool, caller: Caller) -> Result<Lsn> {
    let _running = inner.memory.running();
    let (begin_lsn, mut pages, extent) = begin(inner, caller == Caller::Closing)?;
    inner.wal.flush_through(begin_lsn)?;
    let in_force = inner.control.lock().1.checkpoint_lsn;
    pages.sort_unstable();
    let mut written = Vec::with_capacity(pages.len());
    let flushed = flush_pages(inner, &pages, in_force, &mut written);
    if flushed.is_err() {
        // A failed sync may have lost these pages for good (the kernel marks them clean, so no
        // later sync writes them): they go back to the dirty page table, and the next
        // checkpoint writes them again instead of trusting the sync that failed.
        return_to_dirty(inner, written);
    }
    flushed?;
    // Files deleted while open are put back (their pages are synced by now) before the
    // control file relies on them.
    inner.arena.restore_unlinked_files()?;
    inner.wal.restore_unlinked_segments()?;
    relink_doublewrite(inner)?;
    // From the first control file that records the extent on, a missing or short doublewrite
    // file is damage: it must be whole before that control file is written.
    inner.doublewrite.lock().ensure_whole()?;
    let (end_lsn, truncate_lsn, next_txn_id) = end(inner, begin_lsn, caller == Caller::Closing)?;
    inner.wal.flush_through(end_lsn)?;
    {
        let mut control = inner.control.lock();
        let (file, data) = &mut *control;
        let mut next = data.clone();
        next.sequence += 1;
        next.checkpoint_lsn = begin_lsn;
        next.checkpoint_end_lsn = end_lsn;
        next.redo_lsn = begin_lsn;
        next.next_txn_id = next_txn_id;
        next.checkpoint_us = inner.wal.record_time_us();
        next.truncate_lsn = truncate_lsn;
        next.extent = Some(extent);
        inner.wal.relink_epoch_file()?;
        file.relink_if_unlinked(inner.options.storage.as_ref(), data)?;
        file.write_slot(&next)?;
        *data = next;
    }
    inner.recent_inits.lock().retain(|_, lsn| *lsn >= begin_lsn);
    inner.memory.step();
    if caller.stores_base_images() || force_base_image {
        inner.last_interval_lsn.store(begin_lsn.0, Ordering::Relaxed);
        let files = [Space::Catalog, Space::Vector].map(|space| inner.arena.file_count(space));
        let info = crate::store::archiver::BaseImageInfo {
            begin_lsn,
            end_lsn,
            truncate_lsn,
            next_txn_id,
            time_us: inner.wal.record_time_us(),
            files,
        };
        // A base image takes long and holds the checkpoint lock: writers over the memory
        // budget meanwhile write back what lies outside it themselves.
        let _imaging = inner.memory.imaging(files);
        // A close does not wait for the background checkpointer's image (a whole arena, at
        // 4 GiB of log 6.5 s of compression): it gives it up, and a later checkpoint takes one.
        let closing = || caller == Caller::Background && inner.stopping.load(Ordering::SeqCst);
        crate::store::archiver::maybe_base_image(inner, &info, force_base_image, caller.compress_threads(), &closing)?;
    }
    crate::store::archiver::retire(inner, truncate_lsn)?;
    Ok(begin_lsn)
}

/// Appends checkpoint-begin and snapshots the dirty page table and the arena's extent (the
/// pages initialised so far are in the snapshot or on disk already, and the files holding them
/// are made durable with the pages: both hold once the checkpoint is complete). A closing
/// checkpoint leaves out a last file the page preparer made ahead in this session that no page
/// used: the close removes it (`Arena::remove_files_from`).
fn begin(inner: &Inner, closing: bool) -> Result<(Lsn, Vec<PageId>, ArenaExtent)> {
    let _active = inner.apply.lock();
    let spec = RecordSpec {
        kind: Kind::CheckpointBegin as u8,
        flags: 0,
        txn_id: 0,
        prev_lsn: 0,
        timestamp_us: inner.wal.record_time_us(),
    };
    let lsn = inner.wal.append(&spec, &[])?;
    let pages = inner.dirty.lock().keys().copied().collect();
    let pages_initialised = inner.initialised_pages();
    let files = [Space::Catalog, Space::Vector].map(|space| {
        let present = inner.arena.file_count(space) as u64;
        // The space's last file, made ahead by the page preparer in this session, that no page
        // initialised in this session lies in (and no earlier session knew: it is new).
        let last_unused = inner.preparer.made_ahead(space).is_some_and(|first| {
            present > 0
                && first == (present - 1) * inner.arena.pages_per_file()
                && pages_initialised[space.index()] <= first
        });
        (present - u64::from(closing && last_unused)) as u32
    });
    let extent = ArenaExtent {
        pages: pages_initialised,
        files,
    };
    Ok((lsn, pages, extent))
}

/// Writes `pages` (sorted) in batches and makes them durable; every page taken out of the dirty
/// page table goes to `written` with its recovery LSN, for the caller to put back on failure.
/// Pages made durable give their memory back as the checkpoint goes: those of a batch synced
/// through the doublewrite area at once, the others after a sync once they add up to a chunk
/// of the memory budget.
fn flush_pages(inner: &Inner, pages: &[PageId], in_force: Lsn, written: &mut Vec<(PageId, Lsn)>) -> Result<()> {
    let mut held = Held::new(&inner.memory);
    let mut unsynced: Vec<(PageId, Lsn)> = Vec::new();
    let chunk_pages = release_chunk_pages(inner);
    for batch in pages.chunks(crate::format::doublewrite::DOUBLEWRITE_BATCH_PAGES) {
        let taken_before = written.len();
        let outcome = write_batch(inner, batch, in_force, written);
        held.hold((written.len() - taken_before) as u64);
        match outcome? {
            Batch::Synced(copies) => release_written(inner, &copies, &mut held),
            Batch::Unsynced(copies) => unsynced.extend(copies),
        }
        if unsynced.len() >= chunk_pages {
            let ids: Vec<PageId> = unsynced.iter().map(|&(page, _)| page).collect();
            inner.arena.sync_pages(&ids)?;
            release_written(inner, &unsynced, &mut held);
            unsynced.clear();
        }
        inner.memory.step();
    }
    // Pages that skipped the doublewrite area were written without a sync per batch: one sync
    // of every file written (and of the directory if files were created) before the end record
    // and the control file make this checkpoint the one recovery starts from.
    inner.arena.sync_pages(pages)?;
    release_written(inner, &unsynced, &mut held);
    Ok(())
}

/// Pages a bulk call wrote in place for its stored writes (src/store/stored.rs, step 3) and has
/// not synced yet: taken out of the dirty page table, with the LSN each was taken at (for a
/// failure to put back) and the page LSN each was written with (to give its memory back).
#[derive(Default)]
pub(crate) struct StoredPages {
    taken: Vec<(PageId, Lsn)>,
    copies: Vec<(PageId, Lsn)>,
}

impl StoredPages {
    /// How many page writes wait for the sync.
    pub(crate) fn len(&self) -> usize {
        self.copies.len()
    }
}

/// Writes `pages` (sorted), which hold stored writes, in place as a checkpoint writes its
/// pages, without a sync: each copied under its latch after the log through its page LSN is
/// durable; those initialised since the checkpoint `in_force` (all of them: the caller has held
/// the checkpoint lock since it chose them) skip the doublewrite area, and the device starts on
/// them at once.
/// The caller holds the checkpoint lock. A failure puts every page taken back in the dirty page
/// table.
pub(crate) fn write_stored(inner: &Inner, pages: &[PageId], in_force: Lsn, written: &mut StoredPages) -> Result<()> {
    for batch in pages.chunks(crate::format::doublewrite::DOUBLEWRITE_BATCH_PAGES) {
        match write_batch(inner, batch, in_force, &mut written.taken) {
            Ok(Batch::Synced(copies) | Batch::Unsynced(copies)) => written.copies.extend(copies),
            Err(error) => {
                return_to_dirty(inner, std::mem::take(&mut written.taken));
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Makes the pages [`write_stored`] wrote durable (one sync of each file), then gives back the
/// memory of those not changed since. A failure puts them back in the dirty page table.
pub(crate) fn sync_stored(inner: &Inner, written: StoredPages) -> Result<()> {
    let StoredPages { taken, mut copies } = written;
    let pages: Vec<PageId> = taken.iter().map(|&(page, _)| page).collect();
    if let Err(error) = inner.arena.sync_pages(&pages) {
        return_to_dirty(inner, taken);
        return Err(error);
    }
    // A page written for two records of the call: its last copy is the one to compare.
    copies.sort_by_key(|&(page, lsn)| (page, lsn));
    copies.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            *earlier = *later;
        }
        same
    });
    let mut held = Held::new(&inner.memory);
    held.hold(copies.len() as u64);
    release_written(inner, &copies, &mut held);
    Ok(())
}

/// While a checkpoint stores a base image (holding the checkpoint lock, so no other checkpoint
/// runs), writes back the dirty pages of the arena files the image does not read, and gives
/// their memory back: what a writer waiting for memory does meanwhile. Returns the pages taken.
///
/// Those files were made after the checkpoint in force began, so every page in them was
/// initialised since: a torn write of one is rebuilt from zero by redo, and it needs no
/// doublewrite copy (pages the checkpoint in force does not count as recent are left alone).
/// The pages are written, made durable and released as a checkpoint's are; a failure puts
/// them back in the dirty page table. The base image's checkpoint does not end (nor does the
/// next one begin) before this returns: it waits for the `imaging` lock held here.
pub(crate) fn clean_during_base_image(inner: &Inner) -> Result<usize> {
    let imaging = inner.memory.imaging_files();
    let Some(files) = *imaging else {
        return Ok(0);
    };
    let in_force = inner.control.lock().1.checkpoint_lsn;
    let mut pages: Vec<PageId> = {
        let dirty = inner.dirty.lock();
        let recent = inner.recent_inits.lock();
        dirty
            .keys()
            .filter(|&&page| !inner.arena.is_in_files_below(page, files))
            .filter(|page| recent.get(page).is_some_and(|&init| init >= in_force))
            .copied()
            .collect()
    };
    if pages.is_empty() {
        return Ok(0);
    }
    pages.sort_unstable();
    let mut written = Vec::with_capacity(pages.len());
    let flushed = flush_pages(inner, &pages, in_force, &mut written);
    if flushed.is_err() {
        return_to_dirty(inner, written);
        return flushed.map(|()| 0);
    }
    Ok(written.len())
}

/// How many written pages wait for a sync before they give their memory back: an eighth of
/// the memory budget, or the whole checkpoint with no budget.
fn release_chunk_pages(inner: &Inner) -> usize {
    let budget = inner.options.memory_budget_bytes;
    if budget == 0 {
        return usize::MAX;
    }
    let pages = budget / 8 / u64::from(inner.arena.page_size_bytes());
    usize::try_from(pages).unwrap_or(usize::MAX).max(1)
}

/// The pages a checkpoint has taken out of the dirty page table and not given back yet, as the
/// memory budget counts them; whatever is left when it is dropped (a failed checkpoint: its
/// pages go back to the dirty page table) is given back then.
struct Held<'a> {
    memory: &'a crate::store::inner::MemoryBudget,
    pages: u64,
}

impl<'a> Held<'a> {
    fn new(memory: &'a crate::store::inner::MemoryBudget) -> Held<'a> {
        Held { memory, pages: 0 }
    }

    fn hold(&mut self, pages: u64) {
        self.memory.hold(pages);
        self.pages += pages;
    }

    fn give_back(&mut self, pages: u64) {
        self.pages -= pages;
        self.memory.give_back(pages);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.pages > 0 {
            self.memory.give_back(self.pages);
        }
    }
}

/// Gives back the private memory of `pages`, each written with the page LSN beside it and now
/// durable in its file (a sync of the file succeeded after the write), unless it changed since
/// its copy was taken: then it is in the dirty page table again, and stays. Adjacent pages go
/// back together, one mapping call per run of them (`Arena::latch_run`).
fn release_written(inner: &Inner, pages: &[(PageId, Lsn)], held: &mut Held<'_>) {
    let mut rest = pages;
    while let Some(&(first, _)) = rest.first() {
        let adjacent = rest
            .iter()
            .enumerate()
            .take_while(|&(i, &(page, _))| {
                page.space() == first.space() && page.page_no() == first.page_no() + i as u64
            })
            .count();
        let (run, next) = rest.split_at(inner.arena.run_len(first, adjacent));
        release_run(inner, run);
        rest = next;
    }
    held.give_back(pages.len() as u64);
}

/// [`release_written`] for `pages`, adjacent pages of one file, under their latches.
fn release_run(inner: &Inner, pages: &[(PageId, Lsn)]) {
    let latched = inner.arena.latch_run(pages[0].0, pages.len());
    let unchanged: Vec<bool> = {
        let dirty = inner.dirty.lock();
        pages
            .iter()
            .map(|&(page, page_lsn)| !dirty.contains_key(&page) && inner.arena.page_lsn(page) == page_lsn)
            .collect()
    };
    let mut start = 0;
    while start < pages.len() {
        let len = unchanged[start..].iter().take_while(|&&u| u == unchanged[start]).count();
        if unchanged[start] {
            // SAFETY: `Arena::release_page`'s contract, point by point, for every page of the
            // stretch.
            // - `latched` holds every page's latch exclusively: no writer changes a page
            //   meanwhile (every change is made under it, apply.rs), and no reader holds a
            //   `PageRead` of it (index nodes, owner tables, the meta page are read under it
            //   shared).
            // - The file durably holds each page's bytes: `write_batch` copied the page under
            //   the latch, taking it out of the dirty page table in the same critical section,
            //   and wrote that copy, sealed (sealing sets the checksum field and nothing else);
            //   a sync of the file succeeded since (the caller's contract). Every change to a
            //   page in memory happens under its latch, gives it a new page LSN and puts it in
            //   the dirty page table; the page is not in the table and still has the LSN it was
            //   copied with, so it has not changed since the copy.
            // - So the refault reads back every byte as it is now but the checksum (stale in
            //   memory by design, correct in the file). No latch-free reader uses those four
            //   bytes: readers of committed vector slots (`VectorRef`, the search scan) and of
            //   catalog entries (`catalog::read_entry`: header, id, inline metadata) read other
            //   bytes, which stay the same values throughout (the kernel swaps the private copy
            //   for the page-cache page holding the same bytes); whole-page copies made without
            //   the latch (`catalog::read_chain`, `EditList::page_image`) may copy either value
            //   of the checksum, and never use it.
            // - The file is not written at these pages again before each is stored into (a
            //   checkpoint writes only pages in the dirty page table), so the page-cache page
            //   the mapping then shows never changes under a reader.
            unsafe { inner.arena.release_run(&latched, start, len) };
        }
        start += len;
    }
}

/// The pages a batch wrote in place (with the page LSN each was copied with), and whether a
/// sync has made them durable already.
enum Batch {
    Synced(Vec<(PageId, Lsn)>),
    Unsynced(Vec<(PageId, Lsn)>),
}

/// Puts pages a failed checkpoint took back into the dirty page table.
fn return_to_dirty(inner: &Inner, taken: Vec<(PageId, Lsn)>) {
    let mut dirty = inner.dirty.lock();
    for (page, rec_lsn) in taken {
        let entry = dirty.entry(page).or_insert(rec_lsn);
        *entry = (*entry).min(rec_lsn);
    }
}

fn write_batch(inner: &Inner, batch: &[PageId], in_force: Lsn, taken: &mut Vec<(PageId, Lsn)>) -> Result<Batch> {
    let mut images = Vec::with_capacity(batch.len());
    let mut copies = Vec::with_capacity(batch.len());
    for &page in batch {
        let (mut image, rec_lsn) = {
            let _latch = inner.arena.latch(page);
            let Some(rec_lsn) = inner.dirty.lock().remove(&page) else {
                continue;
            };
            (inner.arena.copy_page(page), rec_lsn)
        };
        taken.push((page, rec_lsn));
        let page_lsn = Lsn(page::page_lsn_of(&image));
        if inner.wal.durable_lsn() <= page_lsn {
            inner.wal.flush_through(page_lsn)?;
        }
        assert!(
            inner.wal.durable_lsn() > page_lsn,
            "WAL rule: {page} is written only after its log is durable"
        );
        page::seal(&mut image);
        images.push((page, image));
        copies.push((page, page_lsn));
    }
    if images.is_empty() {
        return Ok(Batch::Unsynced(copies));
    }
    let recent = inner.recent_inits.lock().clone();
    let protected: Vec<(PageId, Vec<u8>)> = images
        .iter()
        .filter(|(page, _)| recent.get(page).is_none_or(|&init| init < in_force))
        .cloned()
        .collect();
    if !protected.is_empty() {
        relink_doublewrite(inner)?;
        inner.doublewrite.lock().write_batch(&protected)?;
    }
    // Each page LSN is below the durable LSN (asserted above): pages read back from their
    // files are checked against it (`Arena::verify`).
    inner.arena.raise_lsn_bound(inner.wal.durable_lsn());
    for (page, image) in &images {
        inner.arena.write_page(*page, image)?;
    }
    let written: Vec<PageId> = images.iter().map(|(page, _)| *page).collect();
    if protected.is_empty() {
        // Every page here was initialised inside the redo range: a torn write is rebuilt from
        // zero by redo, so these writes need no sync of their own (see the end of `run`); the
        // device starts on them now, while the next batches are copied and sealed.
        inner.arena.start_writeback(&written);
        return Ok(Batch::Unsynced(copies));
    }
    // The in-place copies must be durable before the next batch reuses the doublewrite area.
    inner.arena.sync_pages(&written)?;
    Ok(Batch::Synced(copies))
}

/// Appends the checkpoint-end record; returns its LSN, the truncation LSN and the next txn id.
///
/// The checkpoint of a close flags its end record [`RECORD_FLAG_CLOSING`]: nothing is appended
/// after it in this open (the store is closing, no transaction runs, the checkpointer has
/// stopped), which lets the next open bound its search for the end of the log (`wal::open`).
fn end(inner: &Inner, begin_lsn: Lsn, closing: bool) -> Result<(Lsn, Lsn, u64)> {
    let active = inner.apply.lock();
    let txns: Vec<TxnEntry> = active
        .iter()
        .map(|t| TxnEntry {
            txn_id: t.txn_id,
            last_lsn: t.last_lsn,
            undo_next: t.last_lsn,
            state: 0,
        })
        .collect();
    let dirty: Vec<DirtyPage> = inner
        .dirty
        .lock()
        .iter()
        .map(|(&page, &rec_lsn)| DirtyPage { page, rec_lsn })
        .collect();
    let next_txn_id = inner.next_txn_id.load(Ordering::SeqCst);
    let checkpoint = Checkpoint {
        begin_lsn,
        next_txn_id,
        txns,
        dirty,
    };
    let payload = record::encode_checkpoint(&checkpoint);
    let closing = closing && active.is_none();
    let spec = RecordSpec {
        kind: Kind::CheckpointEnd as u8,
        flags: if closing { RECORD_FLAG_CLOSING } else { 0 },
        txn_id: 0,
        prev_lsn: 0,
        timestamp_us: inner.wal.record_time_us(),
    };
    let end_lsn = inner.wal.append(&spec, &[&payload])?;
    let truncate_lsn = match *active {
        Some(txn) if !txn.first_lsn.is_none() => txn.first_lsn.min(begin_lsn),
        _ => begin_lsn,
    };
    Ok((end_lsn, truncate_lsn, next_txn_id))
}

/// Makes `DOUBLEWRITE` again if it was deleted while the store is open (see
/// `Doublewrite::relink_if_unlinked`).
fn relink_doublewrite(inner: &Inner) -> Result<()> {
    inner
        .doublewrite
        .lock()
        .relink_if_unlinked(inner.options.storage.as_ref())
        .map(|_| ())
}

/// Makes `EPOCH`, `CONTROL` and `DOUBLEWRITE` again, and puts back arena files and log
/// segments, where one was deleted while the store is open: for a close that runs no
/// checkpoint, or whose checkpoint failed (a checkpoint that runs does it as it writes them),
/// and for a put-back (src/store/deletions.rs), under the checkpoint lock its caller holds.
pub(super) fn relink_files(inner: &Inner) -> Result<()> {
    inner.wal.relink_epoch_file()?;
    inner.arena.restore_unlinked_files()?;
    inner.wal.restore_unlinked_segments()?;
    {
        let mut control = inner.control.lock();
        let (file, data) = &mut *control;
        file.relink_if_unlinked(inner.options.storage.as_ref(), data)?;
    }
    relink_doublewrite(inner)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::format::record::Kind;
    use crate::format::wal::RECORD_FLAG_CLOSING;
    use crate::storage::SimStorage;
    use crate::store::{Options, Store};

    /// The kind and flags of every record of the store's log from its oldest segment.
    fn records(store: &Store) -> Vec<(u8, u8)> {
        let mut reader = store.inner().wal.reader_from_start();
        let mut found = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            found.push((record.header.kind, record.header.flags));
        }
        found
    }

    #[test]
    fn only_a_closes_checkpoint_end_record_is_flagged_closing_and_it_ends_the_log() {
        let sim = SimStorage::new(11);
        let options = Options {
            storage: Arc::new(sim),
            background_io: false,
            ..Options::default()
        };
        let store = Store::create(Path::new("/store"), 4, options.clone()).unwrap();
        store.insert("a", &[1.0; 4], &[]).unwrap();
        store.checkpoint().unwrap();
        store.insert("b", &[2.0; 4], &[]).unwrap();
        store.close().unwrap();
        let store = Store::open(Path::new("/store"), options).unwrap();
        let found = records(&store);
        let checkpoint_end = Kind::CheckpointEnd as u8;
        let ends: Vec<u8> = found.iter().filter(|r| r.0 == checkpoint_end).map(|r| r.1).collect();
        assert!(ends.len() >= 2, "the explicit checkpoint and the close's: {ends:?}");
        assert!(
            ends[..ends.len() - 1].iter().all(|&flags| flags == 0) && ends.last() == Some(&RECORD_FLAG_CLOSING),
            "only the close's checkpoint-end is flagged: {ends:?}"
        );
        assert_eq!(found.last(), Some(&(checkpoint_end, RECORD_FLAG_CLOSING)), "the closing record is the last");
        assert!(
            found.iter().all(|r| r.1 == 0 || *r == (checkpoint_end, RECORD_FLAG_CLOSING)),
            "no other record carries a flag: {found:?}"
        );
    }
}
