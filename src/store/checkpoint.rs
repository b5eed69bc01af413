//! Fuzzy checkpoints.
//!
//! 1. Under the apply lock: append `checkpoint-begin`, snapshot the dirty page table.
//! 2. Make the log durable through the begin record.
//! 3. Write every page of the snapshot, in batches, in page order: copy it under its latch
//!    (it leaves the dirty page table then; a later change puts it back), make sure the log is
//!    durable through its page LSN (the WAL rule, asserted), seal it, write the batch to the
//!    doublewrite area and sync (pages initialised since the checkpoint in force skip this),
//!    write the pages in place and sync.
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
use crate::wal::{RecordSpec, now_us};

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

/// Who a checkpoint runs for: a base image it stores is compressed on every core when a caller
/// waits for it, and on the checkpointer's thread alone when the writers go on beside it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    Waiting,
    Background,
}

impl Caller {
    pub(crate) fn compress_threads(self) -> usize {
        match self {
            Caller::Waiting => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            Caller::Background => 1,
        }
    }
}

/// Runs one checkpoint under the checkpoint lock the caller holds; with `force_base_image` it
/// stores a base image whatever `Options::base_image_every` says.
pub(crate) fn run_locked(inner: &Inner, force_base_image: bool, caller: Caller) -> Result<Lsn> {
    let (begin_lsn, mut pages, extent) = begin(inner)?;
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
    // From the first control file that records the extent on, a missing or short doublewrite
    // file is damage: it must be whole before that control file is written.
    inner.doublewrite.lock().ensure_whole()?;
    let (end_lsn, truncate_lsn, next_txn_id) = end(inner, begin_lsn)?;
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
        next.checkpoint_us = now_us();
        next.truncate_lsn = truncate_lsn;
        next.extent = Some(extent);
        file.write_slot(&next)?;
        *data = next;
    }
    inner.last_checkpoint_lsn.store(begin_lsn.0, Ordering::Relaxed);
    inner.recent_inits.lock().retain(|_, lsn| *lsn >= begin_lsn);
    let info = crate::store::archiver::BaseImageInfo {
        begin_lsn,
        end_lsn,
        truncate_lsn,
        next_txn_id,
        time_us: now_us(),
    };
    crate::store::archiver::maybe_base_image(inner, &info, force_base_image, caller.compress_threads())?;
    crate::store::archiver::retire(inner, truncate_lsn)?;
    Ok(begin_lsn)
}

/// Appends checkpoint-begin and snapshots the dirty page table and the arena's extent (the
/// pages initialised so far are in the snapshot or on disk already, and the files holding them
/// are made durable with the pages: both hold once the checkpoint is complete).
fn begin(inner: &Inner) -> Result<(Lsn, Vec<PageId>, ArenaExtent)> {
    let _active = inner.apply.lock();
    let spec = RecordSpec {
        kind: Kind::CheckpointBegin as u8,
        flags: 0,
        txn_id: 0,
        prev_lsn: 0,
        timestamp_us: now_us(),
    };
    let lsn = inner.wal.append(&spec, &[])?;
    let pages = inner.dirty.lock().keys().copied().collect();
    let extent = ArenaExtent {
        pages: inner.initialised_pages(),
        files: [Space::Catalog, Space::Vector].map(|space| inner.arena.file_count(space) as u32),
    };
    Ok((lsn, pages, extent))
}

/// Writes `pages` (sorted) in batches and makes them durable; every page taken out of the dirty
/// page table goes to `written` with its recovery LSN, for the caller to put back on failure.
fn flush_pages(inner: &Inner, pages: &[PageId], in_force: Lsn, written: &mut Vec<(PageId, Lsn)>) -> Result<()> {
    for batch in pages.chunks(crate::format::doublewrite::DOUBLEWRITE_BATCH_PAGES) {
        write_batch(inner, batch, in_force, written)?;
    }
    // Pages that skipped the doublewrite area were written without a sync per batch: one sync
    // of every file written (and of the directory if files were created) before the end record
    // and the control file make this checkpoint the one recovery starts from.
    inner.arena.sync_pages(pages)
}

/// Puts pages a failed checkpoint took back into the dirty page table.
fn return_to_dirty(inner: &Inner, taken: Vec<(PageId, Lsn)>) {
    let mut dirty = inner.dirty.lock();
    for (page, rec_lsn) in taken {
        let entry = dirty.entry(page).or_insert(rec_lsn);
        *entry = (*entry).min(rec_lsn);
    }
}

fn write_batch(inner: &Inner, batch: &[PageId], in_force: Lsn, taken: &mut Vec<(PageId, Lsn)>) -> Result<()> {
    let mut images = Vec::with_capacity(batch.len());
    for &page in batch {
        let (mut image, rec_lsn) = {
            let _latch = inner.arena.latch(page);
            let Some(rec_lsn) = inner.dirty.lock().remove(&page) else {
                continue;
            };
            (inner.arena.copy_page(page), rec_lsn)
        };
        taken.push((page, rec_lsn));
        let page_lsn = Lsn(u64::from_le_bytes(
            image[page::PAGE_LSN_OFFSET..page::PAGE_LSN_OFFSET + 8]
                .try_into()
                .expect("8"),
        ));
        if inner.wal.durable_lsn() <= page_lsn {
            inner.wal.flush_through(page_lsn)?;
        }
        assert!(
            inner.wal.durable_lsn() > page_lsn,
            "WAL rule: {page} is written only after its log is durable"
        );
        page::seal(&mut image);
        images.push((page, image));
    }
    if images.is_empty() {
        return Ok(());
    }
    let recent = inner.recent_inits.lock().clone();
    let protected: Vec<(PageId, Vec<u8>)> = images
        .iter()
        .filter(|(page, _)| recent.get(page).is_none_or(|&init| init < in_force))
        .cloned()
        .collect();
    if !protected.is_empty() {
        inner.doublewrite.lock().write_batch(&protected)?;
    }
    for (page, image) in &images {
        inner.arena.write_page(*page, image)?;
    }
    let written: Vec<PageId> = images.iter().map(|(page, _)| *page).collect();
    if protected.is_empty() {
        // Every page here was initialised inside the redo range: a torn write is rebuilt from
        // zero by redo, so these writes need no sync of their own (see the end of `run`); the
        // device starts on them now, while the next batches are copied and sealed.
        inner.arena.start_writeback(&written);
        return Ok(());
    }
    // The in-place copies must be durable before the next batch reuses the doublewrite area.
    inner.arena.sync_pages(&written)
}

/// Appends the checkpoint-end record; returns its LSN, the truncation LSN and the next txn id.
fn end(inner: &Inner, begin_lsn: Lsn) -> Result<(Lsn, Lsn, u64)> {
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
    let spec = RecordSpec {
        kind: Kind::CheckpointEnd as u8,
        flags: 0,
        txn_id: 0,
        prev_lsn: 0,
        timestamp_us: now_us(),
    };
    let end_lsn = inner.wal.append(&spec, &[&payload])?;
    let truncate_lsn = match *active {
        Some(txn) if !txn.first_lsn.is_none() => txn.first_lsn.min(begin_lsn),
        _ => begin_lsn,
    };
    Ok((end_lsn, truncate_lsn, next_txn_id))
}
